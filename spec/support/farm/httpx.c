/* An HTTP proxy: absolute-form requests ("GET http://h/p HTTP/1.1") are
 * forwarded with "Connection: close" (one request per connection, so the
 * farm never has to find where a request ends), CONNECT opens a tunnel.
 * Credentials are Basic (Proxy-Authorization); anon= decides what the
 * target learns of the client (X-Forwarded-For, Via). */
#include "farm.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void http_respond(conn_t *c, int status, const char *reason,
                  const char *headers, const char *body) {
  char head[1024];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nServer: scatter-farm\r\n%s"
                   "Content-Type: text/plain\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n",
                   status, reason, headers ? headers : "", strlen(body));
  cli_send(c, head, (size_t)n);
  if (!c->closing && body[0]) cli_send(c, body, strlen(body));
}

void http_reply(conn_t *c, int err) {
  if (err == 0) {
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    if (c->tunnel) cli_send(c, ok, sizeof ok - 1);
    return; /* absolute-form: relay_start sends the head on */
  }
  http_respond(c, 502, "Bad Gateway", NULL,
               err == 1 ? "flaky: upstream refused\n" : "cannot reach the target\n");
}

static void fail(conn_t *c, int status, const char *reason, const char *why) {
  log_request(c, why);
  http_respond(c, status, reason, NULL, "");
  conn_drain(c);
}

/* "host:port" or "[v6]:port" (len bytes) into c->host and c->dport. */
static int split_hostport(conn_t *c, const char *s, size_t len, int dflt) {
  const char *hs = s, *he, *colon;
  if (len && *s == '[') {
    hs = s + 1;
    he = memchr(hs, ']', len - 1);
    if (!he) return -1;
    colon = he + 1 < s + len && he[1] == ':' ? he + 1 : NULL;
    if (!colon && he + 1 != s + len) return -1;
  } else {
    colon = memchr(s, ':', len);
    he = colon ? colon : s + len;
  }
  size_t hl = (size_t)(he - hs);
  if (hl == 0 || hl >= sizeof c->host) return -1;
  memcpy(c->host, hs, hl);
  c->host[hl] = '\0';
  c->dport = dflt;
  if (colon) {
    uint64_t port;
    char num[8];
    size_t pl = (size_t)(s + len - colon - 1);
    if (pl == 0 || pl >= sizeof num) return -1;
    memcpy(num, colon + 1, pl);
    num[pl] = '\0';
    if (parse_u64(num, &port) || port == 0 || port > 65535) return -1;
    c->dport = (int)port;
  }
  return 0;
}

static int header_is(const char *line, const char *name) {
  size_t n = strlen(name);
  return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* The head for the target: origin-form request line, hop-by-hop and proxy
 * headers dropped, "Connection: close" and the anonymity headers added. */
static void build_forward(conn_t *c, const char *method, const char *path,
                          const char *version, char *headers) {
  sbuf_t b = { 0 };
  sb_printf(&b, "%s %s %s\r\n", method, path, version);
  for (char *save = NULL, *line = strtok_r(headers, "\r\n", &save); line;
       line = strtok_r(NULL, "\r\n", &save)) {
    if (header_is(line, "proxy-authorization") || header_is(line, "proxy-connection") ||
        header_is(line, "connection") || header_is(line, "keep-alive"))
      continue;
    sb_printf(&b, "%s\r\n", line);
  }
  if (c->prof.anon != A_ELITE) sb_printf(&b, "Via: 1.1 scatter-farm\r\n");
  if (c->prof.anon == A_TRANSPARENT) {
    struct sockaddr_storage ss;
    char ip[64] = "-";
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->cli.tcp, (struct sockaddr *)&ss, &len) == 0) {
      if (ss.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
      else uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
    }
    sb_printf(&b, "X-Forwarded-For: %s\r\n", ip);
  }
  sb_printf(&b, "Connection: close\r\n\r\n");
  c->fwd = b.p;
  c->fwd_len = b.len;
}

void http_process(conn_t *c) {
  char *p = (char *)c->hs;
  char *end = memmem(p, c->hs_len, "\r\n\r\n", 4);
  if (!end) {
    if (c->hs_len == HS_MAX) fail(c, 431, "Request Header Fields Too Large", "unsupported");
    return;
  }
  *end = '\0'; /* the head is a C string from here on */
  c->hs_off = (size_t)(end - p) + 4;
  if (c->prof.kind == K_HANDSHAKE_FAIL) {
    static const char junk[] = "SSH-2.0-OpenSSH_9.2 scatter-farm\r\n";
    cli_send(c, junk, sizeof junk - 1);
    conn_drain(c);
    return;
  }
  char *eol = strstr(p, "\r\n");
  char *headers = eol ? eol + 2 : p + strlen(p);
  if (eol) *eol = '\0';
  char *save = NULL, *method = strtok_r(p, " ", &save);
  char *target = strtok_r(NULL, " ", &save), *version = strtok_r(NULL, " ", &save);
  strcpy(c->host, "-");
  if (!method || !target || !version || strncmp(version, "HTTP/1.", 7) != 0) {
    fail(c, 400, "Bad Request", "unsupported");
    return;
  }
  c->tunnel = strcmp(method, "CONNECT") == 0;
  const char *path = "/";
  int bad;
  if (c->tunnel) {
    bad = split_hostport(c, target, strlen(target), 0) || c->dport == 0;
  } else if (strncasecmp(target, "http://", 7) == 0) {
    char *hp = target + 7, *slash = strpbrk(hp, "/?");
    size_t hl = slash ? (size_t)(slash - hp) : strlen(hp);
    char *at = memchr(hp, '@', hl); /* userinfo never reaches the target */
    if (at) { hl -= (size_t)(at + 1 - hp); hp = at + 1; }
    bad = split_hostport(c, hp, hl, 80);
    if (slash) path = slash; /* "?q" alone stays as is: nginx takes it */
  } else {
    bad = 1; /* origin-form or https:// absolute-form: not a proxy request */
  }
  if (bad) {
    fail(c, 400, "Bad Request", "unsupported");
    return;
  }
  struct sockaddr_storage probe;
  c->atyp = parse_ip(c->host, 0, &probe) != 0 ? 3 : probe.ss_family == AF_INET6 ? 4 : 1;
  if (c->prof.auth) {
    const char *got = NULL;
    for (char *l = headers; l && *l; l = strstr(l, "\r\n") ? strstr(l, "\r\n") + 2 : NULL) {
      if (header_is(l, "proxy-authorization")) {
        got = l + strlen("proxy-authorization:");
        while (*got == ' ' || *got == '\t') got++;
        break;
      }
    }
    size_t want = strlen(c->prof.basic);
    if (!got || strncmp(got, c->prof.basic, want) != 0 ||
        (got[want] != '\0' && got[want] != '\r')) {
      log_request(c, "auth_failed");
      http_respond(c, 407, "Proxy Authentication Required",
                   "Proxy-Authenticate: Basic realm=\"scatter-farm\"\r\n", "");
      conn_drain(c);
      return;
    }
  }
  if (map_lookup(c->host, &c->dst) != 0) {
    fail(c, 502, "Bad Gateway", "unresolved");
    return;
  }
  set_port(&c->dst, c->dport);
  if (!c->tunnel) build_forward(c, method, path, version, headers);
  conn_serve(c);
}
