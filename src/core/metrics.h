/* Per-second counters (throughput, success rate over a minute) and the
 * metrics snapshot (sc_sched_metrics, declared in sched.h).
 */
#ifndef SC_METRICS_H
#define SC_METRICS_H

#include "sched_int.h"

/* Move the counters' ring to time t, zeroing the seconds skipped. */
void sc_metrics_tick(sc_sched_t *s, double t);

#endif
