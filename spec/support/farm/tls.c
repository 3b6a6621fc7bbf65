/* The TLS front of an https proxy: OpenSSL on memory BIOs between the
 * client and the proxy's inner plain HTTP proxy (a second listener on
 * 127.0.0.1 with the same profile), so every fault profile and credential
 * check of the HTTP proxy holds inside TLS unchanged. Bytes are relayed
 * as they come; a test tool needs no back-pressure here. */
#include "farm.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

static SSL_CTX *ctx;

typedef struct tls_conn {
  uv_tcp_t cli, up;
  uv_connect_t creq;
  uv_shutdown_t cli_shut, up_shut;
  SSL *ssl;
  BIO *rbio, *wbio; /* network side: rbio holds ciphertext in, wbio out */
  int handles, closing, up_ready, cli_eof, up_eof;
  char *pending; /* plaintext read before the inner connection was up */
  size_t pending_len;
} tls_conn_t;

int tls_init(const char *cert, const char *key) {
  ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
    return -1;
  return 0;
}

static void on_tls_handle_close(uv_handle_t *h) {
  tls_conn_t *t = h->data;
  if (--t->handles > 0) return;
  SSL_free(t->ssl); /* frees both BIOs */
  free(t->pending);
  free(t);
}

static void tls_close(tls_conn_t *t) {
  if (t->closing) return;
  t->closing = 1;
  uv_close((uv_handle_t *)&t->cli, on_tls_handle_close);
  uv_close((uv_handle_t *)&t->up, on_tls_handle_close);
}

static void on_sent(uv_write_t *req, int status) {
  msg_t *m = container_of(req, msg_t, req);
  tls_conn_t *t = m->ctx;
  free(m);
  if (status < 0 && !t->closing) tls_close(t);
}

/* Sends whatever OpenSSL has written for the client. */
static void flush(tls_conn_t *t) {
  char buf[16384];
  int n;
  while (!t->closing && (n = BIO_read(t->wbio, buf, sizeof buf)) > 0)
    if (send_copy((uv_stream_t *)&t->cli, buf, (size_t)n, on_sent, t, 0) != 0)
      tls_close(t);
}

static void on_shut(uv_shutdown_t *req, int status) {
  tls_conn_t *t = req->data;
  (void)status;
  /* the inner proxy is done and the client has its close_notify */
  if (req == &t->cli_shut && !t->closing) tls_close(t);
}

static void to_up(tls_conn_t *t, const char *p, size_t n) {
  if (!t->up_ready) {
    t->pending = xrealloc(t->pending, t->pending_len + n);
    memcpy(t->pending + t->pending_len, p, n);
    t->pending_len += n;
    return;
  }
  if (send_copy((uv_stream_t *)&t->up, p, n, on_sent, t, 0) != 0) tls_close(t);
}

/* Feeds ciphertext from the client through the handshake or SSL_read. */
static void pump(tls_conn_t *t) {
  char buf[16384];
  if (!SSL_is_init_finished(t->ssl)) {
    int r = SSL_do_handshake(t->ssl);
    flush(t);
    if (r != 1) {
      int e = SSL_get_error(t->ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) tls_close(t);
      return;
    }
  }
  for (;;) {
    int n = SSL_read(t->ssl, buf, sizeof buf);
    if (n > 0) {
      to_up(t, buf, (size_t)n);
      if (t->closing) return;
      continue;
    }
    int e = SSL_get_error(t->ssl, n);
    flush(t);
    if (e == SSL_ERROR_ZERO_RETURN && t->up_ready && !t->up_eof) {
      t->up_shut.data = t; /* close_notify: no more requests */
      uv_shutdown(&t->up_shut, (uv_stream_t *)&t->up, on_shut);
    } else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_ZERO_RETURN) {
      tls_close(t);
    }
    return;
  }
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  (void)h;
  (void)sz;
  char *p = malloc(READ_CHUNK);
  *buf = p ? uv_buf_init(p, READ_CHUNK) : uv_buf_init(NULL, 0);
}

static void on_cli_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tls_conn_t *t = s->data;
  if (nread > 0 && !t->closing) {
    BIO_write(t->rbio, buf->base, (int)nread);
    pump(t);
  } else if (nread < 0 && !t->closing) {
    tls_close(t);
  }
  free(buf->base);
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tls_conn_t *t = s->data;
  if (nread > 0 && !t->closing) {
    if (SSL_write(t->ssl, buf->base, (int)nread) <= 0) tls_close(t);
    else flush(t);
  } else if (nread < 0 && !t->closing) {
    /* the inner proxy closed: end the TLS session cleanly after the data */
    t->up_eof = 1;
    SSL_shutdown(t->ssl);
    flush(t);
    t->cli_shut.data = t;
    if (t->closing ||
        uv_shutdown(&t->cli_shut, (uv_stream_t *)&t->cli, on_shut) != 0)
      tls_close(t);
  }
  free(buf->base);
}

static void on_up_connect(uv_connect_t *req, int status) {
  tls_conn_t *t = req->data;
  if (t->closing) return;
  if (status < 0) { tls_close(t); return; }
  t->up_ready = 1;
  uv_tcp_nodelay(&t->up, 1);
  if (t->pending_len) {
    to_up(t, t->pending, t->pending_len);
    free(t->pending);
    t->pending = NULL;
    t->pending_len = 0;
  }
  if (!t->closing) uv_read_start((uv_stream_t *)&t->up, on_alloc, on_up_read);
}

void tls_accept(proxy_t *px, uv_stream_t *server) {
  tls_conn_t *t = xcalloc(1, sizeof *t);
  uv_tcp_init(loop, &t->cli);
  uv_tcp_init(loop, &t->up);
  t->cli.data = t->up.data = t;
  t->handles = 2;
  t->ssl = SSL_new(ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) die("out of memory (TLS)");
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  SSL_set_accept_state(t->ssl);
  if (uv_accept(server, (uv_stream_t *)&t->cli) != 0) { tls_close(t); return; }
  uv_tcp_nodelay(&t->cli, 1);
  t->creq.data = t;
  if (uv_tcp_connect(&t->creq, &t->up, (struct sockaddr *)&px->inner_addr,
                     on_up_connect) != 0) {
    tls_close(t);
    return;
  }
  uv_read_start((uv_stream_t *)&t->cli, on_alloc, on_cli_read);
}
