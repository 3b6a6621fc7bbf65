/* The scheduler's public API and its run loop. See sched.h and DESIGN.md
 * section 3. The mechanisms live in their own files: task.c (slots and
 * queues), select.c (bands and the wait heap), health.c (windows, cooldown,
 * eviction, adaptive K), race.c (dispatch, attempts, outcomes) and
 * metrics.c (counters).
 */
#include "sched.h"

#include <math.h>

#include "health.h"
#include "metrics.h"
#include "race.h"
#include "sched_int.h"
#include "select.h"
#include "task.h"

int sc_sched_attempt_handshake(sc_sched_t *s, sc_handle_t ah, double secs) {
  if (!sc_race_attempt_at(s, ah)) return SC_ENOENT;
  if (!(secs >= 0)) return SC_EINVAL;
  sc_health_handshake(s, secs);
  return 0;
}

int sc_sched_attempt_answered(sc_sched_t *s, sc_handle_t ah) {
  attempt *a = sc_race_attempt_at(s, ah);
  if (!a) return SC_ENOENT;
  a->answered = 1;
  return 0;
}

static void run(sc_sched_t *s, int woken);

int sc_sched_attempt_done(sc_sched_t *s, sc_handle_t ah, sc_verdict_t v,
                          double latency) {
  return sc_sched_attempt_rest(s, ah, v, latency, -1);
}

int sc_sched_attempt_rest(sc_sched_t *s, sc_handle_t ah, sc_verdict_t v,
                          double latency, double rest) {
  if (rest >= 0 && v != SC_V_PROXY_BLOCKED) return SC_EINVAL;
  if (rest != rest) return SC_EINVAL;
  int won = sc_race_done_rest(s, ah, v, latency, rest);
  if (won < 0) return won;
  s->need_run = 1;
  if (!s->in_run) run(s, 0);
  return won;
}

int sc_sched_record(sc_sched_t *s, uint32_t proxy, uint32_t host,
                    sc_verdict_t v, double latency) {
  return sc_sched_record_rest(s, proxy, host, v, latency, -1);
}

int sc_sched_record_rest(sc_sched_t *s, uint32_t proxy, uint32_t host,
                         sc_verdict_t v, double latency, double rest) {
  if (proxy >= sc_sched_proxy_count(s) || host >= s->host_names.count ||
      (unsigned)v >= SC_V__COUNT || rest != rest ||
      (rest >= 0 && v != SC_V_PROXY_BLOCKED))
    return SC_EINVAL;
  sc_health_record_rest(s, proxy, host, v, latency, sc_core_now(s), rest);
  s->need_run = 1;
  if (!s->in_run) run(s, 0);
  return 0;
}

/* ---- the run loop ---- */

/* Starved tasks go first, oldest first, as their host's proxies become
 * eligible: one wake serves as many tasks as there are proxies, instead of
 * every waiting task retrying at every wake. */
static void serve_starved(sc_sched_t *s, double tn) {
  for (uint32_t i = 0; i < s->starved_hosts.n;) {
    host *h = &s->hosts[s->starved_hosts.v[i]];
    sc_select_promote(s, h, tn);
    while (h->starved.n && sc_select_has_eligible(h) &&
           s->inflight < (uint32_t)s->cfg.max_inflight) {
      task *t = &s->tasks[h->starved.head];
      sc_task_unstarve(s, t);
      t->state = T_RUNNING;
      if (sc_race_dispatch(s, t) == 0) {
        sc_task_starve(s, t); /* distinctness left nothing: back to its place */
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
  double at = s->delayed.n ? sc_task_delay_key(s, 0) : -1;
  for (uint32_t i = 0; i < s->starved_hosts.n; i++) {
    const host *h = &s->hosts[s->starved_hosts.v[i]];
    if (h->wait.n && (at < 0 || sc_select_wait_key(h, 0) < at))
      at = sc_select_wait_key(h, 0);
  }
  /* re-armed on every run, not only on change: a clock may fire a wake a
   * little before `at`, and that wake must then be asked for again */
  if (at >= 0 || s->wake_at >= 0) s->env.wake(s->env.ud, at);
  s->wake_at = at;
}

/* woken: called by the env's wake, once the transport has read what came
 * in. Only then do hedges start: a run made by an attempt's end or a
 * submit comes while other replies may still wait unread (the rest of
 * the same poll, or a stretch of Lua), and hedged tasks that had their
 * answer already. Whatever is due behind a due hedge waits for that wake
 * with it (asked for at once by arm_wake). */
static void run(sc_sched_t *s, int woken) {
  if (s->in_run || s->held) {
    s->need_run = 1;
    return;
  }
  s->in_run = 1;
  do {
    s->need_run = 0;
    double tn = sc_core_now(s);
    while (s->delayed.n && sc_task_delay_key(s, 0) <= tn) {
      task *t = &s->tasks[s->delayed.v[0]];
      if (t->hedge && !woken) break;
      sc_task_undelay(s, t);
      if (t->hedge) {
        sc_race_hedge(s, t, tn);
      } else {
        sc_task_ready(s, t);
      }
    }
    serve_starved(s, tn);
    while (s->ready.head != NONE) {
      if (s->inflight >= (uint32_t)s->cfg.max_inflight) {
        s->m.skipped_no_permit++;
        break; /* an attempt's end runs us again */
      }
      task *t = &s->tasks[s->ready.head];
      sc_task_list_remove(s, &s->ready, t);
      t->state = T_RUNNING;
      if (sc_race_dispatch(s, t) > 0) continue;
      /* nothing eligible: park it until its host's earliest eligible
       * time (arm_wake), or until proxies are added when none is alive */
      host *h = &s->hosts[t->host];
      s->m.zero_available_events++;
      s->m.skipped_cooldown += h->ncool;
      /* cooling pairs may be out of the heap (retired, probing) */
      if (h->wait.n > h->ncool) s->m.skipped_rate_limit += h->wait.n - h->ncool;
      sc_task_starve(s, t);
    }
  } while (s->need_run);
  s->in_run = 0;
  arm_wake(s);
}

void sc_sched_run(sc_sched_t *s) { run(s, 1); }

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

int sc_sched_new(sc_sched_t **out, const sc_config_t *cfg,
                 const sc_env_t *env) {
  if (cfg->k_base < 1 || cfg->max_inflight < 1 || cfg->task_capacity < 1 ||
      cfg->health_window < 1 || cfg->health_window > 64 ||
      cfg->cooldown_fails < 1 || cfg->eviction_min_samples < 1 ||
      cfg->rate_interval < 0 || cfg->cooldown_base < 0 ||
      !(cfg->connect_timeout >= 0) ||
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
  sc_task_list_init(&s->ready);
  s->wake_at = -1;
  s->lat_ewma = -1;
  s->hs_p95 = -1;
  s->k_current = 2 * cfg->k_base;
  s->born = env->now(env->ud);
  s->ring_sec = (int64_t)floor(s->born);
  *out = s;
  return 0;
}

void sc_sched_free(sc_sched_t *s) {
  if (!s) return;
  for (uint32_t i = 0; i < s->task_cap; i++)
    if (s->tasks[i].state != T_FREE) sc_race_cancel(s, &s->tasks[i]);
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
  proxy *np = sc_core_grow(s->proxies, &s->proxy_cap, id + 1, sizeof(*np));
  if (!np) return SC_ENOMEM;
  s->proxies = np;
  memset(&np[id], 0, sizeof(np[id]));
  if ((r = sc_select_fit(s, id + 1)) < 0) return r;
  double tn = sc_core_now(s);
  for (uint32_t i = 0; i < s->host_names.count; i++) {
    sc_select_pair_init(&s->hosts[i].pairs[id]);
    if ((r = sc_select_place(s, &s->hosts[i], id, tn)) < 0) return r;
  }
  if (s->nstarved && !s->in_run) run(s, 0); /* a starved task may go */
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

/* (a scan that stops at the first live one: in a pool of free-list
 * proxies that is a few steps, and it runs only for a 404 or 410) */
int sc_sched_proxy_others_live(const sc_sched_t *s, uint32_t id) {
  for (uint32_t i = 0; i < s->proxy_names.count; i++)
    if (i != id && !s->proxies[i].dead && !s->proxies[i].retired) return 1;
  return 0;
}

int sc_sched_proxy_retire(sc_sched_t *s, uint32_t id, int retired) {
  if (id >= s->proxy_names.count) return SC_ENOPROXY;
  proxy *px = &s->proxies[id];
  if (!!px->retired == !!retired) return 0;
  px->retired = retired != 0;
  s->retired += retired ? 1 : (uint32_t)-1;
  double tn = sc_core_now(s);
  for (uint32_t i = 0; i < s->host_names.count; i++) {
    if (retired) sc_select_unlink(&s->hosts[i], id);
    else sc_select_place(s, &s->hosts[i], id, tn);
  }
  if (!retired && s->nstarved && !s->in_run) run(s, 0);
  return 0;
}

int sc_sched_proxy_info(const sc_sched_t *s, uint32_t id,
                        sc_proxy_info_t *info) {
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
  double tn = sc_core_now(s);
  if (info->dead) {
    sc_health_kill(s, id);
    px->dead_at = info->dead_since;
  } else if (px->dead) {
    px->dead = 0;
    s->dead--;
    sc_select_place_proxy(s, id, tn);
  } else {
    sc_select_place_proxy(s, id, tn); /* its rates moved it to another band */
  }
  return 0;
}

int sc_sched_proxy_probe(sc_sched_t *s, uint32_t id) {
  if (id >= s->proxy_names.count) return SC_ENOPROXY;
  proxy *px = &s->proxies[id];
  if (!px->dead || sc_core_now(s) - px->dead_at < s->cfg.cooldown_max) return 0;
  px->dead = 0;
  s->dead--;
  px->probe = PROBE_ARMED;
  sc_select_place_proxy(s, id, sc_core_now(s));
  if (s->nstarved && !s->in_run) run(s, 0);
  return 1;
}

int sc_sched_hold(sc_sched_t *s, int on) {
  if (on) return ++s->held;
  if (s->held == 0) return SC_EINVAL;
  if (--s->held == 0) run(s, 0);
  return s->held;
}

int sc_sched_proxy_totals(const sc_sched_t *s, uint32_t id, uint32_t *attempts,
                          uint32_t *successes) {
  if (id >= s->proxy_names.count) return SC_ENOPROXY;
  *attempts = s->proxies[id].attempts;
  *successes = s->proxies[id].successes;
  return 0;
}

int sc_sched_host_id(sc_sched_t *s, const char *name, size_t len,
                     uint32_t *idp) {
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
  host *nh = sc_core_grow(s->hosts, &s->host_cap, id + 1, sizeof(*nh));
  if (!nh) return SC_ENOMEM;
  s->hosts = nh;
  host *h = &nh[id];
  memset(h, 0, sizeof(*h));
  sc_task_list_init(&h->starved);
  h->interval = s->cfg.rate_interval;
  h->lat_ewma = h->lat_p95 = -1;
  uint32_t cap = s->pair_cap ? s->pair_cap : 64;
  if (!s->pair_cap) s->pair_cap = cap;
  h->pairs = malloc((size_t)cap * sizeof(pair));
  if (!h->pairs) return SC_ENOMEM;
  double tn = sc_core_now(s);
  /* only the proxies' records: sc_sched_proxy_add sets up the rest */
  for (uint32_t j = 0; j < s->proxy_names.count; j++)
    sc_select_pair_init(&h->pairs[j]);
  for (uint32_t j = 0; j < s->proxy_names.count; j++)
    if ((r = sc_select_place(s, h, j, tn)) < 0) return r;
  return 0;
}

const char *sc_sched_host_name(const sc_sched_t *s, uint32_t id) {
  return id < s->host_names.count ? s->host_names.names[id] : NULL;
}

uint32_t sc_sched_host_count(const sc_sched_t *s) {
  return s->host_names.count;
}

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
    task *nt = sc_core_grow(s->tasks, &s->task_cap, old + 1, sizeof(*nt));
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
  t->failed = NONE;
  s->ntasks++;
  sc_task_ready(s, t);
  *out = sc_core_handle(slot, gen);
  if (!s->in_run) run(s, 0);
  return 0;
}

int sc_sched_cancel(sc_sched_t *s, sc_handle_t h) {
  task *t = sc_task_at(s, h);
  if (!t) return SC_ENOENT;
  sc_race_cancel(s, t);
  sc_task_release(s, t);
  s->m.cancelled_tasks++;
  s->need_run = 1; /* freed in-flight room */
  if (!s->in_run) run(s, 0);
  return 0;
}

int sc_sched_task_attempts(const sc_sched_t *s, sc_handle_t h) {
  task *t = sc_task_at(s, h);
  return t ? (int)t->attempts : SC_ENOENT;
}

void *sc_sched_task_ud(const sc_sched_t *s, sc_handle_t h) {
  task *t = sc_task_at(s, h);
  return t ? t->ud : NULL;
}

const sc_attempt_t *sc_sched_attempt(const sc_sched_t *s, sc_handle_t h) {
  attempt *a = sc_race_attempt_at(s, h);
  return a ? &a->pub : NULL;
}

int sc_sched_pending(const sc_sched_t *s) { return (int)s->ntasks; }

int sc_sched_has_room(const sc_sched_t *s) {
  return s->ntasks < (uint32_t)s->cfg.task_capacity;
}

const sc_config_t *sc_sched_config(const sc_sched_t *s) { return &s->cfg; }

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
