/* core.probe{proxy=, url=, timeout=, remote_dns=, ca_file=, insecure=,
 *            max_body=, scheme=, proxy_ca_file=} -> op id: one GET through one proxy, outside any
 * pool (no scheduler, no health), for `scatter check`. The op result is
 * {status = HTTP status, body = ...} or {status = 0, err = "kind: detail"}
 * with the kinds of sc_xfer_error. A bad proxy key is an argument error.
 * scheme: the protocol of a bare host:port (`scatter check --detect` tries
 * each). */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "../core/proxyurl.h"
#include "../net/xfer.h"
#include "ops.h"

#include "funcs.h"

typedef struct probe_op {
  sc_req_t req;
  sc_xfer_t *x;
  char *ca_file, *proxy_ca_file;
  uint32_t id;
} probe_op;

static void probe_free(probe_op *p) {
  free(p->req.method);
  free(p->req.url);
  free(p->ca_file);
  free(p->proxy_ca_file);
  free(p);
}

static void on_done(sc_xfer_t *x, void *ud) {
  probe_op *p = ud;
  if (sc_xfer_ok(x)) {
    sc_ops_done(p->id, (int)x->status, x->body ? x->body : "", x->len, NULL);
  } else {
    char err[512];
    sc_xfer_error(x, err, sizeof(err));
    sc_ops_done(p->id, 0, NULL, 0, err);
  }
  sc_xfer_free(x);
  probe_free(p);
}

int sc_lua_probe(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "proxy");
  size_t plen;
  const char *line = luaL_checklstring(L, -1, &plen);
  lua_getfield(L, 1, "url");
  const char *url = luaL_checkstring(L, -1);
  lua_getfield(L, 1, "timeout");
  double timeout = luaL_optnumber(L, -1, 8);
  lua_getfield(L, 1, "max_body");
  double max_body = luaL_optnumber(L, -1, 4.0 * 1024 * 1024);
  lua_getfield(L, 1, "ca_file");
  const char *ca = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "remote_dns");
  int remote_dns = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
  lua_getfield(L, 1, "insecure");
  int insecure = lua_toboolean(L, -1);
  lua_getfield(L, 1, "scheme");
  size_t sl;
  const char *sn = luaL_optlstring(L, -1, "socks5", &sl);
  lua_getfield(L, 1, "proxy_ca_file");
  const char *pca = luaL_optstring(L, -1, NULL);
  sc_proxy_scheme_t dflt;
  if (sc_proxy_scheme_parse(sn, sl, &dflt) != 0)
    return luaL_argerror(L, 1, "scheme is not a proxy scheme");
  char key[512];
  const char *why = NULL;
  if (sc_proxy_parse_as(line, plen, dflt, key, sizeof(key), &why) != 0)
    return luaL_argerror(L, 1, "proxy is not a proxy address");
  sc_loop_t *loop = sc_loop_default();
  probe_op *p = calloc(1, sizeof(*p));
  if (!loop || !p) {
    free(p);
    return luaL_error(L, "scatter: cannot start a probe");
  }
  p->req.method = strdup("GET");
  p->req.url = strdup(url);
  p->req.max_body = (size_t)max_body;
  p->req.insecure = insecure;
  p->ca_file = ca ? strdup(ca) : NULL;
  p->proxy_ca_file = pca ? strdup(pca) : NULL;
  p->id = sc_ops_new();
  /* Each proxy is probed once: a connection kept for reuse would never be
   * used again and thousands of them would exhaust the descriptors. */
  sc_xfer_opts_t o = {.timeout = timeout, .ca_file = p->ca_file,
                      .proxy_ca_file = p->proxy_ca_file,
                      .remote_dns = remote_dns, .no_reuse = 1};
  if (!p->req.method || !p->req.url ||
      sc_xfer_start(&p->x, loop, &p->req, key, &o, on_done, p) < 0) {
    probe_free(p);
    return luaL_error(L, "scatter: cannot start a probe of %s", url);
  }
  lua_pushnumber(L, p->id);
  return 1;
}
