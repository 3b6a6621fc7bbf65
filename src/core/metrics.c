/* Counters and the metrics snapshot. See metrics.h. */
#include "metrics.h"

#include <math.h>

#include "health.h"

/* ---- per-second counters (throughput, success rate) ---- */

void sc_metrics_tick(sc_sched_t *s, double t) {
  int64_t sec = (int64_t)floor(t);
  if (sec <= s->ring_sec) return;
  int64_t gap = sec - s->ring_sec;
  if (gap > RING) gap = RING;
  for (int64_t i = 1; i <= gap; i++) {
    uint32_t k = (uint32_t)((s->ring_sec + i) % RING);
    s->done_ring[k] = s->att_ring[k] = s->ok_ring[k] = 0;
  }
  s->ring_sec = sec;
}

static uint32_t ring_sum(const uint32_t *r, int64_t sec, int secs) {
  uint32_t sum = 0;
  /* the current second is partial: count the last `secs` full ones plus it,
   * so a 1 s window never reads zero right after a second starts */
  for (int i = 0; i <= secs && i < RING; i++) sum += r[(sec - i + RING) % RING];
  return sum;
}

void sc_sched_metrics(sc_sched_t *s, sc_metrics_t *m) {
  double tn = sc_core_now(s);
  sc_metrics_tick(s, tn);
  *m = s->m;
  m->total_proxies = s->proxy_names.count;
  m->dead_proxies = s->dead;
  m->retired_proxies = s->retired;
  uint32_t cool = 0, untested = 0, failing = 0, healthy = 0;
  for (uint32_t id = 0; id < s->proxy_names.count; id++) {
    const proxy *px = &s->proxies[id];
    if (px->dead || px->retired) continue;
    int cooling = 0, recent = 0;
    for (uint32_t i = 0; i < s->host_names.count; i++) {
      const pair *p = &s->hosts[i].pairs[id];
      if (p->cooldown_until > tn) {
        cooling = 1;
        break;
      }
      uint64_t mask = p->nwin >= 64 ? ~0ull : ((1ull << p->nwin) - 1);
      if (p->window & mask) recent = 1;
    }
    /* "healthy" counted every proxy never tried: 77 healthy from a list
     * where none worked. Healthy now means a recent success: one in a
     * pair's window (the last health_window outcomes), as scatter stats
     * counts it; a proxy whose successes are older is failing. */
    if (cooling) cool++;
    else if (recent) healthy++;
    else if (px->attempts == 0) untested++;
    else failing++;
  }
  m->cooldown_proxies = cool;
  m->healthy_proxies = healthy;
  m->untested_proxies = untested;
  m->failing_proxies = failing;
  m->pending_tasks = s->ntasks;
  m->ready_tasks = s->ready.n;
  uint32_t delayed = s->nstarved;
  for (uint32_t i = 0; i < s->delayed.n; i++)
    if (!s->tasks[s->delayed.v[i]].hedge) delayed++;
  m->delayed_tasks = delayed;
  m->running_tasks = s->ntasks - s->ready.n - delayed;
  m->inflight = s->inflight;
  m->failed_tasks = s->m.cancelled_tasks;
  int64_t sec = s->ring_sec;
  double frac = tn - floor(tn);
  /* a window reaches back no further than the pool's birth: a pool 3 s
   * old that did 150 tasks did 50/s, not the 15/s of dividing by 10 s
   * (which the summary line and the gauge showed for a minute) */
  double age = tn - s->born;
  if (age < 1.0) age = 1.0;
  m->throughput_1s = ring_sum(s->done_ring, sec, 1) / fmin(1.0 + frac, age);
  m->throughput_10s = ring_sum(s->done_ring, sec, 10) / fmin(10.0 + frac, age);
  m->throughput_60s = ring_sum(s->done_ring, sec, 60) / fmin(60.0 + frac, age);
  uint32_t att = ring_sum(s->att_ring, sec, 60);
  m->success_rate_1m = att ? (double)ring_sum(s->ok_ring, sec, 60) / att : 0;
  m->avg_latency_ms = s->lat_ewma < 0 ? 0 : s->lat_ewma * 1000.0;
  m->k_current = s->k_current;
  double ct = sc_health_connect_timeout(s);
  m->connect_timeout = ct > 0 ? ct : s->cfg.proxy_timeout;
  m->handshake_p95 = s->hs_p95;
}
