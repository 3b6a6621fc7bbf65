/* The scheduler's fake environment for the C tests: a clock the test sets,
 * the last wake-up asked for, and the attempts started and cancelled, with
 * the helpers every scheduler test drives it by. Header-only (static
 * inline): each test_*.c is its own executable. */
#ifndef SC_SPEC_FENV_H
#define SC_SPEC_FENV_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/sched.h"
#include "check.h"

#define NEAR(a, b) (fabs((a) - (b)) < 1e-9)

/* ---- the fake environment ---- */

#define MAXLIVE 4096

typedef struct fenv {
  double now;
  double wake; /* last wake-up asked for; < 0 none */
  int nstarts, ncancels;
  sc_attempt_t live[MAXLIVE]; /* copies of the attempts in flight */
  int nlive, max_live;
  sc_handle_t cancelled[MAXLIVE];
  int64_t refuse_proxy; /* start() fails for this proxy id; < 0 none */
  int bad_cancel;       /* cancel of an attempt that was not in flight */
} fenv;

static inline double f_now(void *ud) { return ((fenv *)ud)->now; }
static inline void f_wake(void *ud, double at) { ((fenv *)ud)->wake = at; }

static inline int f_start(void *ud, sc_attempt_t *a) {
  fenv *e = ud;
  if ((int64_t)a->proxy == e->refuse_proxy) return -1;
  if (e->nlive == MAXLIVE) return -1;
  e->live[e->nlive++] = *a;
  if (e->nlive > e->max_live) e->max_live = e->nlive;
  e->nstarts++;
  return 0;
}

static inline int live_index(fenv *e, sc_handle_t h) {
  for (int i = 0; i < e->nlive; i++)
    if (e->live[i].handle == h) return i;
  return -1;
}

static inline void live_drop(fenv *e, int i) { e->live[i] = e->live[--e->nlive]; }

static inline void f_cancel(void *ud, sc_attempt_t *a) {
  fenv *e = ud;
  int i = live_index(e, a->handle);
  if (i < 0) {
    e->bad_cancel++;
    return;
  }
  live_drop(e, i);
  if (e->ncancels < MAXLIVE) e->cancelled[e->ncancels] = a->handle;
  e->ncancels++;
}

static inline sc_sched_t *mk(fenv *e, const sc_config_t *c) {
  memset(e, 0, sizeof(*e));
  e->wake = -1;
  e->refuse_proxy = -1;
  sc_env_t env = {e, f_now, f_wake, f_start, f_cancel};
  sc_sched_t *s = NULL;
  if (sc_sched_new(&s, c, &env) < 0) {
    fprintf(stderr, "sc_sched_new failed\n");
    exit(2);
  }
  return s;
}

static inline void proxies(sc_sched_t *s, int n) {
  for (int i = 0; i < n; i++) {
    char key[32];
    uint32_t id;
    snprintf(key, sizeof(key), "10.0.%d.%d:1080", i / 250, i % 250 + 1);
    if (sc_sched_proxy_add(s, key, &id) < 0) exit(2);
  }
}

static inline uint32_t host(sc_sched_t *s, const char *name) {
  uint32_t id = 0;
  if (sc_sched_host_id(s, name, strlen(name), &id) < 0) exit(2);
  return id;
}

static inline sc_handle_t submit(sc_sched_t *s, uint32_t h, unsigned flags) {
  sc_handle_t t = 0;
  int rc = sc_sched_submit(s, h, flags, NULL, &t);
  if (rc < 0) {
    fprintf(stderr, "submit failed: %d\n", rc);
    exit(2);
  }
  return t;
}

/* Reports the outcome of the i-th live attempt, as a transport would. */
static inline int finish(sc_sched_t *s, fenv *e, int i, sc_verdict_t v, double lat) {
  sc_handle_t h = e->live[i].handle;
  live_drop(e, i);
  return sc_sched_attempt_done(s, h, v, lat);
}

/* The clock moves to t; a due wake-up runs the scheduler (one-shot). */
static inline void advance(sc_sched_t *s, fenv *e, double t) {
  e->now = t;
  if (e->wake >= 0 && e->wake <= t) {
    e->wake = -1;
    sc_sched_run(s);
  }
}

static inline sc_metrics_t metrics(sc_sched_t *s) {
  sc_metrics_t m;
  sc_sched_metrics(s, &m);
  return m;
}

static inline sc_pair_info_t pair(sc_sched_t *s, uint32_t p, uint32_t h) {
  sc_pair_info_t i;
  memset(&i, 0, sizeof(i));
  sc_sched_pair_info(s, p, h, &i);
  return i;
}

static inline sc_config_t base_config(void) {
  sc_config_t c;
  sc_config_init(&c);
  return c;
}

#endif
