/* The pool userdata (src/lua/pool.c, pool_int.h) as seen by the other binding files. */
#ifndef SC_LUA_POOL_H
#define SC_LUA_POOL_H

#include <lua.h>

#include "../core/sched.h"

/* The scheduler of the open pool at stack index i; raises otherwise. */
sc_sched_t *sc_lua_pool_sched(lua_State *L, int i);

#endif
