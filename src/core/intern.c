#include "intern.h"

#include <stdlib.h>
#include <string.h>

#include "sched.h"

static uint32_t hash(const char *s, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

void sc_intern_init(sc_intern_t *in) { memset(in, 0, sizeof(*in)); }

void sc_intern_free(sc_intern_t *in) {
  for (uint32_t i = 0; i < in->count; i++) free(in->names[i]);
  free(in->names);
  free(in->hashes);
  free(in->slots);
  memset(in, 0, sizeof(*in));
}

/* The slot of name (hash h), or the empty slot where it goes. A probe
 * compares the stored hash first: each name is its own allocation, and
 * reading them was a cache miss per probe (a 3M-proxy list spent a fifth
 * of its load here, and a rehash stalled the loop for a second). */
static uint32_t *lookup(const sc_intern_t *in, uint32_t h, const char *name,
                        size_t len) {
  uint32_t i = h & in->mask;
  for (;;) {
    uint32_t v = in->slots[i];
    if (v == 0) return &in->slots[i];
    if (in->hashes[v - 1] == h) {
      const char *n = in->names[v - 1];
      if (strncmp(n, name, len) == 0 && n[len] == '\0') return &in->slots[i];
    }
    i = (i + 1) & in->mask;
  }
}

static int grow(sc_intern_t *in) {
  uint32_t cap = in->mask ? (in->mask + 1) * 2 : 64;
  uint32_t *slots = calloc(cap, sizeof(*slots));
  if (!slots) return SC_ENOMEM;
  free(in->slots);
  in->slots = slots;
  in->mask = cap - 1;
  for (uint32_t id = 0; id < in->count; id++) { /* names are distinct */
    uint32_t i = in->hashes[id] & in->mask;
    while (slots[i]) i = (i + 1) & in->mask;
    slots[i] = id + 1;
  }
  return 0;
}

int sc_intern_find(const sc_intern_t *in, const char *name, size_t len,
                   uint32_t *id) {
  if (!in->slots) return SC_ENOENT;
  uint32_t v = *lookup(in, hash(name, len), name, len);
  if (!v) return SC_ENOENT;
  *id = v - 1;
  return 0;
}

int sc_intern_put(sc_intern_t *in, const char *name, size_t len, uint32_t *id) {
  if (sc_intern_find(in, name, len, id) == 0) return 0;
  /* keep the load factor under 1/2 so probes stay short */
  if ((in->count + 1) * 2 > (in->mask ? in->mask + 1 : 0)) {
    int r = grow(in);
    if (r < 0) return r;
  }
  if (in->count == in->names_cap) {
    uint32_t cap = in->names_cap ? in->names_cap * 2 : 64;
    char **names = realloc(in->names, cap * sizeof(*names));
    if (!names) return SC_ENOMEM;
    in->names = names;
    uint32_t *hashes = realloc(in->hashes, cap * sizeof(*hashes));
    if (!hashes) return SC_ENOMEM;
    in->hashes = hashes;
    in->names_cap = cap;
  }
  char *copy = malloc(len + 1);
  if (!copy) return SC_ENOMEM;
  memcpy(copy, name, len);
  copy[len] = '\0';
  uint32_t h = hash(name, len);
  in->names[in->count] = copy;
  in->hashes[in->count] = h;
  *lookup(in, h, copy, len) = in->count + 1;
  *id = in->count++;
  return 1;
}
