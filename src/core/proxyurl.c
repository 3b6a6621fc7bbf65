#include "proxyurl.h"

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
    if (!colon) FAIL("credentials need user:password");
    if (put_enc(&o, p, (size_t)(colon - p)) || put(&o, ':') ||
        put_enc(&o, colon + 1, (size_t)(at - colon - 1)) || put(&o, '@'))
      FAIL("too long");
    p = at + 1;
  }
  const char *hs, *he;
  if (p < e && *p == '[') {
    hs = p + 1;
    he = memchr(hs, ']', (size_t)(e - hs));
    if (!he || he == hs) FAIL("bad IPv6 address");
    for (const char *q = hs; q < he; q++)
      if (!(is_hostc(*q) || *q == ':') || *q == '_') FAIL("bad IPv6 address");
    p = he + 1;
    if (put(&o, '[')) FAIL("too long");
  } else {
    hs = p;
    while (p < e && is_hostc(*p)) p++;
    he = p;
    if (he == hs) FAIL("missing host");
  }
  for (const char *q = hs; q < he; q++) {
    char c = *q;
    if (put(&o, (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c)) FAIL("too long");
  }
  if (hs > line && hs[-1] == '[' && put(&o, ']')) FAIL("too long");
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
