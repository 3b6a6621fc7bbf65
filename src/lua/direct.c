/* A session's pinned requests (lua/scatter/session.lua): one transfer
 * through the session's proxy of a pool, outside the race. The outcome
 * still reaches the pool's health (sc_sched_record): a transport failure
 * here, the classifier's verdict through pool:record.
 *
 *   pool:direct(proxy_id, host, method, url, headers, body, max_body,
 *               flags, cookies) -> op id | nil, err   (nil: the proxy
 *       cannot carry this host at all, the socks4 rule of DESIGN.md 11;
 *       nothing started)
 *       op result {status = HTTP status} or {status = 0, err = "kind: ..."}
 *   pool:direct_response(op id) -> {status, headers, body, url, proxy,
 *       method, cookies}, latency | nil   (frees the transfer)
 *   pool:direct_tunnel(op id) -> tunnel, latency | nil   (flags 8: a
 *       CONNECT_ONLY tunnel to url's host:port, as pool:tunnel's)
 *   pool:direct_cancel(op id)
 *   pool:record(proxy_id, host, verdict, latency)
 */
#include <stdlib.h>
#include <string.h>

#include "../core/health.h"
#include "../core/proxyurl.h"
#include "headers.h"
#include "ops.h"
#include "pool_int.h"
#include "tunref.h"

typedef struct direct {
  sc_req_t req;
  sc_xfer_t *x;
  lpool *pool;
  uint32_t op, proxy, host;
  struct direct *prev, *next;
} direct;

static direct *directs;

static void direct_free(direct *d) {
  if (d->prev)
    d->prev->next = d->next;
  else
    directs = d->next;
  if (d->next) d->next->prev = d->prev;
  sc_xfer_free(d->x);
  free(d->req.method);
  free(d->req.url);
  curl_slist_free_all(d->req.headers);
  curl_slist_free_all(d->req.cookies);
  free(d->req.body);
  free(d);
}

static direct *find(uint32_t op) {
  for (direct *d = directs; d; d = d->next)
    if (d->op == op) return d;
  return NULL;
}

static void on_done(sc_xfer_t *x, void *ud) {
  direct *d = ud;
  if (sc_xfer_ok(x)) {
    /* a tunnel has no answer of its own (SOCKS): it is open */
    sc_ops_done(d->op, d->req.tunnel ? 200 : (int)x->status, NULL, 0, NULL);
    return; /* kept for pool:direct_response or pool:direct_tunnel */
  }
  char err[400], who[300], msg[720];
  sc_xfer_error(x, err, sizeof(err));
  sc_proxy_redact(sc_sched_proxy_key(d->pool->sched, d->proxy), who,
                  sizeof(who));
  snprintf(msg, sizeof(msg), "%s (proxy %s)", err, who);
  /* as in the race (pool.c): a failure of this process or a body over
   * max_body charges no pair; as transport failures they moved the
   * session and cooled its good proxy */
  int local = sc_xfer_local(x) || sc_xfer_too_large(x);
  sc_sched_record(d->pool->sched, d->proxy, d->host,
                  local ? SC_V_TARGET_ERROR : SC_V_TRANSPORT, x->elapsed);
  sc_ops_done(d->op, 0, NULL, 0, msg);
  direct_free(d);
}

static char *dup_str(lua_State *L, int i, size_t *len) {
  size_t n;
  const char *s = luaL_checklstring(L, i, &n);
  char *r = malloc(n + 1);
  if (!r) luaL_error(L, "scatter: out of memory");
  memcpy(r, s, n + 1);
  if (len) *len = n;
  return r;
}

static int l_direct(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  uint32_t proxy = (uint32_t)luaL_checknumber(L, 2);
  size_t hlen;
  const char *host = luaL_checklstring(L, 3, &hlen);
  const char *key = sc_sched_proxy_key(p->sched, proxy);
  uint32_t hid;
  if (!key) return luaL_argerror(L, 2, "no such proxy");
  if (sc_sched_host_id(p->sched, host, hlen, &hid) < 0)
    return luaL_error(L, "scatter: bad host name");
  /* the race checks this at each attempt's start; a pinned request
   * must too, or a socks4 session proxy would resolve names locally */
  char why[256];
  if (sc_xfer_route_check(key, host, p->xo.remote_dns, why, sizeof(why)) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  direct *d = calloc(1, sizeof(*d));
  if (!d) return luaL_error(L, "scatter: out of memory");
  d->next = directs;
  if (directs) directs->prev = d;
  directs = d;
  d->pool = p;
  d->proxy = proxy;
  d->host = hid;
  d->req.method = dup_str(L, 4, NULL);
  d->req.url = dup_str(L, 5, NULL);
  if (lua_istable(L, 6)) sc_lua_slist_from(L, 6, &d->req.headers);
  if (!lua_isnoneornil(L, 7)) d->req.body = dup_str(L, 7, &d->req.body_len);
  d->req.max_body = (size_t)luaL_optnumber(L, 8, 16.0 * 1024 * 1024);
  unsigned f = (unsigned)luaL_optinteger(L, 9, 0);
  d->req.follow = (f & 1) != 0;
  d->req.insecure = (f & 2) != 0;
  d->req.tunnel = (f & 8) != 0;
  d->req.cookie_engine = !d->req.tunnel;
  if (lua_istable(L, 10)) sc_lua_slist_from(L, 10, &d->req.cookies);
  d->op = sc_ops_new();
  /* the race's connect deadline (DESIGN.md 10): without it a pinned
   * request through a proxy gone silent waited the whole proxy_timeout */
  sc_xfer_opts_t xo = p->xo;
  xo.connect_timeout = sc_health_connect_timeout(p->sched);
  int rc =
      sc_xfer_start(&d->x, sc_loop_default(), &d->req, key, &xo, on_done, d);
  if (rc < 0) {
    d->x = NULL;
    direct_free(d);
    return luaL_error(L, "scatter: cannot start a transfer (%d)", rc);
  }
  lua_pushnumber(L, d->op);
  return 1;
}

static int l_direct_response(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  direct *d = find((uint32_t)luaL_checknumber(L, 2));
  if (!d || d->pool != p || !d->x || d->x->running) return 0;
  const sc_xfer_t *x = d->x;
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, x->status);
  lua_setfield(L, -2, "status");
  sc_headers_push(L, x->head ? x->head : "", x->head_len);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, x->body ? x->body : "", x->len);
  lua_setfield(L, -2, "body");
  const char *u = sc_xfer_url(x);
  lua_pushstring(L, u ? u : "");
  lua_setfield(L, -2, "url");
  char who[300];
  sc_proxy_redact(sc_sched_proxy_key(p->sched, d->proxy), who, sizeof(who));
  lua_pushstring(L, who);
  lua_setfield(L, -2, "proxy");
  lua_pushstring(L, d->req.method);
  lua_setfield(L, -2, "method");
  sc_lua_slist_push(L, x->cookies_out);
  lua_setfield(L, -2, "cookies");
  lua_pushnumber(L, x->elapsed);
  direct_free(d);
  return 2;
}

static int l_direct_tunnel(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  direct *d = find((uint32_t)luaL_checknumber(L, 2));
  if (!d || d->pool != p || !d->x || d->x->running || !d->req.tunnel) return 0;
  int fd = sc_xfer_take_socket(d->x);
  if (fd < 0) return 0;
  double latency = d->x->elapsed;
  sc_xfer_t *x = NULL;
  if (sc_xfer_tunnel_via_curl(d->x)) { /* it carries the bytes */
    x = d->x;
    d->x = NULL;
  }
  sc_lua_tunref_push(L, fd, x);
  lua_pushnumber(L, latency);
  direct_free(d);
  return 2;
}

static int l_direct_cancel(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  direct *d = find((uint32_t)luaL_checknumber(L, 2));
  if (d && d->pool == p) direct_free(d);
  return 0;
}

static int l_record(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  uint32_t proxy = (uint32_t)luaL_checknumber(L, 2);
  size_t hlen;
  const char *host = luaL_checklstring(L, 3, &hlen);
  sc_verdict_t v;
  if (sc_verdict_parse(luaL_checkstring(L, 4), &v) < 0)
    return luaL_argerror(L, 4, "not a verdict");
  uint32_t hid;
  if (sc_sched_host_id(p->sched, host, hlen, &hid) < 0 ||
      sc_sched_record_rest(p->sched, proxy, hid, v, luaL_optnumber(L, 5, 0),
                           luaL_optnumber(L, 6, -1)) < 0)
    return luaL_argerror(L, 2, "no such proxy");
  return 0;
}

/* pool:pair_usable(proxy_id, host) -> false when the proxy is dead, the
 * pair cools down or rests after a Retry-After: a session then moves. */
static int l_pair_usable(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  uint32_t proxy = (uint32_t)luaL_checknumber(L, 2);
  size_t hlen;
  const char *host = luaL_checklstring(L, 3, &hlen);
  uint32_t hid;
  sc_pair_info_t pi;
  int ok = proxy < sc_sched_proxy_count(p->sched) &&
           !sc_sched_proxy_is_dead(p->sched, proxy) &&
           sc_sched_host_id(p->sched, host, hlen, &hid) == 0;
  if (ok && sc_sched_pair_info(p->sched, proxy, hid, &pi) == 0) {
    /* an attempt's start moves the gate one rate interval on; a gate past
     * that is a rest the site asked for (DESIGN.md 11), which a pinned
     * request ignoring the rate limit still must not go through */
    double now = sc_loop_now();
    ok = pi.cooldown_until <= now &&
         pi.rate_next <= now + p->sched->hosts[hid].interval + 1e-9;
  }
  lua_pushboolean(L, ok);
  return 1;
}

/* Its waiter must not wait forever: the op ends "closed". */
void sc_lua_direct_close_pool(lpool *p) {
  for (direct *d = directs, *n; d; d = n) {
    n = d->next;
    if (d->pool != p) continue;
    if (d->x && d->x->running) sc_ops_done(d->op, 0, NULL, 0, "closed");
    direct_free(d);
  }
}

void sc_lua_direct_register(lua_State *L) {
  const luaL_Reg m[] = {{"direct", l_direct},
                        {"direct_response", l_direct_response},
                        {"direct_tunnel", l_direct_tunnel},
                        {"direct_cancel", l_direct_cancel},
                        {"record", l_record},
                        {"pair_usable", l_pair_usable}};
  for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
    lua_pushcfunction(L, m[i].func);
    lua_setfield(L, -2, m[i].name);
  }
}
