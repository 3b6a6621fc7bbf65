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

#define FAIL(msg)                                                              \
  do {                                                                         \
    if (why) *why = msg;                                                       \
    return SC_EINVAL;                                                          \
  } while (0)

int sc_proxy_parse(const char *line, size_t len, char *key, size_t keycap,
                   const char **why) {
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
  if (sep) {
    size_t n = (size_t)(sep - p);
    if (!((n == 6 && strncasecmp(p, "socks5", 6) == 0) ||
          (n == 7 && strncasecmp(p, "socks5h", 7) == 0)))
      FAIL("scheme is not socks5:// or socks5h://");
    p = sep + 3;
  }
  out o = {key, 0, keycap};
  if (keycap) key[0] = '\0';
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
  const char *at = strrchr(key, '@');
  if (at) snprintf(out, cap, "***@%s", at + 1);
  else snprintf(out, cap, "%s", key);
}
