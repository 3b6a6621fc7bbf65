/* The scatter executable: an embedded LuaJIT with the core module built in.
 * Everything else (argument parsing, commands) is lua/scatter/cli.lua. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int luaopen_scatter_core(lua_State *L);

/* Where the Lua files (lua/scatter) live, first match wins: SCATTER_LUA_DIR;
 * the source tree when this binary runs from its build tree; beside the
 * binary as luarocks and `make install` lay it out (bin/../share/lua/5.1);
 * the configured install directory. */
static int has_cli(const char *dir) {
  char path[4400];
  snprintf(path, sizeof(path), "%s/scatter/cli.lua", dir);
  return access(path, R_OK) == 0;
}

static const char *lua_dir(void) {
  const char *env = getenv("SCATTER_LUA_DIR");
  if (env && *env) return env;
  static char exe[4096], rel[4200];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    exe[n] = '\0';
    size_t bl = strlen(SCATTER_BUILD_DIR);
    if (strncmp(exe, SCATTER_BUILD_DIR, bl) == 0 && exe[bl] == '/')
      return SCATTER_SOURCE_LUA_DIR;
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      snprintf(rel, sizeof(rel), "%s/../share/lua/5.1", exe);
      if (has_cli(rel)) return rel;
    }
  }
  return SCATTER_INSTALL_LUA_DIR;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = "(error object is not a string)";
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "scatter: cannot create a Lua state\n");
    return 1;
  }
  luaL_openlibs(L);

  /* package.path gets our directory first; package.preload the core */
  const char *dir = lua_dir();
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_scatter_core);
  lua_setfield(L, -2, "scatter.core");
  lua_pop(L, 2);

  lua_pushcfunction(L, traceback);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "scatter.cli");
  if (lua_pcall(L, 1, 1, 1) != 0) {
    fprintf(stderr, "scatter: cannot load scatter.cli (from %s): %s\n", dir,
            lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  int rc = 1;
  if (lua_pcall(L, 1, 1, 1) != 0) {
    fprintf(stderr, "scatter: %s\n", lua_tostring(L, -1));
  } else {
    rc = (int)lua_tointeger(L, -1);
  }
  lua_close(L);
  return rc;
}
