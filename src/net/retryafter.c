#include "retryafter.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

double sc_retry_after_value(const char *v, size_t n, double now) {
  while (n && (*v == ' ' || *v == '\t')) v++, n--;
  while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' ||
               v[n - 1] == '\n'))
    n--;
  if (n == 0 || n > 64) return -1;
  char buf[65];
  memcpy(buf, v, n);
  buf[n] = '\0';
  if (buf[0] >= '0' && buf[0] <= '9') {
    char *end;
    double s = strtod(buf, &end);
    if (*end != '\0' || !(s >= 0) || s > 1e9) return -1;
    return s;
  }
  /* an HTTP-date: libcurl's parser knows the three forms RFC 9110 names */
  time_t t = curl_getdate(buf, NULL);
  if (t == -1) return -1;
  double d = (double)t - now;
  return d > 0 ? d : 0;
}

double sc_retry_after(long status, const char *head, size_t len, double now) {
  if ((status != 429 && status != 503) || !head) return -1;
  static const char name[] = "retry-after:";
  const size_t nl = sizeof(name) - 1;
  for (const char *p = head, *e = head + len; p < e;) {
    const char *eol = memchr(p, '\n', (size_t)(e - p));
    const char *le = eol ? eol : e;
    if ((size_t)(le - p) > nl && strncasecmp(p, name, nl) == 0)
      return sc_retry_after_value(p + nl, (size_t)(le - p - nl), now);
    p = eol ? eol + 1 : e;
  }
  return -1;
}
