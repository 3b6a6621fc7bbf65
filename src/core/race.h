/* Races: a task's dispatch (a round of up to K paths, hedged or at once),
 * its attempts, and what an attempt's outcome does to its task.
 */
#ifndef SC_RACE_H
#define SC_RACE_H

#include "sched_int.h"

attempt *sc_race_attempt_at(const sc_sched_t *s, sc_handle_t h);
/* Cancel every live attempt of t through the transport. */
void sc_race_cancel(sc_sched_t *s, task *t);
/* Start up to n attempts for t. Returns how many started. */
int sc_race_launch(sc_sched_t *s, task *t, int n);
/* The delay before a round's next hedged path (0: all at once). */
double sc_race_hedge_delay(sc_sched_t *s, const host *h);
/* The task's hedge timer is due (the run loop took it off the heap). */
void sc_race_hedge(sc_sched_t *s, task *t, double tn);
/* A task from the ready queue: start a round. 0 when nothing could start. */
int sc_race_dispatch(sc_sched_t *s, task *t);
/* An attempt's outcome (sc_sched_attempt_done without the run): 1 when it
 * won its task, 0 otherwise, negative for a stale handle or bad verdict. */
int sc_race_done(sc_sched_t *s, sc_handle_t ah, sc_verdict_t v, double latency);
/* The same with the pair's rest (sc_health_record_rest). */
int sc_race_done_rest(sc_sched_t *s, sc_handle_t ah, sc_verdict_t v,
                      double latency, double rest);

#endif
