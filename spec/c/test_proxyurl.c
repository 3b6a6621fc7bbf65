/* Proxy list lines and their keys (src/core/proxyurl.h, DESIGN.md section
 * 4). Prints "N passed, N failed" (cases) and exits 1 on any failure. */
#include <stdio.h>
#include <string.h>

#include "../../src/core/proxyurl.h"
#include "../../src/core/sched.h"

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

  /* bad schemes */
  rejected("http://h:1080", "scheme");
  rejected("https://h:1080", "scheme");
  rejected("socks4://h:1080", "scheme");
  rejected("socks4a://h:1080", "scheme");
  rejected("socks://h:1080", "scheme");
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
  redacts("alice:secret@h:1080", "***@", 5); /* truncated, still safe */
  {
    /* whatever the line, the redacted key holds no credential */
    const char *lines[] = {"socks5h://alice:secret@h:1", "alice:se@cret@h:1",
                           "alice:secret:x@[::1]:1", "ALICE:SECRET@h:1"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
      char key[256], out[256];
      int rc =
          sc_proxy_parse(lines[i], strlen(lines[i]), key, sizeof(key), NULL);
      sc_proxy_redact(key, out, sizeof(out));
      int ok = rc == 0 && strncmp(out, "***@", 4) == 0 &&
               strstr(out, "secret") == NULL && strstr(out, "SECRET") == NULL &&
               strstr(out, "cret") == NULL && strstr(out, "alice") == NULL &&
               strstr(out, "ALICE") == NULL;
      report(ok, "parse then redact", lines[i]);
    }
  }

  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
