#include "proxyurl.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sched.h"

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_hostc(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static int is_keep(char c) { /* RFC 3986 unreserved, sub-delims, '%' */
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || strchr("-._~!$&'()*+,;=%", c) != NULL;
}

typedef struct out {
  char *p;
  size_t n, cap;
} out;

static int put(out *o, char c) {
  if (o->n + 1 >= o->cap) return -1;
  o->p[o->n++] = c;
  o->p[o->n] = '\0';
  return 0;
}

static int put_enc(out *o, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (is_keep((char)c)) {
      if (put(o, (char)c)) return -1;
    } else if (put(o, '%') || put(o, hex[c >> 4]) || put(o, hex[c & 15])) {
      return -1;
    }
  }
  return 0;
}

/* key prefixes, by sc_proxy_scheme_t; SOCKS5 keys have none */
static const char *const prefixes[SC_PX__COUNT] = {"", "socks4://", "socks4a://",
                                                   "http://", "https://"};
static const char *const names[SC_PX__COUNT] = {"socks5", "socks4", "socks4a",
                                                "http", "https"};

int sc_proxy_scheme_parse(const char *name, size_t n, sc_proxy_scheme_t *out) {
  if (n == 7 && strncasecmp(name, "socks5h", 7) == 0) {
    *out = SC_PX_SOCKS5;
    return 0;
  }
  for (int i = 0; i < SC_PX__COUNT; i++) {
    if (strlen(names[i]) == n && strncasecmp(name, names[i], n) == 0) {
      *out = (sc_proxy_scheme_t)i;
      return 0;
    }
  }
  return SC_EINVAL;
}

const char *sc_proxy_scheme_name(sc_proxy_scheme_t s) {
  return (unsigned)s < SC_PX__COUNT ? names[s] : "?";
}

sc_proxy_scheme_t sc_proxy_scheme(const char *key, const char **rest) {
  for (int i = 1; i < SC_PX__COUNT; i++) {
    size_t n = strlen(prefixes[i]);
    if (strncmp(key, prefixes[i], n) == 0) {
      if (rest) *rest = key + n;
      return (sc_proxy_scheme_t)i;
    }
  }
  if (rest) *rest = key;
  return SC_PX_SOCKS5;
}

int sc_proxy_curl_url(const char *key, int remote_dns, char *out, size_t cap) {
  const char *rest;
  static const char *const curl[SC_PX__COUNT][2] = {
      {"socks5", "socks5h"}, {"socks4", "socks4"}, {"socks4", "socks4a"},
      {"http", "http"},     {"https", "https"}};
  sc_proxy_scheme_t s = sc_proxy_scheme(key, &rest);
  int n = snprintf(out, cap, "%s://%s", curl[s][remote_dns ? 1 : 0], rest);
  return n < 0 || (size_t)n >= cap ? SC_EINVAL : 0;
}

/* A host of digits and dots only is an IPv4 address, written canonically
 * into out (at least 16 bytes): 0, or -1 when it is no dotted quad.
 * libcurl and getaddrinfo read a part with a leading zero as octal, so the
 * zero-padded "127.000.000.010" of some free lists reached 127.0.0.8; and
 * "999.1.1.1" or "12345" went to the resolver as names. */
static int ipv4_canon(const char *s, const char *e, char *out) {
  unsigned v[4];
  int parts = 0;
  for (const char *q = s;;) {
    const char *d = q;
    unsigned n = 0;
    while (q < e && *q >= '0' && *q <= '9' && q - d < 3)
      n = n * 10 + (unsigned)(*q++ - '0');
    if (q == d || n > 255) return -1;
    v[parts++] = n;
    if (q == e) break;
    if (parts == 4 || *q++ != '.') return -1;
  }
  if (parts != 4) return -1;
  snprintf(out, 16, "%u.%u.%u.%u", v[0], v[1], v[2], v[3]);
  return 0;
}

static int all_digits_dots(const char *s, const char *e) {
  for (; s < e; s++)
    if (!((*s >= '0' && *s <= '9') || *s == '.')) return 0;
  return 1;
}

/* "2001:db8::1:1080" or "::1:1080": hex digits, dots and colons, where
 * what follows the first colon is no port. Such a line said "bad port",
 * "missing host" or "bad IPv4 address"; "1.2.3.4:80:u:p" is not one. */
static int unbracketed_ipv6(const char *s, const char *e) {
  const char *c1 = memchr(s, ':', (size_t)(e - s)), *c2;
  if (!c1 || !(c2 = memchr(c1 + 1, ':', (size_t)(e - c1 - 1)))) return 0;
  for (const char *q = s; q < e; q++)
    if (!*q || !strchr("0123456789abcdefABCDEF:.", *q)) return 0;
  unsigned long port = 0;
  const char *q = c1 + 1;
  while (q < c2 && *q >= '0' && *q <= '9' && port <= 65535)
    port = port * 10 + (unsigned long)(*q++ - '0');
  return !(q == c2 && port >= 1 && port <= 65535);
}

#define FAIL(msg)                                                              \
  do {                                                                         \
    if (why) *why = msg;                                                       \
    return SC_EINVAL;                                                          \
  } while (0)

int sc_proxy_parse(const char *line, size_t len, char *key, size_t keycap,
                   const char **why) {
  return sc_proxy_parse_as(line, len, SC_PX_SOCKS5, key, keycap, why);
}

int sc_proxy_parse_as(const char *line, size_t len, sc_proxy_scheme_t dflt,
                      char *key, size_t keycap, const char **why) {
  const char *p = line, *e = line + len;
  /* a list saved with a UTF-8 byte order mark (Windows editors): its
   * first line is a proxy like any other */
  if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3;
  while (p < e && is_space(*p)) p++;
  while (e > p && is_space(e[-1])) e--;
  if (p == e || *p == '#') return 1;
  for (const char *q = p; q < e; q++)
    if (is_space(*q) || (unsigned char)*q < 0x20) FAIL("contains spaces");
  /* a scheme is scheme characters right at the start, then "://":
   * "user:a://b@host:1" is credentials, not a scheme */
  const char *sep = NULL, *q = p;
  while (q < e && (is_hostc(*q) || *q == '+') && *q != '_') q++;
  if (q + 2 < e && q[0] == ':' && q[1] == '/' && q[2] == '/') sep = q;
  sc_proxy_scheme_t scheme = dflt;
  if (sep) {
    if (sc_proxy_scheme_parse(p, (size_t)(sep - p), &scheme) != 0)
      FAIL("unknown scheme (socks5, socks5h, socks4, socks4a, http, https)");
    p = sep + 3;
  }
  if ((unsigned)scheme >= SC_PX__COUNT) FAIL("unknown scheme");
  out o = {key, 0, keycap};
  if (keycap) key[0] = '\0';
  for (const char *q = prefixes[scheme]; *q; q++)
    if (put(&o, *q)) FAIL("too long");
  const char *at = NULL;
  for (const char *q = p; q < e; q++)
    if (*q == '@') at = q;
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (at == p || colon == p) FAIL("empty user name");
    /* SOCKS4 carries a user id and no password: "bob@" is "bob:@" */
    int socks4 = scheme == SC_PX_SOCKS4 || scheme == SC_PX_SOCKS4A;
    if (!colon && !socks4) FAIL("credentials need user:password");
    const char *ue = colon ? colon : at;
    if (put_enc(&o, p, (size_t)(ue - p)) || put(&o, ':') ||
        (colon && put_enc(&o, colon + 1, (size_t)(at - colon - 1))) ||
        put(&o, '@'))
      FAIL("too long");
    p = at + 1;
  }
  const char *hs, *he;
  char ip[INET6_ADDRSTRLEN + 2] = "";
  if (p < e && *p == '[') {
    /* a real IPv6 address: "[abc]" or "[1.2.3.4]" used to pass here and
     * fail every attempt with curl's "unsupported proxy syntax" */
    hs = p + 1;
    he = memchr(hs, ']', (size_t)(e - hs));
    char a[INET6_ADDRSTRLEN];
    struct in6_addr in6;
    if (!he || he == hs || (size_t)(he - hs) >= sizeof(a))
      FAIL("bad IPv6 address");
    memcpy(a, hs, (size_t)(he - hs));
    a[he - hs] = '\0';
    if (inet_pton(AF_INET6, a, &in6) != 1 ||
        !inet_ntop(AF_INET6, &in6, ip + 1, sizeof(ip) - 2))
      FAIL("bad IPv6 address");
    ip[0] = '[';
    strcat(ip, "]"); /* one spelling, one key: [0:0::1] is [::1] */
    p = he + 1;
  } else {
    if (unbracketed_ipv6(p, e))
      FAIL("an IPv6 address needs brackets: [addr]:port");
    hs = p;
    while (p < e && is_hostc(*p)) p++;
    he = p;
    if (he == hs) FAIL("missing host");
    if (all_digits_dots(hs, he) && ipv4_canon(hs, he, ip) < 0)
      FAIL("bad IPv4 address");
  }
  for (const char *q = ip; *q; q++)
    if (put(&o, *q)) FAIL("too long");
  for (const char *q = hs; !ip[0] && q < he; q++) {
    char c = *q;
    if (put(&o, (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c)) FAIL("too long");
  }
  if (p >= e || *p != ':') FAIL("missing :port");
  p++;
  unsigned long port = 0;
  const char *ps = p;
  while (p < e && *p >= '0' && *p <= '9' && port <= 65535)
    port = port * 10 + (unsigned long)(*p++ - '0');
  if (p == ps || port == 0 || port > 65535) FAIL("bad port");
  if (p != e) FAIL("trailing characters after the port");
  char num[8];
  snprintf(num, sizeof(num), ":%lu", port);
  for (const char *q = num; *q; q++)
    if (put(&o, *q)) FAIL("too long");
  return 0;
}

void sc_proxy_redact(const char *key, char *out, size_t cap) {
  const char *rest;
  sc_proxy_scheme(key, &rest);
  const char *at = strrchr(rest, '@');
  if (at)
    snprintf(out, cap, "%.*s***@%s", (int)(rest - key), key, at + 1);
  else snprintf(out, cap, "%s", key);
}
