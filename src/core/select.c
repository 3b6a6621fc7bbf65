/* Proxy selection. See select.h and DESIGN.md section 3.
 *
 * Selection does not score every proxy per dispatch (the Rust crate does,
 * which is linear in the proxy count). Each host keeps its eligible pairs in
 * NBUCKETS score bands and its ineligible ones (rate-limited or cooling down)
 * in a min-heap keyed by the time they become eligible again. Choosing a
 * proxy promotes the due heap entries and takes a random member of the best
 * non-empty band, so the cost is O(log n) per attempt, and the score's
 * jitter is the random choice among proxies of the same band.
 */
#include "select.h"

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

/* A 4-ary heap: half the depth of a binary one, so half the moves, and
 * each move writes a pos into the (large, cache-cold) pairs array. */
#define WAIT_D 4

static void wait_up(host *h, uint32_t i) {
  while (i > 0) {
    uint32_t parent = (i - 1) / WAIT_D;
    if (sc_select_wait_key(h, parent) <= sc_select_wait_key(h, i)) break;
    heap_swap(h, i, parent);
    i = parent;
  }
}

static void wait_down(host *h, uint32_t i) {
  for (;;) {
    uint32_t first = WAIT_D * i + 1, m = i;
    for (uint32_t c = first; c < first + WAIT_D && c < h->wait.n; c++)
      if (sc_select_wait_key(h, c) < sc_select_wait_key(h, m)) m = c;
    if (m == i) return;
    heap_swap(h, i, m);
    i = m;
  }
}

/* Take the pair out of whatever structure holds it. */
void sc_select_unlink(host *h, uint32_t id) {
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
int sc_select_place(sc_sched_t *s, host *h, uint32_t id, double t) {
  pair *p = &h->pairs[id];
  const proxy *px = &s->proxies[id];
  if (px->dead || px->retired || px->probe == PROBE_FLYING) return 0;
  if (pair_eligible(p) > t) {
    p->where = WHERE_WAIT;
    p->pos = h->wait.n;
    if (sc_core_vec_push(&h->wait, id) < 0) return SC_ENOMEM;
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
    if (sc_core_vec_push(&h->band[b], id) < 0) return SC_ENOMEM;
  }
  return 0;
}

void sc_select_replace(sc_sched_t *s, host *h, uint32_t id, double t) {
  sc_select_unlink(h, id);
  sc_select_place(s, h, id, t);
}

void sc_select_place_proxy(sc_sched_t *s, uint32_t id, double t) {
  for (uint32_t i = 0; i < s->host_names.count; i++)
    sc_select_replace(s, &s->hosts[i], id, t);
}

/* Move the due wait-heap entries to their bands. */
void sc_select_promote(sc_sched_t *s, host *h, double t) {
  while (h->wait.n && sc_select_wait_key(h, 0) <= t) {
    uint32_t id = h->wait.v[0];
    pair *p = &h->pairs[id];
    sc_select_unlink(h, id);
    if (p->cooling && p->cooldown_until <= t) {
      p->cooling = 0;
      h->ncool--;
    }
    sc_select_place(s, h, id, t);
  }
}

void sc_select_pair_init(pair *p) {
  memset(p, 0, sizeof(*p));
  p->last_success = -1;
  p->lat_ewma = p->lat_p50 = p->lat_p95 = -1;
  p->where = WHERE_OUT;
}

int sc_select_fit(sc_sched_t *s, uint32_t need) {
  if (need <= s->pair_cap) return 0;
  uint32_t cap = s->pair_cap ? s->pair_cap : 64;
  while (cap < need) cap *= 2;
  uint32_t nh = s->host_names.count;
  /* The new records are left untouched: sc_sched_proxy_add sets each up
   * as its proxy comes. Initialising the whole new half (64 bytes a proxy
   * per host) stalled the loop for up to a second while a list of
   * millions loaded; a large realloc is a remap, not a copy. */
  for (uint32_t i = 0; i < nh; i++) {
    pair *np = realloc(s->hosts[i].pairs, (size_t)cap * sizeof(pair));
    if (!np) return SC_ENOMEM;
    s->hosts[i].pairs = np;
  }
  s->pair_cap = cap;
  return 0;
}

static int task_has_proxy(const sc_sched_t *s, const task *t, uint32_t id) {
  if (id == t->failed) return 1;
  for (uint32_t i = t->first; i != NONE; i = s->attempts[i].next)
    if (s->attempts[i].pub.proxy == id) return 1;
  return 0;
}

/* Pick a proxy for the task's host; NONE when nothing is eligible. */
uint32_t sc_select_pick(sc_sched_t *s, task *t, host *h) {
  uint32_t skipped[16], nskipped = 0, id = NONE;
  for (int b = NBUCKETS - 1; b >= 0 && id == NONE; b--) {
    while (h->band[b].n && id == NONE) {
      uint32_t n = h->band[b].n, c = h->band[b].v[sc_core_rnd(s) % n];
      sc_select_unlink(h, c);
      if (task_has_proxy(s, t, c) && nskipped < 16) {
        skipped[nskipped++] = c; /* distinct proxies within one task */
        continue;
      }
      id = c;
    }
  }
  double tn = sc_core_now(s);
  for (uint32_t i = 0; i < nskipped; i++) sc_select_place(s, h, skipped[i], tn);
  return id;
}

int sc_select_has_eligible(const host *h) {
  for (int b = 0; b < NBUCKETS; b++)
    if (h->band[b].n) return 1;
  return 0;
}
