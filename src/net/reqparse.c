#include "reqparse.h"

#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int grow(char **p, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : 256;
  while (c < need) c *= 2;
  char *n = realloc(*p, c);
  if (!n) return -1;
  *p = n;
  *cap = c;
  return 0;
}

static int add_head(sc_reqparse_t *r, const char *p, size_t n) {
  if (r->len + n > r->head_max) {
    r->too_big = 431;
    return -1;
  }
  if (grow(&r->buf, &r->cap, r->len + n)) return -1;
  memcpy(r->buf + r->len, p, n);
  r->len += n;
  return 0;
}

static int on_url(http_parser *hp, const char *p, size_t n) {
  sc_reqparse_t *r = hp->data;
  if (add_head(r, p, n)) return -1;
  r->target_len += n; /* counted once kept: offsets never pass len */
  return 0;
}

/* A name or a value may come in several pieces: they are contiguous in
 * buf, since nothing else is appended in between. */
static int on_field(http_parser *hp, const char *p, size_t n) {
  sc_reqparse_t *r = hp->data;
  if (r->last_was_value || r->nhdrs == 0) {
    if (r->nhdrs == r->hcap) {
      size_t cap = r->hcap ? r->hcap * 2 : 16;
      sc_reqhdr_t *nh = realloc(r->hdrs, cap * sizeof(*nh));
      if (!nh) return -1;
      r->hdrs = nh;
      r->hcap = cap;
    }
    r->hdrs[r->nhdrs++] = (sc_reqhdr_t){r->len, 0, 0, 0};
    r->last_was_value = 0;
  }
  if (add_head(r, p, n)) return -1;
  r->hdrs[r->nhdrs - 1].name_len += n;
  return 0;
}

static int on_value(http_parser *hp, const char *p, size_t n) {
  sc_reqparse_t *r = hp->data;
  if (r->nhdrs == 0) return -1;
  sc_reqhdr_t *h = &r->hdrs[r->nhdrs - 1];
  if (!r->last_was_value) {
    h->val = r->len;
    r->last_was_value = 1;
  }
  if (add_head(r, p, n)) return -1;
  h->val_len += n;
  return 0;
}

static int on_headers(http_parser *hp) {
  sc_reqparse_t *r = hp->data;
  for (size_t i = 0; i < r->nhdrs; i++) {
    const sc_reqhdr_t *h = &r->hdrs[i];
    if (h->name_len == 6 && strncasecmp(r->buf + h->name, "expect", 6) == 0 &&
        h->val_len == 12 &&
        strncasecmp(r->buf + h->val, "100-continue", 12) == 0)
      r->expect_continue = 1;
  }
  /* a declared length over the limit is refused before any of the body
   * comes: a client that asked for 100 Continue sends none, and others
   * learn it before uploading up to the limit for nothing */
  if (!(hp->flags & F_CHUNKED) && hp->content_length != ULLONG_MAX &&
      hp->content_length > r->body_max) {
    r->too_big = 413;
    return -1;
  }
  return 0;
}

static int on_body(http_parser *hp, const char *p, size_t n) {
  sc_reqparse_t *r = hp->data;
  if (r->body_len + n > r->body_max) {
    r->too_big = 413;
    return -1;
  }
  if (grow(&r->body, &r->body_cap, r->body_len + n + 1)) return -1;
  memcpy(r->body + r->body_len, p, n);
  r->body_len += n;
  return 0;
}

/* One request at a time: the parser stops after it (pipelined requests
 * wait until the answer is out). */
static int on_complete(http_parser *hp) {
  sc_reqparse_t *r = hp->data;
  r->complete = 1;
  http_parser_pause(hp, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

void sc_reqparse_init(sc_reqparse_t *p, size_t head_max, size_t body_max) {
  memset(p, 0, sizeof(*p));
  p->head_max = head_max;
  p->body_max = body_max;
  sc_reqparse_reset(p);
}

void sc_reqparse_reset(sc_reqparse_t *p) {
  p->len = p->target_len = p->nhdrs = p->body_len = 0;
  p->complete = p->too_big = p->expect_continue = p->last_was_value = 0;
  http_parser_init(&p->hp, HTTP_REQUEST);
  p->hp.data = p;
}

void sc_reqparse_free(sc_reqparse_t *p) {
  free(p->buf);
  free(p->hdrs);
  free(p->body);
  p->buf = p->body = NULL;
  p->hdrs = NULL;
}

size_t sc_reqparse_feed(sc_reqparse_t *p, const char *data, size_t n) {
  return http_parser_execute(&p->hp, &settings, data, n);
}

int sc_reqparse_error(const sc_reqparse_t *p, char *why, size_t n) {
  enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
  /* http-parser's own bound (80 KiB of raw head) can come first: a value
   * that spans reads reaches it before on_header_value counts it */
  if (p->too_big == 431 || e == HPE_HEADER_OVERFLOW) {
    snprintf(why, n, "request header block over %zu KiB", p->head_max / 1024);
    return 431;
  }
  if (p->too_big == 413) {
    snprintf(why, n, "request body over %zu MiB", p->body_max >> 20);
    return 413;
  }
  if (e == HPE_OK || e == HPE_PAUSED) return 0;
  snprintf(why, n, "malformed request: %s", http_errno_description(e));
  return 400;
}

/* serve asks for no credentials, so a client sends them only to name its
 * session (clients that cannot set a header on a CONNECT can put a user in
 * the proxy URL). */
size_t sc_reqparse_proxy_user(const sc_reqparse_t *r, char *user, size_t cap) {
  for (size_t i = 0; i < r->nhdrs; i++) {
    const sc_reqhdr_t *h = &r->hdrs[i];
    if (h->name_len != 19 ||
        strncasecmp(r->buf + h->name, "proxy-authorization", 19) != 0)
      continue;
    const char *v = r->buf + h->val;
    size_t n = h->val_len;
    if (n < 6 || strncasecmp(v, "basic ", 6) != 0) return 0;
    for (v += 6, n -= 6; n && *v == ' '; v++, n--) {}
    while (n && v[n - 1] == ' ') n--;
    unsigned char out[768];
    if (n == 0 || n > 1024 || n % 4) return 0;
    int m = EVP_DecodeBlock(out, (const unsigned char *)v, (int)n);
    /* its length counts the bytes the padding stands for */
    for (size_t k = n; m > 0 && k > n - 2 && v[k - 1] == '='; k--) m--;
    const unsigned char *colon = m > 0 ? memchr(out, ':', (size_t)m) : NULL;
    size_t ul = colon ? (size_t)(colon - out) : (m > 0 ? (size_t)m : 0);
    if (ul > cap) ul = cap;
    memcpy(user, out, ul);
    return ul;
  }
  return 0;
}
