/* Health: per-(proxy, host) outcome windows, latency estimates, cooldown,
 * eviction, and the pool's recent success rate that sets adaptive K.
 * DESIGN.md section 3.
 */
#ifndef SC_HEALTH_H
#define SC_HEALTH_H

#include "sched_int.h"

/* Record an attempt's outcome for the pair (cooldown, eviction, latency,
 * and a probing proxy's return) at time t. */
void sc_health_record(sc_sched_t *s, uint32_t id, uint32_t hid,
                      sc_verdict_t v, double latency, double t);
/* The same for a blocked answer with a rest (Retry-After, seconds >= 0;
 * < 0: none): no attempt starts through the pair for `rest` (capped by
 * cooldown_max; its rate-limit gate) and the attempt is not counted
 * towards eviction or the consecutive failures of a cooldown. */
void sc_health_record_rest(sc_sched_t *s, uint32_t id, uint32_t hid,
                           sc_verdict_t v, double latency, double t,
                           double rest);
/* Evict a proxy from this scheduler: out of every host's structures. */
void sc_health_kill(sc_sched_t *s, uint32_t id);
/* A new connection's connect + proxy handshake took secs. */
void sc_health_handshake(sc_sched_t *s, double secs);
/* The connect deadline for the next attempt, seconds; 0: none of its own
 * (proxy_timeout bounds the attempt). */
double sc_health_connect_timeout(const sc_sched_t *s);
/* Adaptive K from the pool's recent success rate (also kept as k_current). */
int sc_health_k(sc_sched_t *s);

#endif
