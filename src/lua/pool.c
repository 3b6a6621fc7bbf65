/* The pool userdata (scatter.pool): a scheduler (src/core) with libcurl as
 * its transport. A finished attempt that carries an HTTP response is queued
 * as an event for Lua to classify (response.c settles the verdict);
 * transport failures never need Lua and are settled here.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/proxyurl.h"
#include "events.h"
#include "funcs.h"
#include "pool.h"
#include "pool_int.h"

#define MAX_POOLS 4096

/* NULL when out of memory: the error is then not kept */
char *sc_lua_pool_error_buf(lreq *r) {
  if (!r->last_error) {
    r->last_error = malloc(LAST_ERROR_SIZE);
    if (r->last_error) r->last_error[0] = '\0';
  }
  return r->last_error;
}

static lpool *pools[MAX_POOLS];

/* ---- the scheduler's environment ---- */

static double env_now(void *ud) {
  (void)ud;
  return sc_loop_now();
}

static void on_wake(void *ud) {
  lpool *p = ud;
  sc_sched_run(p->sched);
}

static void env_wake(void *ud, double at) {
  lpool *p = ud;
  if (at < 0) {
    sc_aftertimer_stop(p->wake);
    return;
  }
  /* libuv counts from its cached loop time: refresh it so the timer does
   * not fire before `at` on the scheduler's (hrtime) clock */
  uv_update_time(sc_loop_uv(sc_loop_default()));
  double d = at - sc_loop_now();
  uint64_t ms = d <= 0 ? 0 : (uint64_t)(d * 1000.0 + 0.999);
  /* after the poll: replies read meanwhile end their tasks before the
   * scheduler hedges them (aftertimer.h) */
  sc_aftertimer_start(p->wake, ms);
}

void sc_lua_pool_latt_free(latt *la) {
  sc_xfer_free(la->x);
  free(la);
}

static void on_xfer(sc_xfer_t *x, void *ud) {
  latt *la = ud;
  lpool *p = la->pool;
  const sc_attempt_t *a = sc_sched_attempt(p->sched, la->handle);
  if (!a) return; /* cannot happen: cancel frees the transfer first */
  if (x->handshake >= 0)
    sc_sched_attempt_handshake(p->sched, la->handle, x->handshake);
  if (sc_xfer_ok(x)) {
    /* the verdict comes from Lua's classifier, after this loop pass */
    sc_sched_attempt_answered(p->sched, la->handle);
    sc_events_push(p->id, la->handle, a->task);
    return;
  }
  lreq *r = a->task_ud;
  char err[400], who[300];
  sc_xfer_error(x, err, sizeof(err));
  sc_proxy_redact(sc_sched_proxy_key(p->sched, a->proxy), who, sizeof(who));
  char *eb = sc_lua_pool_error_buf(r);
  if (eb) snprintf(eb, LAST_ERROR_SIZE, "%s (proxy %s)", err, who);
  double latency = x->elapsed;
  sc_handle_t h = la->handle;
  ((sc_attempt_t *)a)->tdata = NULL;
  /* (a body over max_body is the target's size: blamed as a transport
   * failure it cooled every proxy of the pool in turn) */
  int local = sc_xfer_local(x) || sc_xfer_too_large(x);
  sc_lua_pool_latt_free(la);
  /* a local failure is retried like a target error, charging no pair */
  sc_sched_attempt_done(p->sched, h, local ? SC_V_TARGET_ERROR : SC_V_TRANSPORT,
                        latency);
}

static int env_start(void *ud, sc_attempt_t *a) {
  lpool *p = ud;
  lreq *r = a->task_ud;
  latt *la = calloc(1, sizeof(*la));
  if (!la) return SC_ENOMEM;
  la->pool = p;
  la->handle = a->handle;
  const char *key = sc_sched_proxy_key(p->sched, a->proxy);
  char why[256];
  int rc_route = sc_xfer_route_check(key, sc_sched_host_name(p->sched, a->host),
                                     p->xo.remote_dns, why, sizeof(why));
  if (rc_route < 0) {
    /* a failure of this pair, without a connection (DESIGN.md 11) */
    char *eb = sc_lua_pool_error_buf(r), who[300];
    sc_proxy_redact(key, who, sizeof(who));
    if (eb) snprintf(eb, LAST_ERROR_SIZE, "%s (proxy %s)", why, who);
    free(la);
    return SC_EINVAL;
  }
  sc_xfer_opts_t xo = p->xo;
  xo.connect_timeout = a->connect_timeout;
  int rc = sc_xfer_start(&la->x, sc_loop_default(), &r->req,
                         sc_sched_proxy_key(p->sched, a->proxy), &xo,
                         on_xfer, la);
  if (rc < 0) {
    char *eb = sc_lua_pool_error_buf(r);
    if (eb)
      snprintf(eb, LAST_ERROR_SIZE, "transport: cannot start a transfer (%d)",
               rc);
    free(la);
    return rc;
  }
  a->tdata = la;
  return 0;
}

static void env_cancel(void *ud, sc_attempt_t *a) {
  (void)ud;
  if (a->tdata) sc_lua_pool_latt_free(a->tdata);
  a->tdata = NULL;
}

/* ---- pool ---- */

lpool *sc_lua_pool_check(lua_State *L, int i) {
  lpool *p = luaL_checkudata(L, i, POOL_MT);
  if (!p->sched) luaL_error(L, "scatter: the pool is closed");
  return p;
}

sc_sched_t *sc_lua_pool_sched(lua_State *L, int i) {
  return sc_lua_pool_check(L, i)->sched;
}

static double opt_num(lua_State *L, int t, const char *k, double d) {
  lua_getfield(L, t, k);
  double v = lua_isnil(L, -1) ? d : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}


static void req_unlink(lpool *p, lreq *r) {
  if (r->prev) r->prev->next = r->next;
  else p->reqs = r->next;
  if (r->next) r->next->prev = r->prev;
}

void sc_lua_pool_req_free(lpool *p, lreq *r) {
  req_unlink(p, r);
  free(r->req.method);
  free(r->req.url);
  curl_slist_free_all(r->req.headers);
  curl_slist_free_all(r->req.cookies);
  free(r->req.body);
  free(r->last_error);
  free(r);
}

static void pool_close(lpool *p) {
  if (!p->sched) return;
  sc_lua_direct_close_pool(p);
  sc_sched_free(p->sched); /* cancels every attempt through env_cancel */
  p->sched = NULL;
  while (p->reqs) sc_lua_pool_req_free(p, p->reqs);
  /* every transfer is gone: this closes the pool's cached connections */
  curl_share_cleanup(p->xo.share);
  p->xo.share = NULL;
  sc_aftertimer_close(p->wake);
  p->wake = NULL;
  pools[p->id] = NULL;
  free(p->ca_file);
  p->ca_file = NULL;
  free(p->proxy_ca_file);
  p->proxy_ca_file = NULL;
}

/* core.pool_new(cfg) -> pool; cfg already validated by lua/scatter/config */
int sc_lua_pool_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  sc_loop_t *loop = sc_lua_loop(L);
  int id = -1;
  for (int i = 1; i < MAX_POOLS; i++) {
    if (!pools[i]) {
      id = i;
      break;
    }
  }
  if (id < 0) return luaL_error(L, "scatter: too many open pools");
  sc_config_t c;
  sc_config_init(&c);
  c.rate_interval = opt_num(L, 1, "rate_interval", c.rate_interval);
  c.proxy_timeout = opt_num(L, 1, "proxy_timeout", c.proxy_timeout);
  c.k_base = (int)opt_num(L, 1, "k_base", c.k_base);
  c.max_inflight = (int)opt_num(L, 1, "max_inflight", c.max_inflight);
  c.task_capacity = (int)opt_num(L, 1, "task_capacity", c.task_capacity);
  c.health_window = (int)opt_num(L, 1, "health_window", c.health_window);
  c.cooldown_base = opt_num(L, 1, "cooldown_base", c.cooldown_base);
  c.cooldown_max = opt_num(L, 1, "cooldown_max", c.cooldown_max);
  c.cooldown_fails = (int)opt_num(L, 1, "cooldown_fails", c.cooldown_fails);
  c.eviction_min_samples =
      (int)opt_num(L, 1, "eviction_min_samples", c.eviction_min_samples);
  c.hedge_delay = opt_num(L, 1, "hedge_delay", c.hedge_delay);
  c.connect_timeout = opt_num(L, 1, "connect_timeout", c.connect_timeout);
  c.rounds = (int)opt_num(L, 1, "rounds", c.rounds);
  c.seed = (uint64_t)opt_num(L, 1, "seed", (double)c.seed);

  lpool *p = lua_newuserdata(L, sizeof(*p));
  memset(p, 0, sizeof(*p));
  p->id = id;
  p->xo.timeout = c.proxy_timeout;
  lua_getfield(L, 1, "remote_dns");
  p->xo.remote_dns = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "tls_session_sharing");
  p->no_tls_share = !lua_isnil(L, -1) && !lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "consensus_404");
  p->no_consensus = !lua_isnil(L, -1) && !lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "ca_file");
  if (!lua_isnil(L, -1)) {
    p->ca_file = strdup(luaL_checkstring(L, -1));
    p->xo.ca_file = p->ca_file;
  }
  lua_pop(L, 1);
  lua_getfield(L, 1, "proxy_ca_file");
  if (!lua_isnil(L, -1)) {
    p->proxy_ca_file = strdup(luaL_checkstring(L, -1));
    p->xo.proxy_ca_file = p->proxy_ca_file;
  }
  lua_pop(L, 1);
  p->xo.share = curl_share_init();
  if (!p->xo.share ||
      sc_aftertimer_new(sc_loop_uv(loop), on_wake, p, &p->wake) < 0) {
    curl_share_cleanup(p->xo.share);
    free(p->ca_file);
    free(p->proxy_ca_file);
    return luaL_error(L, "scatter: out of memory");
  }
  /* a pool's own connection cache, so that closing the pool closes them */
  curl_share_setopt(p->xo.share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  /* and its TLS sessions: a target's session, got through one proxy,
   * resumes the handshake through every other (DESIGN.md section 10) */
  if (!p->no_tls_share)
    curl_share_setopt(p->xo.share, CURLSHOPT_SHARE,
                      CURL_LOCK_DATA_SSL_SESSION);
  sc_env_t env = {p, env_now, env_wake, env_start, env_cancel};
  int rc = sc_sched_new(&p->sched, &c, &env);
  if (rc < 0) {
    sc_aftertimer_close(p->wake);
    curl_share_cleanup(p->xo.share);
    free(p->ca_file);
    free(p->proxy_ca_file);
    return luaL_error(L, "scatter: invalid pool configuration (%d)", rc);
  }
  pools[id] = p;
  luaL_getmetatable(L, POOL_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int l_pool_id(lua_State *L) {
  lua_pushinteger(L, sc_lua_pool_check(L, 1)->id);
  return 1;
}

/* Parses one proxy line into key. Returns 0 when key holds a proxy, else
 * the number of Lua results pushed: false (blank or comment) or nil, why. */
static int parse_line(lua_State *L, const char *line, size_t len,
                      sc_proxy_scheme_t dflt, char *key, size_t cap) {
  const char *why = NULL;
  int rc = sc_proxy_parse_as(line, len, dflt, key, cap, &why);
  if (rc == 1) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, why ? why : "invalid proxy");
    return 2;
  }
  return 0;
}

/* pool:add_proxy(line) -> key, added | false (blank) | nil, why */
static int l_pool_add_proxy(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  size_t len;
  const char *line = luaL_checklstring(L, 2, &len);
  char key[512];
  int nres = parse_line(L, line, len, SC_PX_SOCKS5, key, sizeof(key));
  if (nres) return nres;
  uint32_t before = sc_sched_proxy_count(p->sched), id;
  if (sc_sched_proxy_add(p->sched, key, &id) < 0)
    return luaL_error(L, "scatter: out of memory");
  lua_pushstring(L, key);
  lua_pushboolean(L, sc_sched_proxy_count(p->sched) > before);
  return 2;
}

static int l_pool_host_interval(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  size_t len;
  const char *h = luaL_checklstring(L, 2, &len);
  double iv = luaL_checknumber(L, 3);
  uint32_t id;
  if (sc_sched_host_id(p->sched, h, len, &id) < 0 ||
      sc_sched_host_interval(p->sched, id, iv) < 0)
    return luaL_error(L, "scatter: bad host or interval");
  return 0;
}

static char *dup_mem(const char *s, size_t n) {
  char *r = malloc(n + 1);
  if (r) {
    memcpy(r, s, n);
    r[n] = '\0';
  }
  return r;
}

/* Appends the strings of the list at index i to *l. */
void sc_lua_slist_from(lua_State *L, int i, struct curl_slist **l) {
  int n = (int)lua_objlen(L, i);
  for (int k = 1; k <= n; k++) {
    lua_rawgeti(L, i, k);
    struct curl_slist *nl = curl_slist_append(*l, luaL_checkstring(L, -1));
    if (nl) *l = nl;
    lua_pop(L, 1);
  }
}

/* pool:submit(host, method, url, headers, body, max_body, flags, cookies)
 * -> task
 * | nil, "pool_full". headers: a list of "Name: value" lines or nil; body,
 * max_body: nil for none / the default; flags: 1 follow redirects, 2
 * insecure, 4 no race, 8 a tunnel (url http://host:port; pool:tunnel);
 * cookies: a session's jar (lines, xfer.h), its response then carries
 * proxy_id and the jar after it. Positional: lua_getfield would intern
 * each field name again for every request. */
static int l_pool_submit(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  size_t hlen, mlen, ulen, blen = 0;
  const char *host = luaL_checklstring(L, 2, &hlen);
  const char *method = luaL_checklstring(L, 3, &mlen);
  const char *url = luaL_checklstring(L, 4, &ulen);
  const char *body = luaL_optlstring(L, 6, NULL, &blen);
  double max_body = luaL_optnumber(L, 7, 16.0 * 1024 * 1024);
  unsigned f = (unsigned)luaL_optinteger(L, 8, 0);
  if (!sc_sched_has_room(p->sched)) {
    lua_pushnil(L);
    lua_pushliteral(L, "pool_full");
    return 2;
  }
  uint32_t hid;
  if (sc_sched_host_id(p->sched, host, hlen, &hid) < 0)
    return luaL_error(L, "scatter: bad host name");
  lreq *r = calloc(1, sizeof(*r));
  if (!r) return luaL_error(L, "scatter: out of memory");
  r->pool = p;
  r->next = p->reqs;
  if (p->reqs) p->reqs->prev = r;
  p->reqs = r;
  r->req.method = dup_mem(method, mlen);
  r->req.url = dup_mem(url, ulen);
  if (body) {
    r->req.body = dup_mem(body, blen);
    r->req.body_len = blen;
  }
  r->req.max_body = (size_t)max_body;
  r->req.follow = (f & 1) != 0;
  r->req.insecure = (f & 2) != 0;
  r->req.tunnel = (f & 8) != 0;
  unsigned flags = (f & 4) ? SC_TASK_NORACE : 0;
  if (lua_istable(L, 9)) { /* a session's jar */
    r->req.cookie_engine = 1;
    sc_lua_slist_from(L, 9, &r->req.cookies);
  }
  if (lua_istable(L, 5)) {
    int n = (int)lua_objlen(L, 5);
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, 5, i);
      struct curl_slist *nl =
          curl_slist_append(r->req.headers, luaL_checkstring(L, -1));
      if (nl) r->req.headers = nl;
      lua_pop(L, 1);
    }
  }
  if (!r->req.method || !r->req.url || (body && !r->req.body)) {
    sc_lua_pool_req_free(p, r);
    return luaL_error(L, "scatter: out of memory");
  }
  sc_handle_t th;
  int rc = sc_sched_submit(p->sched, hid, flags, r, &th);
  if (rc < 0) {
    sc_lua_pool_req_free(p, r);
    lua_pushnil(L);
    lua_pushstring(L, rc == SC_EFULL ? "pool_full" : "submit failed");
    return 2;
  }
  lua_pushnumber(L, (lua_Number)th);
  return 1;
}

/* pool:cancel(task) -> last transport error or nil */
static int l_pool_cancel(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  sc_handle_t th = check_handle(L, 2);
  lreq *r = sc_sched_task_ud(p->sched, th);
  if (!r) return 0;
  sc_sched_cancel(p->sched, th);
  if (r->last_error && r->last_error[0]) lua_pushstring(L, r->last_error);
  else lua_pushnil(L);
  sc_lua_pool_req_free(p, r);
  return 1;
}

static int l_pool_last_error(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  lreq *r = sc_sched_task_ud(p->sched, check_handle(L, 2));
  if (r && r->last_error && r->last_error[0])
    lua_pushstring(L, r->last_error);
  else lua_pushnil(L);
  return 1;
}

static int l_pool_attempts(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  lua_pushinteger(L, sc_sched_task_attempts(p->sched, check_handle(L, 2)));
  return 1;
}

#define SETN(name, val)                                                        \
  do {                                                                         \
    lua_pushnumber(L, (lua_Number)(val));                                      \
    lua_setfield(L, -2, name);                                                 \
  } while (0)

static int l_pool_metrics(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  sc_metrics_t m;
  sc_sched_metrics(p->sched, &m);
  lua_createtable(L, 0, 40);
  SETN("total_proxies", m.total_proxies);
  SETN("healthy_proxies", m.healthy_proxies);
  SETN("cooldown_proxies", m.cooldown_proxies);
  SETN("dead_proxies", m.dead_proxies);
  SETN("retired_proxies", m.retired_proxies);
  SETN("untested_proxies", m.untested_proxies);
  SETN("failing_proxies", m.failing_proxies);
  SETN("pending_tasks", m.pending_tasks);
  SETN("ready_tasks", m.ready_tasks);
  SETN("delayed_tasks", m.delayed_tasks);
  SETN("running_tasks", m.running_tasks);
  SETN("completed_tasks", m.completed_tasks);
  SETN("failed_tasks", m.failed_tasks);
  SETN("throughput_1s", m.throughput_1s);
  SETN("throughput_10s", m.throughput_10s);
  SETN("throughput_60s", m.throughput_60s);
  SETN("success_rate_1m", m.success_rate_1m);
  SETN("avg_latency_ms", m.avg_latency_ms);
  SETN("inflight", m.inflight);
  SETN("requeued_tasks", m.requeued_tasks);
  SETN("zero_available_events", m.zero_available_events);
  SETN("skipped_no_permit", m.skipped_no_permit);
  SETN("skipped_rate_limit", m.skipped_rate_limit);
  SETN("skipped_cooldown", m.skipped_cooldown);
  SETN("dispatch_count", m.dispatch_count);
  SETN("k_current", m.k_current);
  SETN("attempts_started", m.attempts_started);
  SETN("attempts_cancelled", m.attempts_cancelled);
  SETN("attempts_finished", m.attempts_finished);
  SETN("attempts_succeeded", m.attempts_succeeded);
  SETN("attempts_replaced", m.attempts_replaced);
  SETN("attempts_hedged", m.attempts_hedged);
  SETN("handshakes", m.handshakes);
  SETN("connect_timeout_ms", m.connect_timeout * 1000.0);
  SETN("handshake_p95_ms",
       m.handshake_p95 < 0 ? -1 : m.handshake_p95 * 1000.0);
  lua_createtable(L, 0, SC_V__COUNT);
  for (int i = 0; i < SC_V__COUNT; i++) {
    lua_pushnumber(L, (lua_Number)m.verdicts[i]);
    lua_setfield(L, -2, sc_verdict_name((sc_verdict_t)i));
  }
  lua_setfield(L, -2, "verdicts");
  return 1;
}

static int l_pool_pending(lua_State *L) {
  lua_pushinteger(L, sc_sched_pending(sc_lua_pool_check(L, 1)->sched));
  return 1;
}

static int l_pool_has_room(lua_State *L) {
  lua_pushboolean(L, sc_sched_has_room(sc_lua_pool_check(L, 1)->sched));
  return 1;
}

/* pool:proxies() -> { {key=, redacted=, dead=, attempts=, successes=}, ... } */
static int l_pool_proxies(lua_State *L) {
  lpool *p = sc_lua_pool_check(L, 1);
  uint32_t n = sc_sched_proxy_count(p->sched);
  lua_createtable(L, (int)n, 0);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t att = 0, ok = 0;
    char who[300];
    const char *key = sc_sched_proxy_key(p->sched, i);
    sc_sched_proxy_totals(p->sched, i, &att, &ok);
    sc_proxy_redact(key, who, sizeof(who));
    lua_createtable(L, 0, 5);
    lua_pushstring(L, key);
    lua_setfield(L, -2, "key");
    lua_pushstring(L, who);
    lua_setfield(L, -2, "redacted");
    lua_pushboolean(L, sc_sched_proxy_is_dead(p->sched, i) == 1);
    lua_setfield(L, -2, "dead");
    SETN("attempts", att);
    SETN("successes", ok);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

static int l_pool_close(lua_State *L) {
  lpool *p = luaL_checkudata(L, 1, POOL_MT);
  pool_close(p);
  return 0;
}

/* core.parse_proxy(line[, scheme]) -> key | false (blank/comment) | nil,
 * why; scheme: the protocol of a bare host:port line (default socks5) */
int sc_lua_parse_proxy(lua_State *L) {
  size_t len, sl;
  const char *line = luaL_checklstring(L, 1, &len);
  const char *sn = luaL_optlstring(L, 2, "socks5", &sl);
  sc_proxy_scheme_t dflt;
  if (sc_proxy_scheme_parse(sn, sl, &dflt) != 0)
    return luaL_argerror(L, 2, "unknown proxy scheme");
  char key[512];
  int nres = parse_line(L, line, len, dflt, key, sizeof(key));
  if (nres) return nres;
  lua_pushstring(L, key);
  return 1;
}

const luaL_Reg sc_lua_pool_methods[] = {
    {"id", l_pool_id},
    {"add_proxy", l_pool_add_proxy},
    {"host_interval", l_pool_host_interval},
    {"submit", l_pool_submit},
    {"cancel", l_pool_cancel},
    {"last_error", l_pool_last_error},
    {"attempts", l_pool_attempts},
    {"metrics", l_pool_metrics},
    {"pending", l_pool_pending},
    {"has_room", l_pool_has_room},
    {"proxies", l_pool_proxies},
    {"close", l_pool_close},
    {NULL, NULL}};
