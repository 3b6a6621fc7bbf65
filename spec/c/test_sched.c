/* The scheduler's rules (DESIGN.md section 3), driven by hand through a fake
 * environment (fenv.h): dispatch, races, waits, rate limits, hedging,
 * capacity, retirement and the simulator's determinism. Health, cooldown,
 * eviction and adaptive K are in test_health.c. Every assertion is exact.
 *
 * Prints "N passed, N failed" (tests, not assertions) and exits 1 on any
 * failure. */
#include "fenv.h"
#include "../../src/core/sim.h"

static void test_config_defaults_and_validation(void) {
  sc_config_t c = base_config();
  CHECK(c.rate_interval == 0.5 && c.proxy_timeout == 8 && c.k_base == 3 &&
            c.max_inflight == 100 && c.task_capacity == 1000 &&
            c.health_window == 30 && c.cooldown_base == 30 &&
            c.cooldown_max == 300 && c.cooldown_fails == 3 &&
            c.eviction_min_samples == 30 && c.hedge_delay == 0,
        "defaults differ from DESIGN.md section 4");
  fenv e;
  sc_env_t env = {&e, f_now, f_wake, f_start, f_cancel};
  memset(&e, 0, sizeof(e));
  sc_sched_t *s = NULL;
  sc_config_t bad[6];
  for (int i = 0; i < 6; i++) bad[i] = c;
  bad[0].k_base = 0;
  bad[1].health_window = 65;
  bad[2].cooldown_max = 10; /* < cooldown_base */
  bad[3].max_inflight = 0;
  bad[4].rate_interval = -1;
  bad[5].eviction_min_samples = 0;
  for (int i = 0; i < 6; i++)
    CHECK(sc_sched_new(&s, &bad[i], &env) == SC_EINVAL, "bad config %d", i);
  sc_env_t noenv = env;
  noenv.start = NULL;
  CHECK(sc_sched_new(&s, &c, &noenv) == SC_EINVAL, "env without start");
}

static void test_names(void) {
  for (int i = 0; i < SC_V__COUNT; i++) {
    sc_verdict_t v;
    CHECK(sc_verdict_parse(sc_verdict_name((sc_verdict_t)i), &v) == 0 &&
              v == (sc_verdict_t)i,
          "verdict %d round trip", i);
  }
  sc_verdict_t v;
  CHECK(sc_verdict_parse("succes", &v) == SC_EINVAL, "unknown verdict");
  CHECK(sc_verdict_name(SC_V__COUNT) == NULL, "out of range name");

  fenv e;
  sc_config_t c = base_config();
  sc_sched_t *s = mk(&e, &c);
  uint32_t a = host(s, "A.Example.TEST"), b = host(s, "a.example.test"), x;
  CHECK(a == b, "host names are case-insensitive (%u vs %u)", a, b);
  CHECK(strcmp(sc_sched_host_name(s, a), "a.example.test") == 0, "lower-case");
  CHECK(sc_sched_host_id(s, "", 0, &x) == SC_EINVAL, "empty host");
  uint32_t p1, p2;
  sc_sched_proxy_add(s, "1.2.3.4:1080", &p1);
  sc_sched_proxy_add(s, "1.2.3.4:1080", &p2);
  CHECK(p1 == p2 && sc_sched_proxy_count(s) == 1, "duplicate proxies merge");
  CHECK(sc_sched_proxy_is_dead(s, 7) == SC_ENOPROXY, "unknown proxy");
  CHECK(sc_sched_submit(s, 9, 0, NULL, &(sc_handle_t){0}) == SC_EINVAL,
        "submit to an unknown host");
  sc_sched_free(s);
}

/* K attempts on distinct proxies; the first success wins, the others are
 * cancelled at once; every handle of the task is stale afterwards. */
static void test_race(void) {
  fenv e;
  sc_config_t c = base_config(); /* k_base 3: 6 paths in cold start */
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 10);
  uint32_t h = host(s, "a.test");
  sc_handle_t t = submit(s, h, 0);
  CHECK(e.nstarts == 6, "cold start K = 2 * 3, got %d starts", e.nstarts);
  for (int i = 0; i < e.nlive; i++)
    for (int j = i + 1; j < e.nlive; j++)
      CHECK(e.live[i].proxy != e.live[j].proxy, "distinct proxies");
  CHECK(sc_sched_task_attempts(s, t) == 6, "task attempts");
  sc_handle_t others[5];
  for (int i = 0; i < 5; i++) others[i] = e.live[i + 1].handle;
  sc_handle_t win = e.live[0].handle;
  e.now = 0.3;
  CHECK(finish(s, &e, 0, SC_V_SUCCESS, 0.3) == 1, "the success wins");
  CHECK(e.ncancels == 5 && e.nlive == 0, "5 losers cancelled, got %d",
        e.ncancels);
  for (int i = 0; i < 5; i++) {
    int found = 0;
    for (int j = 0; j < e.ncancels; j++) found |= e.cancelled[j] == others[i];
    CHECK(found, "loser %d cancelled", i);
    CHECK(sc_sched_attempt_done(s, others[i], SC_V_SUCCESS, 1) == SC_ENOENT,
          "a cancelled attempt cannot report");
  }
  CHECK(sc_sched_attempt_done(s, win, SC_V_SUCCESS, 1) == SC_ENOENT,
        "a finished attempt cannot report twice");
  CHECK(sc_sched_task_attempts(s, t) == SC_ENOENT, "the task handle is stale");
  CHECK(sc_sched_cancel(s, t) == SC_ENOENT, "cancel of a delivered task");
  sc_metrics_t m = metrics(s);
  CHECK(m.completed_tasks == 1 && m.attempts_cancelled == 5 &&
            m.inflight == 0 && m.pending_tasks == 0 && m.attempts_started == 6,
        "metrics after a race");
  CHECK(e.bad_cancel == 0, "cancel only what is in flight");
  sc_sched_free(s);
}

/* Every path of a round fails: the task is requeued; when no proxy is
 * eligible it waits, and the wake-up asked for is exactly the earliest time
 * a pair becomes eligible. */
static void test_requeue_and_exact_wake(void) {
  fenv e;
  sc_config_t c = base_config();
  c.k_base = 1; /* cold start: 2 paths */
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 2);
  uint32_t h = host(s, "a.test");
  submit(s, h, 0);
  CHECK(e.nstarts == 2, "two paths");
  e.now = 0.1;
  CHECK(finish(s, &e, 0, SC_V_PROXY_BLOCKED, 0.1) == 0, "no winner");
  e.now = 0.2;
  CHECK(finish(s, &e, 0, SC_V_TRANSPORT, 0.2) == 0, "no winner");
  sc_metrics_t m = metrics(s);
  CHECK(m.requeued_tasks == 1, "requeued once, got %llu",
        (unsigned long long)m.requeued_tasks);
  CHECK(m.zero_available_events == 1 && e.nlive == 0,
        "nothing eligible until 0.5: zero-available event");
  CHECK(NEAR(e.wake, 0.5), "wake at exactly 0.5 (rate limit), got %g", e.wake);
  CHECK(m.delayed_tasks == 1 && m.pending_tasks == 1, "the task waits");
  uint64_t d = m.dispatch_count;
  advance(s, &e, 0.4999);
  CHECK(e.nstarts == 2 && metrics(s).dispatch_count == d,
        "nothing happens before the wake-up");
  advance(s, &e, 0.5);
  CHECK(e.nstarts == 4, "both proxies again at 0.5, got %d", e.nstarts);
  CHECK(metrics(s).dispatch_count == d + 1, "one dispatch per wake-up");
  sc_sched_free(s);
}

/* Rate limit: one attempt per interval per (proxy, host); host overrides. */
static void test_rate_limit(void) {
  fenv e;
  sc_config_t c = base_config();
  c.k_base = 1;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 1);
  uint32_t ha = host(s, "a.test"), hb = host(s, "b.test");
  CHECK(sc_sched_host_interval(s, hb, 2.0) == 0, "override");
  CHECK(sc_sched_host_interval(s, 7, 2.0) == SC_EINVAL, "unknown host");
  CHECK(sc_sched_host_interval(s, hb, -1) == SC_EINVAL, "negative interval");
  submit(s, ha, 0);
  CHECK(e.nstarts == 1 && NEAR(pair(s, 0, ha).rate_next, 0.5), "a at 0");
  e.now = 0.1;
  finish(s, &e, 0, SC_V_SUCCESS, 0.1);
  submit(s, ha, 0);
  CHECK(e.nstarts == 1 && NEAR(e.wake, 0.5), "a again only at 0.5 (%g)",
        e.wake);
  submit(s, hb, 0); /* another pair: not limited by a's */
  CHECK(e.nstarts == 2 && e.live[0].host == hb, "b at once");
  CHECK(NEAR(pair(s, 0, hb).rate_next, 2.1), "b's next at 0.1 + 2");
  advance(s, &e, 0.5);
  CHECK(e.nstarts == 3 && NEAR(e.live[1].started, 0.5), "a at 0.5");
  e.now = 0.6;
  finish(s, &e, 0, SC_V_SUCCESS, 0.5);
  finish(s, &e, 0, SC_V_SUCCESS, 0.1);
  submit(s, hb, 0);
  CHECK(e.nstarts == 3 && NEAR(e.wake, 2.1), "b again at 2.1, wake %g", e.wake);
  advance(s, &e, 2.1);
  CHECK(e.nstarts == 4 && NEAR(e.live[0].started, 2.1), "b at 2.1");
  sc_metrics_t m = metrics(s);
  CHECK(m.zero_available_events == 2 && m.skipped_rate_limit == 2,
        "two waits for the rate limit");
  sc_sched_free(s);
}

/* max_inflight counts attempts, over the whole scheduler. */
static void test_max_inflight(void) {
  fenv e;
  sc_config_t c = base_config();
  c.k_base = 2;
  c.max_inflight = 3;
  c.rate_interval = 0;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 20);
  host(s, "a.test");
  for (int i = 0; i < 5; i++) submit(s, 0, 0);
  CHECK(e.nlive == 3 && metrics(s).inflight == 3, "3 in flight, got %d",
        e.nlive);
  CHECK(metrics(s).skipped_no_permit > 0, "counted as no permit");
  for (int step = 0; step < 200 && sc_sched_pending(s) > 0; step++) {
    e.now += 0.1;
    if (e.nlive == 0 && e.wake >= 0) advance(s, &e, e.wake);
    if (e.nlive == 0) break;
    finish(s, &e, 0, step % 3 ? SC_V_SUCCESS : SC_V_TRANSPORT, 0.1);
    CHECK(e.nlive <= 3, "in flight %d > 3", e.nlive);
  }
  CHECK(sc_sched_pending(s) == 0 && e.max_live == 3,
        "all delivered, never over 3 (max %d)", e.max_live);
  sc_sched_free(s);
}

/* Non-idempotent tasks use one path at a time. */
static void test_norace(void) {
  fenv e;
  sc_config_t c = base_config();
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 10);
  host(s, "a.test");
  sc_handle_t t = submit(s, 0, SC_TASK_NORACE);
  CHECK(e.nlive == 1, "one path, got %d", e.nlive);
  uint32_t first = e.live[0].proxy;
  for (int i = 0; i < 5; i++) {
    e.now += 0.1;
    finish(s, &e, 0, SC_V_PROXY_BLOCKED, 0.1);
    CHECK(e.nlive == 1, "next path after a failure, one at a time (%d)",
          e.nlive);
  }
  CHECK(e.live[0].proxy != first, "elsewhere: the first is rate-limited");
  CHECK(sc_sched_task_attempts(s, t) == 6, "6 paths in turn");
  CHECK(e.max_live == 1, "never two at once");
  sc_sched_free(s);
}

/* target_error: the pair is not penalised; the task retries after a
 * per-task backoff: base * 2^(n-1), capped. */
static void test_target_error(void) {
  fenv e;
  sc_config_t c = base_config();
  c.k_base = 1;
  c.rate_interval = 0;
  c.cooldown_fails = 1;
  c.eviction_min_samples = 2;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 1);
  host(s, "a.test");
  sc_handle_t t = submit(s, 0, SC_TASK_NORACE);
  double backoff = c.retry_backoff_base;
  for (int n = 1; n <= 9; n++) {
    e.now += 0.1;
    CHECK(e.nlive == 1, "in flight before target_error %d", n);
    finish(s, &e, 0, SC_V_TARGET_ERROR, 0.1);
    sc_pair_info_t pi = pair(s, 0, 0);
    CHECK(pi.outcomes == 0 && pi.consecutive_fails == 0 &&
              pi.cooldown_until == 0,
          "target_error %d left the pair untouched", n);
    CHECK(e.nlive == 0 && NEAR(e.wake, e.now + backoff),
          "backoff %d: %g s, wake %g at %g", n, backoff, e.wake, e.now);
    double w = e.wake;
    advance(s, &e, w - 1e-6);
    CHECK(e.nlive == 0, "not before the backoff");
    advance(s, &e, w);
    backoff *= 2;
    if (backoff > c.retry_backoff_max) backoff = c.retry_backoff_max;
  }
  CHECK(sc_sched_proxy_is_dead(s, 0) == 0, "not evicted by target errors");
  sc_metrics_t m = metrics(s);
  CHECK(m.verdicts[SC_V_TARGET_ERROR] == 9, "counted");
  e.now += 0.1;
  CHECK(finish(s, &e, 0, SC_V_FINAL, 0.1) == 1, "final delivers");
  CHECK(sc_sched_task_attempts(s, t) == SC_ENOENT, "delivered");
  CHECK(pair(s, 0, 0).successes == 1, "final credits the pair");
  sc_sched_free(s);

  /* a target_error while another path still runs: that path can win */
  c = base_config();
  s = mk(&e, &c);
  proxies(s, 2);
  host(s, "a.test");
  submit(s, 0, 0);
  CHECK(e.nlive == 2, "two paths");
  finish(s, &e, 0, SC_V_TARGET_ERROR, 0.1);
  /* the only wake is continuous racing's look for a latency (DESIGN.md
   * section 10), a tenth of proxy_timeout after the paths started */
  CHECK(e.nlive == 1 && (e.wake < 0 || e.wake >= 0.1 * c.proxy_timeout - 1e-9),
        "waits for the other path");
  CHECK(finish(s, &e, 0, SC_V_SUCCESS, 0.1) == 1, "the other path wins");
  sc_sched_free(s);
}

/* hedge_delay > 0: the extra paths start one by one, d apart; a failed
 * path with nothing else running fires the next at once. */
static void test_hedge(void) {
  fenv e;
  sc_config_t c = base_config();
  c.k_base = 2; /* 4 paths in cold start */
  c.hedge_delay = 0.25;
  c.rate_interval = 0;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 8);
  host(s, "a.test");
  submit(s, 0, 0);
  for (int i = 1; i <= 4; i++) {
    CHECK(e.nlive == i && NEAR(e.live[i - 1].started, (i - 1) * 0.25),
          "path %d at %g", i, (i - 1) * 0.25);
    if (i < 4) {
      CHECK(NEAR(e.wake, i * 0.25), "next hedge at %g, wake %g", i * 0.25,
            e.wake);
      advance(s, &e, e.wake);
    }
  }
  CHECK(e.wake < 0 || e.wake >= 0.75 + 0.1 * c.proxy_timeout - 1e-9,
        "no hedge beyond K before a latency is known (wake %g)", e.wake);
  e.now = 1;
  CHECK(finish(s, &e, 2, SC_V_SUCCESS, 0.5) == 1 && e.nlive == 0,
        "a winner cancels the rest");
  sc_sched_free(s);

  s = mk(&e, &c);
  proxies(s, 8);
  host(s, "a.test");
  submit(s, 0, 0);
  e.now = 0.1;
  finish(s, &e, 0, SC_V_TRANSPORT, 0.1);
  CHECK(e.nlive == 1 && NEAR(e.live[0].started, 0.1),
        "a failed lone path fires the next hedge at once");
  CHECK(NEAR(e.wake, 0.35), "and the one after at +d (%g)", e.wake);
  sc_sched_free(s);

  /* "auto" with no latency known yet: every path at once */
  c.hedge_delay = -1;
  s = mk(&e, &c);
  proxies(s, 8);
  host(s, "a.test");
  submit(s, 0, 0);
  CHECK(e.nlive == 4 && (e.wake < 0 || e.wake >= 0.1 * c.proxy_timeout - 1e-9),
        "auto, no p95 yet: 4 at once (%d)", e.nlive);
  sc_sched_free(s);
}

static void test_capacity_and_cancel(void) {
  fenv e;
  sc_config_t c = base_config();
  c.task_capacity = 2;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 10);
  host(s, "a.test");
  sc_handle_t t1 = submit(s, 0, 0);
  submit(s, 0, 0);
  sc_handle_t t3;
  CHECK(!sc_sched_has_room(s), "full");
  CHECK(sc_sched_submit(s, 0, 0, NULL, &t3) == SC_EFULL, "third refused");
  int live = e.nlive;
  CHECK(sc_sched_cancel(s, t1) == 0, "cancel");
  CHECK(e.ncancels == 6 && e.nlive == live - 6,
        "every attempt of the task cancelled (%d)", e.ncancels);
  CHECK(sc_sched_has_room(s) && sc_sched_pending(s) == 1, "room again");
  CHECK(sc_sched_cancel(s, t1) == SC_ENOENT, "cancel twice");
  CHECK(metrics(s).cancelled_tasks == 1, "counted");
  sc_handle_t stale = (sc_handle_t)12345 << 32 | 1;
  CHECK(sc_sched_task_attempts(s, stale) == SC_ENOENT, "foreign handle");
  CHECK(sc_sched_attempt_done(s, stale, SC_V_SUCCESS, 0) == SC_ENOENT,
        "foreign attempt");
  CHECK(sc_sched_attempt_done(s, e.live[0].handle, SC_V__COUNT, 0) == SC_EINVAL,
        "bad verdict");
  sc_sched_free(s);
  CHECK(e.nlive == 0 && e.bad_cancel == 0, "free cancels what is in flight");
}

/* start() failing is a transport failure of the pair; the next proxy is
 * tried in the same dispatch. */
static void test_start_failure(void) {
  fenv e;
  sc_config_t c = base_config();
  c.k_base = 1;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 3);
  host(s, "a.test");
  e.refuse_proxy = 1;
  submit(s, 0, SC_TASK_NORACE); /* one path: whichever proxy, it starts */
  CHECK(e.nlive == 1 && e.live[0].proxy != 1, "started elsewhere");
  sc_metrics_t m = metrics(s);
  if (m.verdicts[SC_V_TRANSPORT] == 1) {
    sc_pair_info_t pi = pair(s, 1, 0);
    CHECK(pi.outcomes == 1 && pi.consecutive_fails == 1,
          "the refused start counts against its pair");
  }
  for (int i = 0; i < 10; i++) {
    e.now += 0.01;
    finish(s, &e, 0, SC_V_PROXY_BLOCKED, 0.01);
    if (e.nlive == 0 && e.wake >= 0) advance(s, &e, e.wake);
    if (e.nlive == 0) break;
  }
  m = metrics(s);
  CHECK(m.verdicts[SC_V_TRANSPORT] >= 1, "proxy 1 was tried and refused");
  sc_pair_info_t pi = pair(s, 1, 0);
  CHECK(pi.outcomes == m.verdicts[SC_V_TRANSPORT] && pi.successes == 0,
        "every refusal recorded on proxy 1's pair (%u vs %llu)", pi.outcomes,
        (unsigned long long)m.verdicts[SC_V_TRANSPORT]);
  sc_sched_free(s);
}

/* Retired proxies get no new attempts; back in service, a waiting task
 * goes at once. */
static void test_retire(void) {
  fenv e;
  sc_config_t c = base_config();
  c.k_base = 1;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 2);
  host(s, "a.test");
  CHECK(sc_sched_proxy_retire(s, 0, 1) == 0 &&
            sc_sched_proxy_retire(s, 1, 1) == 0,
        "retire");
  CHECK(sc_sched_proxy_retire(s, 5, 1) == SC_ENOPROXY, "unknown proxy");
  submit(s, 0, 0);
  CHECK(e.nstarts == 0 && metrics(s).zero_available_events == 1,
        "nothing eligible");
  CHECK(metrics(s).retired_proxies == 2, "counted");
  sc_sched_proxy_retire(s, 1, 0);
  CHECK(e.nstarts == 1 && e.live[0].proxy == 1, "back in service: starts");
  sc_sched_free(s);
}

/* The simulator itself: same seed, same report; the run ends. */
static void test_sim_determinism(void) {
  sc_sim_report_t r[3];
  for (int i = 0; i < 3; i++) {
    sc_config_t c = base_config();
    c.seed = i == 2 ? 99 : 7;
    sc_sim_opts_t o;
    memset(&o, 0, sizeof(o));
    o.seed = i == 2 ? 99 : 7;
    o.tasks = 3000;
    sc_sim_t *sim;
    CHECK(sc_sim_new(&sim, &c, &o) == 0, "sim");
    sc_sim_add_host(sim, "a.test", -1, NULL);
    sc_sim_add_host(sim, "b.test", 2.0, NULL);
    sc_sim_group_t g[3] = {
        {100, SC_SIM_DEAD, -1, -1, 1, 0, NULL, 0},
        {30, SC_SIM_GOOD, 0.3, 0.1, 0.7, 0.05, NULL, 0},
        {20, SC_SIM_BLACKHOLE, -1, -1, 1, 0, NULL, 0},
    };
    for (int j = 0; j < 3; j++)
      CHECK(sc_sim_add_group(sim, &g[j]) == 0, "group %d", j);
    sc_sim_group_t bad = {1, SC_SIM_SCRIPT, -1, -1, 1, 0, "sx", 0};
    CHECK(sc_sim_add_group(sim, &bad) == SC_EINVAL, "bad script letter");
    CHECK(sc_sim_run(sim, &r[i]) == 0, "run");
    CHECK(sc_sim_run(sim, &r[i]) == SC_EINVAL, "runs once");
    CHECK(sc_sim_min_pair_gap(sim, 1) >= 2.0 - 1e-9,
          "b.test: starts through one pair >= 2 s apart (%g)",
          sc_sim_min_pair_gap(sim, 1));
    sc_sim_free(sim);
    CHECK(r[i].stopped == SC_SIM_DONE && r[i].delivered == 3000,
          "all delivered (%llu)", (unsigned long long)r[i].delivered);
  }
  CHECK(memcmp(&r[0], &r[1], sizeof(r[0])) == 0, "same seed, same report");
  CHECK(r[0].attempts != r[2].attempts ||
            r[0].virtual_seconds != r[2].virtual_seconds,
        "another seed, another run");
}

int main(void) {
  RUN(test_config_defaults_and_validation);
  RUN(test_names);
  RUN(test_race);
  RUN(test_requeue_and_exact_wake);
  RUN(test_rate_limit);
  RUN(test_max_inflight);
  RUN(test_norace);
  RUN(test_target_error);
  RUN(test_hedge);
  RUN(test_capacity_and_cancel);
  RUN(test_start_failure);
  RUN(test_retire);
  RUN(test_sim_determinism);
  return CHECK_DONE();
}
