#include "targeturl.h"

#include <stdio.h>
#include <string.h>

static int is_alpha(unsigned char c) {
  return (c | 32) >= 'a' && (c | 32) <= 'z';
}
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_hex(unsigned char c) {
  return is_digit(c) || ((c | 32) >= 'a' && (c | 32) <= 'f');
}
static unsigned char lower(unsigned char c) {
  return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

sc_url_err_t sc_url_host(const char *u, size_t n, char *host, size_t cap,
                         const char **scheme, size_t *scheme_len) {
  const unsigned char *s = (const unsigned char *)u;
  for (size_t i = 0; i < n; i++)
    if (s[i] <= 32 || s[i] == 127) return SC_URL_CONTROL;
  /* scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) "://" */
  size_t i = 0;
  if (n == 0 || !is_alpha(s[0])) return SC_URL_RELATIVE;
  while (i < n && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '+' ||
                   s[i] == '-' || s[i] == '.'))
    i++;
  if (n - i < 3 || memcmp(s + i, "://", 3) != 0) return SC_URL_RELATIVE;
  *scheme = u;
  *scheme_len = i;
  if (!((i == 4 && strncasecmp(u, "http", 4) == 0) ||
        (i == 5 && strncasecmp(u, "https", 5) == 0)))
    return SC_URL_SCHEME;
  /* authority: up to the path, query or fragment; userinfo ends at its
   * last '@' */
  size_t a = i + 3, e = a;
  while (e < n && s[e] != '/' && s[e] != '?' && s[e] != '#') e++;
  for (size_t k = e; k > a; k--)
    if (s[k - 1] == '@') {
      /* RFC 3986 has no '@' in a userinfo (it is %40); curl fails such a
       * URL locally, which must not be blamed on the proxies */
      if (memchr(s + a, '@', k - 1 - a)) return SC_URL_BAD_USERINFO;
      a = k;
      break;
    }
  size_t he; /* end of the host */
  if (a < e && s[a] == '[') {
    he = a + 1;
    while (he < e && (is_hex(s[he]) || s[he] == ':' || s[he] == '.')) he++;
    if (he == a + 1 || he >= e || s[he] != ']') return SC_URL_BAD_HOST;
    he++;
  } else {
    he = a;
    while (he < e && s[he] != ':') he++;
    if (he == a) return SC_URL_NO_HOST;
    for (size_t k = a; k < he; k++)
      if (!(is_alpha(s[k]) || is_digit(s[k]) || s[k] == '.' || s[k] == '-' ||
            s[k] == '_'))
        return SC_URL_BAD_HOST;
  }
  if (he < e) { /* ":port", 1-65535 */
    if (s[he] != ':' || he + 1 == e) return SC_URL_BAD_PORT;
    unsigned long port = 0;
    for (size_t k = he + 1; k < e; k++) {
      if (!is_digit(s[k])) return SC_URL_BAD_PORT;
      if (port <= 65535) port = port * 10 + (s[k] - '0');
    }
    if (port < 1 || port > 65535) return SC_URL_BAD_PORT;
  }
  if (he - a >= cap) return SC_URL_BAD_HOST;
  for (size_t k = a; k < he; k++) host[k - a] = (char)lower(s[k]);
  host[he - a] = '\0';
  return SC_URL_OK;
}

int sc_url_why(sc_url_err_t rc, const char *scheme, size_t scheme_len,
               char *buf, size_t n) {
  const char *w;
  switch (rc) {
  case SC_URL_OK: w = "ok"; break;
  case SC_URL_CONTROL: w = "url contains spaces or control characters"; break;
  case SC_URL_SCHEME: {
    char low[64];
    size_t k = 0;
    for (; scheme && k < scheme_len && k < sizeof(low) - 1; k++)
      low[k] = (scheme[k] >= 'A' && scheme[k] <= 'Z') ? (char)(scheme[k] + 32)
                                                       : scheme[k];
    low[k] = '\0';
    snprintf(buf, n, "unsupported scheme '%s' (http or https only)", low);
    return 0;
  }
  case SC_URL_RELATIVE: w = "not an absolute http(s) URL"; break;
  case SC_URL_NO_HOST: w = "no host in URL"; break;
  case SC_URL_BAD_PORT: w = "bad port in URL"; break;
  case SC_URL_BAD_USERINFO:
    w = "bad userinfo in URL ('@' must be written %40)";
    break;
  default: w = "bad host in URL"; break;
  }
  snprintf(buf, n, "%s", w);
  return rc != SC_URL_OK && rc != SC_URL_CONTROL;
}
