/* Task slots and the queues a task waits in: the ready queue (FIFO), the
 * per-host starved lists (FIFO, served as proxies become eligible) and the
 * delayed heap (retry backoffs and hedge timers, by wake time).
 */
#ifndef SC_TASK_H
#define SC_TASK_H

#include "sched_int.h"

static inline uint32_t sc_task_slot(const sc_sched_t *s, const task *t) {
  return (uint32_t)(t - s->tasks);
}

/* The live task a handle names; NULL for a stale or unknown handle. */
task *sc_task_at(const sc_sched_t *s, sc_handle_t h);
void sc_task_list_init(tlist *l);
void sc_task_list_push(sc_sched_t *s, tlist *l, task *t);
void sc_task_list_remove(sc_sched_t *s, tlist *l, task *t);
void sc_task_ready(sc_sched_t *s, task *t); /* to the ready queue's tail */
/* To its host's starved list: nothing was eligible for it. */
void sc_task_starve(sc_sched_t *s, task *t);
void sc_task_unstarve(sc_sched_t *s, task *t);

static inline double sc_task_delay_key(const sc_sched_t *s, uint32_t i) {
  return s->tasks[s->delayed.v[i]].wake_at;
}

/* Into the delayed heap at `at` (again, if it is there already). A hedge
 * keeps the task running; otherwise it is delayed (a retry backoff). */
int sc_task_delay(sc_sched_t *s, task *t, double at, int hedge);
void sc_task_undelay(sc_sched_t *s, task *t);
/* Out of every queue; the slot is free and its handle stale. */
void sc_task_release(sc_sched_t *s, task *t);

#endif
