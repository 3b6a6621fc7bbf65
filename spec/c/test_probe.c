/* Scheduler additions for proxy sources and state files: the one probe of a
 * dead proxy that is listed again (sc_sched_proxy_probe), holding dispatch
 * (sc_sched_hold), and proxy-level snapshots (sc_sched_proxy_info and
 * sc_sched_proxy_restore). A fake environment with a hand-set clock makes
 * every assertion exact.
 *
 * Prints "N passed, N failed" (tests) and exits 1 on any failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/sched.h"
#include "check.h"


#define MAXLIVE 64

typedef struct fenv {
  double now;
  sc_attempt_t live[MAXLIVE];
  int nlive, nstarts;
} fenv;

static double f_now(void *ud) { return ((fenv *)ud)->now; }
static void f_wake(void *ud, double at) {
  (void)ud;
  (void)at;
}

static int f_start(void *ud, sc_attempt_t *a) {
  fenv *e = ud;
  if (e->nlive == MAXLIVE) return -1;
  e->live[e->nlive++] = *a;
  e->nstarts++;
  return 0;
}

static void f_cancel(void *ud, sc_attempt_t *a) {
  fenv *e = ud;
  for (int i = 0; i < e->nlive; i++) {
    if (e->live[i].handle == a->handle) {
      e->live[i] = e->live[--e->nlive];
      return;
    }
  }
}

static sc_sched_t *mk(fenv *e, int k, int evict_after) {
  memset(e, 0, sizeof(*e));
  e->now = 1000;
  sc_config_t c;
  sc_config_init(&c);
  c.k_base = k;
  c.rate_interval = 0;
  c.cooldown_fails = 1000; /* eviction only, no cooldowns */
  c.cooldown_max = 300;
  c.eviction_min_samples = evict_after;
  sc_env_t env = {e, f_now, f_wake, f_start, f_cancel};
  sc_sched_t *s = NULL;
  if (sc_sched_new(&s, &c, &env) < 0) exit(2);
  return s;
}

static uint32_t add(sc_sched_t *s, const char *key) {
  uint32_t id = 0;
  if (sc_sched_proxy_add(s, key, &id) < 0) exit(2);
  return id;
}

static uint32_t host(sc_sched_t *s, const char *name) {
  uint32_t id = 0;
  if (sc_sched_host_id(s, name, strlen(name), &id) < 0) exit(2);
  return id;
}

static sc_handle_t submit(sc_sched_t *s, uint32_t h) {
  sc_handle_t t = 0;
  if (sc_sched_submit(s, h, 0, NULL, &t) < 0) exit(2);
  return t;
}

/* Ends the attempts live now (not those their outcomes start) with v. */
static void finish_all(sc_sched_t *s, fenv *e, sc_verdict_t v) {
  sc_handle_t hs[MAXLIVE];
  int n = e->nlive;
  for (int i = 0; i < n; i++) hs[i] = e->live[i].handle;
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < e->nlive; j++) {
      if (e->live[j].handle == hs[i]) {
        e->live[j] = e->live[--e->nlive];
        break;
      }
    }
    sc_sched_attempt_done(s, hs[i], v, 0.1);
  }
}

static int attempts_on(fenv *e, uint32_t proxy) {
  int n = 0;
  for (int i = 0; i < e->nlive; i++) n += e->live[i].proxy == proxy;
  return n;
}

/* Evicts the only proxy of s: two failed attempts, no success. */
static uint32_t evicted(sc_sched_t *s, fenv *e, uint32_t h) {
  uint32_t id = add(s, "10.0.0.1:1080");
  sc_handle_t t = submit(s, h);
  finish_all(s, e, SC_V_TRANSPORT);
  finish_all(s, e, SC_V_TRANSPORT);
  sc_sched_cancel(s, t);
  return id;
}

static void test_probe_needs_rest_and_gives_one_attempt(void) {
  fenv e;
  sc_sched_t *s = mk(&e, 1, 2);
  uint32_t h1 = host(s, "a.test"), h2 = host(s, "b.test");
  uint32_t id = evicted(s, &e, h1);
  CHECK(sc_sched_proxy_is_dead(s, id) == 1, "not evicted");
  CHECK(sc_sched_proxy_probe(s, id) == 0, "probed before resting");
  e.now += 299;
  CHECK(sc_sched_proxy_probe(s, id) == 0, "probed before cooldown_max");
  e.now += 1;
  CHECK(sc_sched_proxy_probe(s, id) == 1, "not probed after cooldown_max");
  CHECK(sc_sched_proxy_is_dead(s, id) == 0, "still dead while probing");
  CHECK(sc_sched_proxy_probe(s, id) == 0, "a live proxy was probed");
  /* four tasks on two hosts: the probe is one attempt, not one per task */
  for (int i = 0; i < 4; i++) submit(s, i % 2 ? h2 : h1);
  CHECK(e.nlive == 1, "%d attempts during the probe", e.nlive);
  CHECK(attempts_on(&e, id) == 1, "the probe did not go through the proxy");
  finish_all(s, &e, SC_V_TRANSPORT);
  CHECK(sc_sched_proxy_is_dead(s, id) == 1, "a failed probe did not evict");
  CHECK(e.nlive == 0, "attempts after the failed probe");
  e.now += 100;
  CHECK(sc_sched_proxy_probe(s, id) == 0, "rest not counted from the probe");
  e.now += 200;
  CHECK(sc_sched_proxy_probe(s, id) == 1, "second probe refused");
  CHECK(e.nlive == 1, "the waiting tasks did not get the probe");
  finish_all(s, &e, SC_V_SUCCESS);
  /* a good probe brings it back for every host at once */
  CHECK(sc_sched_proxy_is_dead(s, id) == 0, "evicted after a good probe");
  CHECK(e.nlive == 2, "%d attempts after a good probe, want 2", e.nlive);
  sc_sched_free(s);
}

static void test_cancelled_probe_is_armed_again(void) {
  fenv e;
  sc_sched_t *s = mk(&e, 1, 2);
  uint32_t h = host(s, "a.test");
  uint32_t id = evicted(s, &e, h);
  e.now += 300;
  CHECK(sc_sched_proxy_probe(s, id) == 1, "not probed");
  sc_handle_t t1 = submit(s, h);
  submit(s, h);
  CHECK(e.nlive == 1, "%d attempts", e.nlive);
  sc_sched_cancel(s, t1);
  CHECK(e.nlive == 1, "the other task did not get the probe (%d)", e.nlive);
  CHECK(attempts_on(&e, id) == 1, "not through the probed proxy");
  finish_all(s, &e, SC_V_TRANSPORT);
  CHECK(sc_sched_proxy_is_dead(s, id) == 1, "not evicted again");
  sc_sched_free(s);
}

static void test_retired_probe_stays_out(void) {
  fenv e;
  sc_sched_t *s = mk(&e, 1, 2);
  uint32_t h = host(s, "a.test");
  uint32_t id = evicted(s, &e, h);
  e.now += 300;
  sc_sched_proxy_probe(s, id);
  submit(s, h);
  CHECK(e.nlive == 1, "no probe");
  sc_sched_proxy_retire(s, id, 1);
  sc_sched_proxy_retire(s, id, 0);
  submit(s, h);
  CHECK(e.nlive == 1, "unretiring doubled the probe (%d)", e.nlive);
  finish_all(s, &e, SC_V_SUCCESS);
  CHECK(e.nlive == 1, "the second task did not follow (%d)", e.nlive);
  sc_sched_free(s);
}

static void test_hold_defers_the_first_dispatch(void) {
  fenv e;
  sc_sched_t *s = mk(&e, 2, 30);
  uint32_t h = host(s, "a.test");
  CHECK(sc_sched_hold(s, 1) == 1, "depth");
  CHECK(sc_sched_hold(s, 1) == 2, "depth");
  submit(s, h);
  char key[32];
  for (int i = 0; i < 6; i++) {
    snprintf(key, sizeof(key), "10.0.0.%d:1080", i + 1);
    add(s, key);
  }
  CHECK(sc_sched_hold(s, 0) == 1, "depth");
  CHECK(e.nstarts == 0, "dispatched while held");
  CHECK(sc_sched_hold(s, 0) == 0, "depth");
  /* cold start: K = 2 * base, all chosen from the whole list */
  CHECK(e.nstarts == 4, "%d attempts at release, want 4", e.nstarts);
  CHECK(sc_sched_hold(s, 0) == SC_EINVAL, "released below zero");
  sc_sched_free(s);

  /* without a hold the first proxy of a list takes the task alone */
  s = mk(&e, 2, 30);
  h = host(s, "a.test");
  submit(s, h);
  for (int i = 0; i < 6; i++) {
    snprintf(key, sizeof(key), "10.0.0.%d:1080", i + 1);
    add(s, key);
  }
  CHECK(e.nstarts == 1, "%d attempts, want 1", e.nstarts);
  sc_sched_free(s);
}

static void test_proxy_info_round_trip(void) {
  fenv e;
  sc_sched_t *s = mk(&e, 1, 2);
  uint32_t h = host(s, "a.test");
  uint32_t id = evicted(s, &e, h);
  sc_proxy_info_t pi;
  CHECK(sc_sched_proxy_info(s, id, &pi) == 0, "info");
  CHECK(pi.dead == 1 && pi.attempts == 2 && pi.successes == 0,
        "dead %d attempts %u successes %u", pi.dead, pi.attempts, pi.successes);
  CHECK(pi.dead_since == 1000, "dead since %g", pi.dead_since);
  CHECK(sc_sched_proxy_info(s, 7, &pi) == SC_ENOPROXY, "unknown id");

  fenv e2;
  sc_sched_t *s2 = mk(&e2, 1, 2);
  uint32_t h2 = host(s2, "a.test");
  uint32_t id2 = add(s2, "10.0.0.1:1080");
  pi.dead_since = 900;
  CHECK(sc_sched_proxy_restore(s2, id2, &pi) == 0, "restore");
  CHECK(sc_sched_proxy_is_dead(s2, id2) == 1, "restored alive");
  submit(s2, h2);
  CHECK(e2.nstarts == 0, "a restored dead proxy got an attempt");
  e2.now = 1199;
  CHECK(sc_sched_proxy_probe(s2, id2) == 0, "rest not counted from dead_since");
  e2.now = 1200;
  CHECK(sc_sched_proxy_probe(s2, id2) == 1, "not probed after its rest");
  CHECK(e2.nstarts == 1, "the waiting task did not get the probe");

  sc_proxy_info_t alive = {10, 4, 0, 0};
  CHECK(sc_sched_proxy_restore(s2, id2, &alive) == 0, "revive by restore");
  CHECK(sc_sched_proxy_is_dead(s2, id2) == 0, "still dead");
  uint32_t att = 0, ok = 0;
  sc_sched_proxy_totals(s2, id2, &att, &ok);
  CHECK(att == 10 && ok == 4, "totals %u/%u", att, ok);
  sc_proxy_info_t bad = {1, 2, 0, 0};
  CHECK(sc_sched_proxy_restore(s2, id2, &bad) == SC_EINVAL, "successes > attempts");
  sc_metrics_t m;
  sc_sched_metrics(s2, &m);
  CHECK(m.dead_proxies == 0, "dead count %u", m.dead_proxies);
  sc_sched_free(s2);
  sc_sched_free(s);
}

int main(void) {
  RUN(test_probe_needs_rest_and_gives_one_attempt);
  RUN(test_cancelled_probe_is_armed_again);
  RUN(test_retired_probe_stays_out);
  RUN(test_hold_defers_the_first_dispatch);
  RUN(test_proxy_info_round_trip);
  return CHECK_DONE();
}
