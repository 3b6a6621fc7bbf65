/* The scheduler. See sched.h and DESIGN.md section 3.
 *
 * Selection does not score every proxy per dispatch (the Rust crate does,
 * which is linear in the proxy count). Each host keeps its eligible pairs in
 * NBUCKETS score bands and its ineligible ones (rate-limited or cooling down)
 * in a min-heap keyed by the time they become eligible again. Choosing a
 * proxy promotes the due heap entries and takes a random member of the best
 * non-empty band, so the cost is O(log n) per attempt, and the score's
 * jitter is the random choice among proxies of the same band.
 */
#include "sched.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "intern.h"

#define NBUCKETS 16
#define WHERE_WAIT 0xfe /* in the host's wait heap */
#define WHERE_OUT 0xff  /* dead or retired: in no structure */
#define NONE UINT32_MAX
#define RING 64 /* seconds of per-second counters */
/* Generations wrap at 20 bits so a handle (slot | gen << 32) is exact in a
 * Lua number (a double holds 53 bits). */
#define GEN_MASK 0xfffffu

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
  uint32_t attempts;
} task;

typedef struct attempt {
  sc_attempt_t pub;
  uint32_t gen;
  uint32_t task; /* slot */
  uint32_t next; /* next active attempt of the same task, or free list */
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
  int k_current;
  float lat_ewma;
  uint32_t done_ring[RING], att_ring[RING], ok_ring[RING];
  int64_t ring_sec;
  sc_metrics_t m; /* counters; the derived fields are filled on demand */
};

/* ---- small helpers ---- */

static uint64_t rnd(sc_sched_t *s) { /* xorshift64* */
  s->rng ^= s->rng >> 12;
  s->rng ^= s->rng << 25;
  s->rng ^= s->rng >> 27;
  return s->rng * 2685821657736338717ull;
}

static double now(sc_sched_t *s) { return s->env.now(s->env.ud); }

static int vec_push(u32vec *v, uint32_t x) {
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

static void *grow_array(void *p, uint32_t *cap, uint32_t need, size_t size) {
  uint32_t c = *cap ? *cap : 16;
  while (c < need) c *= 2;
  if (c == *cap) return p;
  void *np = realloc(p, (size_t)c * size);
  if (!np) return NULL;
  memset((char *)np + (size_t)*cap * size, 0, (size_t)(c - *cap) * size);
  *cap = c;
  return np;
}

static sc_handle_t mkhandle(uint32_t slot, uint32_t gen) {
  return ((uint64_t)gen << 32) | (uint64_t)(slot + 1);
}

/* ---- per-second counters (throughput, success rate) ---- */

static void ring_advance(sc_sched_t *s, double t) {
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

static int k_for(sc_sched_t *s) {
  int base = s->cfg.k_base, hi = 2 * base, k;
  if (s->m.attempts_finished < (uint64_t)s->cfg.eviction_min_samples ||
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

/* ---- pair bookkeeping: bands and the wait heap ---- */

static double pair_eligible(const pair *p) {
  return p->cooldown_until > p->rate_next ? p->cooldown_until : p->rate_next;
}

static double pair_rate(const pair *p) {
  if (p->nwin == 0) return 0.5;
  uint64_t mask = p->nwin >= 64 ? ~0ull : ((1ull << p->nwin) - 1);
  return (double)__builtin_popcountll(p->window & mask) / p->nwin;
}

static int pair_band(sc_sched_t *s, uint32_t id, const pair *p, double t) {
  const proxy *px = &s->proxies[id];
  double prate = px->attempts ? (double)px->successes / px->attempts : 0.5;
  double rec = 0.0;
  if (p->last_success >= 0) rec = 1.0 / (1.0 + (t - p->last_success) / 60.0);
  double score = 0.5 * pair_rate(p) + 0.3 * prate + 0.2 * rec;
  int b = (int)(score * NBUCKETS);
  return b < 0 ? 0 : b >= NBUCKETS ? NBUCKETS - 1 : b;
}

static void heap_swap(host *h, uint32_t i, uint32_t j) {
  uint32_t a = h->wait.v[i], b = h->wait.v[j];
  double ka = h->wait_key[i];
  h->wait.v[i] = b;
  h->wait.v[j] = a;
  h->wait_key[i] = h->wait_key[j];
  h->wait_key[j] = ka;
  h->pairs[b].pos = i;
  h->pairs[a].pos = j;
}

static double wkey(const host *h, uint32_t i) { return h->wait_key[i]; }

/* A 4-ary heap: half the depth of a binary one, so half the moves, and
 * each move writes a pos into the (large, cache-cold) pairs array. */
#define WAIT_D 4

static void wait_up(host *h, uint32_t i) {
  while (i > 0) {
    uint32_t parent = (i - 1) / WAIT_D;
    if (wkey(h, parent) <= wkey(h, i)) break;
    heap_swap(h, i, parent);
    i = parent;
  }
}

static void wait_down(host *h, uint32_t i) {
  for (;;) {
    uint32_t first = WAIT_D * i + 1, m = i;
    for (uint32_t c = first; c < first + WAIT_D && c < h->wait.n; c++)
      if (wkey(h, c) < wkey(h, m)) m = c;
    if (m == i) return;
    heap_swap(h, i, m);
    i = m;
  }
}

/* Take the pair out of whatever structure holds it. */
static void pair_unlink(host *h, uint32_t id) {
  pair *p = &h->pairs[id];
  if (p->where == WHERE_OUT) return;
  u32vec *v = p->where == WHERE_WAIT ? &h->wait : &h->band[p->where];
  uint32_t pos = p->pos, last = v->v[--v->n];
  if (pos != v->n) {
    v->v[pos] = last;
    h->pairs[last].pos = pos;
    if (p->where == WHERE_WAIT) {
      h->wait_key[pos] = h->wait_key[v->n];
      wait_up(h, pos);
      wait_down(h, h->pairs[last].pos);
    }
  }
  p->where = WHERE_OUT;
}

/* Put an unlinked pair where it belongs at time t. */
static int pair_place(sc_sched_t *s, host *h, uint32_t id, double t) {
  pair *p = &h->pairs[id];
  const proxy *px = &s->proxies[id];
  if (px->dead || px->retired || px->probe == PROBE_FLYING) return 0;
  if (pair_eligible(p) > t) {
    p->where = WHERE_WAIT;
    p->pos = h->wait.n;
    if (vec_push(&h->wait, id) < 0) return SC_ENOMEM;
    if (h->wait_key_cap < h->wait.cap) {
      double *k = realloc(h->wait_key, h->wait.cap * sizeof(*k));
      if (!k) {
        h->wait.n--;
        return SC_ENOMEM;
      }
      h->wait_key = k;
      h->wait_key_cap = h->wait.cap;
    }
    h->wait_key[p->pos] = pair_eligible(p);
    wait_up(h, p->pos);
  } else {
    int b = pair_band(s, id, p, t);
    p->where = (uint8_t)b;
    p->pos = h->band[b].n;
    if (vec_push(&h->band[b], id) < 0) return SC_ENOMEM;
  }
  return 0;
}

static void pair_replace(sc_sched_t *s, host *h, uint32_t id, double t) {
  pair_unlink(h, id);
  pair_place(s, h, id, t);
}

static void proxy_place(sc_sched_t *s, uint32_t id, double t) {
  for (uint32_t i = 0; i < s->host_names.count; i++)
    pair_replace(s, &s->hosts[i], id, t);
}

/* Move the due wait-heap entries to their bands. */
static void host_promote(sc_sched_t *s, host *h, double t) {
  while (h->wait.n && wkey(h, 0) <= t) {
    uint32_t id = h->wait.v[0];
    pair *p = &h->pairs[id];
    pair_unlink(h, id);
    if (p->cooling && p->cooldown_until <= t) {
      p->cooling = 0;
      h->ncool--;
    }
    pair_place(s, h, id, t);
  }
}

static void pair_init(pair *p) {
  memset(p, 0, sizeof(*p));
  p->last_success = -1;
  p->lat_ewma = p->lat_p50 = p->lat_p95 = -1;
  p->where = WHERE_OUT;
}

static int hosts_fit_proxies(sc_sched_t *s, uint32_t need) {
  if (need <= s->pair_cap) return 0;
  uint32_t cap = s->pair_cap ? s->pair_cap : 64;
  while (cap < need) cap *= 2;
  uint32_t nh = s->host_names.count;
  for (uint32_t i = 0; i < nh; i++) {
    pair *np = realloc(s->hosts[i].pairs, (size_t)cap * sizeof(pair));
    if (!np) return SC_ENOMEM;
    for (uint32_t j = s->pair_cap; j < cap; j++) pair_init(&np[j]);
    s->hosts[i].pairs = np;
  }
  s->pair_cap = cap;
  return 0;
}

/* ---- task queues ---- */

static task *task_at(const sc_sched_t *s, sc_handle_t h) {
  uint32_t slot = (uint32_t)(h & 0xffffffffu);
  if (slot == 0 || slot > s->task_cap) return NULL;
  task *t = &s->tasks[slot - 1];
  if (t->state == T_FREE || t->gen != (uint32_t)(h >> 32)) return NULL;
  return t;
}

static uint32_t slot_of(const sc_sched_t *s, const task *t) {
  return (uint32_t)(t - s->tasks);
}

static void tlist_init(tlist *l) {
  l->head = l->tail = NONE;
  l->n = 0;
}

static void tlist_push(sc_sched_t *s, tlist *l, task *t) {
  uint32_t i = slot_of(s, t);
  t->prev = l->tail;
  t->next = NONE;
  if (l->tail == NONE) l->head = i;
  else s->tasks[l->tail].next = i;
  l->tail = i;
  l->n++;
}

static void tlist_remove(sc_sched_t *s, tlist *l, task *t) {
  if (t->prev != NONE) s->tasks[t->prev].next = t->next;
  else l->head = t->next;
  if (t->next != NONE) s->tasks[t->next].prev = t->prev;
  else l->tail = t->prev;
  t->prev = t->next = NONE;
  l->n--;
}

static void ready_push(sc_sched_t *s, task *t) {
  t->state = T_READY;
  tlist_push(s, &s->ready, t);
  s->need_run = 1;
}

static void starve(sc_sched_t *s, task *t) {
  host *h = &s->hosts[t->host];
  t->state = T_STARVED;
  if (h->starved.n == 0) vec_push(&s->starved_hosts, t->host);
  tlist_push(s, &h->starved, t);
  s->nstarved++;
}

static void unstarve(sc_sched_t *s, task *t) {
  tlist_remove(s, &s->hosts[t->host].starved, t);
  s->nstarved--;
}

static double dkey(const sc_sched_t *s, uint32_t i) {
  return s->tasks[s->delayed.v[i]].wake_at;
}

static void dswap(sc_sched_t *s, uint32_t i, uint32_t j) {
  uint32_t a = s->delayed.v[i], b = s->delayed.v[j];
  s->delayed.v[i] = b;
  s->delayed.v[j] = a;
  s->tasks[b].heap_pos = i;
  s->tasks[a].heap_pos = j;
}

static void delayed_fix(sc_sched_t *s, uint32_t i) {
  while (i > 0 && dkey(s, (i - 1) / 2) > dkey(s, i)) {
    dswap(s, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < s->delayed.n && dkey(s, l) < dkey(s, m)) m = l;
    if (r < s->delayed.n && dkey(s, r) < dkey(s, m)) m = r;
    if (m == i) return;
    dswap(s, i, m);
    i = m;
  }
}

static void delayed_remove(sc_sched_t *s, task *t) {
  uint32_t pos = t->heap_pos, last = s->delayed.v[--s->delayed.n];
  t->heap_pos = NONE;
  if (pos == s->delayed.n) return;
  s->delayed.v[pos] = last;
  s->tasks[last].heap_pos = pos;
  delayed_fix(s, pos);
}

static int delayed_push(sc_sched_t *s, task *t, double at, int hedge) {
  if (t->heap_pos != NONE) delayed_remove(s, t);
  t->wake_at = at;
  t->hedge = (uint8_t)hedge;
  if (!hedge) t->state = T_DELAYED;
  t->heap_pos = s->delayed.n;
  if (vec_push(&s->delayed, slot_of(s, t)) < 0) return SC_ENOMEM;
  delayed_fix(s, t->heap_pos);
  return 0;
}

static void task_release(sc_sched_t *s, task *t) {
  if (t->state == T_READY) tlist_remove(s, &s->ready, t);
  if (t->state == T_STARVED) unstarve(s, t);
  if (t->heap_pos != NONE) delayed_remove(s, t);
  t->state = T_FREE;
  t->gen = (t->gen + 1) & GEN_MASK;
  t->ud = NULL;
  t->next = s->task_free;
  s->task_free = slot_of(s, t);
  s->ntasks--;
}

/* ---- attempts ---- */

static attempt *attempt_at(const sc_sched_t *s, sc_handle_t h) {
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

static void cancel_attempts(sc_sched_t *s, task *t) {
  while (t->first != NONE) {
    attempt *a = &s->attempts[t->first];
    s->env.cancel(s->env.ud, &a->pub);
    s->m.attempts_cancelled++;
    uint32_t id = a->pub.proxy;
    attempt_release(s, a);
    if (s->proxies[id].probe == PROBE_FLYING) {
      /* a probe without an outcome proves nothing: arm it again */
      s->proxies[id].probe = PROBE_ARMED;
      proxy_place(s, id, now(s));
    }
  }
}

static int task_has_proxy(const sc_sched_t *s, const task *t, uint32_t id) {
  for (uint32_t i = t->first; i != NONE; i = s->attempts[i].next)
    if (s->attempts[i].pub.proxy == id) return 1;
  return 0;
}

static void record(sc_sched_t *s, uint32_t id, uint32_t hid, sc_verdict_t v,
                   double latency, double t);

/* Pick a proxy for the task's host; NONE when nothing is eligible. */
static uint32_t select_proxy(sc_sched_t *s, task *t, host *h) {
  uint32_t skipped[16], nskipped = 0, id = NONE;
  for (int b = NBUCKETS - 1; b >= 0 && id == NONE; b--) {
    while (h->band[b].n && id == NONE) {
      uint32_t n = h->band[b].n, c = h->band[b].v[rnd(s) % n];
      pair_unlink(h, c);
      if (task_has_proxy(s, t, c) && nskipped < 16) {
        skipped[nskipped++] = c; /* distinct proxies within one task */
        continue;
      }
      id = c;
    }
  }
  double tn = now(s);
  for (uint32_t i = 0; i < nskipped; i++) pair_place(s, h, skipped[i], tn);
  return id;
}

/* Start up to n attempts for t. Returns how many started. */
static int launch(sc_sched_t *s, task *t, int n) {
  host *h = &s->hosts[t->host];
  double tn = now(s);
  int started = 0;
  host_promote(s, h, tn);
  while (started < n) {
    if (s->inflight >= (uint32_t)s->cfg.max_inflight) {
      s->m.skipped_no_permit++;
      break;
    }
    uint32_t id = select_proxy(s, t, h);
    if (id == NONE) break;
    pair *p = &h->pairs[id];
    p->rate_next = tn + h->interval;
    if (s->proxies[id].probe == PROBE_ARMED) {
      s->proxies[id].probe = PROBE_FLYING; /* its one attempt */
      for (uint32_t i = 0; i < s->host_names.count; i++)
        pair_unlink(&s->hosts[i], id);
    }
    /* placed as of just before now, so it waits in the heap even with a
     * zero interval: a task never gets the same proxy twice in one launch */
    pair_place(s, h, id, tn - 1);

    if (s->att_free == NONE) {
      uint32_t old = s->att_cap;
      attempt *na = grow_array(s->attempts, &s->att_cap, old + 1, sizeof(*na));
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
    a->task = slot_of(s, t);
    a->pub.handle = mkhandle(slot, a->gen);
    a->pub.task = mkhandle(slot_of(s, t), t->gen);
    a->pub.task_ud = t->ud;
    a->pub.proxy = id;
    a->pub.host = t->host;
    a->pub.started = tn;
    a->pub.tdata = NULL;
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
      record(s, id, t->host, SC_V_TRANSPORT, 0, tn);
      continue;
    }
    t->round_started++;
    started++;
  }
  return started;
}

static double hedge_delay(sc_sched_t *s, const host *h) {
  if (s->cfg.hedge_delay >= 0) return s->cfg.hedge_delay;
  return h->lat_p95 > 0 ? h->lat_p95 : 0; /* auto: unknown p95 -> all at once */
}

/* A task from the ready queue: start a round. 0 when nothing could start. */
static int dispatch(sc_sched_t *s, task *t) {
  host *h = &s->hosts[t->host];
  int k = k_for(s);
  double d = hedge_delay(s, h);
  /* hedged paths only start when the first is slow, so they cost little:
   * keep base K for them even when a high success rate lowers K to 1,
   * or a healthy pool would never hedge its tail */
  if (d > 0 && k < s->cfg.k_base) k = s->cfg.k_base;
  s->m.k_sum += (uint64_t)k;
  if (t->flags & SC_TASK_NORACE) k = 1;
  t->round_k = (uint16_t)k;
  t->round_started = 0;
  t->target_err = 0;
  s->m.dispatch_count++;
  int started = launch(s, t, d > 0 ? 1 : k);
  if (started > 0 && t->round_started < t->round_k && d > 0)
    delayed_push(s, t, now(s) + d, 1);
  return started;
}

/* The round ended with no winner: retry elsewhere or back off. */
static void round_over(sc_sched_t *s, task *t) {
  double tn = now(s);
  if (t->heap_pos != NONE) delayed_remove(s, t);
  t->hedge = 0;
  s->m.requeued_tasks++;
  if (t->target_err) {
    t->backoff_n++;
    double b = s->cfg.retry_backoff_base * pow(2, t->backoff_n - 1);
    if (b > s->cfg.retry_backoff_max) b = s->cfg.retry_backoff_max;
    delayed_push(s, t, tn + b, 0);
  } else {
    ready_push(s, t);
  }
  s->need_run = 1;
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

static void kill_proxy(sc_sched_t *s, uint32_t id) {
  proxy *px = &s->proxies[id];
  if (px->dead) return;
  px->dead = 1;
  px->dead_at = now(s);
  px->probe = PROBE_NONE;
  s->dead++;
  for (uint32_t i = 0; i < s->host_names.count; i++) {
    host *h = &s->hosts[i];
    pair *p = &h->pairs[id];
    if (p->cooling) {
      p->cooling = 0;
      h->ncool--;
    }
    pair_unlink(h, id);
  }
}

static void record_outcome(sc_sched_t *s, uint32_t id, uint32_t hid,
                           sc_verdict_t v, double latency, double t) {
  host *h = &s->hosts[hid];
  pair *p = &h->pairs[id];
  proxy *px = &s->proxies[id];
  ring_advance(s, t);
  s->m.verdicts[v]++;
  s->m.attempts_finished++;
  if (v == SC_V_TARGET_ERROR) return; /* not the proxy's fault: no record */
  int ok = v == SC_V_SUCCESS || v == SC_V_FINAL;
  int win = s->cfg.health_window;
  p->window = (p->window << 1) | (uint64_t)ok;
  if (p->nwin < win) p->nwin++;
  px->attempts++;
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
    if (p->consec < UINT16_MAX) p->consec++;
    int over = (int)p->consec - s->cfg.cooldown_fails;
    if (over >= 0) {
      double c = s->cfg.cooldown_base * pow(2, over > 30 ? 30 : over);
      if (c > s->cfg.cooldown_max) c = s->cfg.cooldown_max;
      p->cooldown_until = t + c;
      if (!p->cooling) {
        p->cooling = 1;
        h->ncool++;
      }
    }
    if (px->successes == 0 &&
        px->attempts >= (uint32_t)s->cfg.eviction_min_samples) {
      kill_proxy(s, id);
      return;
    }
  }
  if (p->where != WHERE_OUT) pair_replace(s, h, id, t);
}

static void record(sc_sched_t *s, uint32_t id, uint32_t hid, sc_verdict_t v,
                   double latency, double t) {
  proxy *px = &s->proxies[id];
  int probing = px->probe == PROBE_FLYING;
  if (probing) px->probe = PROBE_NONE;
  record_outcome(s, id, hid, v, latency, t);
  /* a probe that did not get it evicted again puts it back everywhere */
  if (probing && !px->dead) proxy_place(s, id, t);
}

int sc_sched_attempt_done(sc_sched_t *s, sc_handle_t ah, sc_verdict_t v,
                          double latency) {
  attempt *a = attempt_at(s, ah);
  if (!a || (unsigned)v >= SC_V__COUNT) return a ? SC_EINVAL : SC_ENOENT;
  task *t = &s->tasks[a->task];
  uint32_t id = a->pub.proxy, hid = a->pub.host;
  double tn = now(s);
  attempt_release(s, a);
  record(s, id, hid, v, latency, tn);
  if (v == SC_V_SUCCESS || v == SC_V_FINAL) {
    cancel_attempts(s, t);
    s->m.completed_tasks++;
    s->done_ring[s->ring_sec % RING]++;
    task_release(s, t);
    s->need_run = 1;
    if (!s->in_run) sc_sched_run(s);
    return 1;
  }
  if (v == SC_V_TARGET_ERROR) t->target_err = 1;
  if (t->active == 0) {
    if (t->round_started < t->round_k && !t->target_err) {
      /* a failed path fires the next hedge at once (gRPC's non-fatal rule) */
      if (launch(s, t, 1) == 0) round_over(s, t);
      else if (t->round_started < t->round_k)
        delayed_push(s, t, tn + hedge_delay(s, &s->hosts[t->host]), 1);
      else if (t->heap_pos != NONE)
        delayed_remove(s, t);
    } else {
      round_over(s, t);
    }
  }
  s->need_run = 1;
  if (!s->in_run) sc_sched_run(s);
  return 0;
}

/* ---- the run loop ---- */

static int host_has_eligible(const host *h) {
  for (int b = 0; b < NBUCKETS; b++)
    if (h->band[b].n) return 1;
  return 0;
}

/* Starved tasks go first, oldest first, as their host's proxies become
 * eligible: one wake serves as many tasks as there are proxies, instead of
 * every waiting task retrying at every wake. */
static void serve_starved(sc_sched_t *s, double tn) {
  for (uint32_t i = 0; i < s->starved_hosts.n;) {
    host *h = &s->hosts[s->starved_hosts.v[i]];
    host_promote(s, h, tn);
    while (h->starved.n && host_has_eligible(h) &&
           s->inflight < (uint32_t)s->cfg.max_inflight) {
      task *t = &s->tasks[h->starved.head];
      unstarve(s, t);
      t->state = T_RUNNING;
      if (dispatch(s, t) == 0) {
        starve(s, t); /* distinctness left nothing: back to its place */
        break;
      }
    }
    if (h->starved.n == 0) {
      s->starved_hosts.v[i] = s->starved_hosts.v[--s->starved_hosts.n];
    } else {
      i++;
    }
  }
}

static void arm_wake(sc_sched_t *s) {
  double at = s->delayed.n ? dkey(s, 0) : -1;
  for (uint32_t i = 0; i < s->starved_hosts.n; i++) {
    const host *h = &s->hosts[s->starved_hosts.v[i]];
    if (h->wait.n && (at < 0 || wkey(h, 0) < at)) at = wkey(h, 0);
  }
  /* re-armed on every run, not only on change: a clock may fire a wake a
   * little before `at`, and that wake must then be asked for again */
  if (at >= 0 || s->wake_at >= 0) s->env.wake(s->env.ud, at);
  s->wake_at = at;
}

void sc_sched_run(sc_sched_t *s) {
  if (s->in_run || s->held) {
    s->need_run = 1;
    return;
  }
  s->in_run = 1;
  do {
    s->need_run = 0;
    double tn = now(s);
    while (s->delayed.n && dkey(s, 0) <= tn) {
      task *t = &s->tasks[s->delayed.v[0]];
      delayed_remove(s, t);
      if (t->hedge) {
        t->hedge = 0;
        if (launch(s, t, 1) > 0 && t->round_started < t->round_k)
          delayed_push(s, t, tn + hedge_delay(s, &s->hosts[t->host]), 1);
      } else {
        ready_push(s, t);
      }
    }
    serve_starved(s, tn);
    while (s->ready.head != NONE) {
      if (s->inflight >= (uint32_t)s->cfg.max_inflight) {
        s->m.skipped_no_permit++;
        break; /* an attempt's end runs us again */
      }
      task *t = &s->tasks[s->ready.head];
      tlist_remove(s, &s->ready, t);
      t->state = T_RUNNING;
      if (dispatch(s, t) > 0) continue;
      /* nothing eligible: park it until its host's earliest eligible
       * time (arm_wake), or until proxies are added when none is alive */
      host *h = &s->hosts[t->host];
      s->m.zero_available_events++;
      s->m.skipped_cooldown += h->ncool;
      /* cooling pairs may be out of the heap (retired, probing) */
      if (h->wait.n > h->ncool) s->m.skipped_rate_limit += h->wait.n - h->ncool;
      starve(s, t);
    }
  } while (s->need_run);
  s->in_run = 0;
  arm_wake(s);
}

/* ---- public API ---- */

void sc_config_init(sc_config_t *c) {
  memset(c, 0, sizeof(*c));
  c->rate_interval = 0.5;
  c->proxy_timeout = 8;
  c->k_base = 3;
  c->max_inflight = 100;
  c->task_capacity = 1000;
  c->health_window = 30;
  c->cooldown_base = 30;
  c->cooldown_max = 300;
  c->cooldown_fails = 3;
  c->eviction_min_samples = 30;
  c->hedge_delay = 0;
  c->retry_backoff_base = 0.5;
  c->retry_backoff_max = 30;
  c->seed = 1;
}

int sc_sched_new(sc_sched_t **out, const sc_config_t *cfg, const sc_env_t *env) {
  if (cfg->k_base < 1 || cfg->max_inflight < 1 || cfg->task_capacity < 1 ||
      cfg->health_window < 1 || cfg->health_window > 64 ||
      cfg->cooldown_fails < 1 || cfg->eviction_min_samples < 1 ||
      cfg->rate_interval < 0 || cfg->cooldown_base < 0 ||
      cfg->cooldown_max < cfg->cooldown_base || !env->now || !env->wake ||
      !env->start || !env->cancel)
    return SC_EINVAL;
  sc_sched_t *s = calloc(1, sizeof(*s));
  if (!s) return SC_ENOMEM;
  s->cfg = *cfg;
  s->env = *env;
  s->rng = cfg->seed ? cfg->seed * 0x9E3779B97F4A7C15ull : 88172645463325252ull;
  sc_intern_init(&s->proxy_names);
  sc_intern_init(&s->host_names);
  s->task_free = s->att_free = NONE;
  tlist_init(&s->ready);
  s->wake_at = -1;
  s->lat_ewma = -1;
  s->k_current = 2 * cfg->k_base;
  s->ring_sec = (int64_t)floor(env->now(env->ud));
  *out = s;
  return 0;
}

void sc_sched_free(sc_sched_t *s) {
  if (!s) return;
  for (uint32_t i = 0; i < s->task_cap; i++)
    if (s->tasks[i].state != T_FREE) cancel_attempts(s, &s->tasks[i]);
  for (uint32_t i = 0; i < s->host_names.count; i++) {
    host *h = &s->hosts[i];
    free(h->pairs);
    for (int b = 0; b < NBUCKETS; b++) free(h->band[b].v);
    free(h->wait.v);
    free(h->wait_key);
  }
  if (s->wake_at >= 0) s->env.wake(s->env.ud, -1);
  free(s->hosts);
  free(s->proxies);
  free(s->tasks);
  free(s->attempts);
  free(s->delayed.v);
  free(s->starved_hosts.v);
  sc_intern_free(&s->proxy_names);
  sc_intern_free(&s->host_names);
  free(s);
}

int sc_sched_proxy_add(sc_sched_t *s, const char *key, uint32_t *idp) {
  uint32_t id;
  int r = sc_intern_put(&s->proxy_names, key, strlen(key), &id);
  if (r < 0) return r;
  if (idp) *idp = id;
  if (r == 0) return 0;
  proxy *np = grow_array(s->proxies, &s->proxy_cap, id + 1, sizeof(*np));
  if (!np) return SC_ENOMEM;
  s->proxies = np;
  memset(&np[id], 0, sizeof(np[id]));
  if ((r = hosts_fit_proxies(s, id + 1)) < 0) return r;
  double tn = now(s);
  for (uint32_t i = 0; i < s->host_names.count; i++) {
    pair_init(&s->hosts[i].pairs[id]);
    if ((r = pair_place(s, &s->hosts[i], id, tn)) < 0) return r;
  }
  if (s->nstarved && !s->in_run) sc_sched_run(s); /* a starved task may go */
  return 0;
}

const char *sc_sched_proxy_key(const sc_sched_t *s, uint32_t id) {
  return id < s->proxy_names.count ? s->proxy_names.names[id] : NULL;
}

uint32_t sc_sched_proxy_count(const sc_sched_t *s) {
  return s->proxy_names.count;
}

int sc_sched_proxy_find(const sc_sched_t *s, const char *key, uint32_t *id) {
  return sc_intern_find(&s->proxy_names, key, strlen(key), id);
}

int sc_sched_proxy_is_dead(const sc_sched_t *s, uint32_t id) {
  if (id >= s->proxy_names.count) return SC_ENOPROXY;
  return s->proxies[id].dead;
}

int sc_sched_proxy_retire(sc_sched_t *s, uint32_t id, int retired) {
  if (id >= s->proxy_names.count) return SC_ENOPROXY;
  proxy *px = &s->proxies[id];
  if (!!px->retired == !!retired) return 0;
  px->retired = retired != 0;
  s->retired += retired ? 1 : (uint32_t)-1;
  double tn = now(s);
  for (uint32_t i = 0; i < s->host_names.count; i++) {
    if (retired) pair_unlink(&s->hosts[i], id);
    else pair_place(s, &s->hosts[i], id, tn);
  }
  if (!retired && s->nstarved && !s->in_run) sc_sched_run(s);
  return 0;
}

int sc_sched_proxy_info(const sc_sched_t *s, uint32_t id, sc_proxy_info_t *info) {
  if (id >= s->proxy_names.count) return SC_ENOPROXY;
  const proxy *px = &s->proxies[id];
  info->attempts = px->attempts;
  info->successes = px->successes;
  info->dead = px->dead;
  info->dead_since = px->dead ? px->dead_at : 0;
  return 0;
}

int sc_sched_proxy_restore(sc_sched_t *s, uint32_t id,
                           const sc_proxy_info_t *info) {
  if (id >= s->proxy_names.count || info->successes > info->attempts)
    return SC_EINVAL;
  proxy *px = &s->proxies[id];
  px->attempts = info->attempts;
  px->successes = info->successes;
  px->probe = PROBE_NONE;
  double tn = now(s);
  if (info->dead) {
    kill_proxy(s, id);
    px->dead_at = info->dead_since;
  } else if (px->dead) {
    px->dead = 0;
    s->dead--;
    proxy_place(s, id, tn);
  } else {
    proxy_place(s, id, tn); /* its rates moved it to another band */
  }
  return 0;
}

int sc_sched_proxy_probe(sc_sched_t *s, uint32_t id) {
  if (id >= s->proxy_names.count) return SC_ENOPROXY;
  proxy *px = &s->proxies[id];
  if (!px->dead || now(s) - px->dead_at < s->cfg.cooldown_max) return 0;
  px->dead = 0;
  s->dead--;
  px->probe = PROBE_ARMED;
  proxy_place(s, id, now(s));
  if (s->nstarved && !s->in_run) sc_sched_run(s);
  return 1;
}

int sc_sched_hold(sc_sched_t *s, int on) {
  if (on) return ++s->held;
  if (s->held == 0) return SC_EINVAL;
  if (--s->held == 0) sc_sched_run(s);
  return s->held;
}

int sc_sched_proxy_totals(const sc_sched_t *s, uint32_t id, uint32_t *attempts,
                          uint32_t *successes) {
  if (id >= s->proxy_names.count) return SC_ENOPROXY;
  *attempts = s->proxies[id].attempts;
  *successes = s->proxies[id].successes;
  return 0;
}

int sc_sched_host_id(sc_sched_t *s, const char *name, size_t len, uint32_t *idp) {
  char buf[256];
  if (len == 0 || len >= sizeof(buf)) return SC_EINVAL;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    buf[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
  }
  uint32_t id;
  int r = sc_intern_put(&s->host_names, buf, len, &id);
  if (r < 0) return r;
  *idp = id;
  if (r == 0) return 0;
  host *nh = grow_array(s->hosts, &s->host_cap, id + 1, sizeof(*nh));
  if (!nh) return SC_ENOMEM;
  s->hosts = nh;
  host *h = &nh[id];
  memset(h, 0, sizeof(*h));
  tlist_init(&h->starved);
  h->interval = s->cfg.rate_interval;
  h->lat_ewma = h->lat_p95 = -1;
  uint32_t cap = s->pair_cap ? s->pair_cap : 64;
  if (!s->pair_cap) s->pair_cap = cap;
  h->pairs = malloc((size_t)cap * sizeof(pair));
  if (!h->pairs) return SC_ENOMEM;
  double tn = now(s);
  for (uint32_t j = 0; j < cap; j++) pair_init(&h->pairs[j]);
  for (uint32_t j = 0; j < s->proxy_names.count; j++)
    if ((r = pair_place(s, h, j, tn)) < 0) return r;
  return 0;
}

const char *sc_sched_host_name(const sc_sched_t *s, uint32_t id) {
  return id < s->host_names.count ? s->host_names.names[id] : NULL;
}

uint32_t sc_sched_host_count(const sc_sched_t *s) { return s->host_names.count; }

int sc_sched_host_interval(sc_sched_t *s, uint32_t hid, double interval) {
  if (hid >= s->host_names.count || interval < 0) return SC_EINVAL;
  s->hosts[hid].interval = interval;
  return 0;
}

int sc_sched_submit(sc_sched_t *s, uint32_t hid, unsigned flags, void *ud,
                    sc_handle_t *out) {
  if (hid >= s->host_names.count) return SC_EINVAL;
  if (s->ntasks >= (uint32_t)s->cfg.task_capacity) return SC_EFULL;
  if (s->task_free == NONE) {
    uint32_t old = s->task_cap;
    task *nt = grow_array(s->tasks, &s->task_cap, old + 1, sizeof(*nt));
    if (!nt) return SC_ENOMEM;
    s->tasks = nt;
    for (uint32_t i = s->task_cap; i > old; i--) {
      nt[i - 1].next = s->task_free;
      s->task_free = i - 1;
    }
  }
  uint32_t slot = s->task_free;
  task *t = &s->tasks[slot];
  s->task_free = t->next;
  uint32_t gen = t->gen ? t->gen : 1;
  memset(t, 0, sizeof(*t));
  t->gen = gen;
  t->host = hid;
  t->flags = (uint8_t)flags;
  t->ud = ud;
  t->heap_pos = NONE;
  t->first = NONE;
  s->ntasks++;
  ready_push(s, t);
  *out = mkhandle(slot, gen);
  if (!s->in_run) sc_sched_run(s);
  return 0;
}

int sc_sched_cancel(sc_sched_t *s, sc_handle_t h) {
  task *t = task_at(s, h);
  if (!t) return SC_ENOENT;
  cancel_attempts(s, t);
  task_release(s, t);
  s->m.cancelled_tasks++;
  s->need_run = 1; /* freed in-flight room */
  if (!s->in_run) sc_sched_run(s);
  return 0;
}

int sc_sched_task_attempts(const sc_sched_t *s, sc_handle_t h) {
  task *t = task_at(s, h);
  return t ? (int)t->attempts : SC_ENOENT;
}

void *sc_sched_task_ud(const sc_sched_t *s, sc_handle_t h) {
  task *t = task_at(s, h);
  return t ? t->ud : NULL;
}

const sc_attempt_t *sc_sched_attempt(const sc_sched_t *s, sc_handle_t h) {
  attempt *a = attempt_at(s, h);
  return a ? &a->pub : NULL;
}

int sc_sched_pending(const sc_sched_t *s) { return (int)s->ntasks; }

int sc_sched_has_room(const sc_sched_t *s) {
  return s->ntasks < (uint32_t)s->cfg.task_capacity;
}

const sc_config_t *sc_sched_config(const sc_sched_t *s) { return &s->cfg; }

void sc_sched_metrics(sc_sched_t *s, sc_metrics_t *m) {
  double tn = now(s);
  ring_advance(s, tn);
  *m = s->m;
  m->total_proxies = s->proxy_names.count;
  m->dead_proxies = s->dead;
  m->retired_proxies = s->retired;
  uint32_t cool = 0;
  for (uint32_t id = 0; id < s->proxy_names.count; id++) {
    if (s->proxies[id].dead || s->proxies[id].retired) continue;
    for (uint32_t i = 0; i < s->host_names.count; i++) {
      const pair *p = &s->hosts[i].pairs[id];
      if (p->cooldown_until > tn) {
        cool++;
        break;
      }
    }
  }
  m->cooldown_proxies = cool;
  m->healthy_proxies = m->total_proxies - s->dead - s->retired - cool;
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
  m->throughput_1s = ring_sum(s->done_ring, sec, 1) / (1.0 + frac);
  m->throughput_10s = ring_sum(s->done_ring, sec, 10) / (10.0 + frac);
  m->throughput_60s = ring_sum(s->done_ring, sec, 60) / (60.0 + frac);
  uint32_t att = ring_sum(s->att_ring, sec, 60);
  m->success_rate_1m = att ? (double)ring_sum(s->ok_ring, sec, 60) / att : 0;
  m->avg_latency_ms = s->lat_ewma < 0 ? 0 : s->lat_ewma * 1000.0;
  m->k_current = s->k_current;
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
  double tn = now(s);
  int cool = p->cooldown_until > tn;
  if (cool != p->cooling) {
    p->cooling = (uint8_t)cool;
    h->ncool += cool ? 1 : (uint32_t)-1;
  }
  if (p->where != WHERE_OUT) pair_replace(s, h, id, tn);
  return 0;
}

static const char *const verdict_names[SC_V__COUNT] = {
    "success", "final", "proxy_blocked", "target_error", "transport"};

const char *sc_verdict_name(sc_verdict_t v) {
  return (unsigned)v < SC_V__COUNT ? verdict_names[v] : NULL;
}

int sc_verdict_parse(const char *name, sc_verdict_t *v) {
  for (int i = 0; i < SC_V__COUNT; i++) {
    if (strcmp(name, verdict_names[i]) == 0) {
      *v = (sc_verdict_t)i;
      return 0;
    }
  }
  return SC_EINVAL;
}
