/* Memory of the scheduler's records, measured through the allocator on a
 * private scheduler that never starts a real attempt. See simmem.h. */
#include "simmem.h"

#include <malloc.h>
#include <stdio.h>

#include "sched.h"

static double m_now(void *ud) {
  (void)ud;
  return 0;
}
static void m_wake(void *ud, double at) { (void)ud, (void)at; }
static int m_start(void *ud, sc_attempt_t *a) {
  (void)ud, (void)a;
  return 0;
}
static void m_cancel(void *ud, sc_attempt_t *a) { (void)ud, (void)a; }

static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd; /* arena blocks + mmapped blocks */
}

/* N is a power of two so the scheduler's doubling arrays end exactly full
 * and the figures carry no growth slack. */
#define MEASURE_N (1u << 16)

static int measured_sched(sc_sched_t **s, uint32_t proxies, int k_base) {
  sc_config_t c;
  sc_config_init(&c);
  c.k_base = k_base;
  c.rate_interval = 0;
  c.task_capacity = (int)MEASURE_N;
  c.max_inflight = (int)(4 * MEASURE_N);
  sc_env_t env = {NULL, m_now, m_wake, m_start, m_cancel};
  int rc = sc_sched_new(s, &c, &env);
  if (rc < 0) return rc;
  uint32_t id;
  if ((rc = sc_sched_host_id(*s, "a.test", 6, &id)) < 0) return rc;
  for (uint32_t i = 0; i < proxies; i++) {
    char key[32];
    snprintf(key, sizeof(key), "m-%u:1080", i);
    if ((rc = sc_sched_proxy_add(*s, key, &id)) < 0) return rc;
  }
  return 0;
}

static int submit_n(sc_sched_t *s, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    sc_handle_t h;
    int rc = sc_sched_submit(s, 0, 0, NULL, &h);
    if (rc < 0) return rc;
  }
  return 0;
}

int sc_sim_measure(sc_sim_sizes_t *out) {
  sc_sched_t *s = NULL;
  int rc;
  size_t base;
  uint32_t id;

  /* queued tasks: no proxy at all, so every task waits (starved) */
  if ((rc = measured_sched(&s, 0, 1)) < 0) goto fail;
  base = heap_in_use();
  if ((rc = submit_n(s, MEASURE_N)) < 0) goto fail;
  out->bytes_per_task = (double)(heap_in_use() - base) / MEASURE_N;
  sc_sched_free(s);
  s = NULL;

  /* a second host over N proxies: its health records and their indexes */
  if ((rc = measured_sched(&s, MEASURE_N, 1)) < 0) goto fail;
  base = heap_in_use();
  if ((rc = sc_sched_host_id(s, "b.test", 6, &id)) < 0) goto fail;
  out->bytes_per_pair = (double)(heap_in_use() - base) / MEASURE_N;

  /* running tasks: N/2 tasks, two paths each (k_base 1, cold start) */
  base = heap_in_use();
  if ((rc = submit_n(s, MEASURE_N / 2)) < 0) goto fail;
  out->bytes_per_attempt =
      ((double)(heap_in_use() - base) - out->bytes_per_task * MEASURE_N / 2) /
      MEASURE_N;
  sc_sched_free(s);
  s = NULL;
  if (out->bytes_per_task <= 0 || out->bytes_per_pair <= 0)
    return SC_EINVAL; /* an allocator that does not report (sanitizers) */
  return 0;
fail:
  sc_sched_free(s);
  return rc;
}
