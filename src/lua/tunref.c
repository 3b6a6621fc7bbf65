#include "tunref.h"

#include <lauxlib.h>
#include <unistd.h>

#define TUNREF_MT "scatter.tunnel"

typedef struct tunref {
  int fd;
  sc_xfer_t *x;
} tunref;

static int tunref_gc(lua_State *L) {
  tunref *r = luaL_checkudata(L, 1, TUNREF_MT);
  if (r->fd >= 0) close(r->fd);
  /* a tunnel not relayed: removing the handle closes its connection */
  sc_xfer_free(r->x);
  r->fd = -1;
  r->x = NULL;
  return 0;
}

void sc_lua_tunref_push(lua_State *L, int fd, sc_xfer_t *x) {
  tunref *r = lua_newuserdata(L, sizeof(*r));
  r->fd = fd;
  r->x = x;
  if (luaL_newmetatable(L, TUNREF_MT)) {
    lua_pushcfunction(L, tunref_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
}

int sc_lua_tunref_take(lua_State *L, int i, int *fd, sc_xfer_t **x) {
  tunref *r = luaL_testudata(L, i, TUNREF_MT);
  if (!r || r->fd < 0) return -1;
  *fd = r->fd;
  *x = r->x;
  r->fd = -1;
  r->x = NULL;
  return 0;
}
