/* libFuzzer target: scatter serve's request parser (src/net/reqparse.c).
 *
 * The first byte picks where the stream is cut in two reads (the parser
 * must not care); requests are parsed one after another as a kept-alive
 * client would send them. Every offset the parser reports must lie within
 * what it kept, and the limits must hold. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/net/reqparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const sc_reqparse_t *p) {
  if (p->len > p->head_max || p->target_len > p->len) abort();
  if (p->body_len > p->body_max) abort();
  for (size_t i = 0; i < p->nhdrs; i++) {
    const sc_reqhdr_t *h = &p->hdrs[i];
    if (h->name + h->name_len > p->len) abort();
    if (h->val_len && h->val + h->val_len > p->len) abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  size_t cut = 1 + (data[0] % (size ? size : 1));
  /* exact-size copies: a read past the end is caught by ASan */
  char *buf = malloc(size);
  if (!buf) return 0;
  memcpy(buf, data, size);
  sc_reqparse_t p;
  sc_reqparse_init(&p, 4096, 65536);
  size_t at = 1;
  for (int req = 0; req < 64 && at < size; req++) {
    size_t end = cut > at && cut < size ? cut : size;
    size_t used = sc_reqparse_feed(&p, buf + at, end - at);
    if (used > end - at) abort();
    if (!p.complete && used == end - at && end < size)
      used += sc_reqparse_feed(&p, buf + end, size - end);
    check(&p);
    char why[160];
    if (!p.complete) {
      int st = sc_reqparse_error(&p, why, sizeof(why));
      if (st && st != 400 && st != 413 && st != 431) abort();
      break;
    }
    if (used == 0) break;
    at += used;
    sc_reqparse_reset(&p);
  }
  sc_reqparse_free(&p);
  free(buf);
  return 0;
}
