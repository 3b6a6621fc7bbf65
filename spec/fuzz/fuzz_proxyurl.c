/* libFuzzer target: proxy list lines and proxy URLs (src/core/proxyurl.c),
 * and the host check of request URLs (src/core/targeturl.c).
 *
 * Besides "no crash", checks what every caller relies on: a parsed key is
 * NUL-terminated inside the buffer, parses again to itself (the key is
 * canonical, so keys from two spellings of one proxy merge), and its
 * redacted form never contains the credentials. The input is parsed with a
 * large and a tiny key buffer, so the "too long" paths run too. A request
 * URL's host is NUL-terminated, non-empty, lower-case and free of the
 * characters the check refuses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/proxyurl.h"
#include "../../src/core/sched.h"
#include "../../src/core/targeturl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* an exact-size copy: the parser gets (ptr, len) and must not read past */
  char *line = malloc(size ? size : 1);
  if (!line) return 0;
  memcpy(line, data, size);
  char key[1024], again[1024], red[1100];
  const char *why = NULL;
  int rc = sc_proxy_parse(line, size, key, sizeof(key), &why);
  if (rc == SC_EINVAL && !why) abort();
  if (rc == 0) {
    size_t kl = strnlen(key, sizeof(key));
    if (kl == 0 || kl == sizeof(key)) abort();
    if (sc_proxy_parse(key, kl, again, sizeof(again), NULL) != 0) abort();
    if (strcmp(key, again) != 0) abort();
    sc_proxy_redact(key, red, sizeof(red));
    const char *rest;
    sc_proxy_scheme_t sch = sc_proxy_scheme(key, &rest);
    size_t pl = (size_t)(rest - key);
    const char *at = strrchr(rest, '@');
    if (at && (strncmp(red, key, pl) != 0 || strncmp(red + pl, "***@", 4) != 0 ||
               strcmp(red + pl + 4, at + 1) != 0))
      abort();
    /* the key names its protocol: parsing it with any default keeps it */
    for (int d = 0; d < SC_PX__COUNT; d++) {
      if (sc_proxy_parse_as(key, kl, (sc_proxy_scheme_t)d, again, sizeof(again),
                            NULL) != 0 ||
          (strcmp(key, again) != 0 && !(sch == SC_PX_SOCKS5 && d != 0)))
        abort();
    }
    char curl[1100];
    if (sc_proxy_curl_url(key, 1, curl, sizeof(curl)) != 0 || !strstr(curl, "://"))
      abort();
  }
  char tiny[7];
  memset(tiny, 'x', sizeof(tiny));
  rc = sc_proxy_parse(line, size, tiny, sizeof(tiny), NULL);
  if (rc == 0 && strnlen(tiny, sizeof(tiny)) == sizeof(tiny)) abort();
  char host[64];
  const char *scheme = NULL;
  size_t sl = 0;
  if (sc_url_host(line, size, host, sizeof(host), &scheme, &sl) == SC_URL_OK) {
    size_t hl = strnlen(host, sizeof(host));
    if (hl == 0 || hl == sizeof(host)) abort();
    for (size_t i = 0; i < hl; i++)
      if ((host[i] >= 'A' && host[i] <= 'Z') || (unsigned char)host[i] <= 32 ||
          host[i] == '/' || host[i] == '@' || host[i] == '?')
        abort();
    if (!scheme || sl < 4 || sl > 5) abort();
  }
  free(line);
  return 0;
}
