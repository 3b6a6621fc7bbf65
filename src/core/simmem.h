#ifndef SC_SIMMEM_H
#define SC_SIMMEM_H

/* Memory of the scheduler's records, measured through the allocator on a
 * private scheduler (glibc mallinfo2): what one more queued task, one more
 * in-flight attempt and one more (proxy, host) health record cost,
 * including the index structures that point at them. */
typedef struct sc_sim_sizes {
  double bytes_per_task, bytes_per_attempt, bytes_per_pair;
} sc_sim_sizes_t;
int sc_sim_measure(sc_sim_sizes_t *out);

#endif
