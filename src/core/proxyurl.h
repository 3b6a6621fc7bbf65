/* Proxy list lines and proxy URLs (DESIGN.md section 4).
 *
 * A proxy's key is its canonical form "[user:pass@]host:port": scheme-less
 * so that "socks5://a:1", "socks5h://a:1" and "a:1" merge, host lower-case,
 * IPv6 in brackets, credentials percent-encoded for use in a curl URL. */
#ifndef SC_PROXYURL_H
#define SC_PROXYURL_H

#include <stddef.h>

/* 0: key written; 1: blank or comment line; SC_EINVAL: not a proxy. On
 * SC_EINVAL, *why (if given) names what is wrong. */
int sc_proxy_parse(const char *line, size_t len, char *key, size_t keycap,
                   const char **why);
/* The key with credentials replaced by "***": safe for logs and errors. */
void sc_proxy_redact(const char *key, char *out, size_t cap);

#endif
