rockspec_format = "3.0"
package = "scatter"
version = "scm-1"
source = {
  url = "git+file://.",
}
description = {
  summary = "Requests raced across unreliable SOCKS5 proxies, scripted in Lua",
  detailed = [[
    A C core (libuv + libcurl) that schedules HTTP requests over large pools
    of unreliable SOCKS5 proxies: each request raced across K proxies, the
    first good answer wins, per-(proxy, host) health steers every choice.
    Installs the Lua module (require "scatter") and the `scatter` CLI.
  ]],
  license = "MIT",
}
-- lua-cjson comes from the system (Debian's lua-cjson); no rock needed.
dependencies = {}
-- Debian's libraries the module links: the embedded frontier (SQLite), link
-- extraction (Gumbo), `scatter serve`'s request parser (nodejs http-parser).
external_dependencies = {
  SQLITE3 = { header = "sqlite3.h", library = "sqlite3" },
  GUMBO = { header = "gumbo.h", library = "gumbo" },
  HTTP_PARSER = { header = "http_parser.h", library = "http_parser" },
  -- the Redis client of scale-out (DESIGN.md section 9): Debian's libhiredis-dev
  HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
  -- libcurl's OpenSSL (libssl-dev): TLS session tickets (DESIGN.md section 10)
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    SCATTER_LUADIR = "$(LUADIR)",
    SCATTER_LIBDIR = "$(LIBDIR)",
    SCATTER_BINDIR = "$(BINDIR)",
    SCATTER_TESTS = "OFF",
    HTTP_PARSER_INCDIR = "$(HTTP_PARSER_INCDIR)",
    HTTP_PARSER_LIBDIR = "$(HTTP_PARSER_LIBDIR)",
  },
}
