#include "xfer.h"

#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../core/proxyurl.h"

static int append(char **buf, size_t *len, size_t *cap, const char *p,
                  size_t n) {
  if (*len + n + 1 > *cap) {
    /* small enough for glibc's per-thread cache, which a 4 KiB first
     * block was not: most headers and many bodies fit */
    size_t c = *cap ? *cap : 1000;
    while (c < *len + n + 1) c *= 2;
    char *nb = realloc(*buf, c);
    if (!nb) return -1;
    *buf = nb;
    *cap = c;
  }
  memcpy(*buf + *len, p, n);
  *len += n;
  (*buf)[*len] = '\0';
  return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  sc_xfer_t *x = ud;
  size_t bytes = size * n;
  if (x->len + bytes > x->max_body) {
    x->too_large = 1;
    return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
  }
  return append(&x->body, &x->len, &x->cap, p, bytes) ? 0 : bytes;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  sc_xfer_t *x = ud;
  size_t bytes = size * n;
  /* a new status line starts a new response (redirect, 100 Continue):
   * keep only the last one's headers */
  if (bytes >= 5 && memcmp(p, "HTTP/", 5) == 0) x->head_len = 0;
  if (x->head_len + bytes > 1024 * 1024) return 0; /* endless headers */
  return append(&x->head, &x->head_len, &x->head_cap, p, bytes) ? 0 : bytes;
}

static int is_ipv4(const char *h) {
  struct in_addr a;
  return inet_pton(AF_INET, h, &a) == 1;
}

/* A redirect the SOCKS4 proxy cannot carry: curl would follow it through
 * the same proxy, resolving a name here (the DNS query the socks4 rule
 * keeps local resolution from making) or failing on an IPv6 host. */
static int redirect_refused(sc_xfer_t *x, const char *v, size_t n) {
  long code = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
  if (code < 300 || code > 399 || code == 304) return 0;
  while (n && (*v == ' ' || *v == '\t')) v++, n--;
  while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ')) n--;
  char loc[2048];
  char *base = NULL, *host = NULL;
  if (n == 0 || n >= sizeof(loc)) return 0;
  memcpy(loc, v, n);
  loc[n] = '\0';
  CURLU *u = curl_url();
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &base);
  int refused = 0;
  if (u && base && curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
      curl_url_set(u, CURLUPART_URL, loc, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
    if (host[0] == '[') {
      snprintf(x->route_why, sizeof(x->route_why),
               "proxy_protocol: socks4 cannot reach an IPv6 target (a "
               "redirect to %.100s, not followed)", host);
      refused = 1;
    } else if (x->socks4_limit == 2 && !is_ipv4(host)) {
      snprintf(x->route_why, sizeof(x->route_why),
               "proxy_protocol: a socks4 proxy resolves no names and "
               "prefer_remote_dns is on (a redirect to %.100s, not followed)",
               host);
      refused = 1;
    }
  }
  curl_free(host);
  curl_url_cleanup(u);
  return refused;
}

static size_t on_header_socks4(char *p, size_t size, size_t n, void *ud) {
  size_t bytes = size * n;
  if (bytes > 9 && strncasecmp(p, "location:", 9) == 0 &&
      redirect_refused(ud, p + 9, bytes - 9))
    return 0; /* curl ends the transfer: CURLE_WRITE_ERROR */
  return on_header(p, size, n, ud);
}

/* libcurl (7.88) files a SOCKS connection's idle connections under the
 * target's "scope/port/host" alone, so finding one through a given proxy
 * polls every idle connection to that host through every other proxy
 * first: ~10 poll() calls per request with 200 connections over 10
 * proxies. A per-proxy scope id splits that list by proxy. The scope id
 * only reaches IPv6 sockets (the proxy's), and only link-local ones use
 * it, so IPv6 proxy literals are left out. */
static unsigned long conn_group(const char *key) {
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++)
    h = (h ^ *p) * 16777619u;
  return (h & 0x7fffffffu) | 1u;
}

/* libcurl (7.88) turns TLS session tickets off (SSL_OP_NO_TICKET), so a
 * TLS 1.2 target resumes only if it keeps a session cache, which many do
 * not (nginx's default is none): turn them back on, so the pool's shared
 * sessions resume there too. Only for an OpenSSL libcurl (tls_is_openssl). */
static CURLcode ssl_ctx_tickets(CURL *easy, void *ctx, void *ud) {
  (void)easy;
  (void)ud;
  SSL_CTX_clear_options((SSL_CTX *)ctx, SSL_OP_NO_TICKET);
  return CURLE_OK;
}

static int tls_is_openssl(void) {
  static int is = -1;
  if (is < 0) {
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    is = v->ssl_version && strncmp(v->ssl_version, "OpenSSL/", 8) == 0;
  }
  return is;
}

/* The key's host is an IPv6 literal (after any scheme and credentials). */
static int ipv6_literal(const char *key) {
  const char *rest;
  sc_proxy_scheme(key, &rest);
  const char *at = strrchr(rest, '@');
  return (at ? at[1] : rest[0]) == '[';
}

/* The key's host is an IP literal: resolving it needs no DNS. */
static int ip_literal(const char *key) {
  const char *rest;
  sc_proxy_scheme(key, &rest);
  const char *at = strrchr(rest, '@'), *h = at ? at + 1 : rest;
  if (*h == '[') return 1;
  size_t n = strcspn(h, ":");
  return n > 0 && strspn(h, "0123456789.") == n;
}

static void on_done(CURL *easy, CURLcode res, void *ud) {
  sc_xfer_t *x = ud;
  x->running = 0;
  x->result = res;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &x->status);
  if (x->cookie_engine && res == CURLE_OK)
    curl_easy_getinfo(easy, CURLINFO_COOKIELIST, &x->cookies_out);
  x->elapsed = sc_loop_now() - x->started;
  long conns = 0;
  curl_off_t pre = 0;
  curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &conns);
  curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
  x->handshake = conns > 0 && pre > 0 ? (double)pre / 1e6 : -1;
  x->cb(x, x->ud);
}

int sc_xfer_start(sc_xfer_t **out, sc_loop_t *l, const sc_req_t *r,
                  const char *proxy_key, const sc_xfer_opts_t *o, sc_xfer_cb cb,
                  void *ud) {
  sc_xfer_t *x = calloc(1, sizeof(*x));
  if (!x) return -12;
  int kept;
  x->easy = sc_loop_easy(l, &kept);
  if (!x->easy) {
    free(x);
    return -12;
  }
  /* no proxy key: a direct fetch (proxy lists); "" also ignores the
   * environment's proxy variables */
  char proxy[1024] = "";
  x->direct = proxy_key == NULL;
  if (proxy_key) {
    sc_proxy_scheme_t sch = sc_proxy_scheme(proxy_key, NULL);
    x->http_proxy = sch == SC_PX_HTTP || sch == SC_PX_HTTPS;
    x->tls_proxy = sch == SC_PX_HTTPS;
    if (sch == SC_PX_SOCKS4 || sch == SC_PX_SOCKS4A)
      x->socks4_limit = sch == SC_PX_SOCKS4 && o->remote_dns ? 2 : 1;
    if (sc_proxy_curl_url(proxy_key, o->remote_dns, proxy, sizeof(proxy))) {
      sc_loop_easy_done(l, x->easy);
      free(x);
      return -22;
    }
  }
  CURL *e = x->easy;
  x->loop = l;
  x->max_body = r->max_body;
  x->cb = cb;
  x->ud = ud;
  int head = strcmp(r->method, "HEAD") == 0;
  /* A plain request (GET or HEAD, no body, verified TLS with the system
   * CAs) leaves its handle reusable without curl_easy_reset: the next
   * transfer sets again every option a plain request varies, and skips
   * the ones that never change (reset and these cost ~5k instructions a
   * transfer, ~3% of bench/overhead). */
  x->plain = (head || strcmp(r->method, "GET") == 0) && !r->body &&
             !r->insecure && !o->ca_file && !o->proxy_ca_file && !o->no_reuse &&
             !r->tunnel && !r->cookie_engine;
  if (!kept) {
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    /* every encoding libcurl can decode; bodies arrive decoded. No
     * User-Agent of our own (libcurl's and the crate's reqwest default):
     * the caller's headers say who it is, and it costs ~4% of a request */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (tls_is_openssl())
      curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_tickets);
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  }
  curl_easy_setopt(e, CURLOPT_URL, r->url);
  curl_easy_setopt(e, CURLOPT_PROXY, proxy);
  curl_easy_setopt(e, CURLOPT_ADDRESS_SCOPE,
                   proxy_key && !ipv6_literal(proxy_key)
                       ? (long)conn_group(proxy_key)
                       : 0L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(o->timeout * 1000.0));
  /* 0 is libcurl's default (300 s), under the whole-attempt timeout */
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)(o->connect_timeout * 1000.0 + 0.5));
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  /* a Content-Length past the limit fails before the body is read;
   * on_body still catches bodies of unannounced length */
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_body);
  curl_easy_setopt(e, CURLOPT_SHARE, o->share);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(e, CURLOPT_NOBODY, head ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, r->follow ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION,
                   r->follow && x->socks4_limit ? on_header_socks4 : on_header);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, r->follow ? 5L : -1L);
  if (!head && (strcmp(r->method, "GET") != 0 || r->body))
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
  if (r->body) {
    /* not copied: the request outlives every attempt of its task */
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
  }
  if (o->no_reuse) curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  /* curl caches every proxy address it "resolves", IP literals too, for
   * 60 s, and walks the whole cache to prune it on each new connection:
   * with a list of thousands of dead proxies that walk took 60% of the
   * CPU (scatter check: 20,000 refused proxies in 6.8 s, 50,000 in 77 s).
   * Nothing is resolved for a literal proxy with remote DNS, so its
   * transfers keep no cache (each prune empties it); a probe dials its
   * proxy once and never needs one. The cost: a host-named proxy of the
   * same pool is resolved again for each new connection. */
  curl_easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT,
                   o->no_reuse || (proxy_key && o->remote_dns &&
                                   ip_literal(proxy_key))
                       ? 0L
                       : 60L);
  if (r->cookie_engine) {
    /* "" turns the engine on without reading a file */
    x->cookie_engine = 1;
    curl_easy_setopt(e, CURLOPT_COOKIEFILE, "");
    for (const struct curl_slist *c = r->cookies; c; c = c->next)
      curl_easy_setopt(e, CURLOPT_COOKIELIST, c->data);
  }
  if (r->tunnel) {
    /* the proxy handshake (SOCKS, or CONNECT to an HTTP proxy) and no
     * more: url is http://host:port, so curl speaks no TLS to the target;
     * the loop keeps the socket (detach) */
    curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPPROXYTUNNEL, 1L);
  }
  if (r->insecure) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (o->ca_file) {
    curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file);
  }
  /* an https:// proxy is always verified: its certificate is what keeps
   * the credentials and the CONNECT target from whoever is in between */
  if (o->proxy_ca_file) curl_easy_setopt(e, CURLOPT_PROXY_CAINFO, o->proxy_ca_file);
  x->started = sc_loop_now();
  x->running = 1;
  x->done.cb = on_done;
  x->done.ud = x;
  x->done.sock = CURL_SOCKET_BAD;
  /* through an https:// proxy the socket carries the proxy's TLS: the
   * tunnel's bytes must go through curl, on a handle kept in the multi */
  x->done.detach = r->tunnel ? (x->tls_proxy ? 2 : 1) : 0;
  x->done.detached = -1;
  if (sc_loop_add(l, e, &x->done) < 0) {
    sc_loop_easy_done(l, e);
    free(x);
    return -22;
  }
  *out = x;
  return 0;
}

void sc_xfer_free(sc_xfer_t *x) {
  if (!x) return;
  if (x->running || x->done.kept) sc_loop_remove(x->loop, x->easy);
  /* the handle goes back to the loop's cache: no session's cookie may
   * stay in it for the next transfer */
  if (x->cookie_engine) curl_easy_setopt(x->easy, CURLOPT_COOKIELIST, "ALL");
  curl_slist_free_all(x->cookies_out);
  if (x->plain) sc_loop_easy_keep(x->loop, x->easy);
  else sc_loop_easy_done(x->loop, x->easy);
  if (x->done.detached >= 0) close(x->done.detached);
  free(x->body);
  free(x->head);
  free(x);
}

/* Failures of this process, never of the proxy: curl refused the request
 * or our own settings before anything reached the network (a URL its
 * parser rejects, a request too big for its buffer, a missing ca_file). */
int sc_xfer_local(const sc_xfer_t *x) {
  switch (x->result) {
  case CURLE_URL_MALFORMAT:
  case CURLE_OUT_OF_MEMORY:
  case CURLE_BAD_FUNCTION_ARGUMENT:
  case CURLE_FAILED_INIT:
  case CURLE_NOT_BUILT_IN:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_READ_ERROR: return 1;
  default: return 0;
  }
}

int sc_xfer_ok(const sc_xfer_t *x) {
  if (x->done.detach) return x->result == CURLE_OK && x->done.detached >= 0;
  /* 407 comes from a proxy only (RFC 9110 15.5.8): never the target's
   * answer, so never the classifier's to judge */
  return x->result == CURLE_OK && x->status > 0 &&
         !(x->status == 407 && !x->direct);
}

int sc_xfer_route_check(const char *proxy_key, const char *host,
                        int remote_dns, char *why, size_t n) {
  sc_proxy_scheme_t s = sc_proxy_scheme(proxy_key, NULL);
  if (s != SC_PX_SOCKS4 && s != SC_PX_SOCKS4A) return 0;
  if (host[0] == '[') {
    snprintf(why, n, "proxy_protocol: socks4 cannot reach an IPv6 target");
    return -22;
  }
  if (s == SC_PX_SOCKS4 && remote_dns && !is_ipv4(host)) {
    snprintf(why, n,
             "proxy_protocol: a socks4 proxy resolves no names and "
             "prefer_remote_dns is on: it serves IP targets only (use "
             "socks4a:// or prefer_remote_dns = false)");
    return -22;
  }
  return 0;
}

int sc_xfer_take_socket(sc_xfer_t *x) {
  int fd = x->done.detached;
  x->done.detached = -1;
  return fd;
}

int sc_xfer_tunnel_via_curl(const sc_xfer_t *x) { return x->done.kept; }

const char *sc_xfer_url(const sc_xfer_t *x) {
  char *u = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &u);
  return u;
}

static const char *const px_names[] = {
    "ok", "bad_address_type", "bad_version", "closed", "gssapi",
    "gssapi_permsg", "gssapi_protection", "identd", "identd_differ",
    "long_hostname", "long_passwd", "long_user", "no_auth", "recv_address",
    "recv_auth", "recv_connect", "recv_reqack",
    "reply_address_type_not_supported", "reply_command_not_supported",
    "reply_connection_refused", "reply_general_server_failure",
    "reply_host_unreachable", "reply_network_unreachable", "reply_not_allowed",
    "reply_ttl_expired", "reply_unassigned", "request_failed", "resolve_host",
    "send_auth", "send_connect", "send_request", "unknown_fail",
    "unknown_mode", "user_rejected"};

/* SOCKS replies that say the credentials (or their absence) were refused,
 * and the ones that say the other end speaks another protocol */
static const char *px_kind(long px) {
  switch (px) {
  case CURLPX_USER_REJECTED:
  case CURLPX_IDENTD:
  case CURLPX_IDENTD_DIFFER:
  case CURLPX_RECV_AUTH:
  case CURLPX_LONG_USER:
  case CURLPX_LONG_PASSWD: return "proxy_auth";
  case CURLPX_BAD_VERSION:
  case CURLPX_BAD_ADDRESS_TYPE:
  case CURLPX_UNKNOWN_MODE: return "proxy_protocol";
  default: return "socks_error";
  }
}

int sc_xfer_too_large(const sc_xfer_t *x) {
  return x->too_large || x->result == CURLE_FILESIZE_EXCEEDED;
}

void sc_xfer_error(const sc_xfer_t *x, char *buf, size_t n) {
  if (x->route_why[0]) {
    snprintf(buf, n, "%s", x->route_why);
    return;
  }
  const char *kind = sc_xfer_local(x) ? "local_error" : "transport";
  char extra[96] = "";
  long cc = 0;
  if (!x->direct) curl_easy_getinfo(x->easy, CURLINFO_HTTP_CONNECTCODE, &cc);
  if (x->result == CURLE_OK && x->status == 407) {
    snprintf(buf, n, "proxy_auth: the proxy answered 407 (credentials %s)",
             "missing or refused");
    return;
  }
  if (x->http_proxy && cc >= 300) {
    /* the CONNECT itself failed: the proxy's answer, not the target's
     * (tinyproxy says 401 to wrong credentials) */
    snprintf(buf, n, "%s: the proxy answered CONNECT with %ld",
             cc == 407 || cc == 401 ? "proxy_auth" : "proxy_error", cc);
    return;
  }
  switch (x->result) {
  case CURLE_COULDNT_CONNECT:
    kind = x->direct ? "connect_refused" : "proxy_refused";
    break;
  case CURLE_OPERATION_TIMEDOUT:
    kind = x->direct ? "timeout" : "proxy_timeout";
    break;
  case CURLE_COULDNT_RESOLVE_PROXY: kind = "socks_error"; break;
  case CURLE_PROXY: {
    long px = 0;
    curl_easy_getinfo(x->easy, CURLINFO_PROXY_ERROR, &px);
    kind = px_kind(px);
    if (px >= 0 && (size_t)px < sizeof(px_names) / sizeof(px_names[0]))
      snprintf(extra, sizeof(extra), " [%s]", px_names[px]);
    break;
  }
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_PARTIAL_FILE:
  case CURLE_GOT_NOTHING: kind = "dropped"; break;
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CIPHER: kind = "tls_error"; break;
  case CURLE_TOO_MANY_REDIRECTS: kind = "too_many_redirects"; break;
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_UNSUPPORTED_PROTOCOL: /* "HTTP/0.9 when not allowed" */
    if (x->http_proxy) kind = "proxy_protocol";
    break;
  case CURLE_FILESIZE_EXCEEDED:
  case CURLE_WRITE_ERROR:
    if (sc_xfer_too_large(x)) {
      snprintf(buf, n, "too_large: body exceeds max_body (%zu bytes)",
               x->max_body);
      return;
    }
    break;
  default: break;
  }
  snprintf(buf, n, "%s: %s%s%s%s", kind, curl_easy_strerror(x->result), extra,
           x->errbuf[0] ? ": " : "", x->errbuf);
}

void sc_req_free(sc_req_t *r) {
  if (!r) return;
  free(r->method);
  free(r->url);
  curl_slist_free_all(r->headers);
  curl_slist_free_all(r->cookies);
  free(r->body);
  free(r);
}
