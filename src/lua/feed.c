/* Proxy membership for lua/scatter/feed.lua: adding a whole list at once,
 * retiring and reviving, probing dead proxies that are listed again, and
 * holding dispatch until the initial lists are in. */
#include <lauxlib.h>
#include <lua.h>

#include "pool.h"

#include "funcs.h"

static uint32_t check_id(lua_State *L, sc_sched_t *s, int i) {
  lua_Number n = luaL_checknumber(L, i);
  if (n < 0 || n >= sc_sched_proxy_count(s) || n != (uint32_t)n)
    luaL_argerror(L, i, "not a proxy id of this pool");
  return (uint32_t)n;
}

/* core.pool_hold(pool, on) -> depth */
int sc_lua_pool_hold(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  int depth = sc_sched_hold(s, lua_toboolean(L, 2));
  if (depth < 0) return luaL_error(L, "scatter: pool_hold: not held");
  lua_pushinteger(L, depth);
  return 1;
}

/* core.pool_add_keys(pool, keys) -> ids: keys are canonical (parse_proxy),
 * ids their proxy ids (duplicates merge). The list goes in under one hold,
 * so a waiting task sees all of it, not its first entry. */
int sc_lua_pool_add_keys(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int n = (int)lua_objlen(L, 2);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "scatter: pool_add_keys: keys[%d] is not a string", i);
    lua_pop(L, 1);
  }
  lua_createtable(L, n, 0);
  sc_sched_hold(s, 1);
  int rc = 0;
  for (int i = 1; i <= n && rc == 0; i++) {
    lua_rawgeti(L, 2, i);
    uint32_t id;
    rc = sc_sched_proxy_add(s, lua_tostring(L, -1), &id);
    lua_pop(L, 1);
    if (rc == 0) {
      lua_pushnumber(L, id);
      lua_rawseti(L, -2, i);
    }
  }
  sc_sched_hold(s, 0);
  if (rc < 0) return luaL_error(L, "scatter: out of memory");
  return 1;
}

/* core.pool_retire(pool, id, retired) */
int sc_lua_pool_retire(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  sc_sched_proxy_retire(s, check_id(L, s, 2), lua_toboolean(L, 3));
  return 0;
}

/* core.pool_probe(pool, ids) -> how many dead proxies got a probe */
int sc_lua_pool_probe(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int n = (int)lua_objlen(L, 2), armed = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    check_id(L, s, -1);
    lua_pop(L, 1);
  }
  sc_sched_hold(s, 1);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    armed += sc_sched_proxy_probe(s, (uint32_t)lua_tonumber(L, -1)) == 1;
    lua_pop(L, 1);
  }
  sc_sched_hold(s, 0);
  lua_pushinteger(L, armed);
  return 1;
}
