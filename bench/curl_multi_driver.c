/* The "no scheduling" baseline of bench/overhead.lua: a minimal libcurl-multi
 * driver. It keeps N transfers in flight, hands out proxies round-robin,
 * buffers each body (as scatter does, so the classifier can read it) and
 * counts 2xx answers. No health, no racing, no retries, no Lua.
 *
 *   cc -O2 -o curl_multi_driver bench/curl_multi_driver.c -lcurl
 *   curl_multi_driver URLS_FILE PROXIES_FILE INFLIGHT
 *
 * URLS_FILE and PROXIES_FILE hold one entry a line (proxies as host:port,
 * used as socks5h). Prints "ok=N failed=N wall=SECONDS" on stdout. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  char *buf;
  size_t len, cap;
} body_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  body_t *b = ud;
  size_t bytes = size * n;
  if (b->len + bytes > b->cap) {
    size_t c = b->cap ? b->cap : 4096;
    while (c < b->len + bytes) c *= 2;
    char *nb = realloc(b->buf, c);
    if (!nb) return 0;
    b->buf = nb;
    b->cap = c;
  }
  memcpy(b->buf + b->len, p, bytes);
  b->len += bytes;
  return bytes;
}

static char **read_lines(const char *path, size_t *count) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    exit(2);
  }
  size_t n = 0, cap = 1024;
  char **v = malloc(cap * sizeof(*v));
  char line[4096];
  while (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\r\n")] = '\0';
    if (!line[0]) continue;
    if (n == cap) v = realloc(v, (cap *= 2) * sizeof(*v));
    v[n++] = strdup(line);
  }
  fclose(f);
  *count = n;
  return v;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s URLS_FILE PROXIES_FILE INFLIGHT\n", argv[0]);
    return 2;
  }
  size_t nurls, nproxies;
  char **urls = read_lines(argv[1], &nurls);
  char **proxies = read_lines(argv[2], &nproxies);
  long inflight = strtol(argv[3], NULL, 10);
  if (nproxies == 0 || inflight < 1) {
    fprintf(stderr, "need at least one proxy and INFLIGHT >= 1\n");
    return 2;
  }
  for (size_t i = 0; i < nproxies; i++) {
    char *p = malloc(strlen(proxies[i]) + 12);
    sprintf(p, "socks5h://%s", proxies[i]);
    free(proxies[i]);
    proxies[i] = p;
  }

  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURLM *m = curl_multi_init();
  curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, 1024L);
  /* one easy handle and body buffer per slot, reused: the cheapest a
   * driver can be */
  CURL **slot = calloc((size_t)inflight, sizeof(*slot));
  body_t *bodies = calloc((size_t)inflight, sizeof(*bodies));
  size_t next = 0, ok = 0, failed = 0, done = 0;
  double t0 = now();

  for (long i = 0; i < inflight; i++) slot[i] = curl_easy_init();
  long free_top = inflight; /* slots [0, free_top) are idle */
  long *idle = malloc((size_t)inflight * sizeof(*idle));
  for (long i = 0; i < inflight; i++) idle[i] = i;

  while (done < nurls) {
    while (free_top > 0 && next < nurls) {
      long s = idle[--free_top];
      CURL *e = slot[s];
      curl_easy_reset(e);
      bodies[s].len = 0;
      curl_easy_setopt(e, CURLOPT_URL, urls[next]);
      curl_easy_setopt(e, CURLOPT_PROXY, proxies[next % nproxies]);
      curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
      curl_easy_setopt(e, CURLOPT_WRITEDATA, &bodies[s]);
      curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)s);
      curl_multi_add_handle(m, e);
      next++;
    }
    int running;
    curl_multi_perform(m, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left))) {
      if (msg->msg != CURLMSG_DONE) continue;
      long s, code = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
      if (msg->data.result == CURLE_OK && code >= 200 && code < 300 &&
          bodies[s].len > 0)
        ok++;
      else
        failed++;
      curl_multi_remove_handle(m, msg->easy_handle);
      idle[free_top++] = s;
      done++;
    }
    if (done < nurls) curl_multi_poll(m, NULL, 0, 100, NULL);
  }
  double wall = now() - t0;
  printf("ok=%zu failed=%zu wall=%.4f\n", ok, failed, wall);
  for (long i = 0; i < inflight; i++) {
    curl_easy_cleanup(slot[i]);
    free(bodies[i].buf);
  }
  curl_multi_cleanup(m);
  curl_global_cleanup();
  return failed ? 1 : 0;
}
