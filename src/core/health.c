/* Health bookkeeping. See health.h. */
#include "health.h"

#include <math.h>

#include "metrics.h"
#include "select.h"

/* ---- the pool's recent success rate (adaptive K) ---- */

static void recent_push(sc_sched_t *s, int ok) {
  uint32_t i = s->recent_i, w = i / 64, b = i % 64;
  if (s->recent_n == 256) {
    if (s->recent[w] >> b & 1) s->recent_ok--;
  } else {
    s->recent_n++;
  }
  s->recent[w] = (s->recent[w] & ~(1ull << b)) | ((uint64_t)(ok != 0) << b);
  s->recent_ok += ok != 0;
  s->recent_i = (i + 1) % 256;
}

void sc_sched_recent(const sc_sched_t *s, uint8_t bits[SC_RECENT_MAX],
                     uint32_t *n, uint64_t *finished) {
  uint32_t first = s->recent_n == 256 ? s->recent_i : 0;
  for (uint32_t k = 0; k < s->recent_n; k++) {
    uint32_t i = (first + k) % 256;
    bits[k] = (uint8_t)(s->recent[i / 64] >> (i % 64) & 1);
  }
  *n = s->recent_n;
  *finished = s->m.attempts_finished + s->restored_finished;
}

void sc_sched_recent_restore(sc_sched_t *s, const uint8_t *bits, uint32_t n,
                             uint64_t finished) {
  memset(s->recent, 0, sizeof(s->recent));
  s->recent_n = s->recent_i = s->recent_ok = 0;
  for (uint32_t k = n > 256 ? n - 256 : 0; k < n; k++) recent_push(s, bits[k]);
  s->restored_finished = finished;
}

int sc_health_k(sc_sched_t *s) {
  int base = s->cfg.k_base, hi = 2 * base, k;
  /* a warm start (restored window and count) skips the cold start: a
   * burst of doubled dispatches before eviction_min_samples attempts
   * finished again cost a restart a loser per task */
  if (s->m.attempts_finished + s->restored_finished <
          (uint64_t)s->cfg.eviction_min_samples ||
      s->recent_n == 0) {
    k = hi; /* cold start: collect data fast */
  } else {
    double rate = (double)s->recent_ok / s->recent_n;
    if (rate <= 0.0)
      k = hi;
    else if (rate >= 1.0)
      k = 1;
    else
      k = (int)ceil(log(0.05) / log(1.0 - rate) - 1e-9);
    if (k < 1) k = 1;
    if (k > hi) k = hi;
  }
  s->k_current = k;
  return k;
}

/* ---- outcomes ---- */

static void quantile_step(float *q, float ewma, double x, double p) {
  if (*q < 0) {
    *q = (float)x;
    return;
  }
  double step = 0.1 * (ewma > 0 ? ewma : x);
  *q += (float)(x > *q ? step * p : -step * (1 - p));
  if (*q < 0) *q = 0;
}

static void latency_step(float *ewma, double x) {
  *ewma = *ewma < 0 ? (float)x : (float)(0.8 * *ewma + 0.2 * x);
}

void sc_health_kill(sc_sched_t *s, uint32_t id) {
  proxy *px = &s->proxies[id];
  if (px->dead) return;
  px->dead = 1;
  px->dead_at = sc_core_now(s);
  px->probe = PROBE_NONE;
  s->dead++;
  for (uint32_t i = 0; i < s->host_names.count; i++) {
    host *h = &s->hosts[i];
    pair *p = &h->pairs[id];
    if (p->cooling) {
      p->cooling = 0;
      h->ncool--;
    }
    sc_select_unlink(h, id);
  }
}

/* rest >= 0: a blocked answer that asked the pair to wait (Retry-After,
 * DESIGN.md section 11): the pair rests that long (at most cooldown_max)
 * and the attempt never counts towards eviction, since the proxy did its
 * job: the site answered, through it, "later". The rest is the pair's
 * rate-limit gate (rate_next), not its cooldown: the site's word holds
 * even when an attempt already in flight through the pair succeeds (a
 * success ends a cooldown), and the state file keeps it. */
static void record_outcome(sc_sched_t *s, uint32_t id, uint32_t hid,
                           sc_verdict_t v, double latency, double t,
                           double rest) {
  host *h = &s->hosts[hid];
  pair *p = &h->pairs[id];
  proxy *px = &s->proxies[id];
  sc_metrics_tick(s, t);
  s->m.verdicts[v]++;
  s->m.attempts_finished++;
  if (v == SC_V_TARGET_ERROR) return; /* not the proxy's fault: no record */
  int ok = v == SC_V_SUCCESS || v == SC_V_FINAL;
  int win = s->cfg.health_window;
  p->window = (p->window << 1) | (uint64_t)ok;
  if (p->nwin < win) p->nwin++;
  if (rest < 0) px->attempts++;
  s->att_ring[s->ring_sec % RING]++;
  recent_push(s, ok);
  if (ok) {
    px->successes++;
    s->m.attempts_succeeded++;
    s->ok_ring[s->ring_sec % RING]++;
    p->consec = 0;
    p->last_success = t;
    if (p->cooling) {
      p->cooling = 0;
      h->ncool--;
    }
    p->cooldown_until = 0;
    latency_step(&p->lat_ewma, latency);
    quantile_step(&p->lat_p50, p->lat_ewma, latency, 0.5);
    quantile_step(&p->lat_p95, p->lat_ewma, latency, 0.95);
    latency_step(&h->lat_ewma, latency);
    quantile_step(&h->lat_p95, h->lat_ewma, latency, 0.95);
    s->lat_ewma = s->lat_ewma < 0 ? (float)latency
                                  : (float)(0.9 * s->lat_ewma + 0.1 * latency);
  } else {
    /* the site's Retry-After, not the failure count, says how long the
     * pair waits: it does not push the pair into a longer cooldown */
    if (rest < 0 && p->consec < UINT16_MAX) p->consec++;
    int over = (int)p->consec - s->cfg.cooldown_fails;
    if (rest < 0 && over >= 0) {
      double c = s->cfg.cooldown_base * pow(2, over > 30 ? 30 : over);
      if (c > s->cfg.cooldown_max) c = s->cfg.cooldown_max;
      p->cooldown_until = t + c;
      if (!p->cooling) {
        p->cooling = 1;
        h->ncool++;
      }
    }
    if (rest >= 0) {
      double r = rest < s->cfg.cooldown_max ? rest : s->cfg.cooldown_max;
      if (t + r > p->rate_next) p->rate_next = t + r;
    }
    if (rest < 0 && px->successes == 0 &&
        px->attempts >= (uint32_t)s->cfg.eviction_min_samples) {
      sc_health_kill(s, id);
      return;
    }
  }
  if (p->where != WHERE_OUT) sc_select_replace(s, h, id, t);
}

void sc_health_record(sc_sched_t *s, uint32_t id, uint32_t hid, sc_verdict_t v,
                   double latency, double t) {
  sc_health_record_rest(s, id, hid, v, latency, t, -1);
}

void sc_health_record_rest(sc_sched_t *s, uint32_t id, uint32_t hid,
                           sc_verdict_t v, double latency, double t,
                           double rest) {
  proxy *px = &s->proxies[id];
  int probing = px->probe == PROBE_FLYING;
  if (probing) px->probe = PROBE_NONE;
  record_outcome(s, id, hid, v, latency, t, rest);
  /* a probe that did not get it evicted again puts it back everywhere */
  if (probing && !px->dead) sc_select_place_proxy(s, id, t);
}

int sc_sched_pair_info(const sc_sched_t *s, uint32_t id, uint32_t hid,
                       sc_pair_info_t *info) {
  if (id >= s->proxy_names.count || hid >= s->host_names.count)
    return SC_EINVAL;
  const pair *p = &s->hosts[hid].pairs[id];
  uint64_t mask = p->nwin >= 64 ? ~0ull : ((1ull << p->nwin) - 1);
  info->outcomes = p->nwin;
  info->successes = (uint32_t)__builtin_popcountll(p->window & mask);
  info->consecutive_fails = p->consec;
  info->last_success = p->last_success;
  info->cooldown_until = p->cooldown_until;
  info->rate_next = p->rate_next;
  info->latency_ewma = p->lat_ewma;
  info->latency_p50 = p->lat_p50;
  info->latency_p95 = p->lat_p95;
  return 0;
}

int sc_sched_pair_restore(sc_sched_t *s, uint32_t id, uint32_t hid,
                          const sc_pair_info_t *info) {
  if (id >= s->proxy_names.count || hid >= s->host_names.count ||
      info->successes > info->outcomes)
    return SC_EINVAL;
  host *h = &s->hosts[hid];
  pair *p = &h->pairs[id];
  uint32_t n = info->outcomes;
  if (n > (uint32_t)s->cfg.health_window) n = (uint32_t)s->cfg.health_window;
  uint32_t ok = info->successes < n ? info->successes : n;
  /* the order inside the window is not kept: the successes go newest */
  p->window = ok >= 64 ? ~0ull : ((1ull << ok) - 1);
  p->nwin = (uint8_t)n;
  p->consec = (uint16_t)(info->consecutive_fails > UINT16_MAX
                             ? UINT16_MAX
                             : info->consecutive_fails);
  p->last_success = info->last_success;
  p->cooldown_until = info->cooldown_until;
  p->rate_next = info->rate_next;
  p->lat_ewma = (float)info->latency_ewma;
  p->lat_p50 = (float)info->latency_p50;
  p->lat_p95 = (float)info->latency_p95;
  double tn = sc_core_now(s);
  int cool = p->cooldown_until > tn;
  if (cool != p->cooling) {
    p->cooling = (uint8_t)cool;
    h->ncool += cool ? 1 : (uint32_t)-1;
  }
  if (p->where != WHERE_OUT) sc_select_replace(s, h, id, tn);
  return 0;
}

/* Handshakes learnt from before the deadline is trusted: a few keep one
 * slow first connection from setting it, and until then proxy_timeout
 * holds, as before. */
#define HS_MIN_SAMPLES 20
#define HS_FLOOR 0.3 /* seconds: a loaded loop must not cut good proxies */
#define HS_EVERY 8   /* samples between two p95 computations */

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

void sc_health_handshake(sc_sched_t *s, double secs) {
  if (!(secs >= 0)) return;
  s->hs_ring[s->hs_n % HS_RING] = (float)secs;
  s->hs_n++;
  s->m.handshakes++;
  /* exact over the window, not a running estimate: an estimate that
   * starts low would cut good proxies while it climbs */
  if (s->hs_n >= HS_MIN_SAMPLES && s->hs_n % HS_EVERY == 0) {
    uint32_t n = s->hs_n < HS_RING ? s->hs_n : HS_RING;
    float v[HS_RING];
    memcpy(v, s->hs_ring, n * sizeof(*v));
    qsort(v, n, sizeof(*v), cmp_float);
    s->hs_p95 = v[(uint32_t)ceil(0.95 * n) - 1];
  }
}

double sc_health_connect_timeout(const sc_sched_t *s) {
  double cap = s->cfg.proxy_timeout;
  if (s->cfg.rounds) return 0;
  if (s->cfg.connect_timeout > 0)
    return s->cfg.connect_timeout < cap ? s->cfg.connect_timeout : cap;
  if (s->hs_p95 < 0) return 0; /* not learnt yet */
  double d = 3.0 * s->hs_p95;
  if (d < HS_FLOOR) d = HS_FLOOR;
  return d < cap ? d : 0;
}
