/* The simulator's own structures, shared by sim.c (the run, the
 * environment the scheduler sees) and simdraw.c (what an attempt's outcome
 * is). Internal: callers use sim.h. */
#ifndef SC_SIM_INT_H
#define SC_SIM_INT_H

#include "sim.h"

typedef struct ev {
  double t;
  uint64_t seq;
  uint32_t slot, gen;
} ev;

typedef struct att { /* one simulated attempt in flight */
  sc_handle_t handle;
  double latency;
  double handshake; /* < 0: the connection never got through its handshake */
  uint32_t gen;
  uint32_t next; /* free list */
  uint32_t task; /* slot in sim->tasks */
  uint32_t proxy, host;
  uint8_t verdict;
  uint8_t rest; /* script 'r': blocked with the group's retry_after */
} att;

typedef struct stask { /* one submitted, undelivered task */
  double submitted;
  uint64_t num; /* 1-based submission number */
  uint32_t active;
  uint32_t next; /* free list */
} stask;

typedef struct sproxy {
  uint32_t group, script_pos, starts;
} sproxy;

typedef struct sgroup {
  sc_sim_group_t g;
  size_t script_len;
} sgroup;

struct sc_sim {
  sc_config_t cfg;
  sc_sim_opts_t o;
  sc_sched_t *s;
  double clock;
  uint64_t rng, seq;
  double wake_at; /* < 0: no wake-up asked for */
  uint64_t wake_seq;

  ev *heap;
  size_t nheap, heap_cap;
  att *atts;
  uint32_t att_cap, att_free;
  stask *tasks;
  uint32_t task_cap, task_free;
  sproxy *proxies;
  uint32_t nproxies, proxy_cap;
  sgroup *groups;
  uint32_t ngroups;
  uint32_t *rr; /* host ids, tasks go round-robin over them */
  uint32_t nrr;

  double *last_start; /* per pair, [host * nproxies + proxy]; < 0: none */
  double *min_gap;    /* per host; < 0: no pair started twice */
  uint32_t ngap_hosts;

  sc_sim_event_t *trace;
  size_t ntrace, trace_cap;
  int64_t trace_proxy, trace_host; /* < 0: any */
  uint32_t inflight;
  int ran, closing;
  double lat_sum;
  sc_sim_report_t r;
};

/* ---- randomness: splitmix64, fast and good enough for outcome draws ---- */

static inline uint64_t sc_sim_rnd(sc_sim_t *sim) {
  uint64_t z = (sim->rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static inline double sc_sim_unif(sc_sim_t *sim) { /* [0, 1) */
  return (double)(sc_sim_rnd(sim) >> 11) * 0x1.0p-53;
}

/* What happens to an attempt through proxy px, decided now; ct is its
 * connect deadline (0: none but proxy_timeout); *handshake the time its
 * handshake took (< 0: it never finished one); *rest: the answer asks the
 * pair to rest (a script's letter r, Retry-After). */
sc_verdict_t sc_sim_draw(sc_sim_t *sim, sproxy *px, double ct, double *latency,
                         double *handshake, int *rest);

#endif
