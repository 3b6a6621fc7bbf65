/* Proxy list lines and their keys (src/core/proxyurl.h, DESIGN.md section
 * 4), and the host check of request URLs (src/core/targeturl.h). Prints "N passed, N failed" (cases) and exits 1 on any failure. */
#include <stdio.h>
#include <string.h>

#include "../../src/core/proxyurl.h"
#include "../../src/core/sched.h"
#include "../../src/core/targeturl.h"

static int passed, failed;

static void report(int ok, const char *what, const char *line) {
  if (ok) {
    passed++;
  } else {
    failed++;
    fprintf(stderr, "  FAIL %s: \"", what);
    for (const char *p = line; *p; p++) {
      if (*p == '\r')
        fputs("\\r", stderr);
      else if (*p == '\n')
        fputs("\\n", stderr);
      else if (*p == '\t')
        fputs("\\t", stderr);
      else
        fputc(*p, stderr);
    }
    fputs("\"\n", stderr);
  }
}

/* The request URL gives this host ("" expects the error `err`). */
static void url_is(const char *u, size_t n, const char *want,
                   sc_url_err_t err) {
  char host[64] = "unset";
  const char *scheme = NULL;
  size_t sl = 0;
  sc_url_err_t got = sc_url_host(u, n, host, sizeof(host), &scheme, &sl);
  int ok = want[0] ? got == SC_URL_OK && strcmp(host, want) == 0
                   : got == err;
  if (!ok)
    fprintf(stderr, "  got %d host \"%s\", want %d \"%s\"\n", (int)got,
            got == SC_URL_OK ? host : "", (int)err, want);
  report(ok, "url host", u);
}
#define URL_OK(u, h) url_is(u, sizeof(u) - 1, h, SC_URL_OK)
#define URL_BAD(u, e) url_is(u, sizeof(u) - 1, "", e)

/* The line parses to exactly this key. */
static void key_is(const char *line, const char *want) {
  char key[512] = "unset";
  const char *why = NULL;
  int rc = sc_proxy_parse(line, strlen(line), key, sizeof(key), &why);
  int ok = rc == 0 && strcmp(key, want) == 0;
  if (!ok)
    fprintf(stderr, "  got rc %d key \"%s\" (%s), want \"%s\"\n", rc, key,
            why ? why : "-", want);
  report(ok, "key", line);
}

/* The line is skipped quietly (blank or comment). */
static void skipped(const char *line) {
  char key[64];
  int rc = sc_proxy_parse(line, strlen(line), key, sizeof(key), NULL);
  if (rc != 1) fprintf(stderr, "  got rc %d, want 1 (blank/comment)\n", rc);
  report(rc == 1, "skipped", line);
}

/* The line is not a proxy, and the reason mentions `why_part`. */
static void rejected(const char *line, const char *why_part) {
  char key[512];
  const char *why = NULL;
  int rc = sc_proxy_parse(line, strlen(line), key, sizeof(key), &why);
  int ok = rc == SC_EINVAL && why && strstr(why, why_part);
  if (!ok)
    fprintf(stderr, "  got rc %d (%s), want SC_EINVAL with \"%s\"\n", rc,
            why ? why : "-", why_part);
  report(ok, "rejected", line);
}

/* Redaction shows host:port and never the credentials. */
static void redacts(const char *key, const char *want, size_t cap) {
  char out[512];
  memset(out, 'X', sizeof(out));
  sc_proxy_redact(key, out, cap);
  int ok = strcmp(out, want) == 0 && strstr(out, "secret") == NULL &&
           strstr(out, "alice") == NULL;
  if (!ok) fprintf(stderr, "  got \"%s\", want \"%s\"\n", out, want);
  report(ok, "redact", key);
}

int main(void) {
  /* forms */
  key_is("1.2.3.4:1080", "1.2.3.4:1080");
  key_is("proxy.example.org:3128", "proxy.example.org:3128");
  key_is("Proxy.EXAMPLE.org:1", "proxy.example.org:1");
  key_is("h_1-a.example:65535", "h_1-a.example:65535");
  key_is("socks5://1.2.3.4:1080", "1.2.3.4:1080");
  key_is("socks5h://1.2.3.4:1080", "1.2.3.4:1080");
  key_is("SOCKS5://h:1080", "h:1080");
  key_is("SoCkS5H://h:1080", "h:1080");
  key_is("h:01080", "h:1080"); /* one proxy, one key */

  /* credentials: percent-encoded; the last '@' ends them */
  key_is("alice:secret@h:1080", "alice:secret@h:1080");
  key_is("socks5h://alice:secret@h:1080", "alice:secret@h:1080");
  key_is("alice:p@ss@h:1080", "alice:p%40ss@h:1080");
  key_is("alice:a:b@h:1080", "alice:a%3Ab@h:1080");
  key_is("alice:a://b@h:1080", "alice:a%3A%2F%2Fb@h:1080"); /* not a scheme */
  key_is("al/ce:s?c#t@h:1080", "al%2Fce:s%3Fc%23t@h:1080");
  key_is("alice:p%41ss@h:1080", "alice:p%41ss@h:1080"); /* already encoded */
  key_is("alice:\xc3\xa4@h:1080", "alice:%C3%A4@h:1080");
  key_is("alice:-._~!$&'()*+,;=@h:1080", "alice:-._~!$&'()*+,;=@h:1080");
  key_is("alice:@h:1080", "alice:@h:1080"); /* empty password */

  /* IPv6 */
  key_is("[::1]:1080", "[::1]:1080");
  key_is("socks5://[2001:DB8::1]:1080", "[2001:db8::1]:1080");
  key_is("alice:secret@[fe80::1]:9050", "alice:secret@[fe80::1]:9050");
  rejected("[::1]", "port");
  rejected("[]:1080", "IPv6");
  rejected("[::1:1080", "IPv6");
  rejected("[::g_1]:1080", "IPv6");
  rejected("[::1]x:1080", "port");

  /* blank, comments, CRLF, spaces */
  skipped("");
  skipped("   ");
  skipped("\r\n");
  skipped("\t \r");
  skipped("# a comment");
  skipped("   # an indented comment");
  skipped("#socks5://1.2.3.4:1080");
  key_is("h:1080\r\n", "h:1080");
  key_is("h:1080\n", "h:1080");
  key_is("  h:1080  ", "h:1080");
  key_is("\tsocks5://h:1080\r", "h:1080");

  /* bad ports */
  rejected("h:0", "port");
  rejected("h:65536", "port");
  rejected("h:99999999999999999999", "port");
  rejected("h:", "port");
  rejected("h", "port");
  rejected("h:abc", "port");
  rejected("h:-1", "port");

  /* every protocol of the free lists (DESIGN.md section 11): socks5 and
   * socks5h merge, the others are keys of their own */
  key_is("http://h:1080", "http://h:1080");
  key_is("HTTP://H:3128", "http://h:3128");
  key_is("https://alice:secret@h:8443", "https://alice:secret@h:8443");
  key_is("socks4://1.2.3.4:1080", "socks4://1.2.3.4:1080");
  key_is("socks4a://h:1080", "socks4a://h:1080");
  key_is("SOCKS4A://alice:secret@[::1]:1080", "socks4a://alice:secret@[::1]:1080");
  key_is("http://alice:a://b@h:1", "http://alice:a%3A%2F%2Fb@h:1");
  {
    /* a source's scheme applies to bare lines only */
    char key[128];
    int rc = sc_proxy_parse_as("h:3128", 6, SC_PX_HTTP, key, sizeof(key), NULL);
    report(rc == 0 && strcmp(key, "http://h:3128") == 0, "default http", "h:3128");
    rc = sc_proxy_parse_as("socks5h://h:1", 13, SC_PX_HTTP, key, sizeof(key), NULL);
    report(rc == 0 && strcmp(key, "h:1") == 0, "own scheme wins", "socks5h://h:1");
    rc = sc_proxy_parse_as("socks4://h:1", 12, SC_PX_HTTPS, key, sizeof(key), NULL);
    report(rc == 0 && strcmp(key, "socks4://h:1") == 0, "own scheme wins",
           "socks4://h:1");
    rc = sc_proxy_parse_as("# c", 3, SC_PX_SOCKS4, key, sizeof(key), NULL);
    report(rc == 1, "comment with a default", "# c");
    rc = sc_proxy_parse_as("h:1", 3, SC_PX__COUNT, key, sizeof(key), NULL);
    report(rc == SC_EINVAL, "bad default scheme", "h:1");
  }
  {
    /* the scheme names, and the URL libcurl gets */
    static const struct {
      const char *key;
      int remote;
      const char *url;
    } urls[] = {{"h:1", 1, "socks5h://h:1"},
                {"h:1", 0, "socks5://h:1"},
                {"socks4://h:1", 1, "socks4://h:1"},
                {"socks4://h:1", 0, "socks4://h:1"},
                {"socks4a://u:p@h:1", 1, "socks4a://u:p@h:1"},
                {"socks4a://h:1", 0, "socks4://h:1"},
                {"http://h:1", 1, "http://h:1"},
                {"https://h:1", 0, "https://h:1"}};
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
      char out[64];
      int rc = sc_proxy_curl_url(urls[i].key, urls[i].remote, out, sizeof(out));
      report(rc == 0 && strcmp(out, urls[i].url) == 0, "curl url", urls[i].key);
    }
    char tiny[8];
    report(sc_proxy_curl_url("http://h:1", 1, tiny, sizeof(tiny)) == SC_EINVAL,
           "curl url too long", "http://h:1");
    sc_proxy_scheme_t sch;
    report(sc_proxy_scheme_parse("socks5h", 7, &sch) == 0 && sch == SC_PX_SOCKS5,
           "scheme socks5h", "socks5h");
    report(sc_proxy_scheme_parse("HTTPS", 5, &sch) == 0 && sch == SC_PX_HTTPS,
           "scheme HTTPS", "HTTPS");
    report(sc_proxy_scheme_parse("socks", 5, &sch) == SC_EINVAL, "scheme socks",
           "socks");
    report(strcmp(sc_proxy_scheme_name(SC_PX_SOCKS4A), "socks4a") == 0 &&
               strcmp(sc_proxy_scheme_name(SC_PX__COUNT), "?") == 0,
           "scheme names", "socks4a");
  }

  /* bad schemes */
  rejected("socks://h:1080", "unknown scheme");
  rejected("socks6://h:1080", "unknown scheme");
  rejected("ftp://h:1080", "unknown scheme");
  rejected("http://h:3128/", "trailing");
  rejected("://h:1080", "scheme");

  /* trailing junk and other garbage */
  rejected("h:1080x", "trailing");
  rejected("h:1080/", "trailing");
  rejected("h:1080:1080", "trailing");
  rejected("h:1080 # comment", "spaces");
  rejected("h :1080", "spaces");
  rejected("socks5://", "host");
  rejected(":1080", "host");
  rejected("alice@h:1080", "user:password");
  rejected(":secret@h:1080", "user");
  rejected("@h:1080", "user");
  rejected("h!:1080", "port");
  {
    /* an embedded NUL is not a line */
    const char line[] = "h:10\0"
                        "80";
    char key[64];
    const char *why = NULL;
    int rc = sc_proxy_parse(line, sizeof(line) - 1, key, sizeof(key), &why);
    report(rc == SC_EINVAL && why, "embedded NUL rejected", "h:10\\0 80");
  }

  /* the key buffer's size is respected */
  {
    char key[8];
    memset(key, 'X', sizeof(key));
    int rc = sc_proxy_parse("h:1", 3, key, 4, NULL);
    report(rc == 0 && strcmp(key, "h:1") == 0, "fits exactly", "h:1");
    const char *why = NULL;
    rc = sc_proxy_parse("h:1080", 6, key, 4, &why);
    report(rc == SC_EINVAL && why && strstr(why, "long") && key[4] == 'X',
           "too long, no overflow", "h:1080");
  }

  /* redaction */
  redacts("alice:secret@h:1080", "***@h:1080", 512);
  redacts("alice:p%40secret@[::1]:1080", "***@[::1]:1080", 512);
  redacts("h:1080", "h:1080", 512);
  redacts("http://alice:secret@h:1080", "http://***@h:1080", 512);
  redacts("socks4a://alice:secret@h:1", "socks4a://***@h:1", 512);
  redacts("https://h:1", "https://h:1", 512);
  redacts("http://alice:secret@h:1080", "http:", 6);
  redacts("alice:secret@h:1080", "***@", 5); /* truncated, still safe */
  {
    /* whatever the line, the redacted key holds no credential */
    const char *lines[] = {"socks5h://alice:secret@h:1", "alice:se@cret@h:1",
                           "alice:secret:x@[::1]:1", "ALICE:SECRET@h:1",
                           "http://alice:secret@h:1", "socks4://alice:secret@h:1"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
      char key[256], out[256];
      int rc =
          sc_proxy_parse(lines[i], strlen(lines[i]), key, sizeof(key), NULL);
      sc_proxy_redact(key, out, sizeof(out));
      const char *rest;
      sc_proxy_scheme(key, &rest);
      int ok = rc == 0 && strncmp(out + (rest - key), "***@", 4) == 0 &&
               strstr(out, "secret") == NULL && strstr(out, "SECRET") == NULL &&
               strstr(out, "cret") == NULL && strstr(out, "alice") == NULL &&
               strstr(out, "ALICE") == NULL;
      report(ok, "parse then redact", lines[i]);
    }
  }

  /* request URLs */
  URL_OK("http://Example.COM/x", "example.com");
  URL_OK("https://a.b-c_d.test:443?q#f", "a.b-c_d.test");
  URL_OK("HTTP://h", "h");
  URL_BAD("http://user:p@ss@host.test:8080/", SC_URL_BAD_USERINFO); /* curl refuses it */
  URL_OK("http://[::1]:80/", "[::1]");
  URL_OK("http://[FE80::1]", "[fe80::1]");
  URL_OK("http://h:65535", "h");
  URL_BAD("", SC_URL_RELATIVE);
  URL_BAD("/relative", SC_URL_RELATIVE);
  URL_BAD("http:/x", SC_URL_RELATIVE);
  URL_BAD("1http://x", SC_URL_RELATIVE);
  URL_BAD("ftp://x/", SC_URL_SCHEME);
  URL_BAD("httpx://x/", SC_URL_SCHEME);
  URL_BAD("http://", SC_URL_NO_HOST);
  URL_BAD("http://u@:80/", SC_URL_NO_HOST);
  URL_BAD("http:///x", SC_URL_NO_HOST);
  URL_BAD("http://h:0/", SC_URL_BAD_PORT);
  URL_BAD("http://h:65536/", SC_URL_BAD_PORT);
  URL_BAD("http://h:99999999999999999999/", SC_URL_BAD_PORT);
  URL_BAD("http://h:/", SC_URL_BAD_PORT);
  URL_BAD("http://h:8o/", SC_URL_BAD_PORT);
  URL_BAD("http://[::1]x/", SC_URL_BAD_PORT);
  URL_BAD("http://bad!host/", SC_URL_BAD_HOST);
  URL_BAD("http://[zz]/", SC_URL_BAD_HOST);
  URL_BAD("http://[::1/", SC_URL_BAD_HOST);
  URL_BAD("http://[]/", SC_URL_BAD_HOST);
  URL_BAD("http://a b/", SC_URL_CONTROL);
  URL_BAD("http://h/\x7f", SC_URL_CONTROL);
  URL_BAD("http://h/\0x", SC_URL_CONTROL); /* a NUL inside the length */
  {
    /* a host longer than the buffer is refused, not cut */
    char u[200] = "http://";
    memset(u + 7, 'a', 100);
    u[107] = '\0';
    url_is(u, strlen(u), "", SC_URL_BAD_HOST);
  }

  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
