/* core.fetch{url=, timeout=, ca_file=, max_body=} -> op id: a direct
 * (proxy-less) GET, used only for proxy lists. The result is an op result
 * {status = HTTP status, body = ..., err = "kind: detail"}. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "../net/xfer.h"
#include "funcs.h"
#include "ops.h"

typedef struct fetch_op {
  sc_req_t req;
  sc_xfer_t *x;
  char *ca_file;
  uint32_t id;
} fetch_op;

static void fetch_free(fetch_op *f) {
  free(f->req.method);
  free(f->req.url);
  free(f->ca_file);
  free(f);
}

static void on_done(sc_xfer_t *x, void *ud) {
  fetch_op *f = ud;
  if (sc_xfer_ok(x)) {
    sc_ops_done(f->id, (int)x->status, x->body ? x->body : "", x->len, NULL);
  } else {
    char err[512];
    sc_xfer_error(x, err, sizeof(err));
    sc_ops_done(f->id, 0, NULL, 0, err);
  }
  sc_xfer_free(x);
  fetch_free(f);
}

int sc_lua_fetch(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "url");
  const char *url = luaL_checkstring(L, -1);
  lua_getfield(L, 1, "timeout");
  double timeout = luaL_optnumber(L, -1, 10);
  lua_getfield(L, 1, "max_body");
  double max_body = luaL_optnumber(L, -1, 64.0 * 1024 * 1024);
  lua_getfield(L, 1, "ca_file");
  const char *ca = luaL_optstring(L, -1, NULL);
  sc_loop_t *loop = sc_loop_default();
  fetch_op *f = calloc(1, sizeof(*f));
  if (!loop || !f) {
    free(f);
    return luaL_error(L, "scatter: cannot start a fetch");
  }
  f->req.method = strdup("GET");
  f->req.url = strdup(url);
  f->req.max_body = (size_t)max_body;
  f->req.follow = 1;
  f->ca_file = ca ? strdup(ca) : NULL;
  f->id = sc_ops_new();
  sc_xfer_opts_t o = {.timeout = timeout, .ca_file = f->ca_file};
  if (!f->req.method || !f->req.url ||
      sc_xfer_start(&f->x, loop, &f->req, NULL, &o, on_done, f) < 0) {
    fetch_free(f);
    return luaL_error(L, "scatter: cannot start a fetch of %s", url);
  }
  lua_pushnumber(L, f->id);
  return 1;
}
