#include "tunnel.h"

#include <stddef.h>
#include <stdlib.h>

#define CHUNK (64 * 1024)

typedef struct wreq {
  uv_write_t w;
  sc_tunnel_dir_t *d;
  char buf[];
} wreq;

static void end(sc_tunnel_t *t, int status) {
  if (t->ended) return;
  sc_tunnel_stop(t);
  t->cb(t, status);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  wreq *r = malloc(sizeof(*r) + CHUNK);
  *buf = r ? uv_buf_init(r->buf, CHUNK) : uv_buf_init(NULL, 0);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void on_written(uv_write_t *w, int status) {
  wreq *r = (wreq *)w;
  sc_tunnel_dir_t *d = r->d;
  free(r);
  if (status == UV_ECANCELED) return; /* the owner is closing the handles */
  sc_tunnel_t *t = d->t;
  if (t->ended) return;
  if (status < 0) {
    end(t, status);
    return;
  }
  if (!d->reading && !d->eof && d->to->write_queue_size <= SC_TUNNEL_LOW) {
    int rc = uv_read_start(d->from, on_alloc, on_read);
    if (rc < 0)
      end(t, rc);
    else
      d->reading = 1;
  }
}

static void on_shutdown(uv_shutdown_t *s, int status) {
  sc_tunnel_dir_t *d = s->data;
  if (status == UV_ECANCELED) return;
  sc_tunnel_t *t = d->t;
  if (t->ended) return;
  d->shut = 1;
  /* a peer gone before our shutdown reached it is an end, not an error */
  if (status < 0 && status != UV_ENOTCONN && status != UV_EPIPE)
    end(t, status);
  else if (t->d[0].shut && t->d[1].shut)
    end(t, 0);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  sc_tunnel_dir_t *d = st->data;
  sc_tunnel_t *t = d->t;
  wreq *r = buf->base ? (wreq *)(buf->base - offsetof(wreq, buf)) : NULL;
  if (n <= 0 || t->ended) {
    free(r);
    if (n == 0 || t->ended) return;
    if (n == UV_ENOBUFS) {
      end(t, n);
      return;
    }
    if (n != UV_EOF) {
      end(t, (int)n);
      return;
    }
    d->eof = 1;
    d->reading = 0;
    uv_read_stop(st);
    d->sreq.data = d;
    int rc = uv_shutdown(&d->sreq, d->to, on_shutdown);
    if (rc < 0) end(t, rc);
    return;
  }
  r->d = d;
  t->bytes[d == &t->d[0] ? 0 : 1] += (uint64_t)n;
  uv_buf_t b = uv_buf_init(r->buf, (unsigned)n);
  int rc = uv_write(&r->w, d->to, &b, 1, on_written);
  if (rc < 0) {
    free(r);
    end(t, rc);
    return;
  }
  if (d->to->write_queue_size > SC_TUNNEL_HIGH) {
    uv_read_stop(st);
    d->reading = 0;
  }
}

int sc_tunnel_start(sc_tunnel_t *t, uv_stream_t *a, uv_stream_t *b,
                    sc_tunnel_cb cb) {
  t->cb = cb;
  t->ended = 0;
  t->bytes[0] = t->bytes[1] = 0;
  uv_stream_t *from[2] = {a, b}, *to[2] = {b, a};
  for (int i = 0; i < 2; i++) {
    sc_tunnel_dir_t *d = &t->d[i];
    d->t = t;
    d->from = from[i];
    d->to = to[i];
    d->reading = d->eof = d->shut = 0;
    from[i]->data = d;
  }
  for (int i = 0; i < 2; i++) {
    int rc = uv_read_start(from[i], on_alloc, on_read);
    if (rc < 0) {
      uv_read_stop(a);
      uv_read_stop(b);
      return rc;
    }
    t->d[i].reading = 1;
  }
  return 0;
}

void sc_tunnel_stop(sc_tunnel_t *t) {
  t->ended = 1;
  for (int i = 0; i < 2; i++) {
    if (t->d[i].reading) uv_read_stop(t->d[i].from);
    t->d[i].reading = 0;
  }
}
