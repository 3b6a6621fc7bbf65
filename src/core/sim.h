/* The simulator: the real scheduler (sched.c) on a virtual clock with
 * simulated proxies, deterministic from a seed (DESIGN.md sections 1, 7).
 *
 * It is an sc_env_t: now() is the virtual clock, wake() records one pending
 * wake-up, start() draws the attempt's outcome at once and files it as a
 * future event, cancel() invalidates that event. sc_sim_run pops events in
 * (time, sequence) order, advances the clock, reports outcomes through
 * sc_sched_attempt_done and keeps the task pool full until every task is
 * delivered or a limit is hit. Nothing here allocates per event: attempts,
 * tasks and heap entries live in flat arrays that only grow.
 */
#ifndef SC_SIM_H
#define SC_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "sched.h"

typedef enum {
  SC_SIM_GOOD = 0,  /* latency +- jitter, success with P(success) */
  SC_SIM_SLOW,      /* good with a large default latency */
  SC_SIM_DEAD,      /* refused at once (transport failure after `latency`) */
  SC_SIM_BLACKHOLE, /* transport failure at config proxy_timeout */
  SC_SIM_BLOCK,     /* proxy_blocked (a block page) after latency */
  SC_SIM_SCRIPT,    /* outcomes from `script`, cycled per proxy */
  SC_SIM__PROFILES
} sc_sim_profile_t;

/* A group of identical proxies. Latency values are in seconds; an outcome
 * later than the config's proxy_timeout becomes a transport failure at
 * proxy_timeout, as the real transport would see it. */
typedef struct sc_sim_group {
  uint32_t count;
  sc_sim_profile_t profile;
  double latency;      /* < 0: the profile's default */
  double jitter;       /* uniform in [latency - jitter, latency + jitter] */
  double success;      /* good, slow: P(success), else proxy_blocked */
  double target_error; /* good, slow: P(target_error), drawn first */
  /* script: one letter per attempt through the proxy, cycled:
   * s success, f final, b proxy_blocked, e target_error, t transport,
   * r proxy_blocked by a 429 with Retry-After: retry_after seconds */
  const char *script;
  double retry_after;
} sc_sim_group_t;

enum { SC_SIM_EV_START = 0, SC_SIM_EV_DONE, SC_SIM_EV_CANCEL };

typedef struct sc_sim_event {
  double t;
  uint32_t proxy, host; /* scheduler ids */
  uint64_t task;        /* 1-based submission number */
  uint8_t kind;         /* SC_SIM_EV_* */
  uint8_t verdict;      /* SC_SIM_EV_DONE: an sc_verdict_t */
} sc_sim_event_t;

typedef struct sc_sim_opts {
  uint64_t seed;        /* outcomes; the scheduler's own seed is cfg->seed */
  uint64_t tasks;       /* submitted while the pool has room */
  unsigned task_flags;  /* SC_TASK_NORACE for non-idempotent requests */
  double time_limit;    /* virtual seconds; <= 0: none */
  uint64_t event_limit; /* outcomes + wake-ups processed; 0: none */
  uint32_t trace_limit; /* events kept; 0: no trace */
} sc_sim_opts_t;

typedef enum {
  SC_SIM_DONE = 0, /* every task delivered */
  SC_SIM_TIME_LIMIT,
  SC_SIM_EVENT_LIMIT,
  SC_SIM_STALLED,  /* nothing left that could ever happen */
  SC_SIM_HOT_LOOP, /* woken again and again at one instant for nothing: a
                      scheduler bug the simulator reports instead of hiding */
} sc_sim_stop_t;

typedef struct sc_sim_report {
  sc_sim_stop_t stopped;
  uint64_t submitted, delivered;
  uint64_t attempts, cancelled; /* started; cancelled by a race or a cancel */
  uint64_t events, wakes;       /* processed; wakes are among the events */
  double virtual_seconds;
  uint64_t dispatches, zero_available_events;
  double k_mean; /* mean K over dispatches */
  uint64_t attempts_by_profile[SC_SIM__PROFILES];
  uint64_t verdicts[SC_V__COUNT];
  double latency_max, latency_mean; /* per task, submit to delivery */
  uint32_t max_inflight_seen;       /* attempts in flight at once */
  uint32_t max_task_parallel;       /* attempts of one task at once */
  uint64_t trace_dropped;           /* matching events beyond trace_limit */
  sc_metrics_t metrics;             /* the scheduler's, at the end */
} sc_sim_report_t;

typedef struct sc_sim sc_sim_t;

int sc_sim_new(sc_sim_t **out, const sc_config_t *cfg, const sc_sim_opts_t *o);
void sc_sim_free(sc_sim_t *sim);
/* Tasks go round-robin over the hosts in the order added (a name added
 * twice counts twice). interval >= 0 overrides the config's rate limit for
 * the host (rate_limit.host_overrides). */
int sc_sim_add_host(sc_sim_t *sim, const char *name, double interval,
                    uint32_t *id);
/* Proxies get consecutive ids in the order added. */
int sc_sim_add_group(sc_sim_t *sim, const sc_sim_group_t *g);
/* Runs once; 0 or a negative error (an inconsistency in the scheduler). */
int sc_sim_run(sc_sim_t *sim, sc_sim_report_t *r);

sc_sched_t *sc_sim_sched(sc_sim_t *sim);
/* Keep only the events of this proxy id and/or host id (< 0: any). */
void sc_sim_trace_filter(sc_sim_t *sim, int64_t proxy, int64_t host);
const sc_sim_event_t *sc_sim_trace(const sc_sim_t *sim, size_t *n);
/* Smallest gap between two attempt starts through one (proxy, host) pair of
 * this host; < 0 when no pair of it started twice. */
double sc_sim_min_pair_gap(const sc_sim_t *sim, uint32_t host);
/* Per proxy: its profile and the attempts started through it. */
int sc_sim_proxy_info(const sc_sim_t *sim, uint32_t id,
                      sc_sim_profile_t *profile, uint32_t *starts);

const char *sc_sim_profile_name(sc_sim_profile_t p);
int sc_sim_profile_parse(const char *name, sc_sim_profile_t *p);

#endif
