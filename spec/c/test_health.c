/* The scheduler's health rules (DESIGN.md section 3), driven by hand
 * through a fake environment (fenv.h): cooldown, eviction, adaptive K and
 * its restored window, and selection by score. Every assertion is exact.
 *
 * Prints "N passed, N failed" (tests, not assertions) and exits 1 on any
 * failure. */
#include "fenv.h"

/* The remaining rest of a pair after n consecutive failures. */
static double rest(const sc_config_t *c, int n) {
  if (n < c->cooldown_fails) return 0;
  double r = c->cooldown_base * pow(2, n - c->cooldown_fails);
  return r > c->cooldown_max ? c->cooldown_max : r;
}

/* Fails the task's only attempt at time t; returns the new cooldown end. */
static double fail_one(sc_sched_t *s, fenv *e, double t) {
  e->now = t;
  if (e->nlive != 1) return -1;
  finish(s, e, 0, SC_V_PROXY_BLOCKED, 0.01);
  return pair(s, 0, 0).cooldown_until;
}

static void test_cooldown(void) {
  fenv e;
  sc_config_t c = base_config();
  c.k_base = 1;
  c.rate_interval = 0;
  c.eviction_min_samples = 1000; /* keep the proxy alive */
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 1);
  host(s, "a.test");
  submit(s, 0, SC_TASK_NORACE);
  double t = 0;
  for (int n = 1; n <= 9; n++) {
    if (e.nlive == 0 && e.wake >= 0) advance(s, &e, e.wake); /* rested */
    CHECK(e.nlive == 1, "in flight before failure %d", n);
    t = e.now + 1;
    double until = fail_one(s, &e, t);
    sc_pair_info_t pi = pair(s, 0, 0);
    CHECK(pi.consecutive_fails == (uint32_t)n, "consecutive %u vs %d",
          pi.consecutive_fails, n);
    if (n < 3) {
      CHECK(until == 0, "no cooldown after %d failures (until %g)", n, until);
      CHECK(e.nlive == 1, "retried at once after %d failures", n);
    } else {
      CHECK(NEAR(until, t + rest(&c, n)),
            "after %d failures: rest %g s, got until %g at %g", n, rest(&c, n),
            until, t);
      CHECK(e.nlive == 0 && NEAR(e.wake, until),
            "the task waits for the end of the cooldown (wake %g)", e.wake);
      CHECK(metrics(s).cooldown_proxies == 1, "counted as cooling");
    }
  }
  CHECK(rest(&c, 3) == 30 && rest(&c, 4) == 60 && rest(&c, 7) == 300 &&
            rest(&c, 9) == 300,
        "30 s, 60 s, ..., capped at 300 s");
  /* one success resets it */
  advance(s, &e, e.wake);
  CHECK(e.nlive == 1, "started when the cooldown ended");
  e.now += 0.5;
  CHECK(finish(s, &e, 0, SC_V_SUCCESS, 0.5) == 1, "delivered");
  sc_pair_info_t pi = pair(s, 0, 0);
  CHECK(pi.consecutive_fails == 0 && pi.cooldown_until == 0 &&
            NEAR(pi.last_success, e.now),
        "a success resets the failures and the cooldown");
  submit(s, 0, SC_TASK_NORACE);
  t = e.now;
  for (int n = 1; n <= 3; n++) {
    double until = fail_one(s, &e, t += 1);
    CHECK(NEAR(until, n < 3 ? 0 : t + 30), "after the reset, %d failures: %g",
          n, until);
  }
  sc_sched_free(s);
}

/* A proxy with zero successes is dead at its eviction_min_samples-th
 * finished attempt (over every host of the pool), never before. */
static void test_eviction(void) {
  fenv e;
  sc_config_t c = base_config();
  c.k_base = 1;
  c.rate_interval = 0;
  c.cooldown_fails = 1000;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 1);
  uint32_t ha = host(s, "a.test"), hb = host(s, "b.test");
  sc_handle_t ta = submit(s, ha, SC_TASK_NORACE);
  sc_handle_t tb = submit(s, hb, SC_TASK_NORACE);
  for (int n = 1; n <= 30; n++) {
    CHECK(e.nlive == 2, "both hosts in flight before failure %d (%d)", n,
          e.nlive);
    CHECK(sc_sched_proxy_is_dead(s, 0) == 0, "alive before attempt %d", n);
    e.now = n;
    /* alternate hosts: 15 failures on each */
    int i = e.live[0].host == (uint32_t)(n % 2 ? ha : hb) ? 0 : 1;
    finish(s, &e, i, SC_V_TRANSPORT, 0.01);
    if (n < 30)
      CHECK(sc_sched_proxy_is_dead(s, 0) == 0, "alive after %d failures", n);
  }
  CHECK(sc_sched_proxy_is_dead(s, 0) == 1, "dead at the 30th failure");
  sc_metrics_t m = metrics(s);
  CHECK(m.dead_proxies == 1 && m.healthy_proxies == 0, "metrics: dead 1");
  /* the other host's attempt was already in flight: it finishes normally */
  CHECK(e.nlive == 1, "one attempt still in flight");
  int starts = e.nstarts;
  finish(s, &e, 0, SC_V_TRANSPORT, 0.01);
  CHECK(e.nstarts == starts, "a dead proxy is never chosen again");
  CHECK(e.wake < 0, "no wake-up: nothing can become eligible");
  CHECK(sc_sched_pending(s) == 2, "the tasks are kept (never-fail)");
  /* a new proxy: the waiting tasks go at once */
  uint32_t id;
  sc_sched_proxy_add(s, "10.9.9.9:1080", &id);
  CHECK(e.nlive == 2 && e.live[0].proxy == id && e.live[1].proxy == id,
        "waiting tasks start on the new proxy");
  e.now += 1;
  finish(s, &e, 0, SC_V_SUCCESS, 0.1);
  finish(s, &e, 0, SC_V_SUCCESS, 0.1);
  CHECK(sc_sched_task_attempts(s, ta) == SC_ENOENT &&
            sc_sched_task_attempts(s, tb) == SC_ENOENT,
        "both delivered");
  sc_sched_free(s);

  /* one success in 40 attempts: never evicted */
  s = mk(&e, &c);
  proxies(s, 1);
  host(s, "a.test");
  submit(s, 0, SC_TASK_NORACE);
  e.now = 1;
  finish(s, &e, 0, SC_V_SUCCESS, 0.1);
  submit(s, 0, SC_TASK_NORACE);
  for (int n = 0; n < 40 && e.nlive == 1; n++) {
    e.now += 1;
    finish(s, &e, 0, SC_V_PROXY_BLOCKED, 0.1);
  }
  CHECK(sc_sched_proxy_is_dead(s, 0) == 0 && e.nlive == 1,
        "a proxy with a success stays");
  sc_sched_free(s);
}

/* Adaptive K: 2 * base during cold start, then the smallest K with
 * P(at least one success) >= 0.95 at the pool's recent rate, clamped. */
static int expected_k(int base, uint64_t finished, int min_samples,
                      const int *win, int n) {
  if (finished < (uint64_t)min_samples || n == 0) return 2 * base;
  int ok = 0;
  for (int i = 0; i < n; i++) ok += win[i];
  double r = (double)ok / n;
  int k = r <= 0   ? 2 * base
          : r >= 1 ? 1
                   : (int)ceil(log(0.05) / log(1 - r) - 1e-9);
  return k < 1 ? 1 : k > 2 * base ? 2 * base : k;
}

static void test_adaptive_k(void) {
  fenv e;
  sc_config_t c = base_config();
  c.rate_interval = 0;
  c.cooldown_fails = 1000;
  c.eviction_min_samples = 30;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 200);
  host(s, "a.test");
  /* one path at a time (norace) so the outcome sequence is ours; K is still
   * computed at each dispatch and shown as k_current */
  static int win[256];
  int nwin = 0, wpos = 0, mismatches = 0, checked = 0, seen[7] = {0};
  uint64_t finished = 0;
  submit(s, 0, SC_TASK_NORACE);
  for (int i = 0; i < 1200; i++) {
    int want =
        expected_k(c.k_base, finished, c.eviction_min_samples, win, nwin);
    int got = metrics(s).k_current;
    checked++;
    if (got != want && mismatches++ < 5)
      fprintf(stderr, "  step %d: k_current %d, want %d\n", i, got, want);
    if (got >= 1 && got <= 6) seen[got] = 1;
    /* phases: all succeed, then 1 in 2, then 1 in 4, then none */
    int ok = i < 300 ? 1 : i < 600 ? i % 2 : i < 900 ? i % 4 == 0 : 0;
    e.now += 0.01;
    if (e.nlive != 1) {
      CHECK(0, "one attempt in flight at step %d, got %d", i, e.nlive);
      break;
    }
    int won = finish(s, &e, 0, ok ? SC_V_SUCCESS : SC_V_PROXY_BLOCKED, 0.01);
    finished++;
    win[wpos] = ok;
    wpos = (wpos + 1) % 256;
    if (nwin < 256) nwin++;
    if (won == 1) submit(s, 0, SC_TASK_NORACE);
  }
  CHECK(mismatches == 0, "%d of %d dispatches had a wrong K", mismatches,
        checked);
  CHECK(seen[6] && seen[1] && seen[5], "K took 6 (cold, no success), 1 and 5");
  sc_sched_free(s);

  /* cold start: exactly 2 * base paths at once */
  for (int base = 1; base <= 4; base++) {
    c.k_base = base;
    s = mk(&e, &c);
    proxies(s, 20);
    host(s, "a.test");
    submit(s, 0, 0);
    CHECK(e.nstarts == 2 * base && metrics(s).k_current == 2 * base,
          "base %d: %d paths in cold start", base, e.nstarts);
    sc_sched_free(s);
  }
  /* never more than the eligible proxies */
  c.k_base = 3;
  s = mk(&e, &c);
  proxies(s, 4);
  host(s, "a.test");
  submit(s, 0, 0);
  CHECK(e.nstarts == 4, "K 6 over 4 proxies starts 4, got %d", e.nstarts);
  sc_sched_free(s);
}

/* Warm restarts (state file version 2): the recent window and the count of
 * finished attempts come back, and a restored count ends the cold start. */
static void test_recent_restore(void) {
  fenv e;
  sc_config_t c = base_config();
  c.rate_interval = 0;
  c.cooldown_fails = 1000;
  c.eviction_min_samples = 30;
  c.k_base = 1;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 4);
  host(s, "a.test");
  /* 300 outcomes, one path at a time: the window keeps the newest 256 */
  submit(s, 0, SC_TASK_NORACE);
  for (int i = 0; i < 300; i++) {
    e.now += 0.01;
    int won = finish(s, &e, 0, i % 3 ? SC_V_SUCCESS : SC_V_PROXY_BLOCKED, 0.01);
    if (won == 1) submit(s, 0, SC_TASK_NORACE);
  }
  uint8_t bits[SC_RECENT_MAX];
  uint32_t n;
  uint64_t finished;
  sc_sched_recent(s, bits, &n, &finished);
  CHECK(n == 256 && finished == 300, "window %u, finished %llu", n,
        (unsigned long long)finished);
  int order_ok = 1;
  for (uint32_t k = 0; k < n; k++) order_ok &= bits[k] == ((k + 44) % 3 != 0);
  CHECK(order_ok, "the window is oldest first");
  sc_sched_free(s);

  /* a fresh pool given that window and count: same window, and K is set
   * by it (1 in 3 fails: K 2 of 2), not by the cold start */
  s = mk(&e, &c);
  proxies(s, 4);
  host(s, "a.test");
  sc_sched_recent_restore(s, bits, n, finished);
  uint8_t again[SC_RECENT_MAX];
  uint32_t n2;
  uint64_t f2;
  sc_sched_recent(s, again, &n2, &f2);
  CHECK(n2 == n && f2 == finished && memcmp(again, bits, n) == 0,
        "restored window and count read back the same");
  sc_sched_free(s);

  /* all successes restored: K = 1 from the first task (cold start: 2) */
  uint8_t ones[40];
  memset(ones, 1, sizeof(ones));
  s = mk(&e, &c);
  proxies(s, 4);
  host(s, "a.test");
  sc_sched_recent_restore(s, ones, 40, 40);
  e.nstarts = 0;
  submit(s, 0, 0);
  CHECK(e.nstarts == 1 && metrics(s).k_current == 1,
        "warm: 1 path, got %d (k %d)", e.nstarts, metrics(s).k_current);
  CHECK(metrics(s).attempts_finished == 0, "restored attempts are no metric");
  sc_sched_free(s);
  /* too few to trust (fewer than eviction_min_samples): still cold */
  s = mk(&e, &c);
  proxies(s, 4);
  host(s, "a.test");
  sc_sched_recent_restore(s, ones, 5, 5);
  e.nstarts = 0;
  submit(s, 0, 0);
  CHECK(e.nstarts == 2, "5 restored outcomes: cold start, got %d", e.nstarts);
  sc_sched_free(s);
}

/* Selection prefers the high score: a pair that succeeded beats unknown
 * ones (score bands), and a failed one is chosen last. */
static void test_selection_prefers_health(void) {
  fenv e;
  sc_config_t c = base_config();
  c.rate_interval = 0;
  c.cooldown_fails = 1000;
  sc_sched_t *s = mk(&e, &c);
  proxies(s, 50);
  host(s, "a.test");
  submit(s, 0, SC_TASK_NORACE);
  uint32_t good = e.live[0].proxy;
  e.now = 1;
  finish(s, &e, 0, SC_V_SUCCESS, 0.1);
  int chose_good = 0;
  for (int i = 0; i < 20; i++) {
    submit(s, 0, SC_TASK_NORACE);
    chose_good += e.live[0].proxy == good;
    e.now += 1;
    finish(s, &e, 0, SC_V_SUCCESS, 0.1);
  }
  CHECK(chose_good == 20, "the proven proxy is chosen every time (%d/20)",
        chose_good);
  sc_sched_free(s);

  s = mk(&e, &c);
  proxies(s, 3);
  host(s, "a.test");
  submit(s, 0, SC_TASK_NORACE);
  uint32_t bad = e.live[0].proxy;
  e.now = 1;
  finish(s, &e, 0, SC_V_PROXY_BLOCKED, 0.1); /* next path starts at once */
  CHECK(e.nlive == 1 && e.live[0].proxy != bad, "a failed pair goes last");
  sc_sched_free(s);
}

int main(void) {
  RUN(test_cooldown);
  RUN(test_eviction);
  RUN(test_adaptive_k);
  RUN(test_recent_restore);
  RUN(test_selection_prefers_health);
  return CHECK_DONE();
}
