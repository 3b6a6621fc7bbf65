/* scatter-farm: a farm of SOCKS5 proxies with scripted faults, for tests.
 *
 * Every line of the config becomes one proxy on its own ephemeral port.  A
 * proxy has a profile (good, slow, refuse, ...) that decides how it treats
 * NEW connections; a connection copies the profile at accept time, so a
 * profile switch through the control port never disturbs connections that
 * are already running.  Everything runs on one libuv loop.
 *
 * Hostnames are never resolved through the system resolver: tests must not
 * depend on DNS, and an ATYP 3 request for an unknown name is a test bug that
 * we want to be loud (REP 0x04).
 */
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)
#define HIGH_WATER (1024 * 1024) /* stop reading a side above this */
#define LOW_WATER (256 * 1024)   /* ...and resume below this */
#define HS_MAX 1536              /* greeting + auth + request always fit */
#define LINGER_MS 2000           /* how long we wait for a peer's FIN */
#define DROP_MS 50               /* drop_mid: RST this long after the last byte */
#define BACKLOG 1024

#define container_of(ptr, type, field) \
  ((type *)((char *)(ptr) - offsetof(type, field)))

enum kind {
  K_GOOD, K_SLOW, K_REFUSE, K_BLACKHOLE, K_HANDSHAKE_FAIL,
  K_FLAKY, K_BLOCK, K_TAMPER, K_DIE_AFTER, K_DROP_MID, K_BLOCK_AFTER,
  K__COUNT
};
static const char *const kind_names[K__COUNT] = {
  "good", "slow", "refuse", "blackhole", "handshake_fail",
  "flaky", "block", "tamper", "die_after", "drop_mid", "block_after"
};

/* Profile-specific keys; user/pass/count are valid everywhere. */
enum { KEY_LATENCY = 1, KEY_JITTER = 2, KEY_P = 4, KEY_N = 8, KEY_BYTES = 16 };
static const unsigned kind_keys[K__COUNT] = {
  [K_SLOW] = KEY_LATENCY | KEY_JITTER, [K_FLAKY] = KEY_P,
  [K_DIE_AFTER] = KEY_N, [K_DROP_MID] = KEY_BYTES, [K_BLOCK_AFTER] = KEY_N,
};

typedef struct profile_s {
  enum kind kind;
  double latency, jitter, p;
  uint64_t n, bytes;
  int auth;
  char user[256], pass[256];
} profile_t;

typedef struct conn_s conn_t;

typedef struct proxy_s {
  unsigned index;
  int port;
  struct sockaddr_storage addr; /* bound address, port included */
  profile_t prof;
  uv_tcp_t *lsn;   /* bound socket; it listens only when `listening` */
  int listening, down;
  uint64_t accepted, served; /* served: accepts under the current profile */
  uint64_t active;
  conn_t *conns;
} proxy_t;

/* One socket of a relayed connection. */
typedef struct side_s {
  uv_tcp_t tcp;
  uv_shutdown_t shut_req;
  conn_t *c;
  struct side_s *peer;
  int open, eof, shut, shut_done, paused;
} side_t;

/* A relayed read: the uv_write_t travels with its data, one malloc each. */
typedef struct chunk_s {
  uv_write_t req;
  struct chunk_s *next;
  side_t *from;
  uint64_t due; /* slow: loop time at which it may be written */
  size_t len;
  int kill;     /* drop_mid: reset everything once this is written */
  char data[READ_CHUNK];
} chunk_t;

enum state {
  S_GREETING, S_AUTH, S_REQUEST, S_CONNECTING, S_REPLYING,
  S_RELAY, S_BLOCK_HEAD, S_DRAIN, S_BLACKHOLE
};

struct conn_s {
  proxy_t *px;
  conn_t *prev, *next;
  profile_t prof;
  enum state st;
  side_t cli, tgt;
  uv_timer_t timer;
  uv_connect_t creq;
  int handles, closing, dropping;
  unsigned char atyp, cmd;
  char host[256];
  int dport;
  struct sockaddr_storage dst;
  uint64_t delay_ms;     /* slow: CONNECT reply delay for this connection */
  unsigned hdr_state;    /* "\r\n\r\n" matcher state (tamper, block) */
  uint64_t down_bytes;   /* target->client bytes forwarded (drop_mid) */
  chunk_t *q_head, *q_tail; /* slow: delayed target->client chunks */
  size_t q_bytes;
  int q_eof;
  size_t hs_len, hs_off;
  unsigned char hs[HS_MAX];
};

typedef struct map_s {
  char name[256];
  int wildcard; /* "*.suffix": matches suffix and anything ending .suffix */
  struct sockaddr_storage ip;
} map_t;

typedef struct ctl_s {
  uv_tcp_t tcp;
  struct ctl_s *prev, *next;
  int closing;
  size_t len;
  char buf[4096];
} ctl_t;

static uv_loop_t *loop;
static proxy_t *proxies;
static size_t nproxies;
static map_t *maps;
static size_t nmaps;
static FILE *logfp;
static uint64_t rng_state;
static uint64_t total_accepted, total_active;
static struct sockaddr_storage host_addr;
static uv_signal_t sig_term, sig_int;
static uv_tcp_t ctl_server;
static int ctl_enabled;
static ctl_t *ctls;
static int stopping;
static char discard_buf[READ_CHUNK];

static void conn_close(conn_t *c, int reset);
static void conn_drain(conn_t *c);
static void farm_stop(void);
static void on_connection(uv_stream_t *server, int status);

/* ---------------------------------------------------------------- utils */

static void die(const char *fmt, ...) {
  va_list ap;
  fputs("scatter-farm: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(2);
}

static void *xrealloc(void *p, size_t sz) {
  if ((p = realloc(p, sz)) == NULL) die("out of memory");
  return p;
}

static void *xcalloc(size_t n, size_t sz) {
  return memset(xrealloc(NULL, n * sz), 0, n * sz);
}

/* splitmix64: tiny, seedable, and good enough for coin flips. */
static double rng_unit(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int parse_u64(const char *s, uint64_t *out) {
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

static int parse_ip(const char *s, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(s, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(s, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return -1;
}

static void set_port(struct sockaddr_storage *ss, int port) {
  if (ss->ss_family == AF_INET6)
    ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

static int get_port(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* Growable string for control replies (stats can be long). */
typedef struct { char *p; size_t len, cap; } sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) {
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
static int parse_profile(char *s, profile_t *p, uint64_t *count,
                         char *err, size_t errlen) {
  static const char *const ws = " \t\r\n";
  char *save = NULL, *tok = strtok_r(s, ws, &save);
  int have_user = 0, have_pass = 0;
  memset(p, 0, sizeof *p);
  p->latency = 0.5;
  p->p = 0.5;
  p->n = 1;
  p->bytes = 512;
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
                 : !strcmp(key, "bytes")   ? KEY_BYTES : 0;
    int bad = 0;
    if (!strcmp(key, "user") || !strcmp(key, "pass")) {
      int is_user = key[0] == 'u';
      if (strlen(val) < 1 || strlen(val) > 255)
        return perr(err, errlen, "%s must be 1..255 bytes", key);
      strcpy(is_user ? p->user : p->pass, val);
      *(is_user ? &have_user : &have_pass) = 1;
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
      bad = parse_u64(val, &p->n);
    } else {
      bad = parse_u64(val, &p->bytes);
    }
    if (bad) return perr(err, errlen, "bad value for %s: '%s'", key, val);
  }
  if (have_user != have_pass)
    return perr(err, errlen, "user= and pass= must be given together");
  p->auth = have_user;
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
static int map_lookup(const char *host, struct sockaddr_storage *out) {
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

static void log_request(conn_t *c, const char *action) {
  if (logfp == NULL) return;
  fprintf(logfp, "port=%d atyp=%u host=%s dstport=%d action=%s\n",
          c->px->port, c->atyp, c->host, c->dport, action);
  fflush(logfp);
}

/* ------------------------------------------------------------- proxies */

static void on_free_handle(uv_handle_t *h) { free(h); }

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
static int proxy_sync(proxy_t *px) {
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

static const char *proxy_state(const proxy_t *px) {
  return px->down ? "down" : px->listening ? "listening" : "refusing";
}

/* ---------------------------------------------------------- connections */

static void on_conn_handle_close(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles == 0) free(c);
}

static void set_rst(uv_tcp_t *t) {
  uv_os_fd_t fd;
  struct linger l = { 1, 0 };
  if (uv_fileno((uv_handle_t *)t, &fd) == 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

/* Closes both sockets; reset=1 makes them send RST instead of FIN so that
 * the peer sees an error and not a clean end of stream. */
static void conn_close(conn_t *c, int reset) {
  if (c->closing) return;
  c->closing = 1;
  if (c->prev) c->prev->next = c->next; else c->px->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->px->active--;
  total_active--;
  while (c->q_head) {
    chunk_t *ch = c->q_head;
    c->q_head = ch->next;
    free(ch);
  }
  side_t *sides[2] = { &c->cli, &c->tgt };
  for (int i = 0; i < 2; i++) {
    if (!sides[i]->open) continue;
    if (reset) set_rst(&sides[i]->tcp);
    uv_close((uv_handle_t *)&sides[i]->tcp, on_conn_handle_close);
  }
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
}

static void side_init(conn_t *c, side_t *s, side_t *peer) {
  uv_tcp_init(loop, &s->tcp);
  s->tcp.data = c;
  s->c = c;
  s->peer = peer;
  s->open = 1;
  c->handles++;
}

/* Small writes (protocol replies, control lines) are copied, so callers
 * can use stack buffers; `ctx` is the conn_t or ctl_t that gets the error. */
typedef struct { uv_write_t req; void *ctx; int quit; char data[]; } msg_t;

static int send_copy(uv_stream_t *s, const void *data, size_t len,
                     uv_write_cb cb, void *ctx, int quit) {
  msg_t *m = xrealloc(NULL, sizeof *m + len);
  m->ctx = ctx;
  m->quit = quit;
  memcpy(m->data, data, len);
  uv_buf_t b = uv_buf_init(m->data, (unsigned)len);
  int r = uv_write(&m->req, s, &b, 1, cb);
  if (r != 0) free(m);
  return r;
}

static void on_cli_sent(uv_write_t *req, int status) {
  msg_t *m = container_of(req, msg_t, req);
  conn_t *c = m->ctx;
  free(m);
  if (status < 0 && !c->closing) conn_close(c, 0);
}

static void cli_send(conn_t *c, const void *data, size_t len) {
  if (send_copy((uv_stream_t *)&c->cli.tcp, data, len, on_cli_sent, c, 0) != 0)
    conn_close(c, 0);
}

/* A SOCKS5 reply with a zero IPv4 bind address. */
static void send_rep(conn_t *c, unsigned char rep) {
  unsigned char r[10] = { 5, rep, 0, 1, 0, 0, 0, 0, 0, 0 };
  cli_send(c, r, sizeof r);
}

static void on_discard_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  (void)h; (void)sz;
  *buf = uv_buf_init(discard_buf, sizeof discard_buf);
}

static void on_discard_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  if (nread < 0) conn_close(s->data, 0);
}

static void on_close_timer(uv_timer_t *t) { conn_close(t->data, 0); }

static void on_drain_shutdown(uv_shutdown_t *req, int status) {
  side_t *s = req->data;
  if (status < 0 && !s->c->closing) conn_close(s->c, 0);
}

/* Ends a connection after our last reply: send FIN after queued writes,
 * then read and discard until the client closes (closing with unread data
 * would RST and could destroy the reply), or give up after LINGER_MS. */
static void conn_drain(conn_t *c) {
  if (c->closing) return;
  c->st = S_DRAIN;
  uv_read_stop((uv_stream_t *)&c->cli.tcp);
  uv_read_start((uv_stream_t *)&c->cli.tcp, on_discard_alloc, on_discard_read);
  c->cli.shut = 1;
  c->cli.shut_req.data = &c->cli;
  if (uv_shutdown(&c->cli.shut_req, (uv_stream_t *)&c->cli.tcp, on_drain_shutdown) != 0) {
    conn_close(c, 0);
    return;
  }
  uv_timer_start(&c->timer, on_close_timer, LINGER_MS, 0);
}

/* Finds the end of an HTTP header block across chunk boundaries.  Returns
 * the offset just past "\r\n\r\n" (state becomes 4), or n if not found. */
static size_t hdr_scan(unsigned *state, const char *p, size_t n) {
  static const char end[] = "\r\n\r\n";
  size_t i = 0;
  for (; i < n && *state < 4; i++) {
    if (p[i] == end[*state]) (*state)++;
    else *state = p[i] == '\r' ? 1 : 0;
  }
  return i;
}

/* ---------------------------------------------------------------- relay */

static void relay_start(conn_t *c);
static void on_relay_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_chunk_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  (void)h; (void)sz;
  chunk_t *ch = malloc(sizeof *ch);
  *buf = ch ? uv_buf_init(ch->data, READ_CHUNK) : uv_buf_init(NULL, 0);
}

static void side_pause(side_t *s) {
  if (s->paused) return;
  s->paused = 1;
  uv_read_stop((uv_stream_t *)&s->tcp);
}

/* Resumes reading `s` once the data it produced has mostly drained. */
static void side_maybe_resume(side_t *s) {
  conn_t *c = s->c;
  if (!s->paused || s->eof || c->dropping || c->closing) return;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&s->peer->tcp) >= LOW_WATER) return;
  if (s == &c->tgt && c->q_bytes >= LOW_WATER) return;
  s->paused = 0;
  uv_read_start((uv_stream_t *)&s->tcp, on_chunk_alloc, on_relay_read);
}

static void on_drop_timer(uv_timer_t *t) { conn_close(t->data, 1); }

static void on_relay_written(uv_write_t *req, int status) {
  chunk_t *ch = container_of(req, chunk_t, req);
  side_t *from = ch->from;
  conn_t *c = from->c;
  int kill = ch->kill;
  free(ch);
  if (c->closing) return;
  if (status < 0) { conn_close(c, 1); return; }
  if (kill) {
    /* drop_mid: the bytes are in the kernel; an RST right now would make
     * the client's kernel discard them unread, so give it a moment. */
    uv_read_stop((uv_stream_t *)&c->cli.tcp);
    uv_timer_start(&c->timer, on_drop_timer, DROP_MS, 0);
    return;
  }
  side_maybe_resume(from);
}

static void relay_write(chunk_t *ch) {
  side_t *from = ch->from, *to = from->peer;
  uv_buf_t b = uv_buf_init(ch->data, (unsigned)ch->len);
  if (uv_write(&ch->req, (uv_stream_t *)&to->tcp, &b, 1, on_relay_written) != 0) {
    free(ch);
    conn_close(from->c, 1);
    return;
  }
  if (uv_stream_get_write_queue_size((uv_stream_t *)&to->tcp) > HIGH_WATER)
    side_pause(from);
}

static void on_relay_shutdown(uv_shutdown_t *req, int status) {
  side_t *s = req->data;
  conn_t *c = s->c;
  if (c->closing) return;
  if (status < 0) { conn_close(c, 1); return; }
  s->shut_done = 1;
  /* Both directions finished: nothing more can flow. */
  if (c->cli.eof && c->tgt.eof && c->cli.shut_done && c->tgt.shut_done)
    conn_close(c, 0);
}

/* Half-close: the FIN goes out after everything queued before it. */
static void side_shutdown(side_t *s) {
  if (s->shut) return;
  s->shut = 1;
  s->shut_req.data = s;
  if (uv_shutdown(&s->shut_req, (uv_stream_t *)&s->tcp, on_relay_shutdown) != 0)
    conn_close(s->c, 1);
}

/* slow: writes the target->client chunks whose delay has passed. */
static void on_slow_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  uint64_t now = uv_now(loop);
  while (c->q_head && c->q_head->due <= now && !c->closing) {
    chunk_t *ch = c->q_head;
    c->q_head = ch->next;
    if (c->q_head == NULL) c->q_tail = NULL;
    c->q_bytes -= ch->len;
    relay_write(ch);
  }
  if (c->closing) return;
  if (c->q_head) {
    uv_timer_start(&c->timer, on_slow_timer, c->q_head->due - now, 0);
  } else if (c->q_eof) {
    c->q_eof = 0;
    side_shutdown(&c->cli);
  }
  side_maybe_resume(&c->tgt);
}

static void slow_enqueue(conn_t *c, chunk_t *ch) {
  ch->next = NULL;
  ch->due = uv_now(loop) + c->delay_ms / 10;
  if (c->q_tail) c->q_tail->next = ch; else c->q_head = ch;
  c->q_tail = ch;
  c->q_bytes += ch->len;
  if (c->q_bytes > HIGH_WATER) side_pause(&c->tgt);
  if (!uv_is_active((uv_handle_t *)&c->timer))
    uv_timer_start(&c->timer, on_slow_timer, ch->due - uv_now(loop), 0);
}

static void on_relay_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  side_t *s = (uv_tcp_t *)stream == &c->cli.tcp ? &c->cli : &c->tgt;
  chunk_t *ch = buf->base ? container_of(buf->base, chunk_t, data) : NULL;
  if (nread <= 0) {
    free(ch);
    if (nread == 0 || c->closing) return;
    if (nread != UV_EOF) { conn_close(c, 1); return; } /* pass the RST on */
    s->eof = 1;
    uv_read_stop(stream);
    if (s == &c->tgt && c->q_head) c->q_eof = 1; /* FIN after the delayed data */
    else side_shutdown(s->peer);
    return;
  }
  ch->len = (size_t)nread;
  ch->from = s;
  ch->kill = 0;
  if (s == &c->tgt) {
    switch (c->prof.kind) {
    case K_TAMPER: {
      /* Only the body of the first response: headers stay byte-exact. */
      size_t i = c->hdr_state < 4 ? hdr_scan(&c->hdr_state, ch->data, ch->len) : 0;
      for (; i < ch->len; i++)
        if (ch->data[i] == 'a') ch->data[i] = '4';
      break;
    }
    case K_DROP_MID: {
      uint64_t room = c->prof.bytes - c->down_bytes;
      if (room == 0) { free(ch); conn_close(c, 1); return; }
      if (ch->len >= room) {
        ch->len = (size_t)room;
        ch->kill = 1;
        c->dropping = 1;
        side_pause(s);
      }
      c->down_bytes += ch->len;
      break;
    }
    case K_SLOW:
      slow_enqueue(c, ch);
      return;
    default:
      break;
    }
  }
  relay_write(ch);
}

static void send_success(conn_t *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  unsigned char r[22] = { 5, 0, 0, 1 };
  size_t n = 10;
  memset(&ss, 0, sizeof ss);
  uv_tcp_getsockname(&c->tgt.tcp, (struct sockaddr *)&ss, &len);
  if (ss.ss_family == AF_INET6) {
    r[3] = 4;
    memcpy(r + 4, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    n = 22;
  } else {
    memcpy(r + 4, &((struct sockaddr_in *)&ss)->sin_addr, 4);
  }
  r[n - 2] = (unsigned char)(get_port(&ss) >> 8);
  r[n - 1] = (unsigned char)(get_port(&ss) & 0xff);
  cli_send(c, r, n);
}

static void relay_start(conn_t *c) {
  if (c->closing) return;
  c->st = S_RELAY;
  /* Bytes the client pipelined behind its request go first. */
  if (c->hs_len > c->hs_off) {
    chunk_t *ch = xrealloc(NULL, sizeof *ch);
    ch->from = &c->cli;
    ch->kill = 0;
    ch->len = c->hs_len - c->hs_off;
    memcpy(ch->data, c->hs + c->hs_off, ch->len);
    c->hs_off = c->hs_len;
    relay_write(ch);
    if (c->closing) return;
  }
  uv_read_start((uv_stream_t *)&c->cli.tcp, on_chunk_alloc, on_relay_read);
  uv_read_start((uv_stream_t *)&c->tgt.tcp, on_chunk_alloc, on_relay_read);
}

static void on_reply_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  send_success(c);
  relay_start(c);
}

static unsigned char rep_for(int err) {
  switch (err) {
  case UV_ECONNREFUSED: return 0x05;
  case UV_ENETUNREACH: return 0x03;
  case UV_EHOSTUNREACH: return 0x04;
  case UV_ETIMEDOUT: return 0x06;
  case UV_EAFNOSUPPORT: return 0x08;
  default: return 0x01;
  }
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (c->closing) return;
  if (status < 0) {
    log_request(c, "failed");
    send_rep(c, rep_for(status));
    conn_drain(c);
    return;
  }
  log_request(c, "ok");
  uv_tcp_nodelay(&c->tgt.tcp, 1);
  if (c->prof.kind == K_SLOW) {
    c->st = S_REPLYING;
    uv_timer_start(&c->timer, on_reply_timer, c->delay_ms, 0);
    return;
  }
  send_success(c);
  relay_start(c);
}

/* ---------------------------------------------------------------- block */

static void block_respond(conn_t *c) {
  static const char body[] =
    "<!DOCTYPE html>\n<html><head><title>Attention Required</title></head>\n"
    "<body><h1>Attention Required</h1>\n"
    "<p>Please complete the captcha below to continue.</p>\n"
    "<div class=\"captcha\">captcha</div></body></html>\n";
  char head[256];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 403 Forbidden\r\nServer: scatter-farm\r\n"
                   "Content-Type: text/html\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n", sizeof body - 1);
  cli_send(c, head, (size_t)n);
  if (!c->closing) cli_send(c, body, sizeof body - 1);
  conn_drain(c);
}

static void on_block_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (nread < 0) { conn_close(c, 0); return; }
  hdr_scan(&c->hdr_state, buf->base, (size_t)nread);
  if (c->hdr_state == 4) block_respond(c);
}

/* ------------------------------------------------------------ handshake */

static void handle_request(conn_t *c) {
  const unsigned char *p = c->hs + c->hs_off;
  size_t alen;
  /* Describe the destination for the log before anything else. */
  if (c->atyp == 1) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&c->dst;
    memset(&c->dst, 0, sizeof c->dst);
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, p + 4, 4);
    uv_ip4_name(sin, c->host, sizeof c->host);
    alen = 4;
  } else if (c->atyp == 4) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&c->dst;
    memset(&c->dst, 0, sizeof c->dst);
    sin6->sin6_family = AF_INET6;
    memcpy(&sin6->sin6_addr, p + 4, 16);
    uv_ip6_name(sin6, c->host, sizeof c->host);
    alen = 16;
  } else {
    alen = 1 + (size_t)p[4];
    memcpy(c->host, p + 5, p[4]);
    c->host[p[4]] = '\0';
  }
  c->dport = (p[4 + alen] << 8) | p[5 + alen];
  c->hs_off += 6 + alen;

  int resolved = c->atyp != 3 || map_lookup(c->host, &c->dst) == 0;
  /* The log is one space-separated line: keep odd names on it. */
  for (char *h = c->host; *h; h++)
    if (*h <= ' ' || *h > '~') *h = '?';
  if (c->host[0] == '\0') strcpy(c->host, "-");

  if (c->cmd != 1) {
    log_request(c, "unsupported");
    send_rep(c, 0x07);
    conn_drain(c);
    return;
  }
  if (!resolved) {
    log_request(c, "unresolved");
    send_rep(c, 0x04);
    conn_drain(c);
    return;
  }
  set_port(&c->dst, c->dport);
  if (c->prof.kind == K_BLOCK) {
    log_request(c, "blocked");
    send_rep(c, 0x00);
    c->st = S_BLOCK_HEAD;
    hdr_scan(&c->hdr_state, (char *)c->hs + c->hs_off, c->hs_len - c->hs_off);
    if (c->hdr_state == 4) { block_respond(c); return; }
    uv_read_stop((uv_stream_t *)&c->cli.tcp);
    uv_read_start((uv_stream_t *)&c->cli.tcp, on_discard_alloc, on_block_read);
    return;
  }
  if (c->prof.kind == K_FLAKY && rng_unit() < c->prof.p) {
    log_request(c, "flaky");
    send_rep(c, 0x05);
    conn_drain(c);
    return;
  }
  /* Nothing more from the client until the target is there. */
  uv_read_stop((uv_stream_t *)&c->cli.tcp);
  c->st = S_CONNECTING;
  side_init(c, &c->tgt, &c->cli);
  c->creq.data = c;
  int r = uv_tcp_connect(&c->creq, &c->tgt.tcp, (struct sockaddr *)&c->dst, on_connect);
  if (r != 0) {
    log_request(c, "failed");
    send_rep(c, rep_for(r));
    conn_drain(c);
  }
}

static void reject_methods(conn_t *c) {
  static const unsigned char no[2] = { 5, 0xff };
  cli_send(c, no, 2);
  conn_drain(c);
}

/* Consumes as many complete handshake messages as hs holds; clients may
 * pipeline them. */
static void hs_process(conn_t *c) {
  for (;;) {
    const unsigned char *p = c->hs + c->hs_off;
    size_t n = c->hs_len - c->hs_off, need;
    switch (c->st) {
    case S_GREETING: {
      if (n >= 1 && p[0] != 5) {
        if (c->prof.kind == K_HANDSHAKE_FAIL) reject_methods(c);
        else conn_close(c, 0); /* not SOCKS5 at all */
        return;
      }
      if (n < 2 || n < (need = 2 + (size_t)p[1])) return;
      c->hs_off += need;
      unsigned char want = c->prof.auth ? 2 : 0;
      if (c->prof.kind == K_HANDSHAKE_FAIL || memchr(p + 2, want, p[1]) == NULL) {
        reject_methods(c);
        return;
      }
      unsigned char ok[2] = { 5, want };
      cli_send(c, ok, 2);
      c->st = c->prof.auth ? S_AUTH : S_REQUEST;
      break;
    }
    case S_AUTH: {
      /* RFC 1929: VER ULEN UNAME PLEN PASSWD */
      if (n < 2 || n < 3 + (size_t)p[1]) return;
      size_t ulen = p[1], plen = p[2 + ulen];
      if (n < (need = 3 + ulen + plen)) return;
      c->hs_off += need;
      int ok = p[0] == 1 && ulen == strlen(c->prof.user) &&
               plen == strlen(c->prof.pass) &&
               memcmp(p + 2, c->prof.user, ulen) == 0 &&
               memcmp(p + 3 + ulen, c->prof.pass, plen) == 0;
      unsigned char r[2] = { 1, ok ? 0 : 1 };
      cli_send(c, r, 2);
      if (!ok) { conn_drain(c); return; }
      c->st = S_REQUEST;
      break;
    }
    case S_REQUEST: {
      /* VER CMD RSV ATYP ADDR PORT */
      if (n < 5) return;
      if (p[0] != 5) { conn_close(c, 0); return; }
      c->cmd = p[1];
      c->atyp = p[3];
      size_t alen = p[3] == 1 ? 4 : p[3] == 4 ? 16 : p[3] == 3 ? 1 + (size_t)p[4] : 0;
      if (alen == 0) { send_rep(c, 0x08); conn_drain(c); return; }
      if (n < 6 + alen) return;
      handle_request(c);
      return;
    }
    default:
      return;
    }
    if (c->closing) return;
  }
}

static void on_hs_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)sz;
  *buf = uv_buf_init((char *)c->hs + c->hs_len, (unsigned)(HS_MAX - c->hs_len));
}

static void on_hs_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  (void)buf;
  if (nread < 0) { conn_close(c, 0); return; } /* EOF, error or hs full */
  c->hs_len += (size_t)nread;
  hs_process(c);
}

static void on_connection(uv_stream_t *server, int status) {
  proxy_t *px = server->data;
  if (status < 0) return;
  conn_t *c = xcalloc(1, sizeof *c);
  c->px = px;
  c->prof = px->prof;
  side_init(c, &c->cli, &c->tgt);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->handles++;
  c->next = px->conns;
  if (px->conns) px->conns->prev = c;
  px->conns = c;
  px->active++;
  total_active++;
  if (uv_accept(server, (uv_stream_t *)&c->cli.tcp) != 0) {
    conn_close(c, 0);
    return;
  }
  px->accepted++;
  px->served++;
  total_accepted++;
  if (c->prof.kind == K_SLOW) {
    double d = c->prof.latency + c->prof.jitter * (2 * rng_unit() - 1);
    c->delay_ms = d > 0 ? (uint64_t)(d * 1000 + 0.5) : 0;
  }
  /* block_after: good for n accepts, then each one is a block */
  if (c->prof.kind == K_BLOCK_AFTER)
    c->prof.kind = px->served > c->prof.n ? K_BLOCK : K_GOOD;
  /* die_after: the Nth accept is served, then the port starts refusing. */
  if (c->prof.kind == K_DIE_AFTER && px->served >= c->prof.n) proxy_sync(px);
  if (c->prof.kind == K_BLACKHOLE) {
    c->st = S_BLACKHOLE;
    uv_read_start((uv_stream_t *)&c->cli.tcp, on_discard_alloc, on_discard_read);
    return;
  }
  uv_tcp_nodelay(&c->cli.tcp, 1);
  c->st = S_GREETING;
  uv_read_start((uv_stream_t *)&c->cli.tcp, on_hs_alloc, on_hs_read);
}

/* -------------------------------------------------------------- control */

static void ctl_close(ctl_t *ctl) {
  if (ctl->closing) return;
  ctl->closing = 1;
  if (ctl->prev) ctl->prev->next = ctl->next; else ctls = ctl->next;
  if (ctl->next) ctl->next->prev = ctl->prev;
  uv_close((uv_handle_t *)&ctl->tcp, on_free_handle);
}

static void on_ctl_sent(uv_write_t *req, int status) {
  msg_t *m = container_of(req, msg_t, req);
  if (m->quit) farm_stop(); /* "quit" exits once its OK is out */
  else if (status < 0) ctl_close(m->ctx);
  free(m);
}

/* `text` ends with the '\n' that sb_printf callers leave room for. */
static void ctl_reply(ctl_t *ctl, const char *text, size_t len, int quit) {
  if (send_copy((uv_stream_t *)&ctl->tcp, text, len, on_ctl_sent, ctl, quit) != 0) {
    if (quit) farm_stop(); else ctl_close(ctl);
  }
}

static proxy_t *ctl_proxy(char **rest, sbuf_t *out) {
  char *tok = strtok_r(NULL, " \t", rest);
  uint64_t i;
  if (tok == NULL || parse_u64(tok, &i) != 0) {
    sb_printf(out, "ERR missing or bad proxy index");
    return NULL;
  }
  if (i >= nproxies) {
    sb_printf(out, "ERR no proxy %llu (have %zu)", (unsigned long long)i, nproxies);
    return NULL;
  }
  return &proxies[i];
}

static void ctl_sync_reply(proxy_t *px, sbuf_t *out, const char *what) {
  int r = proxy_sync(px);
  if (r != 0) sb_printf(out, "ERR %u: %s", px->index, uv_strerror(r));
  else sb_printf(out, "OK %s %u %s %s", what, px->index,
                 kind_names[px->prof.kind], proxy_state(px));
}

static void ctl_command(ctl_t *ctl, char *line) {
  sbuf_t out = { 0 };
  char *rest = NULL, *cmd = strtok_r(line, " \t", &rest);
  proxy_t *px;
  int quit = 0;
  if (cmd == NULL) {
    sb_printf(&out, "ERR empty command");
  } else if (!strcmp(cmd, "ping")) {
    sb_printf(&out, "OK pong");
  } else if (!strcmp(cmd, "quit")) {
    sb_printf(&out, "OK bye");
    quit = 1;
  } else if (!strcmp(cmd, "stats")) {
    sb_printf(&out, "OK {\"accepted\":%llu,\"active\":%llu,\"per_proxy\":[",
              (unsigned long long)total_accepted, (unsigned long long)total_active);
    for (size_t i = 0; i < nproxies; i++)
      sb_printf(&out, "%s{\"index\":%zu,\"accepted\":%llu,\"active\":%llu,"
                "\"port\":%d,\"profile\":\"%s\",\"state\":\"%s\"}", i ? "," : "", i,
                (unsigned long long)proxies[i].accepted,
                (unsigned long long)proxies[i].active, proxies[i].port,
                kind_names[proxies[i].prof.kind], proxy_state(&proxies[i]));
    sb_printf(&out, "]}");
  } else if (!strcmp(cmd, "profile")) {
    profile_t prof;
    char err[256];
    if ((px = ctl_proxy(&rest, &out)) != NULL) {
      char none[1] = "";
      int r = parse_profile(rest ? rest : none, &prof, NULL, err, sizeof err);
      if (r != 0) {
        sb_printf(&out, "ERR %s", r > 0 ? "missing profile" : err);
      } else {
        px->prof = prof; /* new connections only: each conn has a copy */
        px->served = 0;
        ctl_sync_reply(px, &out, "profile");
      }
    }
  } else if (!strcmp(cmd, "down")) {
    if ((px = ctl_proxy(&rest, &out)) != NULL) {
      px->down = 1;
      while (px->conns) conn_close(px->conns, 1);
      ctl_sync_reply(px, &out, "down");
    }
  } else if (!strcmp(cmd, "up")) {
    if ((px = ctl_proxy(&rest, &out)) != NULL) {
      px->down = 0;
      px->served = 0;
      ctl_sync_reply(px, &out, "up");
    }
  } else {
    sb_printf(&out, "ERR unknown command '%s'", cmd);
  }
  sb_printf(&out, "\n");
  ctl_reply(ctl, out.p, out.len, quit);
  free(out.p);
}

static void on_ctl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  ctl_t *ctl = h->data;
  (void)sz;
  *buf = uv_buf_init(ctl->buf + ctl->len, (unsigned)(sizeof ctl->buf - ctl->len - 1));
}

static void on_ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ctl_t *ctl = s->data;
  char *start, *nl;
  (void)buf;
  if (nread < 0) { ctl_close(ctl); return; }
  ctl->len += (size_t)nread;
  ctl->buf[ctl->len] = '\0';
  start = ctl->buf;
  while (!stopping && !ctl->closing && (nl = strchr(start, '\n')) != NULL) {
    *nl = '\0';
    if (nl > start && nl[-1] == '\r') nl[-1] = '\0';
    ctl_command(ctl, start);
    start = nl + 1;
  }
  if (stopping || ctl->closing) return;
  ctl->len -= (size_t)(start - ctl->buf);
  memmove(ctl->buf, start, ctl->len);
  if (ctl->len == sizeof ctl->buf - 1) {
    static const char msg[] = "ERR line too long\n";
    ctl_reply(ctl, msg, sizeof msg - 1, 0);
    ctl_close(ctl);
  }
}

static void on_ctl_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  ctl_t *ctl = xcalloc(1, sizeof *ctl);
  uv_tcp_init(loop, &ctl->tcp);
  ctl->tcp.data = ctl;
  ctl->next = ctls;
  if (ctls) ctls->prev = ctl;
  ctls = ctl;
  if (uv_accept(server, (uv_stream_t *)&ctl->tcp) != 0) { ctl_close(ctl); return; }
  uv_read_start((uv_stream_t *)&ctl->tcp, on_ctl_alloc, on_ctl_read);
}

/* ---------------------------------------------------------------- main */

static void farm_stop(void) {
  if (stopping) return;
  stopping = 1;
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
  if (ctl_enabled) uv_close((uv_handle_t *)&ctl_server, NULL);
  while (ctls) ctl_close(ctls);
  for (size_t i = 0; i < nproxies; i++) {
    proxy_t *px = &proxies[i];
    while (px->conns) conn_close(px->conns, 0);
    if (px->lsn) uv_close((uv_handle_t *)px->lsn, on_free_handle);
    px->lsn = NULL;
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
    fprintf(f, "%s{\"index\":%zu,\"port\":%d,\"profile\":\"%s\"}", i ? ",\n " : "",
            i, proxies[i].port, kind_names[proxies[i].prof.kind]);
  fputs("]\n", f);
  if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0)
    die("cannot write %s: %s", tmp, strerror(errno));
  if (rename(tmp, path) != 0) die("cannot rename %s: %s", tmp, strerror(errno));
}

static void usage(void) {
  fputs("usage: scatter-farm --config FILE [--ports-out FILE] [--log FILE]\n"
        "       [--control-port N] [--host IP] [--seed N] [--map NAME=IP ...]\n", stderr);
  exit(2);
}

int main(int argc, char **argv) {
  const char *config = NULL, *ports_out = NULL, *log_path = NULL, *host = "127.0.0.1";
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

  signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an error, not death */
  loop = uv_default_loop();
  if (log_path && (logfp = fopen(log_path, "a")) == NULL)
    die("cannot open log %s: %s", log_path, strerror(errno));

  for (size_t i = 0; i < nproxies; i++) {
    proxies[i].addr = host_addr;
    if ((r = proxy_bind(&proxies[i])) != 0 || (r = proxy_sync(&proxies[i])) != 0)
      die("proxy %zu: cannot bind %s: %s", i, host, uv_strerror(r));
  }
  if (want_ctl) {
    struct sockaddr_in sin;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_ip4_addr("127.0.0.1", (int)ctl_port, &sin);
    uv_tcp_init(loop, &ctl_server);
    if ((r = uv_tcp_bind(&ctl_server, (struct sockaddr *)&sin, 0)) != 0 ||
        (r = uv_listen((uv_stream_t *)&ctl_server, 16, on_ctl_connection)) != 0 ||
        (r = uv_tcp_getsockname(&ctl_server, (struct sockaddr *)&ss, &len)) != 0)
      die("control port %llu: %s", (unsigned long long)ctl_port, uv_strerror(r));
    ctl_enabled = 1;
    ctl_port = (uint64_t)get_port(&ss);
  }
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
