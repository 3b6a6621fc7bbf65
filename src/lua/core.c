/* scatter.core: the C side of the Lua module.
 *
 * C never calls into Lua. A finished attempt that carries an HTTP response
 * is queued as an event; the Lua runtime drains the queue after each loop
 * pass (core.poll), classifies the response and reports the verdict
 * (pool:verdict). Transport failures never need Lua and are settled here.
 * So a classifier that errors or yields can never unwind through libuv.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "../core/proxyurl.h"
#include "../core/sched.h"
#include "../core/targeturl.h"
#include "../net/loop.h"
#include "../net/xfer.h"
#include "headers.h"
#include "funcs.h"
#include "ops.h"
#include "pool.h"

#define POOL_MT "scatter.pool"
#define MAX_POOLS 4096

typedef struct lpool lpool;

typedef struct lreq { /* a task's request; the scheduler's task ud */
  sc_req_t req;
  lpool *pool;
  struct lreq *prev, *next;
  /* allocated at the first failure: most tasks never fail, and 100,000
   * pending tasks paid 1 KiB each for it (bench/memory.lua) */
  char *last_error;
} lreq;

#define LAST_ERROR_SIZE 1024

/* NULL when out of memory: the error is then not kept */
static char *last_error_buf(lreq *r) {
  if (!r->last_error) {
    r->last_error = malloc(LAST_ERROR_SIZE);
    if (r->last_error) r->last_error[0] = '\0';
  }
  return r->last_error;
}

typedef struct latt { /* an attempt's transport data */
  sc_xfer_t *x;
  lpool *pool;
  sc_handle_t handle;
} latt;

struct lpool {
  sc_sched_t *sched;
  uv_timer_t *wake;
  sc_xfer_opts_t xo;
  char *ca_file;
  char *proxy_ca_file;
  int id;
  lreq *reqs; /* every live request, to free them at close */
};

typedef struct event {
  int pool;
  sc_handle_t attempt, task;
} event;

static struct {
  event *v;
  size_t n, cap;
} events;

static lpool *pools[MAX_POOLS];

static sc_loop_t *loop_or_die(lua_State *L) {
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

/* ---- the scheduler's environment ---- */

static double env_now(void *ud) {
  (void)ud;
  return sc_loop_now();
}

static void on_wake(uv_timer_t *t) {
  lpool *p = t->data;
  sc_sched_run(p->sched);
}

static void env_wake(void *ud, double at) {
  lpool *p = ud;
  if (at < 0) {
    uv_timer_stop(p->wake);
    return;
  }
  /* libuv counts from its cached loop time: refresh it so the timer does
   * not fire before `at` on the scheduler's (hrtime) clock */
  uv_update_time(p->wake->loop);
  double d = at - sc_loop_now();
  uint64_t ms = d <= 0 ? 0 : (uint64_t)(d * 1000.0 + 0.999);
  uv_timer_start(p->wake, on_wake, ms, 0);
}

static void latt_free(latt *la) {
  sc_xfer_free(la->x);
  free(la);
}

static void on_xfer(sc_xfer_t *x, void *ud) {
  latt *la = ud;
  lpool *p = la->pool;
  const sc_attempt_t *a = sc_sched_attempt(p->sched, la->handle);
  if (!a) return; /* cannot happen: cancel frees the transfer first */
  if (sc_xfer_ok(x)) {
    sc_events_push(p->id, la->handle, a->task);
    return;
  }
  lreq *r = a->task_ud;
  char err[400], who[300];
  sc_xfer_error(x, err, sizeof(err));
  sc_proxy_redact(sc_sched_proxy_key(p->sched, a->proxy), who, sizeof(who));
  char *eb = last_error_buf(r);
  if (eb) snprintf(eb, LAST_ERROR_SIZE, "%s (proxy %s)", err, who);
  double latency = x->elapsed;
  sc_handle_t h = la->handle;
  ((sc_attempt_t *)a)->tdata = NULL;
  latt_free(la);
  sc_sched_attempt_done(p->sched, h, SC_V_TRANSPORT, latency);
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
  if (sc_xfer_route_check(key, sc_sched_host_name(p->sched, a->host),
                          p->xo.remote_dns, why, sizeof(why)) < 0) {
    /* a failure of this pair, without a connection (DESIGN.md 11) */
    char *eb = last_error_buf(r), who[300];
    sc_proxy_redact(key, who, sizeof(who));
    if (eb) snprintf(eb, LAST_ERROR_SIZE, "%s (proxy %s)", why, who);
    free(la);
    return SC_EINVAL;
  }
  int rc = sc_xfer_start(&la->x, sc_loop_default(), &r->req,
                         sc_sched_proxy_key(p->sched, a->proxy), &p->xo,
                         on_xfer, la);
  if (rc < 0) {
    char *eb = last_error_buf(r);
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
  if (a->tdata) latt_free(a->tdata);
  a->tdata = NULL;
}

/* ---- pool ---- */

static lpool *check_pool(lua_State *L, int i) {
  lpool *p = luaL_checkudata(L, i, POOL_MT);
  if (!p->sched) luaL_error(L, "scatter: the pool is closed");
  return p;
}

sc_sched_t *sc_lua_pool_sched(lua_State *L, int i) {
  return check_pool(L, i)->sched;
}

static double opt_num(lua_State *L, int t, const char *k, double d) {
  lua_getfield(L, t, k);
  double v = lua_isnil(L, -1) ? d : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static void free_timer(uv_handle_t *h) { free(h); }

static void req_unlink(lpool *p, lreq *r) {
  if (r->prev) r->prev->next = r->next;
  else p->reqs = r->next;
  if (r->next) r->next->prev = r->prev;
}

static void req_free(lpool *p, lreq *r) {
  req_unlink(p, r);
  free(r->req.method);
  free(r->req.url);
  curl_slist_free_all(r->req.headers);
  free(r->req.body);
  free(r->last_error);
  free(r);
}

static void pool_close(lpool *p) {
  if (!p->sched) return;
  sc_sched_free(p->sched); /* cancels every attempt through env_cancel */
  p->sched = NULL;
  while (p->reqs) req_free(p, p->reqs);
  /* every transfer is gone: this closes the pool's cached connections */
  curl_share_cleanup(p->xo.share);
  p->xo.share = NULL;
  uv_timer_stop(p->wake);
  uv_close((uv_handle_t *)p->wake, free_timer);
  p->wake = NULL;
  pools[p->id] = NULL;
  free(p->ca_file);
  p->ca_file = NULL;
  free(p->proxy_ca_file);
  p->proxy_ca_file = NULL;
}

/* core.pool_new(cfg) -> pool; cfg already validated by lua/scatter/config */
static int l_pool_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  sc_loop_t *loop = loop_or_die(L);
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
  c.seed = (uint64_t)opt_num(L, 1, "seed", (double)c.seed);

  lpool *p = lua_newuserdata(L, sizeof(*p));
  memset(p, 0, sizeof(*p));
  p->id = id;
  p->xo.timeout = c.proxy_timeout;
  lua_getfield(L, 1, "remote_dns");
  p->xo.remote_dns = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
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
  p->wake = malloc(sizeof(*p->wake));
  p->xo.share = curl_share_init();
  if (!p->wake || !p->xo.share) {
    free(p->wake);
    curl_share_cleanup(p->xo.share);
    free(p->ca_file);
    free(p->proxy_ca_file);
    return luaL_error(L, "scatter: out of memory");
  }
  /* a pool's own connection cache, so that closing the pool closes them */
  curl_share_setopt(p->xo.share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  uv_timer_init(sc_loop_uv(loop), p->wake);
  p->wake->data = p;
  sc_env_t env = {p, env_now, env_wake, env_start, env_cancel};
  int rc = sc_sched_new(&p->sched, &c, &env);
  if (rc < 0) {
    uv_close((uv_handle_t *)p->wake, free_timer);
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
  lua_pushinteger(L, check_pool(L, 1)->id);
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
  lpool *p = check_pool(L, 1);
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
  lpool *p = check_pool(L, 1);
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

/* pool:submit(host, method, url, headers, body, max_body, flags) -> task
 * | nil, "pool_full". headers: a list of "Name: value" lines or nil; body,
 * max_body: nil for none / the default; flags: 1 follow redirects, 2
 * insecure, 4 no race. Positional: lua_getfield would intern each field
 * name again for every request. */
static int l_pool_submit(lua_State *L) {
  lpool *p = check_pool(L, 1);
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
  unsigned flags = (f & 4) ? SC_TASK_NORACE : 0;
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
    req_free(p, r);
    return luaL_error(L, "scatter: out of memory");
  }
  sc_handle_t th;
  int rc = sc_sched_submit(p->sched, hid, flags, r, &th);
  if (rc < 0) {
    req_free(p, r);
    lua_pushnil(L);
    lua_pushstring(L, rc == SC_EFULL ? "pool_full" : "submit failed");
    return 2;
  }
  lua_pushnumber(L, (lua_Number)th);
  return 1;
}

static sc_handle_t check_handle(lua_State *L, int i) {
  return (sc_handle_t)luaL_checknumber(L, i);
}

/* pool:cancel(task) -> last transport error or nil */
static int l_pool_cancel(lua_State *L) {
  lpool *p = check_pool(L, 1);
  sc_handle_t th = check_handle(L, 2);
  lreq *r = sc_sched_task_ud(p->sched, th);
  if (!r) return 0;
  sc_sched_cancel(p->sched, th);
  if (r->last_error && r->last_error[0]) lua_pushstring(L, r->last_error);
  else lua_pushnil(L);
  req_free(p, r);
  return 1;
}

static int l_pool_last_error(lua_State *L) {
  lpool *p = check_pool(L, 1);
  lreq *r = sc_sched_task_ud(p->sched, check_handle(L, 2));
  if (r && r->last_error && r->last_error[0])
    lua_pushstring(L, r->last_error);
  else lua_pushnil(L);
  return 1;
}

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
  lua_pushstring(L, ((lreq *)a->task_ud)->req.method);
  set_key(L, RK_METHOD);
}

/* Settles attempt ah (alive) with verdict v; returns 1 when that ended
 * its task (the request is freed then). */
static int settle(lpool *p, sc_handle_t ah, sc_attempt_t *a, sc_verdict_t v) {
  lreq *r = a->task_ud;
  double latency = 0;
  if (a->tdata) {
    latency = ((latt *)a->tdata)->x->elapsed;
    if (v != SC_V_SUCCESS && v != SC_V_FINAL) {
      char who[300];
      sc_proxy_redact(sc_sched_proxy_key(p->sched, a->proxy), who, sizeof(who));
      char *eb = last_error_buf(r);
      if (eb)
        snprintf(eb, LAST_ERROR_SIZE, "%s: HTTP %ld (proxy %s)",
                 sc_verdict_name(v), ((latt *)a->tdata)->x->status, who);
    }
    latt_free(a->tdata);
    a->tdata = NULL;
  }
  int won = sc_sched_attempt_done(p->sched, ah, v, latency) == 1;
  if (won) req_free(p, r);
  return won;
}

/* pool:response(attempt) -> {status, headers, body, url, proxy, method},
 * latency; or nil when the attempt is gone (its task already ended). */
static int l_pool_response(lua_State *L) {
  lpool *p = check_pool(L, 1);
  const sc_attempt_t *a = sc_sched_attempt(p->sched, check_handle(L, 2));
  if (!a || !a->tdata) return 0;
  push_response(L, p, a);
  lua_pushnumber(L, ((latt *)a->tdata)->x->elapsed);
  return 2;
}

/* pool:verdict(attempt, name) -> won (the task is over) */
static int l_pool_verdict(lua_State *L) {
  lpool *p = check_pool(L, 1);
  sc_handle_t ah = check_handle(L, 2);
  sc_verdict_t v;
  if (sc_verdict_parse(luaL_checkstring(L, 3), &v) < 0)
    return luaL_argerror(L, 3, "not a verdict");
  sc_attempt_t *a = (sc_attempt_t *)sc_sched_attempt(p->sched, ah);
  lua_pushboolean(L, a && settle(p, ah, a, v));
  return 1;
}

/* The default classifier (lua/scatter/classifier.lua M.default; a spec
 * holds the two to the same table). */
static sc_verdict_t default_verdict(const sc_xfer_t *x, const lreq *r) {
  long s = x->status;
  if (s >= 200 && s < 300)
    return x->len > 0 || s == 204 || strcmp(r->req.method, "HEAD") == 0
               ? SC_V_SUCCESS
               : SC_V_PROXY_BLOCKED;
  if (s >= 500 && s < 600) return SC_V_TARGET_ERROR;
  return SC_V_PROXY_BLOCKED;
}

/* pool:settle_default(attempt) -> resp, attempts when the default
 * classifier's success ends the task; false when the attempt failed (no
 * response table is built); nil when the attempt is gone. One call for
 * what response + classify + attempts + verdict do for other classifiers:
 * the hot path of a pool that keeps the default. */
static int l_pool_settle_default(lua_State *L) {
  lpool *p = check_pool(L, 1);
  sc_handle_t ah = check_handle(L, 2);
  sc_attempt_t *a = (sc_attempt_t *)sc_sched_attempt(p->sched, ah);
  if (!a || !a->tdata) return 0;
  sc_verdict_t v = default_verdict(((latt *)a->tdata)->x, a->task_ud);
  if (v != SC_V_SUCCESS) {
    settle(p, ah, a, v);
    lua_pushboolean(L, 0);
    return 1;
  }
  push_response(L, p, a);
  int attempts = sc_sched_task_attempts(p->sched, a->task);
  if (!settle(p, ah, a, v)) { /* a success that did not end its task */
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushinteger(L, attempts);
  return 2;
}

static int l_pool_attempts(lua_State *L) {
  lpool *p = check_pool(L, 1);
  lua_pushinteger(L, sc_sched_task_attempts(p->sched, check_handle(L, 2)));
  return 1;
}

#define SETN(name, val)                                                        \
  do {                                                                         \
    lua_pushnumber(L, (lua_Number)(val));                                      \
    lua_setfield(L, -2, name);                                                 \
  } while (0)

static int l_pool_metrics(lua_State *L) {
  lpool *p = check_pool(L, 1);
  sc_metrics_t m;
  sc_sched_metrics(p->sched, &m);
  lua_createtable(L, 0, 40);
  SETN("total_proxies", m.total_proxies);
  SETN("healthy_proxies", m.healthy_proxies);
  SETN("cooldown_proxies", m.cooldown_proxies);
  SETN("dead_proxies", m.dead_proxies);
  SETN("retired_proxies", m.retired_proxies);
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
  lua_createtable(L, 0, SC_V__COUNT);
  for (int i = 0; i < SC_V__COUNT; i++) {
    lua_pushnumber(L, (lua_Number)m.verdicts[i]);
    lua_setfield(L, -2, sc_verdict_name((sc_verdict_t)i));
  }
  lua_setfield(L, -2, "verdicts");
  return 1;
}

static int l_pool_pending(lua_State *L) {
  lua_pushinteger(L, sc_sched_pending(check_pool(L, 1)->sched));
  return 1;
}

static int l_pool_has_room(lua_State *L) {
  lua_pushboolean(L, sc_sched_has_room(check_pool(L, 1)->sched));
  return 1;
}

/* pool:proxies() -> { {key=, redacted=, dead=, attempts=, successes=}, ... } */
static int l_pool_proxies(lua_State *L) {
  lpool *p = check_pool(L, 1);
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

/* ---- module functions ---- */

static int l_now(lua_State *L) {
  lua_pushnumber(L, sc_loop_now());
  return 1;
}

/* core.url_host(url) -> lower-cased host, or nil, why */
static int l_url_host(lua_State *L) {
  size_t n, sl = 0;
  const char *u = luaL_checklstring(L, 1, &n);
  const char *scheme = NULL;
  char host[1024];
  switch (sc_url_host(u, n, host, sizeof(host), &scheme, &sl)) {
  case SC_URL_OK: lua_pushstring(L, host); return 1;
  case SC_URL_CONTROL:
    lua_pushnil(L);
    lua_pushliteral(L, "url contains spaces or control characters");
    return 2;
  case SC_URL_RELATIVE:
    lua_pushnil(L);
    lua_pushfstring(L, "not an absolute http(s) URL: %s", u);
    return 2;
  case SC_URL_SCHEME: {
    char low[64];
    size_t k = 0;
    for (; k < sl && k < sizeof(low) - 1; k++)
      low[k] = (scheme[k] >= 'A' && scheme[k] <= 'Z') ? (char)(scheme[k] + 32)
                                                       : scheme[k];
    low[k] = '\0';
    lua_pushnil(L);
    lua_pushfstring(L, "unsupported scheme '%s' (http or https only)", low);
    return 2;
  }
  case SC_URL_NO_HOST:
    lua_pushnil(L);
    lua_pushfstring(L, "no host in URL: %s", u);
    return 2;
  case SC_URL_BAD_PORT:
    lua_pushnil(L);
    lua_pushfstring(L, "bad port in URL: %s", u);
    return 2;
  default:
    lua_pushnil(L);
    lua_pushfstring(L, "bad host in URL: %s", u);
    return 2;
  }
}

/* core.poll(timeout, out) -> n, alive: one loop pass; out gets n events as
 * (pool id, attempt, task) triples, or (0, op id, 0) for an op's result;
 * alive is false when no handle is left that could ever wake the loop. */
static int l_poll(lua_State *L) {
  double timeout = luaL_checknumber(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  sc_loop_t *l = loop_or_die(L);
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

static int l_op_take(lua_State *L) {
  return sc_ops_push(L, (uint32_t)luaL_checknumber(L, 1));
}

static int l_fd(lua_State *L) {
  lua_pushinteger(L, sc_loop_fd(loop_or_die(L)));
  return 1;
}

static int l_backend_timeout(lua_State *L) {
  sc_loop_t *l = loop_or_die(L);
  int ms = sc_loop_timeout(l);
  /* libuv says 0 for a loop with nothing active, which would make an
   * embedding loop spin; nothing active means no deadline */
  if (ms < 0 || !uv_loop_alive(sc_loop_uv(l))) lua_pushnil(L);
  else lua_pushnumber(L, ms / 1000.0);
  return 1;
}

/* core.parse_proxy(line[, scheme]) -> key | false (blank/comment) | nil,
 * why; scheme: the protocol of a bare host:port line (default socks5) */
static int l_parse_proxy(lua_State *L) {
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

static int l_redact(lua_State *L) {
  char out[600];
  sc_proxy_redact(luaL_checkstring(L, 1), out, sizeof(out));
  lua_pushstring(L, out);
  return 1;
}

static int l_versions(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, curl_version());
  lua_setfield(L, -2, "curl");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "uv");
  return 1;
}

static const luaL_Reg pool_methods[] = {
    {"id", l_pool_id},
    {"add_proxy", l_pool_add_proxy},
    {"host_interval", l_pool_host_interval},
    {"submit", l_pool_submit},
    {"cancel", l_pool_cancel},
    {"last_error", l_pool_last_error},
    {"verdict", l_pool_verdict},
    {"attempts", l_pool_attempts},
    {"metrics", l_pool_metrics},
    {"pending", l_pool_pending},
    {"has_room", l_pool_has_room},
    {"proxies", l_pool_proxies},
    {"close", l_pool_close},
    {NULL, NULL}};

static const luaL_Reg funcs[] = {{"pool_new", l_pool_new},
                                 {"simulate", sc_lua_simulate},
                                 {"now", l_now},
                                 {"url_host", l_url_host},
                                 {"op_take", l_op_take},
                                 {"fetch", sc_lua_fetch},
                                 {"state_clock", sc_lua_state_clock},
                                 {"state_proxies", sc_lua_state_proxies},
                                 {"state_hosts", sc_lua_state_hosts},
                                 {"state_pairs", sc_lua_state_pairs},
                                 {"state_check", sc_lua_state_check},
                                 {"state_restore", sc_lua_state_restore},
                                 {"write_atomic", sc_lua_write_atomic},
                                 {"pool_hold", sc_lua_pool_hold},
                                 {"pool_add_keys", sc_lua_pool_add_keys},
                                 {"pool_retire", sc_lua_pool_retire},
                                 {"pool_probe", sc_lua_pool_probe},
                                 {"signal_watch", sc_lua_signal_watch},
                                 {"probe", sc_lua_probe},
                                 {"httpd_listen", sc_lua_httpd_listen},
                                 {"httpd_respond", sc_lua_httpd_respond},
                                 {"httpd_close", sc_lua_httpd_close},
                                 {"poll", l_poll},
                                 {"fd", l_fd},
                                 {"backend_timeout", l_backend_timeout},
                                 {"parse_proxy", l_parse_proxy},
                                 {"redact", l_redact},
                                 {"versions", l_versions},
                                 {NULL, NULL}};

int luaopen_scatter_core(lua_State *L) {
  if (luaL_newmetatable(L, POOL_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, pool_methods);
    const luaL_Reg builders[] = {{"response", l_pool_response},
                                 {"settle_default", l_pool_settle_default}};
    for (size_t i = 0; i < sizeof(builders) / sizeof(builders[0]); i++) {
      for (int k = 0; k < N_RESP_KEYS; k++) lua_pushstring(L, RESP_KEYS[k]);
      lua_pushcclosure(L, builders[i].func, N_RESP_KEYS);
      lua_setfield(L, -2, builders[i].name);
    }
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_pool_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
