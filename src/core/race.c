/* Races. See race.h and DESIGN.md section 3. */
#include "race.h"

#include <math.h>

#include "health.h"
#include "select.h"
#include "task.h"

attempt *sc_race_attempt_at(const sc_sched_t *s, sc_handle_t h) {
  uint32_t slot = (uint32_t)(h & 0xffffffffu);
  if (slot == 0 || slot > s->att_cap) return NULL;
  attempt *a = &s->attempts[slot - 1];
  if (a->pub.handle != h) return NULL;
  return a;
}

static void attempt_release(sc_sched_t *s, attempt *a) {
  task *t = &s->tasks[a->task];
  uint32_t slot = (uint32_t)(a - s->attempts);
  for (uint32_t *pp = &t->first; *pp != NONE; pp = &s->attempts[*pp].next) {
    if (*pp == slot) {
      *pp = a->next;
      break;
    }
  }
  t->active--;
  s->inflight--;
  a->pub.handle = 0;
  a->next = s->att_free;
  s->att_free = slot;
}

void sc_race_cancel(sc_sched_t *s, task *t) {
  while (t->first != NONE) {
    attempt *a = &s->attempts[t->first];
    s->env.cancel(s->env.ud, &a->pub);
    s->m.attempts_cancelled++;
    uint32_t id = a->pub.proxy;
    attempt_release(s, a);
    if (s->proxies[id].probe == PROBE_FLYING) {
      /* a probe without an outcome proves nothing: arm it again */
      s->proxies[id].probe = PROBE_ARMED;
      sc_select_place_proxy(s, id, sc_core_now(s));
    }
  }
}

int sc_race_launch(sc_sched_t *s, task *t, int n) {
  host *h = &s->hosts[t->host];
  double tn = sc_core_now(s), ct = sc_health_connect_timeout(s);
  int started = 0;
  sc_select_promote(s, h, tn);
  while (started < n) {
    if (s->inflight >= (uint32_t)s->cfg.max_inflight) {
      s->m.skipped_no_permit++;
      break;
    }
    uint32_t id = sc_select_pick(s, t, h);
    if (id == NONE) break;
    pair *p = &h->pairs[id];
    p->rate_next = tn + h->interval;
    if (s->proxies[id].probe == PROBE_ARMED) {
      s->proxies[id].probe = PROBE_FLYING; /* its one attempt */
      for (uint32_t i = 0; i < s->host_names.count; i++)
        sc_select_unlink(&s->hosts[i], id);
    }
    /* placed as of just before now, so it waits in the heap even with a
     * zero interval: a task never gets the same proxy twice in one launch */
    sc_select_place(s, h, id, tn - 1);

    if (s->att_free == NONE) {
      uint32_t old = s->att_cap;
      attempt *na =
          sc_core_grow(s->attempts, &s->att_cap, old + 1, sizeof(*na));
      if (!na) break;
      s->attempts = na;
      for (uint32_t i = s->att_cap; i > old; i--) {
        na[i - 1].next = s->att_free;
        s->att_free = i - 1;
      }
    }
    uint32_t slot = s->att_free;
    attempt *a = &s->attempts[slot];
    s->att_free = a->next;
    a->gen = (a->gen + 1) & GEN_MASK;
    if (a->gen == 0) a->gen = 1;
    a->task = sc_task_slot(s, t);
    a->pub.handle = sc_core_handle(slot, a->gen);
    a->pub.task = sc_core_handle(sc_task_slot(s, t), t->gen);
    a->pub.task_ud = t->ud;
    a->pub.proxy = id;
    a->pub.host = t->host;
    a->pub.started = tn;
    a->pub.tdata = NULL;
    a->pub.connect_timeout = ct;
    a->answered = 0;
    a->next = t->first;
    t->first = slot;
    t->active++;
    t->attempts++;
    s->inflight++;
    s->m.attempts_started++;
    /* the transport must not keep `&a->pub`: the slab may move */
    if (s->env.start(s->env.ud, &a->pub) < 0) {
      /* could not even start: a failure of the pair; try the next proxy */
      attempt_release(s, a);
      sc_health_record(s, id, t->host, SC_V_TRANSPORT, 0, tn);
      continue;
    }
    t->round_started++;
    started++;
  }
  return started;
}

double sc_race_hedge_delay(sc_sched_t *s, const host *h) {
  if (s->cfg.hedge_delay >= 0) return s->cfg.hedge_delay;
  return h->lat_p95 > 0 ? h->lat_p95 : 0; /* auto: unknown p95 -> all at once */
}

/* ---- continuous racing (DESIGN.md section 10) ----
 *
 * A running task keeps t->want live paths: a failed one is replaced at
 * once (fill), and one timer per task (the delayed heap's hedge entry,
 * re-armed by arm) adds a path when it is due: every hedge_delay until K
 * paths live, then, when every live path has run longer than the host's
 * p95 latency, one more past K, up to 2 x K. */

/* How long a task waits for a host latency to be known before it looks
 * again whether to hedge. */
#define UNKNOWN_P95_WAIT(s) (0.1 * (s)->cfg.proxy_timeout)

static double youngest(const sc_sched_t *s, const task *t) {
  double y = -1;
  for (uint32_t i = t->first; i != NONE; i = s->attempts[i].next)
    if (s->attempts[i].pub.started > y) y = s->attempts[i].pub.started;
  return y;
}

/* Start paths until t has t->want live ones; returns how many started. */
static int fill(sc_sched_t *s, task *t) {
  int n = (int)t->want - (int)t->active;
  return n > 0 ? sc_race_launch(s, t, n) : 0;
}

static void arm(sc_sched_t *s, task *t) {
  const host *h = &s->hosts[t->host];
  double y = youngest(s, t), d = sc_race_hedge_delay(s, h), at = -1;
  if (y >= 0) {
    if (t->want < t->round_k && d > 0)
      at = y + d;
    else if (!(t->flags & SC_TASK_NORACE) && t->active < 2 * t->round_k &&
             s->proxy_names.count - s->dead - s->retired > t->active)
      /* no latency known yet (a cold pool): look again later, or a task
       * that started on blackholes would wait them out */
      at = y + (h->lat_p95 > 0 ? h->lat_p95 : UNKNOWN_P95_WAIT(s));
  }
  if (at >= 0) {
    sc_task_delay(s, t, at, 1);
  } else if (t->heap_pos != NONE && t->hedge) {
    sc_task_undelay(s, t);
    t->hedge = 0;
  }
}

void sc_race_hedge(sc_sched_t *s, task *t, double tn) {
  t->hedge = 0;
  if (s->cfg.rounds) {
    if (sc_race_launch(s, t, 1) > 0 && t->round_started < t->round_k)
      sc_task_delay(s, t, tn + sc_race_hedge_delay(s, &s->hosts[t->host]),
                    1);
    return;
  }
  const host *h = &s->hosts[t->host];
  /* an answer is in hand, waiting for its verdict: no new path now (a
   * failing verdict replaces the path and re-arms, a good one ends t) */
  for (uint32_t i = t->first; i != NONE; i = s->attempts[i].next)
    if (s->attempts[i].answered) return;
  if (t->want < t->round_k) { /* the next of K paths hedge_delay apart */
    t->want++;
    if (fill(s, t) == 0) t->want--; /* nothing eligible: an outcome re-arms */
    else arm(s, t);
    return;
  }
  /* past K: one more path when every live one is older than the p95 */
  double y = youngest(s, t);
  if (y < 0 || t->active >= 2 * t->round_k) return;
  if (!(h->lat_p95 > 0)) {
    sc_task_delay(s, t, tn + UNKNOWN_P95_WAIT(s), 1);
    return;
  }
  if (y + h->lat_p95 > tn) { /* the p95 grew since the timer was set */
    arm(s, t);
    return;
  }
  if (sc_race_launch(s, t, 1) == 0) {
    /* nothing eligible or no in-flight room now: try again when the
     * host's next proxy is, or a while later (a later outcome re-arms);
     * not every p95 of a few ms: a full pool's tasks would spin */
    double at = h->wait.n ? sc_select_wait_key(h, 0) : -1, again = h->lat_p95;
    if (again < UNKNOWN_P95_WAIT(s) / 2) again = UNKNOWN_P95_WAIT(s) / 2;
    sc_task_delay(s, t, at > tn ? at : tn + again, 1);
    return;
  }
  if (t->active > t->want) t->want = t->active;
  s->m.attempts_hedged++;
  arm(s, t);
}

/* The task's K now (adaptive K, DESIGN.md section 3). */
static int task_k(sc_sched_t *s, const task *t, double d, int count) {
  int k = sc_health_k(s);
  /* hedged paths only start when the first is slow, so they cost little:
   * keep base K for them even when a high success rate lowers K to 1,
   * or a healthy pool would never hedge its tail */
  if (d > 0 && k < s->cfg.k_base) k = s->cfg.k_base;
  if (count) s->m.k_sum += (uint64_t)k;
  return t->flags & SC_TASK_NORACE ? 1 : k;
}

/* A task from the ready queue: start a round. 0 when nothing could start. */
int sc_race_dispatch(sc_sched_t *s, task *t) {
  host *h = &s->hosts[t->host];
  double d = sc_race_hedge_delay(s, h);
  int k = task_k(s, t, d, 1);
  t->round_k = (uint16_t)k;
  t->round_started = 0;
  t->target_err = 0;
  t->failed = NONE;
  s->m.dispatch_count++;
  if (!s->cfg.rounds) {
    t->want = (uint16_t)(d > 0 ? 1 : k);
    int started = fill(s, t);
    if (started > 0) arm(s, t);
    return started;
  }
  int started = sc_race_launch(s, t, d > 0 ? 1 : k);
  if (started > 0 && t->round_started < t->round_k && d > 0)
    sc_task_delay(s, t, sc_core_now(s) + d, 1);
  return started;
}

/* The round ended with no winner: retry elsewhere or back off. */
static void round_over(sc_sched_t *s, task *t) {
  double tn = sc_core_now(s);
  if (t->heap_pos != NONE) sc_task_undelay(s, t);
  t->hedge = 0;
  s->m.requeued_tasks++;
  if (t->target_err) {
    t->backoff_n++;
    double b = s->cfg.retry_backoff_base * pow(2, t->backoff_n - 1);
    if (b > s->cfg.retry_backoff_max) b = s->cfg.retry_backoff_max;
    sc_task_delay(s, t, tn + b, 0);
  } else {
    sc_task_ready(s, t);
  }
  s->need_run = 1;
}

int sc_race_done(sc_sched_t *s, sc_handle_t ah, sc_verdict_t v,
                 double latency) {
  return sc_race_done_rest(s, ah, v, latency, -1);
}

int sc_race_done_rest(sc_sched_t *s, sc_handle_t ah, sc_verdict_t v,
                      double latency, double rest) {
  attempt *a = sc_race_attempt_at(s, ah);
  if (!a || (unsigned)v >= SC_V__COUNT) return a ? SC_EINVAL : SC_ENOENT;
  task *t = &s->tasks[a->task];
  uint32_t id = a->pub.proxy, hid = a->pub.host;
  double tn = sc_core_now(s);
  attempt_release(s, a);
  sc_health_record_rest(s, id, hid, v, latency, tn, rest);
  if (v == SC_V_SUCCESS || v == SC_V_FINAL) {
    sc_race_cancel(s, t);
    s->m.completed_tasks++;
    s->done_ring[s->ring_sec % RING]++;
    sc_task_release(s, t);
    return 1;
  }
  if (v == SC_V_TARGET_ERROR) t->target_err = 1;
  if (!s->cfg.rounds) {
    /* a target_error says the target is failing: no new path for it */
    if (!t->target_err) {
      /* K follows the pool's success rate between outcomes too */
      double d = sc_race_hedge_delay(s, &s->hosts[t->host]);
      t->round_k = (uint16_t)task_k(s, t, d, 0);
      if (d == 0 && t->want < t->round_k) t->want = t->round_k;
      t->failed = id;
      s->m.attempts_replaced += (uint64_t)fill(s, t);
    }
    if (t->active == 0) round_over(s, t);
    else arm(s, t);
    return 0;
  }
  if (t->active == 0) {
    if (t->round_started < t->round_k && !t->target_err) {
      /* a failed path fires the next hedge at once (gRPC's non-fatal rule) */
      if (sc_race_launch(s, t, 1) == 0) round_over(s, t);
      else if (t->round_started < t->round_k)
        sc_task_delay(s, t, tn + sc_race_hedge_delay(s, &s->hosts[t->host]), 1);
      else if (t->heap_pos != NONE)
        sc_task_undelay(s, t);
    } else {
      round_over(s, t);
    }
  }
  return 0;
}
