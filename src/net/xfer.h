/* One attempt: one HTTP request through one SOCKS5 proxy, on a curl easy
 * handle driven by the process loop. The body is buffered whole (bounded by
 * max_body) because the classifier judges the complete response. */
#ifndef SC_XFER_H
#define SC_XFER_H

#include <curl/curl.h>
#include <stddef.h>

#include "loop.h"

/* What the attempts of one task share; immutable while they run. */
typedef struct sc_req {
  char *method;
  char *url;
  struct curl_slist *headers;
  char *body;
  size_t body_len;
  size_t max_body;
  int follow;   /* follow up to 5 redirects through the same proxy */
  int insecure; /* skip TLS verification */
} sc_req_t;

typedef struct sc_xfer_opts {
  CURLSH *share;       /* the pool's connection cache (NULL: the loop's) */
  double timeout;      /* the whole attempt, seconds */
  /* connect + proxy handshake (+ TLS with the target), seconds; 0: none
   * but timeout */
  double connect_timeout;
  const char *ca_file; /* NULL: the system bundle */
  int remote_dns;      /* socks5h (the proxy resolves) or socks5 */
  int no_reuse;        /* close the connection after this transfer */
} sc_xfer_opts_t;

typedef struct sc_xfer sc_xfer_t;
typedef void (*sc_xfer_cb)(sc_xfer_t *x, void *ud);

struct sc_xfer {
  CURL *easy;
  sc_loop_t *loop;
  char *body;
  size_t len, cap, max_body;
  char *head; /* header lines of the final response, CRLF-separated */
  size_t head_len, head_cap;
  int too_large, running;
  int direct; /* no proxy: errors are not the proxy's */
  int plain;  /* its handle can be reused without a reset */
  long status;
  CURLcode result;
  double started, elapsed;
  /* its new connection's connect + handshakes, seconds; < 0 when the
   * connection was reused or never got that far */
  double handshake;
  sc_xfer_cb cb;
  void *ud;
  sc_loop_xfer_t done; /* the loop's completion record */
  char errbuf[CURL_ERROR_SIZE];
};

/* Starts the transfer; cb runs once when it ends, never after a failed
 * start or after sc_xfer_free. proxy_key is "[user:pass@]host:port", or
 * NULL for a direct connection (only proxy-list fetches do that). */
int sc_xfer_start(sc_xfer_t **out, sc_loop_t *l, const sc_req_t *r,
                  const char *proxy_key, const sc_xfer_opts_t *o, sc_xfer_cb cb,
                  void *ud);
/* Stops it if running (closing its connection) and frees it. */
void sc_xfer_free(sc_xfer_t *x);
/* 1 when the transfer produced an HTTP response to classify. */
int sc_xfer_ok(const sc_xfer_t *x);
/* "<kind>: <detail>" for a failed transfer; kinds: proxy_refused,
 * proxy_timeout, socks_error, dropped, tls_error, too_large,
 * too_many_redirects, transport. */
void sc_xfer_error(const sc_xfer_t *x, char *buf, size_t n);
const char *sc_xfer_url(const sc_xfer_t *x);

void sc_req_free(sc_req_t *r);

#endif
