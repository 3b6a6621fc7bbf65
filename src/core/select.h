/* Proxy selection for one host: eligible pairs in score bands, the others
 * (rate-limited, cooling down) in a wait heap keyed by when they become
 * eligible again. See select.c.
 */
#ifndef SC_SELECT_H
#define SC_SELECT_H

#include "sched_int.h"

static inline double sc_select_wait_key(const host *h, uint32_t i) {
  return h->wait_key[i];
}

/* Take the pair out of whatever structure holds it. */
void sc_select_unlink(host *h, uint32_t id);
/* Put an unlinked pair where it belongs at time t (nowhere when its proxy
 * is dead, retired or flying its probe). */
int sc_select_place(sc_sched_t *s, host *h, uint32_t id, double t);
void sc_select_replace(sc_sched_t *s, host *h, uint32_t id, double t);
/* sc_select_replace on every host. */
void sc_select_place_proxy(sc_sched_t *s, uint32_t id, double t);
/* Move the due wait-heap entries to their bands. */
void sc_select_promote(sc_sched_t *s, host *h, double t);
void sc_select_pair_init(pair *p);
/* Grow every host's pairs array to hold `need` proxies. */
int sc_select_fit(sc_sched_t *s, uint32_t need);
/* Pick a proxy for the task's host, distinct from the task's live
 * attempts, and unlink it; NONE when nothing is eligible. */
uint32_t sc_select_pick(sc_sched_t *s, task *t, host *h);
int sc_select_has_eligible(const host *h);

#endif
