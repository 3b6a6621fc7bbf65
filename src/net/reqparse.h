/* One HTTP/1.x request at a time from a byte stream, on nodejs
 * http-parser: the target, the header names and values (kept in one
 * buffer) and the body, with limits on the head and the body. */
#ifndef SC_REQPARSE_H
#define SC_REQPARSE_H

#include <http_parser.h>
#include <stddef.h>

typedef struct sc_reqhdr {
  size_t name, name_len, val, val_len; /* offsets into buf */
} sc_reqhdr_t;

typedef struct sc_reqparse {
  http_parser hp; /* method, version, upgrade: the parser's own fields */
  char *buf;      /* the target, then header names and values */
  size_t len, cap, target_len;
  sc_reqhdr_t *hdrs;
  size_t nhdrs, hcap;
  char *body;
  size_t body_len, body_cap;
  size_t head_max, body_max;
  int complete;        /* a whole request is in (the parser waits) */
  int too_big;         /* 431 (head) or 413 (body) */
  int expect_continue; /* the client waits for 100 Continue */
  int last_was_value;
} sc_reqparse_t;

void sc_reqparse_init(sc_reqparse_t *p, size_t head_max, size_t body_max);
/* Ready for the next request; buffers are kept. */
void sc_reqparse_reset(sc_reqparse_t *p);
void sc_reqparse_free(sc_reqparse_t *p);
/* Parses up to n bytes; returns how many belong to this request (the
 * rest, once p->complete, is the next request's or a tunnel's). */
size_t sc_reqparse_feed(sc_reqparse_t *p, const char *data, size_t n);
/* 0, or the status that answers a bad request (400, 413, 431), with the
 * reason in why. */
int sc_reqparse_error(const sc_reqparse_t *p, char *why, size_t n);
/* The user of a `Proxy-Authorization: Basic` header into user (at most
 * cap bytes, not terminated): a session's name. Returns its length, 0 if
 * there is none. */
size_t sc_reqparse_proxy_user(const sc_reqparse_t *r, char *user, size_t cap);

#endif
