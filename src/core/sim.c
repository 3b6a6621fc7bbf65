/* The simulator. See sim.h.
 *
 * Each attempt's outcome (verdict and latency) is drawn when it starts, so
 * the run is a pure function of the seeds and the inputs: the event heap is
 * ordered by (time, sequence number) and the sequence number is the order
 * in which the scheduler asked for things. A cancelled attempt leaves its
 * heap entry behind with an old generation; the entry is skipped when it
 * reaches the top, which keeps cancel O(1).
 */
#include "sim_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE UINT32_MAX
/* A scheduler may rightly ask to be woken at the current instant a few
 * times (a zero hedge delay); this many times with nothing started is a
 * hot loop. */
#define HOT_LOOP_WAKES 1000

/* ---- the event heap ---- */

static int ev_less(const ev *a, const ev *b) {
  return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static int heap_push(sc_sim_t *sim, double t, uint32_t slot, uint32_t gen) {
  if (sim->nheap == sim->heap_cap) {
    size_t cap = sim->heap_cap ? sim->heap_cap * 2 : 1024;
    ev *nh = realloc(sim->heap, cap * sizeof(*nh));
    if (!nh) return SC_ENOMEM;
    sim->heap = nh;
    sim->heap_cap = cap;
  }
  ev e = {t, sim->seq++, slot, gen};
  size_t i = sim->nheap++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!ev_less(&e, &sim->heap[parent])) break;
    sim->heap[i] = sim->heap[parent];
    i = parent;
  }
  sim->heap[i] = e;
  return 0;
}

static ev heap_pop(sc_sim_t *sim) {
  ev top = sim->heap[0], last = sim->heap[--sim->nheap];
  size_t n = sim->nheap, i = 0;
  for (;;) {
    size_t l = 2 * i + 1, m = l;
    if (l >= n) break;
    if (l + 1 < n && ev_less(&sim->heap[l + 1], &sim->heap[l])) m = l + 1;
    if (!ev_less(&sim->heap[m], &last)) break;
    sim->heap[i] = sim->heap[m];
    i = m;
  }
  if (n) sim->heap[i] = last;
  return top;
}

/* Drops cancelled entries from the top; 1 when a live one is there. */
static int heap_peek(sc_sim_t *sim) {
  while (sim->nheap) {
    const ev *e = &sim->heap[0];
    if (sim->atts[e->slot].gen == e->gen) return 1;
    heap_pop(sim);
  }
  return 0;
}

/* ---- trace ---- */

static void trace(sc_sim_t *sim, uint8_t kind, uint32_t proxy, uint32_t host,
                  uint32_t task, uint8_t verdict) {
  if (!sim->o.trace_limit || sim->closing) return;
  if (sim->trace_proxy >= 0 && (int64_t)proxy != sim->trace_proxy) return;
  if (sim->trace_host >= 0 && (int64_t)host != sim->trace_host) return;
  if (sim->ntrace == sim->trace_cap) {
    size_t cap = sim->trace_cap ? sim->trace_cap * 2 : 256;
    if (cap > sim->o.trace_limit) cap = sim->o.trace_limit;
    sc_sim_event_t *nt =
        cap > sim->trace_cap ? realloc(sim->trace, cap * sizeof(*nt)) : NULL;
    if (!nt) { /* full (or out of memory): counted, not kept */
      sim->r.trace_dropped++;
      return;
    }
    sim->trace = nt;
    sim->trace_cap = cap;
  }
  sim->trace[sim->ntrace++] = (sc_sim_event_t){
      sim->clock, proxy, host, sim->tasks[task].num, kind, verdict};
}

/* ---- the environment the scheduler sees ---- */

static double env_now(void *ud) { return ((sc_sim_t *)ud)->clock; }

static void env_wake(void *ud, double at) {
  sc_sim_t *sim = ud;
  sim->wake_at = at;
  /* a wake-up is ordered after everything already filed at its time */
  if (at >= 0) sim->wake_seq = sim->seq++;
}

static int env_start(void *ud, sc_attempt_t *a) {
  sc_sim_t *sim = ud;
  if (sim->att_free == NONE) {
    uint32_t old = sim->att_cap, cap = old ? old * 2 : 256;
    att *na = realloc(sim->atts, (size_t)cap * sizeof(*na));
    if (!na) return SC_ENOMEM;
    for (uint32_t i = cap; i > old; i--) {
      na[i - 1].gen = 0;
      na[i - 1].next = sim->att_free;
      sim->att_free = i - 1;
    }
    sim->atts = na;
    sim->att_cap = cap;
  }
  uint32_t slot = sim->att_free, tslot = (uint32_t)((uintptr_t)a->task_ud - 1);
  att *at = &sim->atts[slot];
  sproxy *px = &sim->proxies[a->proxy];
  double lat, hs;
  int rest = 0;
  sc_verdict_t v = sc_sim_draw(sim, px, a->connect_timeout, &lat, &hs, &rest);
  if (heap_push(sim, sim->clock + lat, slot, at->gen) < 0) return SC_ENOMEM;
  sim->att_free = at->next;
  at->handle = a->handle;
  at->latency = lat;
  at->handshake = hs;
  at->task = tslot;
  at->proxy = a->proxy;
  at->host = a->host;
  at->verdict = (uint8_t)v;
  at->rest = (uint8_t)rest;
  a->tdata = (void *)(uintptr_t)(slot + 1);

  stask *t = &sim->tasks[tslot];
  if (++t->active > sim->r.max_task_parallel)
    sim->r.max_task_parallel = t->active;
  if (++sim->inflight > sim->r.max_inflight_seen)
    sim->r.max_inflight_seen = sim->inflight;
  px->starts++;
  sim->r.attempts++;
  sim->r.attempts_by_profile[sim->groups[px->group].g.profile]++;
  if (a->host < sim->ngap_hosts) {
    double *last = &sim->last_start[(size_t)a->host * sim->nproxies + a->proxy];
    double *gap = &sim->min_gap[a->host];
    if (*last >= 0 && (*gap < 0 || sim->clock - *last < *gap))
      *gap = sim->clock - *last;
    *last = sim->clock;
  }
  trace(sim, SC_SIM_EV_START, a->proxy, a->host, tslot, 0);
  return 0;
}

static void att_release(sc_sim_t *sim, uint32_t slot) {
  att *at = &sim->atts[slot];
  at->gen++; /* its heap entry is stale from now on */
  at->next = sim->att_free;
  sim->att_free = slot;
  sim->tasks[at->task].active--;
  sim->inflight--;
}

static void env_cancel(void *ud, sc_attempt_t *a) {
  sc_sim_t *sim = ud;
  if (!a->tdata) return;
  uint32_t slot = (uint32_t)((uintptr_t)a->tdata - 1);
  a->tdata = NULL;
  att *at = &sim->atts[slot];
  if (!sim->closing) sim->r.cancelled++;
  trace(sim, SC_SIM_EV_CANCEL, at->proxy, at->host, at->task, 0);
  att_release(sim, slot);
}

/* ---- tasks ---- */

static int submit_fill(sc_sim_t *sim) {
  while (sim->r.submitted < sim->o.tasks && sc_sched_has_room(sim->s)) {
    if (sim->task_free == NONE) {
      uint32_t old = sim->task_cap, cap = old ? old * 2 : 256;
      stask *nt = realloc(sim->tasks, (size_t)cap * sizeof(*nt));
      if (!nt) return SC_ENOMEM;
      for (uint32_t i = cap; i > old; i--) {
        nt[i - 1].next = sim->task_free;
        sim->task_free = i - 1;
      }
      sim->tasks = nt;
      sim->task_cap = cap;
    }
    uint32_t slot = sim->task_free;
    stask *t = &sim->tasks[slot];
    sim->task_free = t->next;
    t->submitted = sim->clock;
    t->num = ++sim->r.submitted;
    t->active = 0;
    uint32_t host = sim->rr[(t->num - 1) % sim->nrr];
    sc_handle_t h;
    /* dispatches at once, so the task record is ready before the call */
    int rc = sc_sched_submit(sim->s, host, sim->o.task_flags,
                             (void *)(uintptr_t)(slot + 1), &h);
    if (rc < 0) {
      sim->r.submitted--;
      sim->tasks[slot].next = sim->task_free;
      sim->task_free = slot;
      return rc;
    }
  }
  return 0;
}

/* An attempt's outcome is due. */
static int outcome(sc_sim_t *sim, uint32_t slot) {
  att a = sim->atts[slot]; /* a copy: starts below may move the array */
  uint32_t tslot = a.task;
  trace(sim, SC_SIM_EV_DONE, a.proxy, a.host, tslot, a.verdict);
  att_release(sim, slot);
  sim->r.verdicts[a.verdict]++;
  if (a.handshake >= 0 &&
      sc_sched_attempt_handshake(sim->s, a.handle, a.handshake) < 0)
    return SC_EINVAL; /* the scheduler lost track of its attempt */
  double rest = a.rest ? sim->groups[sim->proxies[a.proxy].group].g.retry_after : -1;
  int won = sc_sched_attempt_rest(sim->s, a.handle, (sc_verdict_t)a.verdict,
                                  a.latency, rest);
  if (won < 0) return won; /* the scheduler lost track of its attempt */
  if (won == 1) {
    stask *t = &sim->tasks[tslot];
    double lat = sim->clock - t->submitted;
    sim->r.delivered++;
    sim->lat_sum += lat;
    if (lat > sim->r.latency_max) sim->r.latency_max = lat;
    t->next = sim->task_free;
    sim->task_free = tslot;
  }
  return 0;
}

/* ---- public API ---- */

int sc_sim_new(sc_sim_t **out, const sc_config_t *cfg, const sc_sim_opts_t *o) {
  if (!(cfg->proxy_timeout > 0) || o->time_limit != o->time_limit)
    return SC_EINVAL;
  sc_sim_t *sim = calloc(1, sizeof(*sim));
  if (!sim) return SC_ENOMEM;
  sim->cfg = *cfg;
  sim->o = *o;
  sim->rng = o->seed;
  sim->wake_at = -1;
  sim->trace_proxy = sim->trace_host = -1;
  sim->att_free = sim->task_free = NONE;
  sc_env_t env = {sim, env_now, env_wake, env_start, env_cancel};
  int rc = sc_sched_new(&sim->s, cfg, &env);
  if (rc < 0) {
    free(sim);
    return rc;
  }
  *out = sim;
  return 0;
}

void sc_sim_free(sc_sim_t *sim) {
  if (!sim) return;
  sim->closing = 1;
  sc_sched_free(sim->s); /* cancels what is in flight through env_cancel */
  for (uint32_t i = 0; i < sim->ngroups; i++)
    free((char *)sim->groups[i].g.script);
  free(sim->groups);
  free(sim->heap);
  free(sim->atts);
  free(sim->tasks);
  free(sim->proxies);
  free(sim->rr);
  free(sim->last_start);
  free(sim->min_gap);
  free(sim->trace);
  free(sim);
}

int sc_sim_add_host(sc_sim_t *sim, const char *name, double interval,
                    uint32_t *idp) {
  if (sim->ran) return SC_EINVAL;
  uint32_t id;
  int rc = sc_sched_host_id(sim->s, name, strlen(name), &id);
  if (rc < 0) return rc;
  if (interval >= 0 && (rc = sc_sched_host_interval(sim->s, id, interval)) < 0)
    return rc;
  uint32_t *nr = realloc(sim->rr, (sim->nrr + 1) * sizeof(*nr));
  if (!nr) return SC_ENOMEM;
  sim->rr = nr;
  sim->rr[sim->nrr++] = id;
  if (idp) *idp = id;
  return 0;
}

static const double default_latency[SC_SIM__PROFILES] = {0.2, 4.0, 0.001,
                                                         0,   0.2, 0.2};
static const double default_jitter[SC_SIM__PROFILES] = {0, 2.0, 0, 0, 0, 0};

int sc_sim_add_group(sc_sim_t *sim, const sc_sim_group_t *g) {
  if (sim->ran || (unsigned)g->profile >= SC_SIM__PROFILES ||
      !(g->success >= 0 && g->success <= 1) ||
      !(g->target_error >= 0 && g->target_error <= 1) ||
      g->latency != g->latency || g->jitter != g->jitter ||
      g->count > UINT32_MAX - sim->nproxies)
    return SC_EINVAL;
  size_t slen = 0;
  if (g->profile == SC_SIM_SCRIPT) {
    if (!g->script || !(slen = strlen(g->script))) return SC_EINVAL;
    if (strspn(g->script, "sfbetr") != slen) return SC_EINVAL;
    if (strchr(g->script, 'r') && !(g->retry_after >= 0)) return SC_EINVAL;
  }
  sgroup *ng = realloc(sim->groups, (sim->ngroups + 1) * sizeof(*ng));
  if (!ng) return SC_ENOMEM;
  sim->groups = ng;
  sgroup *sg = &ng[sim->ngroups];
  sg->g = *g;
  sg->script_len = slen;
  sg->g.script = NULL;
  if (slen) {
    char *copy = malloc(slen + 1);
    if (!copy) return SC_ENOMEM;
    memcpy(copy, g->script, slen + 1);
    sg->g.script = copy;
  }
  if (sg->g.latency < 0) sg->g.latency = default_latency[g->profile];
  if (sg->g.jitter < 0) sg->g.jitter = default_jitter[g->profile];
  uint32_t gi = sim->ngroups++;

  uint32_t need = sim->nproxies + g->count;
  if (need > sim->proxy_cap) {
    uint32_t cap = sim->proxy_cap ? sim->proxy_cap : 256;
    while (cap < need) cap = cap > UINT32_MAX / 2 ? need : cap * 2;
    sproxy *np = realloc(sim->proxies, (size_t)cap * sizeof(*np));
    if (!np) return SC_ENOMEM;
    sim->proxies = np;
    sim->proxy_cap = cap;
  }
  for (uint32_t i = 0; i < g->count; i++) {
    char key[32];
    uint32_t id = sim->nproxies;
    snprintf(key, sizeof(key), "sim-%u:1080", id);
    int rc = sc_sched_proxy_add(sim->s, key, &id);
    if (rc < 0) return rc;
    if (id != sim->nproxies) return SC_EINVAL; /* ids must be dense */
    sim->proxies[id] = (sproxy){gi, 0, 0};
    sim->nproxies++;
  }
  return 0;
}

int sc_sim_run(sc_sim_t *sim, sc_sim_report_t *out) {
  if (sim->ran || sim->nrr == 0) return SC_EINVAL;
  sim->ran = 1;
  sc_sim_report_t *r = &sim->r;
  uint32_t nh = sc_sched_host_count(sim->s);
  size_t npairs = (size_t)nh * sim->nproxies;
  sim->last_start = malloc((npairs ? npairs : 1) * sizeof(double));
  sim->min_gap = malloc(nh * sizeof(double));
  if (!sim->last_start || !sim->min_gap) return SC_ENOMEM;
  for (size_t i = 0; i < npairs; i++) sim->last_start[i] = -1;
  for (uint32_t i = 0; i < nh; i++) sim->min_gap[i] = -1;
  sim->ngap_hosts = nh;

  /* wake-ups in a row at one instant with no attempt started meanwhile */
  uint64_t idle_wakes = 0, attempts_then = 0;
  double idle_at = -1;
  int rc = submit_fill(sim);
  while (rc == 0) {
    if (r->delivered == sim->o.tasks) {
      r->stopped = SC_SIM_DONE;
      break;
    }
    int have_ev = heap_peek(sim), have_wake = sim->wake_at >= 0;
    if (!have_ev && !have_wake) {
      r->stopped = SC_SIM_STALLED;
      break;
    }
    const ev *top = have_ev ? &sim->heap[0] : NULL;
    int use_wake =
        have_wake && (!top || sim->wake_at < top->t ||
                      (sim->wake_at == top->t && sim->wake_seq < top->seq));
    double t = use_wake ? sim->wake_at : top->t;
    if (t < sim->clock) t = sim->clock; /* a wake-up asked for the past */
    if (sim->o.time_limit > 0 && t > sim->o.time_limit) {
      sim->clock = sim->o.time_limit;
      r->stopped = SC_SIM_TIME_LIMIT;
      break;
    }
    if (sim->o.event_limit && r->events >= sim->o.event_limit) {
      r->stopped = SC_SIM_EVENT_LIMIT;
      break;
    }
    r->events++;
    sim->clock = t;
    if (use_wake) {
      if (t == idle_at && r->attempts == attempts_then) {
        if (++idle_wakes >= HOT_LOOP_WAKES) {
          r->stopped = SC_SIM_HOT_LOOP;
          break;
        }
      } else {
        idle_wakes = 0;
        idle_at = t;
        attempts_then = r->attempts;
      }
      r->wakes++;
      sim->wake_at = -1; /* one-shot, as a timer */
      sc_sched_run(sim->s);
    } else {
      rc = outcome(sim, heap_pop(sim).slot);
      if (rc < 0) break;
    }
    rc = submit_fill(sim);
  }
  if (rc < 0) return rc;
  r->virtual_seconds = sim->clock;
  sc_sched_metrics(sim->s, &r->metrics);
  r->dispatches = r->metrics.dispatch_count;
  r->zero_available_events = r->metrics.zero_available_events;
  r->k_mean = r->dispatches ? (double)r->metrics.k_sum / r->dispatches : 0;
  r->latency_mean = r->delivered ? sim->lat_sum / r->delivered : 0;
  *out = *r;
  return 0;
}

sc_sched_t *sc_sim_sched(sc_sim_t *sim) { return sim->s; }

void sc_sim_trace_filter(sc_sim_t *sim, int64_t proxy, int64_t host) {
  sim->trace_proxy = proxy;
  sim->trace_host = host;
}

const sc_sim_event_t *sc_sim_trace(const sc_sim_t *sim, size_t *n) {
  *n = sim->ntrace;
  return sim->trace;
}

double sc_sim_min_pair_gap(const sc_sim_t *sim, uint32_t host) {
  return host < sim->ngap_hosts ? sim->min_gap[host] : -1;
}

int sc_sim_proxy_info(const sc_sim_t *sim, uint32_t id,
                      sc_sim_profile_t *profile, uint32_t *starts) {
  if (id >= sim->nproxies) return SC_ENOPROXY;
  *profile = sim->groups[sim->proxies[id].group].g.profile;
  *starts = sim->proxies[id].starts;
  return 0;
}

static const char *const profile_names[SC_SIM__PROFILES] = {
    "good", "slow", "dead", "blackhole", "block", "script"};

const char *sc_sim_profile_name(sc_sim_profile_t p) {
  return (unsigned)p < SC_SIM__PROFILES ? profile_names[p] : NULL;
}

int sc_sim_profile_parse(const char *name, sc_sim_profile_t *p) {
  for (int i = 0; i < SC_SIM__PROFILES; i++) {
    if (strcmp(name, profile_names[i]) == 0) {
      *p = (sc_sim_profile_t)i;
      return 0;
    }
  }
  return SC_EINVAL;
}
