/* Task slots and queues. See task.h. */
#include "task.h"

task *sc_task_at(const sc_sched_t *s, sc_handle_t h) {
  uint32_t slot = (uint32_t)(h & 0xffffffffu);
  if (slot == 0 || slot > s->task_cap) return NULL;
  task *t = &s->tasks[slot - 1];
  if (t->state == T_FREE || t->gen != (uint32_t)(h >> 32)) return NULL;
  return t;
}

void sc_task_list_init(tlist *l) {
  l->head = l->tail = NONE;
  l->n = 0;
}

void sc_task_list_push(sc_sched_t *s, tlist *l, task *t) {
  uint32_t i = sc_task_slot(s, t);
  t->prev = l->tail;
  t->next = NONE;
  if (l->tail == NONE) l->head = i;
  else s->tasks[l->tail].next = i;
  l->tail = i;
  l->n++;
}

void sc_task_list_remove(sc_sched_t *s, tlist *l, task *t) {
  if (t->prev != NONE) s->tasks[t->prev].next = t->next;
  else l->head = t->next;
  if (t->next != NONE) s->tasks[t->next].prev = t->prev;
  else l->tail = t->prev;
  t->prev = t->next = NONE;
  l->n--;
}

void sc_task_ready(sc_sched_t *s, task *t) {
  t->state = T_READY;
  sc_task_list_push(s, &s->ready, t);
  s->need_run = 1;
}

void sc_task_starve(sc_sched_t *s, task *t) {
  host *h = &s->hosts[t->host];
  t->state = T_STARVED;
  if (h->starved.n == 0) sc_core_vec_push(&s->starved_hosts, t->host);
  sc_task_list_push(s, &h->starved, t);
  s->nstarved++;
}

void sc_task_unstarve(sc_sched_t *s, task *t) {
  sc_task_list_remove(s, &s->hosts[t->host].starved, t);
  s->nstarved--;
}

static void dswap(sc_sched_t *s, uint32_t i, uint32_t j) {
  uint32_t a = s->delayed.v[i], b = s->delayed.v[j];
  s->delayed.v[i] = b;
  s->delayed.v[j] = a;
  s->tasks[b].heap_pos = i;
  s->tasks[a].heap_pos = j;
}

static void delayed_fix(sc_sched_t *s, uint32_t i) {
  while (i > 0 && sc_task_delay_key(s, (i - 1) / 2) > sc_task_delay_key(s, i)) {
    dswap(s, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < s->delayed.n && sc_task_delay_key(s, l) < sc_task_delay_key(s, m))
      m = l;
    if (r < s->delayed.n && sc_task_delay_key(s, r) < sc_task_delay_key(s, m))
      m = r;
    if (m == i) return;
    dswap(s, i, m);
    i = m;
  }
}

void sc_task_undelay(sc_sched_t *s, task *t) {
  uint32_t pos = t->heap_pos, last = s->delayed.v[--s->delayed.n];
  t->heap_pos = NONE;
  if (pos == s->delayed.n) return;
  s->delayed.v[pos] = last;
  s->tasks[last].heap_pos = pos;
  delayed_fix(s, pos);
}

int sc_task_delay(sc_sched_t *s, task *t, double at, int hedge) {
  if (t->heap_pos != NONE) sc_task_undelay(s, t);
  t->wake_at = at;
  t->hedge = (uint8_t)hedge;
  if (!hedge) t->state = T_DELAYED;
  t->heap_pos = s->delayed.n;
  if (sc_core_vec_push(&s->delayed, sc_task_slot(s, t)) < 0) return SC_ENOMEM;
  delayed_fix(s, t->heap_pos);
  return 0;
}

void sc_task_release(sc_sched_t *s, task *t) {
  if (t->state == T_READY) sc_task_list_remove(s, &s->ready, t);
  if (t->state == T_STARVED) sc_task_unstarve(s, t);
  if (t->heap_pos != NONE) sc_task_undelay(s, t);
  t->state = T_FREE;
  t->gen = (t->gen + 1) & GEN_MASK;
  t->ud = NULL;
  t->next = s->task_free;
  s->task_free = sc_task_slot(s, t);
  s->ntasks--;
}
