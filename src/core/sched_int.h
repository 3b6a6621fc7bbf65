/* The scheduler's shared state: the structures every module of src/core's
 * scheduler (task, select, health, race, metrics, sched) works on, and the
 * few helpers they all need. Internal: callers use sched.h only.
 */
#ifndef SC_SCHED_INT_H
#define SC_SCHED_INT_H

#include <stdlib.h>
#include <string.h>

#include "intern.h"
#include "sched.h"

#define NBUCKETS 16
#define WHERE_WAIT 0xfe /* in the host's wait heap */
#define WHERE_OUT 0xff  /* dead or retired: in no structure */
#define NONE UINT32_MAX
#define RING 64 /* seconds of per-second counters */
/* Generations wrap at 20 bits so a handle (slot | gen << 32) is exact in a
 * Lua number (a double holds 53 bits). */
#define GEN_MASK 0xfffffu
#define HS_RING 64

/* Health of one (proxy, host) pair. Kept at 64 bytes or less: there is one
 * per proxy per host, 10^5 proxies x 20 hosts must stay small. */
typedef struct pair {
  uint64_t window;       /* bit 0 = newest outcome, 1 = success */
  double last_success;   /* < 0: never */
  double cooldown_until; /* 0: not cooling */
  double rate_next;      /* earliest next attempt start */
  float lat_ewma, lat_p50, lat_p95; /* seconds; < 0 unknown */
  uint32_t pos;          /* index in its band or in the wait heap */
  uint16_t consec;       /* consecutive failures */
  uint8_t nwin;          /* outcomes in the window */
  uint8_t where;         /* band 0..NBUCKETS-1, WHERE_WAIT or WHERE_OUT */
  uint8_t cooling;       /* counted in host->ncool */
} pair;

_Static_assert(sizeof(pair) <= 64, "a health record must fit 64 bytes");

typedef struct u32vec {
  uint32_t *v;
  uint32_t n, cap;
} u32vec;

typedef struct tlist { /* an intrusive FIFO of task slots */
  uint32_t head, tail, n;
} tlist;

typedef struct host {
  pair *pairs; /* indexed by proxy id, s->pair_cap entries */
  tlist starved; /* tasks that found no eligible proxy, oldest first */
  u32vec band[NBUCKETS];
  u32vec wait;  /* min-heap of proxy ids by eligible time */
  double *wait_key; /* wait.v[i]'s eligible time, kept beside it: reading it
                     * through pairs[] missed the cache on every compare */
  uint32_t wait_key_cap;
  uint32_t ncool;
  double interval;
  float lat_ewma, lat_p95; /* successful attempts to this host */
} host;

typedef struct proxy {
  uint32_t attempts, successes; /* finished, over every host */
  uint8_t dead, retired;
  uint8_t probe;  /* PROBE_ARMED / PROBE_FLYING after sc_sched_proxy_probe */
  double dead_at; /* when it was evicted: a probe needs cooldown_max since */
} proxy;

/* A revived proxy gets exactly one attempt: armed until an attempt picks it,
 * then out of every host's structures until that attempt's outcome. */
enum { PROBE_NONE = 0, PROBE_ARMED, PROBE_FLYING };

enum { T_FREE = 0, T_READY, T_DELAYED, T_STARVED, T_RUNNING };

typedef struct task {
  uint32_t gen;
  uint8_t state;
  uint8_t flags;
  uint8_t hedge;      /* in the delayed heap for a hedge, not a retry */
  uint8_t target_err; /* a target_error happened this round */
  uint32_t host;
  void *ud;
  uint32_t next, prev; /* ready queue or the host's starved list */
  uint32_t heap_pos;   /* delayed heap, NONE when absent */
  uint32_t first;      /* first active attempt slot */
  double wake_at;
  uint16_t active, round_k, round_started, backoff_n;
  uint16_t want;   /* live paths the task keeps (continuous racing) */
  uint32_t failed; /* proxy of its last failed path: not its replacement */
  uint32_t attempts;
} task;

typedef struct attempt {
  sc_attempt_t pub;
  uint32_t gen;
  uint32_t task; /* slot */
  uint32_t next; /* next active attempt of the same task, or free list */
  int answered;  /* sc_sched_attempt_answered: its verdict is on its way */
} attempt;

struct sc_sched {
  sc_config_t cfg;
  sc_env_t env;
  uint64_t rng;
  sc_intern_t proxy_names, host_names;
  proxy *proxies;
  uint32_t proxy_cap, pair_cap;
  host *hosts;
  uint32_t host_cap;
  uint32_t dead, retired;

  task *tasks;
  uint32_t task_cap, task_free, ntasks;
  tlist ready;
  u32vec starved_hosts; /* hosts whose starved list is not empty */
  uint32_t nstarved;
  u32vec delayed; /* min-heap of task slots by wake_at */
  attempt *attempts;
  uint32_t att_cap, att_free;
  uint32_t inflight;

  int in_run, need_run;
  int held; /* sc_sched_hold depth: no dispatch while > 0 */
  double wake_at;

  uint64_t recent[4]; /* the pool's last 256 attempt outcomes */
  uint32_t recent_n, recent_i, recent_ok;
  uint64_t restored_finished; /* attempts a state file says finished */
  int k_current;
  float lat_ewma;
  /* the pool's last HS_RING handshake times (new connections), and their
   * p95, recomputed every few samples */
  float hs_ring[HS_RING], hs_p95;
  uint32_t hs_n;
  uint32_t done_ring[RING], att_ring[RING], ok_ring[RING];
  int64_t ring_sec;
  double born; /* when the pool was made: a young pool's windows are shorter */
  sc_metrics_t m; /* counters; the derived fields are filled on demand */
};

/* ---- small helpers ---- */

static inline uint64_t sc_core_rnd(sc_sched_t *s) { /* xorshift64* */
  s->rng ^= s->rng >> 12;
  s->rng ^= s->rng << 25;
  s->rng ^= s->rng >> 27;
  return s->rng * 2685821657736338717ull;
}

static inline double sc_core_now(sc_sched_t *s) {
  return s->env.now(s->env.ud);
}

static inline int sc_core_vec_push(u32vec *v, uint32_t x) {
  if (v->n == v->cap) {
    uint32_t cap = v->cap ? v->cap * 2 : 16;
    uint32_t *nv = realloc(v->v, cap * sizeof(*nv));
    if (!nv) return SC_ENOMEM;
    v->v = nv;
    v->cap = cap;
  }
  v->v[v->n++] = x;
  return 0;
}

static inline void *sc_core_grow(void *p, uint32_t *cap, uint32_t need,
                                 size_t size) {
  uint32_t c = *cap ? *cap : 16;
  while (c < need) c *= 2;
  if (c == *cap) return p;
  void *np = realloc(p, (size_t)c * size);
  if (!np) return NULL;
  memset((char *)np + (size_t)*cap * size, 0, (size_t)(c - *cap) * size);
  *cap = c;
  return np;
}

static inline sc_handle_t sc_core_handle(uint32_t slot, uint32_t gen) {
  return ((uint64_t)gen << 32) | (uint64_t)(slot + 1);
}

#endif
