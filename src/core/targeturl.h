/* The host of a request's URL, checked on the submit path (DESIGN.md
 * section 2: an invalid URL is an invalid_request before any attempt).
 * In C because it runs once a request: Lua patterns cost about 1 us. */
#ifndef SC_TARGETURL_H
#define SC_TARGETURL_H

#include <stddef.h>

typedef enum {
  SC_URL_OK = 0,
  SC_URL_CONTROL,  /* a space or control character */
  SC_URL_RELATIVE, /* no "scheme://" */
  SC_URL_SCHEME,   /* a scheme other than http or https */
  SC_URL_NO_HOST,
  SC_URL_BAD_PORT,
  SC_URL_BAD_HOST,
  SC_URL_BAD_USERINFO /* a raw '@' in the userinfo: curl refuses the URL */
} sc_url_err_t;

/* Writes the lower-cased host (IPv6 literals keep their brackets) of an
 * absolute http(s) URL into host (cap bytes, NUL-terminated). A host that
 * does not fit is SC_URL_BAD_HOST. *scheme and *scheme_len are set to the
 * scheme inside u once one is found, for the SC_URL_SCHEME message. */
sc_url_err_t sc_url_host(const char *u, size_t n, char *host, size_t cap,
                         const char **scheme, size_t *scheme_len);

/* The words for a failed sc_url_host, written to buf (n bytes): one text
 * for the submit path and the frontier alike. Returns 1 when they name a
 * part of the URL (the caller may append ": <url>"), 0 otherwise. */
int sc_url_why(sc_url_err_t rc, const char *scheme, size_t scheme_len,
               char *buf, size_t n);

#endif
