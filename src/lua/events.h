/* The event loop as the Lua runtime drives it: finished work is queued as
 * events (a pool's attempt with a response, an op's result) that core.poll
 * hands to Lua after each loop pass. C never calls Lua.
 */
#ifndef SC_LUA_EVENTS_H
#define SC_LUA_EVENTS_H

#include <lua.h>
#include <stdint.h>

/* The default loop; raises when libuv/libcurl cannot start. */
struct sc_loop *sc_lua_loop(lua_State *L); /* an sc_loop_t (net/loop.h) */
/* Queues an event for core.poll; pool 0 means an op. */
void sc_events_push(int pool, uint64_t a, uint64_t t);

#endif
