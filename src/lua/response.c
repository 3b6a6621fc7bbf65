/* An attempt's response as a Lua table, and the verdicts that settle it
 * (pool:response, pool:verdict, pool:settle_default). */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/proxyurl.h"
#include "../net/retryafter.h"
#include "headers.h"
#include "pool_int.h"
#include "tunref.h"

/* The response table's keys, upvalues of the two functions that build it:
 * lua_setfield would intern each name again for every response. */
static const char *const RESP_KEYS[] = {"status", "headers", "body",
                                        "url",    "proxy",   "method"};
enum { RK_STATUS = 1, RK_HEADERS, RK_BODY, RK_URL, RK_PROXY, RK_METHOD };
#define N_RESP_KEYS ((int)(sizeof(RESP_KEYS) / sizeof(RESP_KEYS[0])))

static void set_key(lua_State *L, int k) {
  lua_pushvalue(L, lua_upvalueindex(k));
  lua_insert(L, -2);
  lua_rawset(L, -3);
}

/* Pushes attempt a's response table (status, headers, body, url, proxy,
 * method), with room for the two fields Lua adds on delivery. Only from
 * a function with the RESP_KEYS upvalues. */
static void push_response(lua_State *L, lpool *p, const sc_attempt_t *a) {
  const sc_xfer_t *x = ((latt *)a->tdata)->x;
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, x->status);
  set_key(L, RK_STATUS);
  sc_headers_push(L, x->head ? x->head : "", x->head_len);
  set_key(L, RK_HEADERS);
  lua_pushlstring(L, x->body ? x->body : "", x->len);
  set_key(L, RK_BODY);
  const char *u = sc_xfer_url(x);
  lua_pushstring(L, u ? u : "");
  set_key(L, RK_URL);
  char who[300];
  sc_proxy_redact(sc_sched_proxy_key(p->sched, a->proxy), who, sizeof(who));
  lua_pushstring(L, who);
  set_key(L, RK_PROXY);
  /* a classifier must know a HEAD's empty body is no block page */
  const lreq *r = a->task_ud;
  lua_pushstring(L, r->req.method);
  set_key(L, RK_METHOD);
  if (r->req.cookie_engine) { /* a session's: what it keeps */
    lua_pushnumber(L, a->proxy);
    lua_setfield(L, -2, "proxy_id");
    sc_lua_slist_push(L, x->cookies_out);
    lua_setfield(L, -2, "cookies");
  }
}

void sc_lua_slist_push(lua_State *L, const struct curl_slist *l) {
  lua_newtable(L);
  int n = 0;
  for (; l; l = l->next) {
    lua_pushstring(L, l->data);
    lua_rawseti(L, -2, ++n);
  }
}

/* Settles attempt ah (alive) with verdict v; returns 1 when that ended
 * its task (the request is freed then). */
/* The verdict reaches the scheduler; 1 when it won the task. */
static int settled(lpool *p, sc_handle_t ah, sc_attempt_t *a, sc_verdict_t v,
                   double latency, double rest) {
  lreq *r = a->task_ud;
  int won = sc_sched_attempt_rest(p->sched, ah, v, latency, rest) == 1;
  if (won) sc_lua_pool_req_free(p, r);
  return won;
}

static int settle(lpool *p, sc_handle_t ah, sc_attempt_t *a, sc_verdict_t v,
                  const char *why) {
  lreq *r = a->task_ud;
  double latency = 0, rest = -1;
  if (a->tdata) {
    const sc_xfer_t *x = ((latt *)a->tdata)->x;
    latency = x->elapsed;
    /* a 429 or 503 that says when to come back, and is not delivered:
     * the pair rests that long, blocked but never evicted for it, and
     * the task moves on at once (DESIGN.md section 11) */
    if (v == SC_V_PROXY_BLOCKED || v == SC_V_TARGET_ERROR)
      rest = sc_retry_after(x->status, x->head, x->head_len, (double)time(NULL));
    if (rest >= 0) v = SC_V_PROXY_BLOCKED;
    if (v != SC_V_SUCCESS && v != SC_V_FINAL) {
      char who[300];
      sc_proxy_redact(sc_sched_proxy_key(p->sched, a->proxy), who, sizeof(who));
      char *eb = sc_lua_pool_error_buf(r);
      if (eb && rest >= 0)
        snprintf(eb, LAST_ERROR_SIZE, "%s: HTTP %ld, Retry-After %gs (proxy %s)",
                 sc_verdict_name(v), x->status, rest, who);
      else if (eb && why) /* the classifier failed: say so, not just the status */
        snprintf(eb, LAST_ERROR_SIZE, "%s: HTTP %ld, %.200s (proxy %s)",
                 sc_verdict_name(v), x->status, why, who);
      else if (eb)
        snprintf(eb, LAST_ERROR_SIZE, "%s: HTTP %ld (proxy %s)",
                 sc_verdict_name(v), x->status, who);
    }
    sc_lua_pool_latt_free(a->tdata);
    a->tdata = NULL;
  }
  return settled(p, ah, a, v, latency, rest);
}

/* pool:response(attempt) -> {status, headers, body, url, proxy, method},
 * latency; or nil when the attempt is gone (its task already ended). */
static int l_pool_response(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  const sc_attempt_t *a = sc_sched_attempt(p->sched, check_handle(L, 2));
  if (!a || !a->tdata) return 0;
  push_response(L, p, a);
  lua_pushnumber(L, ((latt *)a->tdata)->x->elapsed);
  return 2;
}

/* pool:verdict(attempt, name [, why]) -> won (the task is over); why: the
 * classifier's failure, for the request's last error */
static int l_pool_verdict(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  sc_handle_t ah = check_handle(L, 2);
  sc_verdict_t v;
  if (sc_verdict_parse(luaL_checkstring(L, 3), &v) < 0)
    return luaL_argerror(L, 3, "not a verdict");
  const char *why = luaL_optstring(L, 4, NULL);
  sc_attempt_t *a = (sc_attempt_t *)sc_sched_attempt(p->sched, ah);
  lua_pushboolean(L, a && settle(p, ah, a, v, why));
  return 1;
}

/* The default classifier (lua/scatter/classifier.lua M.default; a spec
 * holds the two to the same table). */
static sc_verdict_t default_verdict(const sc_xfer_t *x, lreq *r,
                                    const lpool *p, uint32_t proxy) {
  long s = x->status;
  /* a 404 or 410 may be a proxy's lie or the truth: no pair is charged
   * for it (target_error), and a different proxy giving the same status
   * for the task settles it as the target's real answer. With no other
   * proxy alive to ask, this one's answer is the best there will be (a
   * pool of one waited out the caller's timeout for a second opinion) */
  if ((s == 404 || s == 410) && !p->no_consensus) {
    if (r->gone_status == s && r->gone_proxy != proxy) return SC_V_FINAL;
    if (!sc_sched_proxy_others_live(p->sched, proxy)) return SC_V_FINAL;
    r->gone_status = s;
    r->gone_proxy = proxy;
    return SC_V_TARGET_ERROR;
  }
  if (s >= 200 && s < 300)
    return x->len > 0 || s == 204 || strcmp(r->req.method, "HEAD") == 0
               ? SC_V_SUCCESS
               : SC_V_PROXY_BLOCKED;
  /* a 503 with Retry-After asks this client to slow down: a block */
  if (s == 503 && sc_retry_after(s, x->head, x->head_len, (double)time(NULL)) >= 0)
    return SC_V_PROXY_BLOCKED;
  if (s >= 500 && s < 600) return SC_V_TARGET_ERROR;
  return SC_V_PROXY_BLOCKED;
}

/* pool:settle_default(attempt) -> resp, attempts when the default
 * classifier's success ends the task; false when the attempt failed (no
 * response table is built); nil when the attempt is gone. One call for
 * what response + classify + attempts + verdict do for other classifiers:
 * the hot path of a pool that keeps the default. */
static int l_pool_settle_default(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  sc_handle_t ah = check_handle(L, 2);
  sc_attempt_t *a = (sc_attempt_t *)sc_sched_attempt(p->sched, ah);
  if (!a || !a->tdata) return 0;
  sc_verdict_t v = default_verdict(((latt *)a->tdata)->x, a->task_ud, p, a->proxy);
  if (v != SC_V_SUCCESS && v != SC_V_FINAL) {
    settle(p, ah, a, v, NULL);
    lua_pushboolean(L, 0);
    return 1;
  }
  push_response(L, p, a);
  int attempts = sc_sched_task_attempts(p->sched, a->task);
  if (!settle(p, ah, a, v, NULL)) { /* a success that did not end its task */
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushinteger(L, attempts);
  return 2;
}

/* pool:tunnel(attempt) -> tunnel, proxy, attempts, proxy id: the open
 * tunnel of a tunnel task's attempt (a tunref.h value, the caller's),
 * which wins the task. nil when the attempt is gone. */
static int l_pool_tunnel(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  sc_handle_t ah = check_handle(L, 2);
  sc_attempt_t *a = (sc_attempt_t *)sc_sched_attempt(p->sched, ah);
  if (!a || !a->tdata) return 0;
  latt *la = a->tdata;
  int fd = sc_xfer_take_socket(la->x);
  if (fd < 0) return luaL_error(L, "scatter: pool:tunnel: not a tunnel");
  /* through an https:// proxy the transfer itself is the tunnel: it
   * leaves the attempt, which settling frees */
  sc_xfer_t *x = sc_xfer_tunnel_via_curl(la->x) ? la->x : NULL;
  double latency = la->x->elapsed;
  if (x) la->x = NULL;
  sc_lua_pool_latt_free(la);
  a->tdata = NULL;
  char who[300];
  sc_proxy_redact(sc_sched_proxy_key(p->sched, a->proxy), who, sizeof(who));
  int attempts = sc_sched_task_attempts(p->sched, a->task);
  uint32_t proxy = a->proxy; /* settling frees the attempt */
  if (!settled(p, ah, a, SC_V_SUCCESS, latency, -1)) {
    close(fd);
    sc_xfer_free(x);
    return 0;
  }
  sc_lua_tunref_push(L, fd, x);
  lua_pushstring(L, who);
  lua_pushinteger(L, attempts);
  lua_pushnumber(L, proxy); /* a session's proxy, when it asked */
  return 4;
}

void sc_lua_response_register(lua_State *L) {
  lua_pushcfunction(L, l_pool_verdict);
  lua_setfield(L, -2, "verdict");
  lua_pushcfunction(L, l_pool_tunnel);
  lua_setfield(L, -2, "tunnel");
  const luaL_Reg builders[] = {{"response", l_pool_response},
                               {"settle_default", l_pool_settle_default}};
  for (size_t i = 0; i < sizeof(builders) / sizeof(builders[0]); i++) {
    for (int k = 0; k < N_RESP_KEYS; k++) lua_pushstring(L, RESP_KEYS[k]);
    lua_pushcclosure(L, builders[i].func, N_RESP_KEYS);
    lua_setfield(L, -2, builders[i].name);
  }
}
