/* An open CONNECT tunnel handed from a pool (pool:tunnel) to serve
 * (core.proxyd_tunnel) as a Lua value: a socket, and for a tunnel through
 * an https:// proxy the transfer whose curl handle carries its bytes.
 * Whoever takes it owns both; one nobody took is closed by the GC. */
#ifndef SC_LUA_TUNREF_H
#define SC_LUA_TUNREF_H

#include <lua.h>

#include "../net/xfer.h"

/* Pushes a tunnel of fd (and x, or NULL) owned by the new value. */
void sc_lua_tunref_push(lua_State *L, int fd, sc_xfer_t *x);
/* Takes the tunnel at index i out of its value: 0, or -1 when i is no
 * tunnel or one already taken. */
int sc_lua_tunref_take(lua_State *L, int i, int *fd, sc_xfer_t **x);

#endif
