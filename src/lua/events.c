/* The event queue and the loop's Lua face (core.poll, core.fd,
 * core.backend_timeout, core.now). See events.h. */
#include "events.h"

#include <lauxlib.h>
#include <stdlib.h>

#include "../core/sched.h"
#include "../net/loop.h"
#include "funcs.h"

typedef struct event {
  int pool;
  sc_handle_t attempt, task;
} event;

static struct {
  event *v;
  size_t n, cap;
} events;

sc_loop_t *sc_lua_loop(lua_State *L) {
  sc_loop_t *l = sc_loop_default();
  if (!l) luaL_error(L, "scatter: cannot initialise libuv/libcurl");
  return l;
}

void sc_events_push(int pool, uint64_t a, uint64_t t) {
  if (events.n == events.cap) {
    size_t cap = events.cap ? events.cap * 2 : 256;
    event *nv = realloc(events.v, cap * sizeof(*nv));
    if (!nv) abort(); /* losing a completion would lose a task */
    events.v = nv;
    events.cap = cap;
  }
  events.v[events.n++] = (event){pool, a, t};
}

int sc_lua_now(lua_State *L) {
  lua_pushnumber(L, sc_loop_now());
  return 1;
}

/* core.poll(timeout, out) -> n, alive: one loop pass; out gets n events as
 * (pool id, attempt, task) triples, or (0, op id, 0) for an op's result;
 * alive is false when no handle is left that could ever wake the loop. */
int sc_lua_poll(lua_State *L) {
  double timeout = luaL_checknumber(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  sc_loop_t *l = sc_lua_loop(L);
  int alive = 1;
  if (events.n == 0) alive = sc_loop_run(l, timeout);
  size_t n = events.n;
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, events.v[i].pool);
    lua_rawseti(L, 2, (int)(3 * i + 1));
    lua_pushnumber(L, (lua_Number)events.v[i].attempt);
    lua_rawseti(L, 2, (int)(3 * i + 2));
    lua_pushnumber(L, (lua_Number)events.v[i].task);
    lua_rawseti(L, 2, (int)(3 * i + 3));
  }
  events.n = 0;
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushboolean(L, alive);
  return 2;
}

int sc_lua_fd(lua_State *L) {
  lua_pushinteger(L, sc_loop_fd(sc_lua_loop(L)));
  return 1;
}

int sc_lua_backend_timeout(lua_State *L) {
  sc_loop_t *l = sc_lua_loop(L);
  int ms = sc_loop_timeout(l);
  /* libuv says 0 for a loop with nothing active, which would make an
   * embedding loop spin; nothing active means no deadline */
  if (ms < 0 || !uv_loop_alive(sc_loop_uv(l))) lua_pushnil(L);
  else lua_pushnumber(L, ms / 1000.0);
  return 1;
}
