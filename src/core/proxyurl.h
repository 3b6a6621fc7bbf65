/* Proxy list lines and proxy URLs (DESIGN.md sections 4 and 11).
 *
 * A proxy's key is its canonical form "[scheme://][user:pass@]host:port":
 * host lower-case, IPv6 in brackets, credentials percent-encoded for use in
 * a curl URL. SOCKS5 keys carry no scheme, so that "socks5://a:1",
 * "socks5h://a:1" and "a:1" merge (and keys of older state files stay
 * valid): whether the proxy resolves names is the pool's prefer_remote_dns.
 * Every other protocol is a prefix of the key: "socks4://", "socks4a://",
 * "http://", "https://"; one host:port under two protocols is two proxies. */
#ifndef SC_PROXYURL_H
#define SC_PROXYURL_H

#include <stddef.h>

typedef enum {
  SC_PX_SOCKS5 = 0, /* socks5:// and socks5h:// */
  SC_PX_SOCKS4,     /* no remote DNS: the protocol carries addresses only */
  SC_PX_SOCKS4A,    /* socks4 with names resolved by the proxy */
  SC_PX_HTTP,       /* absolute-form for http targets, CONNECT for https */
  SC_PX_HTTPS,      /* the same over TLS to the proxy */
  SC_PX__COUNT
} sc_proxy_scheme_t;

/* 0: key written; 1: blank or comment line; SC_EINVAL: not a proxy. On
 * SC_EINVAL, *why (if given) names what is wrong. */
int sc_proxy_parse(const char *line, size_t len, char *key, size_t keycap,
                   const char **why);
/* The same, with `dflt` as the protocol of lines that name none (a
 * source's `scheme`). */
int sc_proxy_parse_as(const char *line, size_t len, sc_proxy_scheme_t dflt,
                      char *key, size_t keycap, const char **why);
/* A scheme name as written in a URL or a source ("socks5h" is SOCKS5):
 * 0 and *out, or SC_EINVAL. */
int sc_proxy_scheme_parse(const char *name, size_t n, sc_proxy_scheme_t *out);
const char *sc_proxy_scheme_name(sc_proxy_scheme_t s);
/* The protocol of a key; *rest (if given) points past its prefix. */
sc_proxy_scheme_t sc_proxy_scheme(const char *key, const char **rest);
/* The URL libcurl is given for a key (CURLOPT_PROXY): remote_dns picks
 * socks5h over socks5 and socks4a over socks4 for a socks4a key. 0, or
 * SC_EINVAL when it does not fit in cap. */
int sc_proxy_curl_url(const char *key, int remote_dns, char *out, size_t cap);
/* The key with credentials replaced by "***": safe for logs and errors. */
void sc_proxy_redact(const char *key, char *out, size_t cap);

#endif
