/* scatter.core.simulate: the simulator (src/core/sim.c) for Lua.
 *
 * Takes the table lua/scatter/simulate.lua builds after validating the
 * user's input, so errors here are programming errors (luaL_check*). The
 * whole run happens in C; Lua only sees the report.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "../core/sim.h"
#include "../core/simmem.h"

#include "funcs.h"

static double opt_num(lua_State *L, int t, const char *k, double d) {
  lua_getfield(L, t, k);
  double v = lua_isnil(L, -1) ? d : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* An integer field in [lo, hi]: a cast of an out-of-range double is
 * undefined behaviour, so the range is checked here too. */
static double opt_int(lua_State *L, int t, const char *k, double d, double lo,
                      double hi) {
  double v = opt_num(L, t, k, d);
  if (!(v >= lo && v <= hi) || v != (double)(int64_t)v)
    luaL_error(L, "scatter.simulate: %s must be an integer from %f to %f", k,
               lo, hi);
  return v;
}

#define INT_FIELD(t, k, d) (int)opt_int(L, t, k, d, 0, 2147483647.0)
#define U64_FIELD(t, k, d) (uint64_t) opt_int(L, t, k, d, 0, 9007199254740992.0)

static void read_config(lua_State *L, int t, sc_config_t *c) {
  sc_config_init(c);
  if (lua_isnil(L, t)) return;
  luaL_checktype(L, t, LUA_TTABLE);
  c->rate_interval = opt_num(L, t, "rate_interval", c->rate_interval);
  c->proxy_timeout = opt_num(L, t, "proxy_timeout", c->proxy_timeout);
  c->k_base = INT_FIELD(t, "k_base", c->k_base);
  c->max_inflight = INT_FIELD(t, "max_inflight", c->max_inflight);
  c->task_capacity = INT_FIELD(t, "task_capacity", c->task_capacity);
  c->health_window = INT_FIELD(t, "health_window", c->health_window);
  c->cooldown_base = opt_num(L, t, "cooldown_base", c->cooldown_base);
  c->cooldown_max = opt_num(L, t, "cooldown_max", c->cooldown_max);
  c->cooldown_fails = INT_FIELD(t, "cooldown_fails", c->cooldown_fails);
  c->eviction_min_samples =
      INT_FIELD(t, "eviction_min_samples", c->eviction_min_samples);
  c->hedge_delay = opt_num(L, t, "hedge_delay", c->hedge_delay);
  c->connect_timeout = opt_num(L, t, "connect_timeout", c->connect_timeout);
  c->rounds = (int)opt_num(L, t, "rounds", c->rounds);
  c->seed = U64_FIELD(t, "seed", (double)c->seed);
}

#define SIM_MT "scatter.simulation"

/* The simulator lives in a userdata box until the report is built, so an
 * error anywhere (ours or Lua's out of memory) frees it through __gc. */
static int box_gc(lua_State *L) {
  sc_sim_t **box = luaL_checkudata(L, 1, SIM_MT);
  sc_sim_free(*box);
  *box = NULL;
  return 0;
}

static int fail(lua_State *L, const char *what, int rc) {
  return luaL_error(L, "scatter.simulate: %s (%d)", what, rc);
}

#define SETN(name, val)                                                        \
  do {                                                                         \
    lua_pushnumber(L, (lua_Number)(val));                                      \
    lua_setfield(L, -2, name);                                                 \
  } while (0)

static void push_verdicts(lua_State *L, const uint64_t *v) {
  lua_createtable(L, 0, SC_V__COUNT);
  for (int i = 0; i < SC_V__COUNT; i++) {
    lua_pushnumber(L, (lua_Number)v[i]);
    lua_setfield(L, -2, sc_verdict_name((sc_verdict_t)i));
  }
}

static void push_metrics(lua_State *L, const sc_metrics_t *m) {
  lua_createtable(L, 0, 40);
  SETN("total_proxies", m->total_proxies);
  SETN("healthy_proxies", m->healthy_proxies);
  SETN("cooldown_proxies", m->cooldown_proxies);
  SETN("dead_proxies", m->dead_proxies);
  SETN("retired_proxies", m->retired_proxies);
  SETN("untested_proxies", m->untested_proxies);
  SETN("failing_proxies", m->failing_proxies);
  SETN("pending_tasks", m->pending_tasks);
  SETN("ready_tasks", m->ready_tasks);
  SETN("delayed_tasks", m->delayed_tasks);
  SETN("running_tasks", m->running_tasks);
  SETN("completed_tasks", m->completed_tasks);
  SETN("failed_tasks", m->failed_tasks);
  SETN("cancelled_tasks", m->cancelled_tasks);
  SETN("throughput_1s", m->throughput_1s);
  SETN("throughput_10s", m->throughput_10s);
  SETN("throughput_60s", m->throughput_60s);
  SETN("success_rate_1m", m->success_rate_1m);
  SETN("avg_latency_ms", m->avg_latency_ms);
  SETN("inflight", m->inflight);
  SETN("requeued_tasks", m->requeued_tasks);
  SETN("zero_available_events", m->zero_available_events);
  SETN("skipped_no_permit", m->skipped_no_permit);
  SETN("skipped_rate_limit", m->skipped_rate_limit);
  SETN("skipped_cooldown", m->skipped_cooldown);
  SETN("dispatch_count", m->dispatch_count);
  SETN("k_current", m->k_current);
  SETN("k_sum", m->k_sum);
  SETN("attempts_started", m->attempts_started);
  SETN("attempts_cancelled", m->attempts_cancelled);
  SETN("attempts_finished", m->attempts_finished);
  SETN("attempts_succeeded", m->attempts_succeeded);
  SETN("attempts_replaced", m->attempts_replaced);
  SETN("attempts_hedged", m->attempts_hedged);
  SETN("handshakes", m->handshakes);
  SETN("connect_timeout_ms", m->connect_timeout * 1000.0);
  SETN("handshake_p95_ms",
       m->handshake_p95 < 0 ? -1 : m->handshake_p95 * 1000.0);
  push_verdicts(L, m->verdicts);
  lua_setfield(L, -2, "verdicts");
}

static const char *const stop_names[] = {"done", "time_limit", "event_limit",
                                         "stalled", "hot_loop"};
static const char *const kind_names[] = {"start", "done", "cancel"};

static void push_trace(lua_State *L, sc_sim_t *sim) {
  size_t n;
  const sc_sim_event_t *ev = sc_sim_trace(sim, &n);
  sc_sched_t *s = sc_sim_sched(sim);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    const sc_sim_event_t *e = &ev[i];
    lua_createtable(L, 0, 6);
    SETN("t", e->t);
    lua_pushstring(L, kind_names[e->kind]);
    lua_setfield(L, -2, "kind");
    SETN("proxy", e->proxy + 1);
    lua_pushstring(L, sc_sched_host_name(s, e->host));
    lua_setfield(L, -2, "host");
    SETN("task", e->task);
    if (e->kind == SC_SIM_EV_DONE) {
      lua_pushstring(L, sc_verdict_name((sc_verdict_t)e->verdict));
      lua_setfield(L, -2, "verdict");
    }
    lua_rawseti(L, -2, (int)i + 1);
  }
}

static void push_proxies(lua_State *L, sc_sim_t *sim) {
  sc_sched_t *s = sc_sim_sched(sim);
  uint32_t n = sc_sched_proxy_count(s);
  lua_createtable(L, (int)n, 0);
  for (uint32_t i = 0; i < n; i++) {
    sc_sim_profile_t prof = SC_SIM_GOOD;
    uint32_t starts = 0, att = 0, ok = 0;
    sc_sim_proxy_info(sim, i, &prof, &starts);
    sc_sched_proxy_totals(s, i, &att, &ok);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, sc_sim_profile_name(prof));
    lua_setfield(L, -2, "profile");
    SETN("starts", starts);
    SETN("attempts", att);
    SETN("successes", ok);
    lua_pushboolean(L, sc_sched_proxy_is_dead(s, i) == 1);
    lua_setfield(L, -2, "dead");
    lua_rawseti(L, -2, (int)i + 1);
  }
}

static void push_report(lua_State *L, sc_sim_t *sim, const sc_sim_report_t *r,
                        uint64_t tasks) {
  sc_sched_t *s = sc_sim_sched(sim);
  lua_createtable(L, 0, 32);
  lua_pushstring(L, stop_names[r->stopped]);
  lua_setfield(L, -2, "stopped");
  SETN("tasks", tasks);
  SETN("submitted", r->submitted);
  SETN("delivered", r->delivered);
  SETN("attempts", r->attempts);
  SETN("cancelled", r->cancelled);
  SETN("events", r->events);
  SETN("wakes", r->wakes);
  SETN("virtual_seconds", r->virtual_seconds);
  SETN("dispatches", r->dispatches);
  SETN("zero_available_events", r->zero_available_events);
  SETN("k_mean", r->k_mean);
  SETN("latency_max", r->latency_max);
  SETN("latency_mean", r->latency_mean);
  SETN("max_inflight_seen", r->max_inflight_seen);
  SETN("max_task_parallel", r->max_task_parallel);
  lua_createtable(L, 0, SC_SIM__PROFILES);
  for (int i = 0; i < SC_SIM__PROFILES; i++)
    SETN(sc_sim_profile_name((sc_sim_profile_t)i), r->attempts_by_profile[i]);
  lua_setfield(L, -2, "attempts_by_profile");
  push_verdicts(L, r->verdicts);
  lua_setfield(L, -2, "verdicts");
  /* per host: the smallest gap between two starts through one pair */
  lua_newtable(L);
  for (uint32_t h = 0; h < sc_sched_host_count(s); h++) {
    double g = sc_sim_min_pair_gap(sim, h);
    if (g >= 0) SETN(sc_sched_host_name(s, h), g);
  }
  lua_setfield(L, -2, "min_pair_gap");
  push_metrics(L, &r->metrics);
  lua_setfield(L, -2, "metrics");
}

/* core.simulate{seed=, tasks=, norace=, time_limit=, event_limit=,
 *   config={<as core.pool_new>}, hosts={names}, intervals={per host, <0 none},
 *   groups={{count=, profile=, latency=, jitter=, success=, target_error=,
 *            script=, retry_after=}}, trace=nil|{limit=, proxy=<1-based>, host=<index>},
 *   proxy_stats=, memory=} -> report */
int sc_lua_simulate(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  sc_config_t cfg;
  lua_getfield(L, 1, "config");
  read_config(L, lua_gettop(L), &cfg);
  lua_pop(L, 1);

  sc_sim_opts_t o;
  memset(&o, 0, sizeof(o));
  o.seed = U64_FIELD(1, "seed", 1);
  o.tasks = U64_FIELD(1, "tasks", 0);
  o.time_limit = opt_num(L, 1, "time_limit", 0);
  o.event_limit = U64_FIELD(1, "event_limit", 0);
  lua_getfield(L, 1, "norace");
  o.task_flags = lua_toboolean(L, -1) ? SC_TASK_NORACE : 0;
  lua_pop(L, 1);
  int64_t trace_proxy = -1, trace_host_index = -1;
  lua_getfield(L, 1, "trace");
  int tracing = lua_istable(L, -1);
  if (tracing) {
    o.trace_limit =
        (uint32_t)opt_int(L, lua_gettop(L), "limit", 100000, 1, 4294967295.0);
    trace_proxy =
        (int64_t)opt_int(L, lua_gettop(L), "proxy", 0, 0, 4294967295.0) - 1;
    trace_host_index =
        (int64_t)opt_int(L, lua_gettop(L), "host", 0, 0, 4294967295.0) - 1;
  }
  lua_pop(L, 1);

  sc_sim_t **box = lua_newuserdata(L, sizeof(*box));
  *box = NULL;
  if (luaL_newmetatable(L, SIM_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  int rc = sc_sim_new(box, &cfg, &o);
  if (rc < 0) return fail(L, "bad configuration", rc);
  sc_sim_t *sim = *box;

  lua_getfield(L, 1, "hosts");
  lua_getfield(L, 1, "intervals");
  int nh = lua_istable(L, -2) ? (int)lua_objlen(L, -2) : 0;
  int64_t trace_host = -1;
  for (int i = 1; i <= nh; i++) {
    lua_rawgeti(L, -2, i);
    const char *name = lua_tostring(L, -1);
    lua_pop(L, 1);
    double iv = -1;
    if (lua_istable(L, -1)) {
      lua_rawgeti(L, -1, i);
      if (lua_isnumber(L, -1)) iv = lua_tonumber(L, -1);
      lua_pop(L, 1);
    }
    uint32_t id;
    if (!name || (rc = sc_sim_add_host(sim, name, iv, &id)) < 0)
      return fail(L, "bad host", rc);
    if (i - 1 == trace_host_index) trace_host = id;
  }
  lua_pop(L, 2);

  lua_getfield(L, 1, "groups");
  int ng = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
  for (int i = 1; i <= ng; i++) {
    lua_rawgeti(L, -1, i);
    int t = lua_gettop(L);
    sc_sim_group_t g;
    memset(&g, 0, sizeof(g));
    g.count = (uint32_t)opt_int(L, t, "count", 0, 0, 4294967295.0);
    lua_getfield(L, t, "profile");
    const char *pname = lua_tostring(L, -1);
    if (!pname || sc_sim_profile_parse(pname, &g.profile) < 0) {
      lua_pop(L, 1);
      return fail(L, "bad profile", SC_EINVAL);
    }
    lua_pop(L, 1);
    g.latency = opt_num(L, t, "latency", -1);
    g.jitter = opt_num(L, t, "jitter", -1);
    g.success = opt_num(L, t, "success", 1);
    g.target_error = opt_num(L, t, "target_error", 0);
    g.retry_after = opt_num(L, t, "retry_after", 1.5);
    lua_getfield(L, t, "script");
    g.script = lua_tostring(L, -1); /* copied by add_group */
    rc = sc_sim_add_group(sim, &g);
    lua_pop(L, 2);
    if (rc < 0) return fail(L, "bad proxy group", rc);
  }
  lua_pop(L, 1);
  if (tracing) sc_sim_trace_filter(sim, trace_proxy, trace_host);

  sc_sim_report_t r;
  if ((rc = sc_sim_run(sim, &r)) < 0) return fail(L, "run failed", rc);
  push_report(L, sim, &r, o.tasks);
  if (tracing) {
    push_trace(L, sim);
    lua_setfield(L, -2, "trace");
    SETN("trace_dropped", r.trace_dropped);
  }
  lua_getfield(L, 1, "proxy_stats");
  int stats = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (stats) {
    push_proxies(L, sim);
    lua_setfield(L, -2, "proxies");
  }
  lua_getfield(L, 1, "memory");
  int memory = lua_toboolean(L, -1);
  lua_pop(L, 1);
  sc_sim_free(sim); /* now, not at the next collection: it can be large */
  *box = NULL;
  if (memory) {
    sc_sim_sizes_t z;
    if (sc_sim_measure(&z) == 0) {
      lua_createtable(L, 0, 3);
      SETN("bytes_per_task", z.bytes_per_task);
      SETN("bytes_per_attempt", z.bytes_per_attempt);
      SETN("bytes_per_pair", z.bytes_per_pair);
      lua_setfield(L, -2, "memory");
    }
  }
  return 1;
}
