/* String interning: names (proxy keys, host names) to dense ids 0..n-1.
 * Open addressing on FNV-1a; ids index the caller's flat arrays. */
#ifndef SC_INTERN_H
#define SC_INTERN_H

#include <stddef.h>
#include <stdint.h>

typedef struct sc_intern {
  char **names;    /* id -> name (owned, NUL-terminated) */
  uint32_t *hashes; /* id -> hash of its name: a probe or a rehash reads
                     * these, not the (scattered) names */
  uint32_t count;
  uint32_t names_cap;
  uint32_t *slots; /* id + 1, 0 = empty */
  uint32_t mask;
} sc_intern_t;

void sc_intern_init(sc_intern_t *in);
void sc_intern_free(sc_intern_t *in);
/* Returns 1 when added, 0 when already there, negative on error. */
int sc_intern_put(sc_intern_t *in, const char *name, size_t len, uint32_t *id);
int sc_intern_find(const sc_intern_t *in, const char *name, size_t len,
                   uint32_t *id);

#endif
