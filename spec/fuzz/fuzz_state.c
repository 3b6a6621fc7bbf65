/* libFuzzer target: the state-file loader (lua/scatter/state.lua reading
 * with lua-cjson and core.state_check, then core.state_restore into a live
 * pool; src/lua/state.c).
 *
 * LuaJIT is embedded with scatter.core linked in (package.preload), and the
 * Lua modules come from the source tree. Each input is written to a file
 * and loaded as a pool would at start: a file the loader accepts must
 * restore without an error into a pool, and nothing may crash. The pool is
 * replaced every 256 restores so its tables stay small. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_scatter_core(lua_State *L);

static const char *LOADER =
    "local path = ...\n"
    "package.path = SCATTER_LUA .. '/?.lua;' .. SCATTER_LUA .. '/?/init.lua;' .. package.path\n"
    "local scatter = require('scatter')\n"
    "local state = require('scatter.state')\n"
    "local core = require('scatter.core')\n"
    "require('scatter.log').sink = function() end\n"
    "local pool, uses\n"
    "return function()\n"
    "  local secs = state.read(path)\n"
    "  if not secs then return end\n"
    "  for _, sec in pairs(secs) do\n"
    "    if not pool or uses >= 256 then\n"
    "      if pool then pool:close() end\n"
    "      pool, uses = scatter.pool({ proxies = { '127.0.0.1:9' }, metrics_log_interval = 0 }), 0\n"
    "    end\n"
    "    uses = uses + 1\n"
    "    core.state_restore(pool.c, sec, 0)\n"
    "  end\n"
    "end\n";

/* LuaJIT allocates its heap with its own mmap allocator, which LeakSanitizer
 * does not scan: everything C keeps only in a Lua userdata (the pool) would
 * be reported as leaked. Leaks of the C core are the valgrind and ASan
 * tests' job (spec/c, the specs under ASan). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

static lua_State *L;
static char path[64];

static void drop_file(void) { unlink(path); }

static void init(void) {
  snprintf(path, sizeof(path), "/tmp/scatter-fuzz-state-%d.json", (int)getpid());
  atexit(drop_file);
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_scatter_core);
  lua_setfield(L, -2, "scatter.core");
  lua_pop(L, 2);
  lua_pushstring(L, SCATTER_LUA_DIR);
  lua_setglobal(L, "SCATTER_LUA");
  if (luaL_loadstring(L, LOADER) || (lua_pushstring(L, path), lua_pcall(L, 1, 1, 0))) {
    fprintf(stderr, "fuzz_state: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_setglobal(L, "LOAD");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L) init();
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
  lua_getglobal(L, "LOAD");
  if (lua_pcall(L, 0, 0, 0)) {
    /* an accepted file that then fails to restore is a loader bug */
    fprintf(stderr, "fuzz_state: %s\n", lua_tostring(L, -1));
    abort();
  }
  return 0;
}
