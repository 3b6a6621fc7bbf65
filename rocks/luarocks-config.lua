-- luarocks offline, for Debian's LuaJIT: LUAROCKS_CONFIG=rocks/luarocks-config.lua
lua_interpreter = "luajit"
lua_version = "5.1"
variables = {
  LUA_INCDIR = "/usr/include/luajit-2.1",
  LUA_BINDIR = "/usr/bin",
  LUA_LIBDIR = "/usr/lib/x86_64-linux-gnu",
}
