/* One attempt: one HTTP request through one proxy (every protocol libcurl
 * speaks: SOCKS5, SOCKS4/4a, HTTP, HTTPS), on a curl easy
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
  int tunnel;   /* only open a tunnel to url's host:port (CONNECT_ONLY) */
  /* A session's cookie jar (Netscape cookie-file lines, curl's own
   * export format): with `cookie_engine` set, curl's cookie engine starts
   * from these, and a finished transfer exports the jar again
   * (sc_xfer_t.cookies_out). */
  int cookie_engine;
  struct curl_slist *cookies;
} sc_req_t;

typedef struct sc_xfer_opts {
  CURLSH *share;       /* the pool's connection cache (NULL: the loop's) */
  double timeout;      /* the whole attempt, seconds */
  /* connect + proxy handshake (+ TLS with the target), seconds; 0: none
   * but timeout */
  double connect_timeout;
  const char *ca_file; /* NULL: the system bundle */
  const char *proxy_ca_file; /* https:// proxies' CAs; NULL: the system's */
  int remote_dns;      /* socks5h/socks4a (the proxy resolves) or local */
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
  int cookie_engine;
  int http_proxy; /* an http:// or https:// proxy */
  int tls_proxy;  /* an https:// proxy */
  /* a SOCKS4 proxy's limits on a redirect's host (the socks4 rule,
   * sc_xfer_route_check): 0 none, 1 no IPv6, 2 no IPv6 and no name */
  int socks4_limit;
  char route_why[256]; /* why a redirect was not followed, or "" */
  long status;
  CURLcode result;
  double started, elapsed;
  /* its new connection's connect + handshakes, seconds; < 0 when the
   * connection was reused or never got that far */
  double handshake;
  sc_xfer_cb cb;
  void *ud;
  sc_loop_xfer_t done; /* the loop's completion record */
  struct curl_slist *cookies_out; /* cookie_engine: the jar afterwards */
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
/* 1 when the transfer produced an HTTP response to classify, or (a
 * tunnel) an open connection to the target through the proxy. */
int sc_xfer_ok(const sc_xfer_t *x);
/* 1 when the failure is this process's own (kind local_error: a URL curl
 * rejects, out of memory, a missing ca_file): no proxy is to blame. */
int sc_xfer_local(const sc_xfer_t *x);
/* 1 when the body passed max_body: the target's size, no proxy's fault. */
int sc_xfer_too_large(const sc_xfer_t *x);
/* A tunnel's socket, now the caller's (-1 when there is none); otherwise
 * sc_xfer_free closes it. */
int sc_xfer_take_socket(sc_xfer_t *x);
/* 1 for an open tunnel through an https:// proxy: its bytes go through
 * curl_easy_send/recv on x->easy, which stays in the loop's multi until
 * sc_xfer_free (the socket is only to poll); 0 for a bare socket. */
int sc_xfer_tunnel_via_curl(const sc_xfer_t *x);
/* "<kind>: <detail>" for a failed transfer; kinds: proxy_refused,
 * proxy_timeout, socks_error, proxy_auth (407, SOCKS credentials
 * refused), proxy_protocol (garbage, not the protocol of the proxy URL),
 * proxy_error (an HTTP proxy refused the CONNECT), dropped, tls_error
 * (the target's or an https proxy's certificate), too_large,
 * too_many_redirects, transport. */
void sc_xfer_error(const sc_xfer_t *x, char *buf, size_t n);
const char *sc_xfer_url(const sc_xfer_t *x);
/* Whether the proxy of proxy_key can carry a request to host (a URL's
 * host, IPv6 in brackets): socks4 carries IPv4 addresses only, so it takes
 * no IPv6 target, and no name unless names are resolved locally
 * (remote_dns = 0). 0, or -22 with "<kind>: <detail>" in why. */
int sc_xfer_route_check(const char *proxy_key, const char *host,
                        int remote_dns, char *why, size_t n);

void sc_req_free(sc_req_t *r);

#endif
