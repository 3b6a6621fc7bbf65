/* The scheduler: tasks, ready queue, delayed heap, races, adaptive K, proxy
 * selection, per-(proxy, host) health, cooldown, eviction and rate limits.
 *
 * No I/O, no Lua, no libuv: the scheduler sees the world through sc_env_t
 * (a clock and a transport). The real transport is libcurl (src/net); the
 * simulator (src/core/sim.c) drives the same code on a virtual clock.
 *
 * Tasks and attempts are named by handles (slot | generation << 32) so a
 * stale handle from a finished task is detected instead of dereferenced.
 */
#ifndef SC_SCHED_H
#define SC_SCHED_H

#include <stddef.h>
#include <stdint.h>

typedef uint64_t sc_handle_t; /* 0 is never a valid handle */

typedef enum {
  SC_V_SUCCESS = 0,   /* deliver; credit the pair */
  SC_V_FINAL,         /* deliver as is (a real 404); credit the pair */
  SC_V_PROXY_BLOCKED, /* failure of the pair; try elsewhere */
  SC_V_TARGET_ERROR,  /* not the proxy's fault; retry the task after backoff */
  SC_V_TRANSPORT,     /* connect refused, SOCKS error, timeout, reset */
  SC_V__COUNT
} sc_verdict_t;

enum {
  SC_EINVAL = -22,
  SC_ENOMEM = -12,
  SC_EFULL = -105,   /* task_pool_capacity reached */
  SC_ENOENT = -2,    /* stale or unknown handle */
  SC_ECLOSED = -32,  /* scheduler closed */
  SC_ENOPROXY = -61, /* no such proxy */
};

typedef struct sc_config {
  double rate_interval;  /* min gap between attempts per (proxy, host) */
  double proxy_timeout;  /* one attempt; only used for hedge "auto" fallback */
  int k_base;            /* max_concurrent_per_request */
  int max_inflight;      /* attempts in flight, whole scheduler */
  int task_capacity;     /* pending (unfinished) tasks */
  int health_window;     /* 1..64 outcomes per pair */
  double cooldown_base;
  double cooldown_max;
  int cooldown_fails;    /* consecutive failures before a cooldown */
  int eviction_min_samples;
  double hedge_delay;    /* 0: all paths at once; >0 seconds; <0: auto (p95) */
  /* The connect + proxy handshake of one attempt: > 0 seconds (at most
   * proxy_timeout); 0: learnt, 3 x the pool's handshake p95 in
   * [0.3 s, proxy_timeout] (DESIGN.md section 10). */
  double connect_timeout;
  /* 1: the rule before continuous racing (DESIGN.md section 10): a round's
   * paths are replaced only when all have ended, no hedge past K, no
   * connect deadline of its own. For comparisons (bench/faultmix). */
  int rounds;
  double retry_backoff_base; /* target_error backoff: base * 2^(n-1) */
  double retry_backoff_max;
  uint64_t seed;         /* selection jitter */
} sc_config_t;

void sc_config_init(sc_config_t *cfg); /* DESIGN.md section 4 defaults */

typedef struct sc_attempt {
  sc_handle_t handle;
  sc_handle_t task;
  void *task_ud;    /* what the task was submitted with */
  uint32_t proxy;   /* proxy id */
  uint32_t host;    /* host id */
  double started;
  void *tdata;      /* the transport's own */
  /* seconds for the connect and proxy handshake; 0: proxy_timeout only */
  double connect_timeout;
} sc_attempt_t;

typedef struct sc_env {
  void *ud;
  double (*now)(void *ud);
  /* Ask to be called back (sc_sched_run) at or after time `at`; replaces
   * any earlier request. at < 0 cancels. */
  void (*wake)(void *ud, double at);
  /* Start an attempt. A negative return means it could not start; the
   * scheduler then records a transport failure of the pair itself. */
  int (*start)(void *ud, sc_attempt_t *a);
  /* Stop an attempt now; the transport must not report it afterwards. */
  void (*cancel)(void *ud, sc_attempt_t *a);
} sc_env_t;

typedef struct sc_metrics {
  uint32_t total_proxies, healthy_proxies, cooldown_proxies, dead_proxies;
  uint32_t retired_proxies;
  /* of the live proxies not cooling down: never tried (untested), tried
   * without a success yet (failing); healthy ones have had a success */
  uint32_t untested_proxies, failing_proxies;
  uint32_t pending_tasks, ready_tasks, delayed_tasks, running_tasks;
  uint64_t completed_tasks, failed_tasks, cancelled_tasks;
  double throughput_1s, throughput_10s, throughput_60s;
  double success_rate_1m, avg_latency_ms;
  uint32_t inflight;
  uint64_t requeued_tasks, zero_available_events, skipped_no_permit;
  uint64_t skipped_rate_limit, skipped_cooldown, dispatch_count;
  int k_current;
  uint64_t k_sum; /* K summed over dispatches: mean K = k_sum / dispatch_count */
  uint64_t attempts_started, attempts_cancelled, attempts_finished;
  uint64_t attempts_succeeded;
  uint64_t verdicts[SC_V__COUNT];
  uint64_t attempts_replaced; /* started at once for a failed live path */
  uint64_t attempts_hedged;   /* hedges past K (every live path past p95) */
  uint64_t handshakes;        /* handshake times learnt from */
  double connect_timeout;     /* the deadline in force now, seconds */
  double handshake_p95;       /* seconds; < 0 unknown */
} sc_metrics_t;

/* Per-pair health as seen from outside (snapshots, stats, specs). */
typedef struct sc_pair_info {
  uint32_t outcomes;  /* in the window */
  uint32_t successes; /* in the window */
  uint32_t consecutive_fails;
  double last_success; /* < 0: never */
  double cooldown_until;
  double rate_next;
  double latency_ewma, latency_p50, latency_p95; /* seconds, < 0 unknown */
} sc_pair_info_t;

typedef struct sc_sched sc_sched_t;

/* Task submission flags. */
enum {
  SC_TASK_NORACE = 1, /* one path at a time (non-idempotent request) */
};

int sc_sched_new(sc_sched_t **out, const sc_config_t *cfg, const sc_env_t *env);
void sc_sched_free(sc_sched_t *s); /* cancels every attempt, drops tasks */

/* Proxies are opaque keys (the normalized URL); duplicates merge. */
int sc_sched_proxy_add(sc_sched_t *s, const char *key, uint32_t *id);
const char *sc_sched_proxy_key(const sc_sched_t *s, uint32_t id);
uint32_t sc_sched_proxy_count(const sc_sched_t *s);
int sc_sched_proxy_find(const sc_sched_t *s, const char *key, uint32_t *id);
int sc_sched_proxy_is_dead(const sc_sched_t *s, uint32_t id);
/* 1 when a proxy other than id is neither dead nor retired. */
int sc_sched_proxy_others_live(const sc_sched_t *s, uint32_t id);
/* Retired proxies get no new attempts but keep their history. */
int sc_sched_proxy_retire(sc_sched_t *s, uint32_t id, int retired);
/* Proxy-level state for snapshots: totals over every host, and since when
 * (scheduler clock) the proxy has been dead. */
typedef struct sc_proxy_info {
  uint32_t attempts, successes;
  int dead;
  double dead_since;
} sc_proxy_info_t;
int sc_sched_proxy_info(const sc_sched_t *s, uint32_t id, sc_proxy_info_t *info);
/* Restores totals and the dead state (state file); restore the proxy's
 * pairs first (sc_sched_pair_restore), then the proxy. */
int sc_sched_proxy_restore(sc_sched_t *s, uint32_t id,
                           const sc_proxy_info_t *info);
/* A proxy dead for at least cooldown_max gets one more attempt (it is
 * listed again by a source): it becomes eligible until one attempt picks
 * it, gets no other until that one ends, and a failure evicts it again.
 * Returns 1 when armed, 0 when it is not dead or has not rested enough. */
int sc_sched_proxy_probe(sc_sched_t *s, uint32_t id);
/* Holds dispatch (a depth counter): tasks queue while held; releasing the
 * last hold (on = 0) runs the scheduler. A pool holds until its initial
 * proxy lists are in, and while it adds a list, so that no task starts
 * with the first few proxies of a list of thousands. Returns the depth. */
int sc_sched_hold(sc_sched_t *s, int on);
/* Proxy-level totals over every host of this scheduler. */
int sc_sched_proxy_totals(const sc_sched_t *s, uint32_t id, uint32_t *attempts,
                          uint32_t *successes);

/* Hosts are interned lower-case names. */
int sc_sched_host_id(sc_sched_t *s, const char *name, size_t len, uint32_t *id);
const char *sc_sched_host_name(const sc_sched_t *s, uint32_t id);
uint32_t sc_sched_host_count(const sc_sched_t *s);
/* The rate-limit interval for one host (rate_limit.host_overrides). */
int sc_sched_host_interval(sc_sched_t *s, uint32_t host, double interval);

int sc_sched_submit(sc_sched_t *s, uint32_t host, unsigned flags, void *ud,
                    sc_handle_t *task);
/* Cancel: every in-flight attempt is cancelled, the task is gone. */
int sc_sched_cancel(sc_sched_t *s, sc_handle_t task);
/* The outcome of an attempt. Returns 1 when this attempt won its task
 * (the task is finished and its handle now stale), 0 otherwise, or a
 * negative error for a stale attempt handle. latency in seconds. */
int sc_sched_attempt_done(sc_sched_t *s, sc_handle_t attempt, sc_verdict_t v,
                          double latency);
/* The same for a blocked attempt whose answer asked the pair to wait `rest`
 * seconds (a 429 or 503 with Retry-After; DESIGN.md section 11): the pair
 * rests min(rest, cooldown_max) (its rate-limit gate, which a success
 * already in flight does not lift), the attempt is a failure in the pair's
 * window that never counts towards eviction or a cooldown, and the task
 * moves on at once. v must be SC_V_PROXY_BLOCKED when rest >= 0;
 * rest < 0 is sc_sched_attempt_done. */
int sc_sched_attempt_rest(sc_sched_t *s, sc_handle_t attempt, sc_verdict_t v,
                          double latency, double rest);
/* The outcome of a request the scheduler did not start (a session's
 * request pinned to its proxy, lua/scatter/session.lua): recorded for the
 * pair as an attempt's would be (health, cooldown, eviction, latency). */
int sc_sched_record(sc_sched_t *s, uint32_t proxy, uint32_t host,
                    sc_verdict_t v, double latency);
/* The same with a rest, as sc_sched_attempt_rest (v PROXY_BLOCKED when
 * rest >= 0; rest < 0: none): a session's pinned 429 with Retry-After
 * rests the pair as the race's would, never evicting or cooling it. */
int sc_sched_record_rest(sc_sched_t *s, uint32_t proxy, uint32_t host,
                         sc_verdict_t v, double latency, double rest);
/* The attempt's connect + proxy handshake took `secs` (a new connection;
 * a reused one has none). The transport reports it before the outcome;
 * it sets the learnt connect deadline. */
int sc_sched_attempt_handshake(sc_sched_t *s, sc_handle_t attempt,
                               double secs);
/* The transport has the attempt's answer; its verdict (attempt_done)
 * follows once the caller has classified it. Until then its task is not
 * hedged: an answer is in hand. */
int sc_sched_attempt_answered(sc_sched_t *s, sc_handle_t attempt);
/* Per-task attempts started so far (the response's `attempts`). */
int sc_sched_task_attempts(const sc_sched_t *s, sc_handle_t task);
void *sc_sched_task_ud(const sc_sched_t *s, sc_handle_t task);
const sc_attempt_t *sc_sched_attempt(const sc_sched_t *s, sc_handle_t a);

/* Run due work: promote delayed tasks, start due hedges, dispatch. Called
 * from env->wake, once the transport has read the replies that came in:
 * runs made by an attempt's end or a submit start no hedge. */
void sc_sched_run(sc_sched_t *s);

int sc_sched_pending(const sc_sched_t *s); /* unfinished tasks */
int sc_sched_has_room(const sc_sched_t *s);
void sc_sched_metrics(sc_sched_t *s, sc_metrics_t *m);
int sc_sched_pair_info(const sc_sched_t *s, uint32_t proxy, uint32_t host,
                       sc_pair_info_t *info);
/* Restore a pair's health (state file). */
int sc_sched_pair_restore(sc_sched_t *s, uint32_t proxy, uint32_t host,
                          const sc_pair_info_t *info);
/* The pool's recent outcomes, the window adaptive K reads (DESIGN.md
 * sections 3, 5): bits[i] for i < *n (at most SC_RECENT_MAX) is outcome i,
 * oldest first, 1 a success; *finished counts the attempts finished,
 * restored ones included (the cold-start doubling ends when it reaches
 * eviction_min_samples). */
#define SC_RECENT_MAX 256
void sc_sched_recent(const sc_sched_t *s, uint8_t bits[SC_RECENT_MAX],
                     uint32_t *n, uint64_t *finished);
/* Replaces the window with n outcomes (oldest first; only the newest
 * SC_RECENT_MAX are kept) and counts `finished` restored attempts towards
 * the end of the cold start; the pool's metrics are not changed. */
void sc_sched_recent_restore(sc_sched_t *s, const uint8_t *bits, uint32_t n,
                             uint64_t finished);
const sc_config_t *sc_sched_config(const sc_sched_t *s);

const char *sc_verdict_name(sc_verdict_t v);
int sc_verdict_parse(const char *name, sc_verdict_t *v);

#endif
