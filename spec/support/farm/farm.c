/* scatter-farm: a farm of proxies with scripted faults, for tests.
 *
 * Every line of the config becomes one proxy on its own ephemeral port,
 * speaking one protocol (SOCKS5, SOCKS4/4a, HTTP, HTTPS).  A proxy has a
 * profile (good, slow, refuse, ...) that decides how it treats NEW
 * connections; a connection copies the profile at accept time, so a
 * profile switch through the control port never disturbs connections that
 * are already running.  Everything runs on one libuv loop.
 *
 * Hostnames are never resolved through the system resolver: tests must not
 * depend on DNS, and a request for an unknown name is a test bug that we
 * want to be loud (SOCKS5 REP 0x04, SOCKS4 0x5B, HTTP 502).
 *
 * This file: configuration, the hostname map, listeners and main; the
 * connections are conn.c, the protocols socks.c, httpx.c and tls.c, the
 * control port ctl.c.
 */
#include "farm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const kind_names[K__COUNT] = {
  "good", "slow", "refuse", "blackhole", "handshake_fail",
  "flaky", "block", "tamper", "die_after", "drop_mid", "ratelimit",
  "block_after"
};
const char *const proto_names[P__COUNT] = { "socks5", "socks4", "http", "https" };
static const char *const anon_names[] = { "elite", "anonymous", "transparent" };

/* Profile-specific keys; user/pass/count/proto/anon are valid everywhere. */
enum { KEY_LATENCY = 1, KEY_JITTER = 2, KEY_P = 4, KEY_N = 8, KEY_BYTES = 16, KEY_WAIT = 32 };
static const unsigned kind_keys[K__COUNT] = {
  [K_SLOW] = KEY_LATENCY | KEY_JITTER, [K_FLAKY] = KEY_P,
  [K_DIE_AFTER] = KEY_N, [K_DROP_MID] = KEY_BYTES, [K_RATELIMIT] = KEY_WAIT | KEY_N,
  [K_BLOCK_AFTER] = KEY_N,
};

typedef struct map_s {
  char name[256];
  int wildcard; /* "*.suffix": matches suffix and anything ending .suffix */
  struct sockaddr_storage ip;
} map_t;

uv_loop_t *loop;
proxy_t *proxies;
size_t nproxies;
FILE *logfp;
uint64_t total_accepted, total_active;
int stopping;
static map_t *maps;
static size_t nmaps;
static uint64_t rng_state;
static struct sockaddr_storage host_addr;
static uv_signal_t sig_term, sig_int;

static void on_connection(uv_stream_t *server, int status);
static void on_inner_connection(uv_stream_t *server, int status);

/* ---------------------------------------------------------------- utils */

void die(const char *fmt, ...) {
  va_list ap;
  fputs("scatter-farm: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(2);
}

void *xrealloc(void *p, size_t sz) {
  if ((p = realloc(p, sz)) == NULL) die("out of memory");
  return p;
}

void *xcalloc(size_t n, size_t sz) {
  return memset(xrealloc(NULL, n * sz), 0, n * sz);
}

/* splitmix64: tiny, seedable, and good enough for coin flips. */
double rng_unit(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

int parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0') return -1;
  *out = v;
  return 0;
}

static int parse_double(const char *s, double *out) {
  char *end;
  if (*s == '\0') return -1;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || *end != '\0' || !(v >= 0 && v < 1e9)) return -1;
  *out = v;
  return 0;
}

int parse_ip(const char *s, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(s, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(s, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return -1;
}

void set_port(struct sockaddr_storage *ss, int port) {
  if (ss->ss_family == AF_INET6)
    ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

int get_port(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* Growable string for control replies (stats can be long). */

void sb_printf(sbuf_t *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) die("vsnprintf failed");
    if (b->len + (size_t)n < b->cap) { b->len += (size_t)n; return; }
    b->cap = (b->cap + (size_t)n + 1) * 2;
    b->p = xrealloc(b->p, b->cap);
  }
}

/* ------------------------------------------------------------- profiles */

static int perr(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* Parses "PROFILE [key=value ...]" in place.  Returns 1 for a blank or
 * comment-only line, 0 on success, -1 with a message in err.  `count` is
 * NULL where count= is not allowed (control port). */
int parse_profile(char *s, profile_t *p, uint64_t *count,
                         char *err, size_t errlen) {
  static const char *const ws = " \t\r\n";
  char *save = NULL, *tok = strtok_r(s, ws, &save);
  int have_user = 0, have_pass = 0, have_n = 0;
  memset(p, 0, sizeof *p);
  p->latency = 0.5;
  p->p = 0.5;
  p->n = 1;
  p->bytes = 512;
  p->wait = 1.5;
  if (count) *count = 1;
  if (tok == NULL || tok[0] == '#') return 1;
  for (p->kind = 0; p->kind < K__COUNT; p->kind++)
    if (strcmp(tok, kind_names[p->kind]) == 0) break;
  if (p->kind == K__COUNT) return perr(err, errlen, "unknown profile '%s'", tok);
  while ((tok = strtok_r(NULL, ws, &save)) != NULL && tok[0] != '#') {
    char *eq = strchr(tok, '=');
    if (eq == NULL || eq == tok)
      return perr(err, errlen, "expected key=value, got '%s'", tok);
    *eq = '\0';
    const char *key = tok, *val = eq + 1;
    unsigned bit = !strcmp(key, "latency") ? KEY_LATENCY
                 : !strcmp(key, "jitter")  ? KEY_JITTER
                 : !strcmp(key, "p")       ? KEY_P
                 : !strcmp(key, "n")       ? KEY_N
                 : !strcmp(key, "bytes")   ? KEY_BYTES
                 : !strcmp(key, "wait")    ? KEY_WAIT : 0;
    int bad = 0;
    if (!strcmp(key, "user") || !strcmp(key, "pass")) {
      int is_user = key[0] == 'u';
      if (strlen(val) < 1 || strlen(val) > 255)
        return perr(err, errlen, "%s must be 1..255 bytes", key);
      strcpy(is_user ? p->user : p->pass, val);
      *(is_user ? &have_user : &have_pass) = 1;
    } else if (!strcmp(key, "proto")) {
      unsigned i = 0;
      while (i < P__COUNT && strcmp(val, proto_names[i]) != 0) i++;
      if (i == P__COUNT)
        return perr(err, errlen, "proto must be socks5, socks4, http or https, got '%s'", val);
      p->proto = (enum proto)i;
    } else if (!strcmp(key, "anon")) {
      unsigned i = 0;
      while (i < 3 && strcmp(val, anon_names[i]) != 0) i++;
      if (i == 3)
        return perr(err, errlen, "anon must be elite, anonymous or transparent, got '%s'", val);
      p->anon = (enum anon)i;
    } else if (!strcmp(key, "count") && count != NULL) {
      bad = parse_u64(val, count) || *count < 1 || *count > 100000;
    } else if (bit == 0 || !(kind_keys[p->kind] & bit)) {
      return perr(err, errlen, "key '%s' is not valid for profile %s",
                  key, kind_names[p->kind]);
    } else if (bit == KEY_LATENCY) {
      bad = parse_double(val, &p->latency);
    } else if (bit == KEY_JITTER) {
      bad = parse_double(val, &p->jitter);
    } else if (bit == KEY_P) {
      bad = parse_double(val, &p->p) || p->p > 1;
    } else if (bit == KEY_N) {
      bad = parse_u64(val, &p->n) || p->n == 0;
      have_n = 1;
    } else if (bit == KEY_WAIT) {
      bad = parse_double(val, &p->wait);
    } else {
      bad = parse_u64(val, &p->bytes);
    }
    if (bad) return perr(err, errlen, "bad value for %s: '%s'", key, val);
  }
  if (have_user != have_pass)
    return perr(err, errlen, "user= and pass= must be given together");
  p->auth = have_user;
  if (p->kind == K_RATELIMIT && !have_n) p->n = 2; /* every second one */
  if (p->auth) { /* what an HTTP client sends: Basic base64(user:pass) */
    char up[520];
    int n = snprintf(up, sizeof up, "%s:%s", p->user, p->pass);
    strcpy(p->basic, "Basic ");
    EVP_EncodeBlock((unsigned char *)p->basic + 6, (unsigned char *)up, n);
  }
  return 0;
}

static void load_config(const char *path) {
  FILE *f = fopen(path, "r");
  char *line = NULL, err[512];
  size_t cap = 0, lineno = 0, cap_px = 0;
  if (f == NULL) die("cannot open config %s: %s", path, strerror(errno));
  while (getline(&line, &cap, f) != -1) {
    profile_t prof;
    uint64_t count;
    lineno++;
    int r = parse_profile(line, &prof, &count, err, sizeof err);
    if (r < 0) {
      free(line);
      die("config %s line %zu: %s", path, lineno, err);
    }
    for (uint64_t i = 0; r == 0 && i < count; i++) {
      if (nproxies == cap_px)
        proxies = xrealloc(proxies, (cap_px = cap_px ? cap_px * 2 : 16) * sizeof *proxies);
      proxy_t *px = &proxies[nproxies];
      memset(px, 0, sizeof *px);
      px->index = (unsigned)nproxies++;
      px->prof = prof;
    }
  }
  free(line);
  fclose(f);
  if (nproxies == 0) die("config %s: no proxies defined", path);
}

/* --------------------------------------------------------- hostname map */

static void map_add(const char *spec) {
  const char *eq = strchr(spec, '=');
  map_t m;
  memset(&m, 0, sizeof m);
  if (eq == NULL || eq == spec || (size_t)(eq - spec) > 255)
    die("--map expects NAME=IP, got '%s'", spec);
  m.wildcard = strncmp(spec, "*.", 2) == 0;
  const char *name = spec + (m.wildcard ? 2 : 0);
  if (name >= eq) die("--map: empty name in '%s'", spec);
  for (size_t i = 0; name + i < eq; i++)
    m.name[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
  if (parse_ip(eq + 1, 0, &m.ip) != 0) die("--map: bad IP in '%s'", spec);
  maps = xrealloc(maps, (nmaps + 1) * sizeof *maps);
  maps[nmaps++] = m;
}

/* Later entries win, so --map can override the built-in defaults. */
int map_lookup(const char *host, struct sockaddr_storage *out) {
  char name[256];
  size_t n = strlen(host);
  for (size_t i = 0; i < n; i++)
    name[i] = (char)((host[i] >= 'A' && host[i] <= 'Z') ? host[i] + 32 : host[i]);
  if (n > 0 && name[n - 1] == '.') n--; /* "foo.test." is "foo.test" */
  name[n] = '\0';
  /* An IP literal sent as a name needs no resolver: accept it. */
  if (parse_ip(name, 0, out) == 0) return 0;
  for (size_t i = nmaps; i-- > 0;) {
    const map_t *m = &maps[i];
    size_t ml = strlen(m->name);
    int hit = strcmp(name, m->name) == 0;
    if (!hit && m->wildcard && n > ml)
      hit = name[n - ml - 1] == '.' && strcmp(name + n - ml, m->name) == 0;
    if (hit) { *out = m->ip; return 0; }
  }
  return -1;
}

/* -------------------------------------------------------------- logging */


/* ------------------------------------------------------------- proxies */

void on_free_handle(uv_handle_t *h) { free(h); }

/* (Re)creates the proxy's socket bound to px->addr, without listening.
 * A raw socket makes bind errors immediate (uv_tcp_bind defers EADDRINUSE
 * to uv_listen, but a `refuse` port never listens).  SO_REUSEADDR lets us
 * rebind while accepted connections on that port are still alive. */
static int proxy_bind(proxy_t *px) {
  int one = 1, r;
  socklen_t len = px->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in);
  int fd = socket(px->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&px->addr, len) != 0 ||
      getsockname(fd, (struct sockaddr *)&px->addr, &len) != 0) {
    r = -errno;
    close(fd);
    return r;
  }
  px->port = get_port(&px->addr);
  px->lsn = xcalloc(1, sizeof *px->lsn);
  uv_tcp_init(loop, px->lsn);
  px->lsn->data = px;
  if ((r = uv_tcp_open(px->lsn, fd)) != 0) {
    close(fd);
    uv_close((uv_handle_t *)px->lsn, on_free_handle);
    px->lsn = NULL;
  }
  return r;
}

static int proxy_wants_listen(const proxy_t *px) {
  if (px->down || stopping || px->prof.kind == K_REFUSE) return 0;
  return !(px->prof.kind == K_DIE_AFTER && px->served >= px->prof.n);
}

/* Brings the socket in line with the profile.  A listening socket cannot
 * go back to "bound only", so to refuse we close it and bind a fresh one to
 * the same port; closing also RSTs connections still in the backlog. */
int proxy_sync(proxy_t *px) {
  int want = proxy_wants_listen(px), r;
  if (px->lsn == NULL && !stopping && (r = proxy_bind(px)) != 0) return r;
  if (want == px->listening) return 0;
  if (want) {
    if ((r = uv_listen((uv_stream_t *)px->lsn, BACKLOG, on_connection)) != 0)
      return r;
    px->listening = 1;
    return 0;
  }
  uv_close((uv_handle_t *)px->lsn, on_free_handle);
  px->lsn = NULL;
  px->listening = 0;
  return stopping ? 0 : proxy_bind(px);
}

const char *proxy_state(const proxy_t *px) {
  return px->down ? "down" : px->listening ? "listening" : "refusing";
}

/* ---------------------------------------------------------- connections */


/* https: the plain HTTP proxy behind the TLS front, on 127.0.0.1:0. It
 * always listens; the front's port carries refuse, die_after and down. */
static void inner_bind(proxy_t *px) {
  struct sockaddr_in sin;
  int len = sizeof px->inner_addr, r;
  uv_ip4_addr("127.0.0.1", 0, &sin);
  px->inner = xcalloc(1, sizeof *px->inner);
  uv_tcp_init(loop, px->inner);
  px->inner->data = px;
  if ((r = uv_tcp_bind(px->inner, (struct sockaddr *)&sin, 0)) != 0 ||
      (r = uv_listen((uv_stream_t *)px->inner, BACKLOG, on_inner_connection)) != 0 ||
      (r = uv_tcp_getsockname(px->inner, (struct sockaddr *)&px->inner_addr, &len)) != 0)
    die("proxy %u: cannot bind its inner HTTP proxy: %s", px->index, uv_strerror(r));
}

static void on_inner_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  conn_new(server->data, server, 1);
}

static void on_connection(uv_stream_t *server, int status) {
  proxy_t *px = server->data;
  if (status < 0) return;
  px->accepted++;
  px->served++;
  total_accepted++;
  if (px->prof.kind == K_RATELIMIT && uv_now(loop) >= px->retry_from &&
      uv_now(loop) < px->retry_until)
    px->in_window++;
  profile_t prof = px->prof;
  if (prof.proto == P_HTTPS && prof.kind != K_BLACKHOLE) tls_accept(px, server);
  else conn_new(px, server, 0);
  /* die_after: the Nth accept is served, then the port starts refusing
   * (after the accept: closing the listener first would lose this one) */
  if (prof.kind == K_DIE_AFTER && px->served >= prof.n) proxy_sync(px);
}

/* ---------------------------------------------------------------- main */

void farm_stop(void) {
  if (stopping) return;
  stopping = 1;
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
  ctl_stop();
  for (size_t i = 0; i < nproxies; i++) {
    proxy_t *px = &proxies[i];
    while (px->conns) conn_close(px->conns, 0);
    if (px->lsn) uv_close((uv_handle_t *)px->lsn, on_free_handle);
    if (px->inner) uv_close((uv_handle_t *)px->inner, on_free_handle);
    px->lsn = px->inner = NULL;
    px->listening = 0;
  }
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s; (void)signum;
  farm_stop();
}

static void write_ports(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  FILE *f = fopen(tmp, "w");
  if (f == NULL) die("cannot write %s: %s", tmp, strerror(errno));
  fputc('[', f);
  for (size_t i = 0; i < nproxies; i++)
    fprintf(f, "%s{\"index\":%zu,\"port\":%d,\"profile\":\"%s\",\"proto\":\"%s\"}",
            i ? ",\n " : "", i, proxies[i].port, kind_names[proxies[i].prof.kind],
            proto_names[proxies[i].prof.proto]);
  fputs("]\n", f);
  if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0)
    die("cannot write %s: %s", tmp, strerror(errno));
  if (rename(tmp, path) != 0) die("cannot rename %s: %s", tmp, strerror(errno));
}

static void usage(void) {
  fputs("usage: scatter-farm --config FILE [--ports-out FILE] [--log FILE]\n"
        "       [--control-port N] [--host IP] [--seed N] [--map NAME=IP ...]\n"
        "       [--tls-cert PEM --tls-key PEM]   (https proxies)\n", stderr);
  exit(2);
}

int main(int argc, char **argv) {
  const char *config = NULL, *ports_out = NULL, *log_path = NULL, *host = "127.0.0.1";
  const char *tls_cert = NULL, *tls_key = NULL;
  uint64_t seed = 1, ctl_port = 0;
  int want_ctl = 0, after_map = 0, r;

  map_add("localhost=127.0.0.1");
  map_add("*.test=127.0.0.1");
  for (int i = 1; i < argc; i++) {
    const char *opt = argv[i], *val;
    size_t olen = strcspn(opt, "=");
    if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) usage();
    if (strncmp(opt, "--", 2) != 0) {
      if (!after_map) die("unexpected argument '%s'", opt);
      map_add(opt); /* --map A=IP B=IP ... */
      continue;
    }
    after_map = 0;
    if (opt[olen] == '=') val = opt + olen + 1;        /* --opt=value */
    else if (i + 1 < argc) val = argv[++i];           /* --opt value */
    else die("%s needs a value", opt);
#define OPT(name) (olen == strlen(name) && strncmp(opt, name, olen) == 0)
    if (OPT("--config")) config = val;
    else if (OPT("--ports-out")) ports_out = val;
    else if (OPT("--log")) log_path = val;
    else if (OPT("--host")) host = val;
    else if (OPT("--tls-cert")) tls_cert = val;
    else if (OPT("--tls-key")) tls_key = val;
    else if (OPT("--map")) { map_add(val); after_map = 1; }
    else if (OPT("--seed")) { if (parse_u64(val, &seed)) die("bad --seed '%s'", val); }
    else if (OPT("--control-port")) {
      if (parse_u64(val, &ctl_port) || ctl_port > 65535) die("bad --control-port '%s'", val);
      want_ctl = 1;
    } else die("unknown option '%.*s'", (int)olen, opt);
#undef OPT
  }
  if (config == NULL) usage();
  if (parse_ip(host, 0, &host_addr) != 0) die("bad --host '%s'", host);
  rng_state = seed;
  load_config(config);
  for (size_t i = 0; i < nproxies; i++) {
    if (proxies[i].prof.proto != P_HTTPS) continue;
    if (!tls_cert || !tls_key) die("proxy %zu is https: give --tls-cert and --tls-key", i);
    if (tls_init(tls_cert, tls_key) != 0) die("cannot load %s / %s", tls_cert, tls_key);
    break;
  }

  signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an error, not death */
  loop = uv_default_loop();
  if (log_path && (logfp = fopen(log_path, "a")) == NULL)
    die("cannot open log %s: %s", log_path, strerror(errno));

  for (size_t i = 0; i < nproxies; i++) {
    proxies[i].addr = host_addr;
    if ((r = proxy_bind(&proxies[i])) != 0 || (r = proxy_sync(&proxies[i])) != 0)
      die("proxy %zu: cannot bind %s: %s", i, host, uv_strerror(r));
    if (proxies[i].prof.proto == P_HTTPS) inner_bind(&proxies[i]);
  }
  if (want_ctl && (r = ctl_start(&ctl_port)) != 0)
    die("control port %llu: %s", (unsigned long long)ctl_port, uv_strerror(r));
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_start(&sig_int, on_signal, SIGINT);

  if (ports_out) write_ports(ports_out);
  if (want_ctl) printf("CONTROL %llu\n", (unsigned long long)ctl_port);
  printf("READY %zu\n", nproxies);
  fflush(stdout);

  uv_run(loop, UV_RUN_DEFAULT);
  r = uv_loop_close(loop);
  if (r != 0) fprintf(stderr, "scatter-farm: uv_loop_close: %s\n", uv_strerror(r));
  if (logfp) fclose(logfp);
  free(proxies);
  free(maps);
  return 0;
}
