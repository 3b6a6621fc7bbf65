/* The HTTP/1.1 forward proxy of `scatter serve` (lua/scatter/serve.lua).
 * C accepts clients and parses their requests (nodejs http-parser), queues
 * each complete request as a result of the server's op (ops.h) and waits;
 * Lua races it through a pool and hands the answer back: a response to
 * write, or the socket of an opened tunnel to relay (src/net/tunnel.c).
 * C never calls Lua.
 *
 *   core.proxyd_listen(host, port) -> op id, bound port | nil, err
 *       each request: op result {status = connection id}
 *   core.proxyd_request(conn) -> method, target, {name, value, ...}, body,
 *       proxy user (of a Basic Proxy-Authorization: a session's name)
 *   core.proxyd_respond(conn, head, body) -> true | nil, err
 *       head: status line and header lines, each ending in CRLF, without
 *       Connection (added here) or the blank line
 *   core.proxyd_tunnel(conn, tunnel [, idle]) -> true | nil, err   (always
 *       takes the tunnel: pool:tunnel's value, tunref.h; idle: seconds
 *       without a byte either way that end it, 0 or none: never)
 *   core.proxyd_close(op id, drain)   drain: stop accepting, close idle
 *       connections, close the others once their answer is written;
 *       otherwise close everything now
 *   core.proxyd_count(op id) -> open client connections
 *
 * Answered here without Lua: a malformed request (400), a header block
 * over HEAD_MAX (431), a body over BODY_MAX (413). Keep-alive clients are
 * served one request at a time (pipelined ones wait in the buffer). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../net/loop.h"
#include "../net/reqparse.h"
#include "../net/tunnel.h"
#include "../net/xfer.h"
#include "ops.h"
#include "tunref.h"

#include "funcs.h"

#define HEAD_MAX (64 * 1024)
#define BODY_MAX (16 * 1024 * 1024)
#define IDLE_MS 60000
/* how long the rest of a request refused midway is read and dropped */
#define LINGER_MS 10000
#define SLOT_BITS 20
#define MAX_CONNS (1 << SLOT_BITS)

typedef struct psrv psrv;

enum { C_READ, C_LUA, C_WRITE, C_TUNNEL, C_LINGER };

typedef struct pconn {
  uv_tcp_t tcp;
  uv_timer_t idle;
  sc_tunnel_t *tun; /* C_TUNNEL: the client's dup and the proxy's socket */
  sc_xfer_t *xf;    /* a tunnel whose bytes go through curl, or NULL */
  sc_reqparse_t rq;
  psrv *srv;
  int id, slot, state, handles, closing, keep_alive;
  int linger; /* our answer leaves the request unread: C_LINGER after it */
  char *rest; /* bytes read past the request: the next one, or a tunnel's */
  size_t rest_len;
} pconn;

struct psrv {
  uv_tcp_t *lst; /* NULL once closed */
  uint32_t op;
  int nconns, draining;
  psrv *next;
};

static psrv *servers;
static pconn **slots;
static int nslots, *free_slots, nfree;
static unsigned gen;
static char rbuf[64 * 1024]; /* every read lands here, then is parsed */

static void conn_unref(pconn *c) {
  if (--c->handles) return;
  sc_reqparse_free(&c->rq);
  free(c->rest);
  free(c);
}

static void conn_free_cb(uv_handle_t *h) { conn_unref(h->data); }

/* The tunnel's descriptors are closed: its curl handle may go now. */
static void on_tunnel_closed(sc_tunnel_t *t) {
  pconn *c = t->data;
  sc_xfer_free(c->xf);
  c->xf = NULL;
  free(c->tun);
  c->tun = NULL;
  conn_unref(c);
}

static void conn_close(pconn *c) {
  if (c->closing) return;
  c->closing = 1;
  slots[c->slot] = NULL;
  free_slots[nfree++] = c->slot;
  if (c->srv) c->srv->nconns--;
  if (c->state == C_TUNNEL) {
    c->handles++;
    sc_tunnel_close(c->tun, on_tunnel_closed);
  }
  uv_close((uv_handle_t *)&c->idle, conn_free_cb);
  uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
}

static pconn *conn_find(lua_Integer id) {
  int slot = (int)(id & (MAX_CONNS - 1));
  if (id < 0 || slot >= nslots) return NULL;
  pconn *c = slots[slot];
  return c && c->id == id ? c : NULL;
}

static int send_copy(pconn *c, uv_stream_t *st, const char *p, size_t n);

/* ---- writing ---- */

typedef struct wreq {
  uv_write_t w;
  pconn *c;
  int then_close;
  int side; /* not an answer: a 100 Continue */
  char data[];
} wreq;

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);
static void on_idle(uv_timer_t *t);
static void feed(pconn *c, const char *p, size_t n);

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void read_next(pconn *c) {
  c->state = C_READ;
  sc_reqparse_reset(&c->rq);
  uv_timer_again(&c->idle);
  if (c->rest_len) { /* a pipelined request */
    char *p = c->rest;
    size_t n = c->rest_len;
    c->rest = NULL;
    c->rest_len = 0;
    feed(c, p, n);
    free(p);
    if (c->closing || c->state != C_READ) return;
  }
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *sh, int status) {
  (void)status;
  free(sh);
}

/* Closing a socket with unread bytes makes the kernel reset it, and the
 * reset throws away what the peer has not read yet: our answer. A client
 * that sends its whole body before it reads (Python's http.client,
 * requests) got ECONNRESET instead of the 413. So: send a FIN after the
 * answer and drop what still comes until the client closes (bounded). */
static void linger_start(pconn *c) {
  uv_shutdown_t *sh = malloc(sizeof(*sh));
  if (!sh || uv_shutdown(sh, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
    free(sh);
    conn_close(c);
    return;
  }
  c->state = C_LINGER;
  uv_timer_start(&c->idle, on_idle, LINGER_MS, 0);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
    conn_close(c);
}

static void on_written(uv_write_t *w, int status) {
  wreq *r = (wreq *)w;
  pconn *c = r->c;
  int close = r->then_close, side = r->side;
  free(r);
  if (c->closing || c->state == C_TUNNEL) return;
  if (side) {
    if (status < 0) conn_close(c);
    return;
  }
  if (status >= 0 && close && c->linger && !(c->srv && c->srv->draining))
    linger_start(c);
  else if (status < 0 || close || (c->srv && c->srv->draining))
    conn_close(c);
  else
    read_next(c);
}

/* Writes head (+ Connection) and body; returns < 0 if it cannot. */
static int conn_write(pconn *c, const char *head, size_t hl, const char *body,
                      size_t bl, int keep) {
  if (c->srv && c->srv->draining) keep = 0; /* it closes after this: say so */
  const char *conn =
      keep ? (c->rq.hp.http_minor == 0 ? "Connection: keep-alive\r\n\r\n"
                                       : "\r\n")
           : "Connection: close\r\n\r\n";
  size_t cl = strlen(conn);
  wreq *r = malloc(sizeof(*r) + hl + cl + bl);
  if (!r) return UV_ENOMEM;
  r->c = c;
  r->then_close = !keep;
  r->side = 0;
  memcpy(r->data, head, hl);
  memcpy(r->data + hl, conn, cl);
  if (bl) memcpy(r->data + hl + cl, body, bl);
  uv_buf_t b = uv_buf_init(r->data, (unsigned)(hl + cl + bl));
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_stop(&c->idle);
  c->state = C_WRITE;
  int rc = uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
  if (rc < 0) free(r);
  return rc;
}

static void reply_error(pconn *c, int status, const char *why) {
  char head[512];
  const char *reason = status == 400   ? "Bad Request"
                       : status == 413 ? "Content Too Large"
                       : status == 431 ? "Request Header Fields Too Large"
                                       : "Service Unavailable";
  size_t bl = strlen(why);
  int hl = snprintf(head, sizeof(head),
                    "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                    "X-Scatter-Error: %s\r\nContent-Length: %zu\r\n",
                    status, reason, why, bl + 1);
  char body[256];
  snprintf(body, sizeof(body), "%s\n", why);
  c->linger = 1;
  if (conn_write(c, head, (size_t)hl, body, bl + 1, 0) < 0) conn_close(c);
}

/* ---- reading ---- */

static void feed(pconn *c, const char *p, size_t n) {
  static const char CONT[] = "HTTP/1.1 100 Continue\r\n\r\n";
  size_t used = sc_reqparse_feed(&c->rq, p, n);
  http_parser *hp = &c->rq.hp;
  if (!c->rq.complete) {
    char why[160];
    int status = sc_reqparse_error(&c->rq, why, sizeof(why));
    if (status) {
      reply_error(c, status, why);
    } else if (c->rq.expect_continue == 1) {
      /* a client that asks before it sends its body (curl does over
       * 1 KiB) would otherwise wait a second for nothing */
      c->rq.expect_continue = 2;
      if (send_copy(c, (uv_stream_t *)&c->tcp, CONT, sizeof(CONT) - 1) < 0)
        conn_close(c);
    }
    return;
  }
  if (used < n) { /* kept for the next request, or the tunnel */
    c->rest = malloc(n - used);
    if (!c->rest) {
      conn_close(c);
      return;
    }
    memcpy(c->rest, p + used, n - used);
    c->rest_len = n - used;
  }
  c->keep_alive =
      http_should_keep_alive(hp) && !hp->upgrade && hp->method != HTTP_CONNECT;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_stop(&c->idle);
  c->state = C_LUA;
  sc_ops_done(c->srv->op, c->id, NULL, 0, NULL);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  pconn *c = st->data;
  (void)buf;
  if (n == 0) return;
  if (n < 0) { /* gone, perhaps mid-request: nothing was handed on */
    conn_close(c);
    return;
  }
  if (c->state == C_LINGER) return; /* dropped: the client reads ours */
  uv_timer_again(&c->idle);
  feed(c, rbuf, (size_t)n);
}

static void on_idle(uv_timer_t *t) {
  pconn *c = t->data;
  if (c->state == C_READ || c->state == C_LINGER) conn_close(c);
}

static int slot_take(void) {
  if (nfree) return free_slots[--nfree];
  if (nslots == MAX_CONNS) return -1;
  int cap = nslots ? nslots * 2 : 1024;
  if (cap > MAX_CONNS) cap = MAX_CONNS;
  pconn **ns = realloc(slots, (size_t)cap * sizeof(*ns));
  if (!ns) return -1;
  slots = ns;
  int *nf = realloc(free_slots, (size_t)cap * sizeof(*nf));
  if (!nf) return -1;
  free_slots = nf;
  for (int i = cap - 1; i > nslots; i--) free_slots[nfree++] = i;
  int s = nslots;
  for (int i = nslots; i < cap; i++) slots[i] = NULL;
  nslots = cap;
  return s;
}

static void on_connection(uv_stream_t *st, int status) {
  psrv *s = st->data;
  if (status < 0) return; /* EMFILE: libuv's reserve fd sheds the client */
  pconn *c = calloc(1, sizeof(*c));
  int slot = c ? slot_take() : -1;
  if (slot < 0) {
    free(c);
    return;
  }
  uv_loop_t *loop = st->loop;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->idle);
  c->tcp.data = c->idle.data = c;
  c->handles = 2;
  c->slot = slot;
  sc_reqparse_init(&c->rq, HEAD_MAX, BODY_MAX);
  gen = (gen + 1) & 0x3ff;
  c->id = (int)((gen << SLOT_BITS) | (unsigned)slot);
  slots[slot] = c;
  c->srv = s;
  s->nconns++;
  if (uv_accept(st, (uv_stream_t *)&c->tcp) < 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_timer_start(&c->idle, on_idle, IDLE_MS, IDLE_MS);
  read_next(c);
}

/* ---- the Lua side ---- */

/* Many idle clients need many descriptors: take what the hard limit
 * allows (a no-op when it is already so). */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* A client that goes away mid-answer makes the next write to it (libuv's
 * write(2), the tunnel's splice(2): neither can pass MSG_NOSIGNAL) raise
 * SIGPIPE, which core.signal_watch takes for "stop" and the default kills
 * on: a proxy must just see EPIPE. Blocked, not ignored, so that no later
 * sigaction brings it back. */
static void block_sigpipe(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void free_handle(uv_handle_t *h) { free(h); }

int sc_lua_proxyd_listen(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
  sc_loop_t *loop = sc_loop_default();
  if (!loop) return luaL_error(L, "scatter: cannot initialise libuv/libcurl");
  struct sockaddr_storage addr;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "not an IP address: %s", host);
    return 2;
  }
  raise_nofile();
  block_sigpipe();
  psrv *s = calloc(1, sizeof(*s));
  uv_tcp_t *lst = malloc(sizeof(*lst));
  if (!s || !lst) {
    free(s);
    free(lst);
    return luaL_error(L, "scatter: out of memory");
  }
  uv_tcp_init(sc_loop_uv(loop), lst);
  lst->data = s;
  s->lst = lst;
  int rc = uv_tcp_bind(lst, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)lst, 4096, on_connection);
  if (rc < 0) {
    uv_close((uv_handle_t *)lst, free_handle);
    free(s);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  int bport = port;
  if (uv_tcp_getsockname(lst, (struct sockaddr *)&bound, &blen) == 0)
    bport = ntohs(bound.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&bound)->sin6_port
                      : ((struct sockaddr_in *)&bound)->sin_port);
  s->op = sc_ops_new();
  s->next = servers;
  servers = s;
  lua_pushnumber(L, s->op);
  lua_pushinteger(L, bport);
  return 2;
}

static pconn *check_waiting(lua_State *L, int i) {
  pconn *c = conn_find(luaL_checkinteger(L, i));
  return c && c->state == C_LUA && !c->closing ? c : NULL;
}

static int gone(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "no such connection (closed?)");
  return 2;
}

int sc_lua_proxyd_request(lua_State *L) {
  pconn *c = check_waiting(L, 1);
  if (!c) return gone(L);
  const sc_reqparse_t *r = &c->rq;
  lua_pushstring(L, http_method_str(r->hp.method));
  lua_pushlstring(L, r->buf, r->target_len);
  lua_createtable(L, (int)r->nhdrs * 2, 0);
  for (size_t i = 0; i < r->nhdrs; i++) {
    const sc_reqhdr_t *h = &r->hdrs[i];
    lua_pushlstring(L, r->buf + h->name, h->name_len);
    lua_rawseti(L, -2, (int)(2 * i + 1));
    lua_pushlstring(L, h->val_len ? r->buf + h->val : "", h->val_len);
    lua_rawseti(L, -2, (int)(2 * i + 2));
  }
  if (r->body_len || r->hp.method == HTTP_POST || r->hp.method == HTTP_PUT)
    lua_pushlstring(L, r->body ? r->body : "", r->body_len);
  else
    lua_pushnil(L);
  char user[768]; /* the session proxy credentials name (reqparse.h) */
  size_t ul = sc_reqparse_proxy_user(r, user, sizeof(user));
  if (ul)
    lua_pushlstring(L, user, ul);
  else
    lua_pushnil(L);
  return 5;
}

int sc_lua_proxyd_respond(lua_State *L) {
  size_t hl, bl;
  const char *head = luaL_checklstring(L, 2, &hl);
  const char *body = luaL_optlstring(L, 3, "", &bl);
  pconn *c = check_waiting(L, 1);
  if (!c) return gone(L);
  int rc = conn_write(c, head, hl, body, bl, c->keep_alive);
  if (rc < 0) {
    conn_close(c);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void on_tunnel_end(sc_tunnel_t *t, int status) {
  (void)status;
  conn_close(t->data);
}

static const char ESTABLISHED[] = "HTTP/1.1 200 Connection established\r\n\r\n";

static wreq *wreq_new(pconn *c, const char *p, size_t n) {
  wreq *r = malloc(sizeof(*r) + n);
  if (r) {
    r->c = c;
    r->then_close = 0;
    r->side = 1;
    memcpy(r->data, p, n);
  }
  return r;
}

/* Queues n bytes of p on st; returns < 0 if it cannot. */
static int send_copy(pconn *c, uv_stream_t *st, const char *p, size_t n) {
  wreq *r = wreq_new(c, p, n);
  if (!r) return UV_ENOMEM;
  uv_buf_t b = uv_buf_init(r->data, (unsigned)n);
  int rc = uv_write(&r->w, st, &b, 1, on_written);
  if (rc < 0) free(r);
  return rc;
}

int sc_lua_proxyd_tunnel(lua_State *L) {
  int fd;
  sc_xfer_t *x;
  double idle = luaL_optnumber(L, 3, 0);
  if (!(idle >= 0 && idle < 1e9))
    return luaL_argerror(L, 3, "idle seconds from 0 (never) to 1e9 expected");
  uint64_t idle_ms = (uint64_t)(idle * 1000.0 + 0.5);
  if (sc_lua_tunref_take(L, 2, &fd, &x) < 0)
    return luaL_argerror(L, 2, "an open tunnel expected (pool:tunnel)");
  pconn *c = check_waiting(L, 1);
  if (!c) {
    close(fd);
    sc_xfer_free(x);
    return gone(L);
  }
  /* allocated here: 10,000 idle clients need none */
  c->tun = calloc(1, sizeof(*c->tun));
  if (!c->tun) {
    close(fd);
    sc_xfer_free(x);
    conn_close(c);
    lua_pushnil(L);
    lua_pushliteral(L, "out of memory");
    return 2;
  }
  /* the client's stream stays open but idle (not reading, nothing
   * queued): the tunnel polls a dup of its socket */
  uv_os_fd_t cfd = -1;
  if (uv_fileno((uv_handle_t *)&c->tcp, &cfd) == 0)
    cfd = fcntl(cfd, F_DUPFD_CLOEXEC, 0);
  c->xf = x;
  c->state = C_TUNNEL;
  c->tun->data = c;
  /* the answer first, then what the client sent ahead (a TLS hello) */
  sc_tunnel_end_t e[2] = {
      {cfd, NULL, ESTABLISHED, sizeof(ESTABLISHED) - 1, 0},
      {fd, x ? x->easy : NULL, c->rest, c->rest_len, 0},
  };
  /* no dup (EMFILE): the poll fails, and the tunnel closes the other */
  int rc = sc_tunnel_start(c->tun, c->tcp.loop, e, idle_ms, on_tunnel_end);
  if (rc < 0) {
    conn_close(c);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static psrv *find_server(lua_State *L) {
  uint32_t op = (uint32_t)luaL_checknumber(L, 1);
  for (psrv *s = servers; s; s = s->next)
    if (s->op == op) return s;
  return NULL;
}

int sc_lua_proxyd_close(lua_State *L) {
  psrv *s = find_server(L);
  int drain = lua_toboolean(L, 2);
  if (!s) return 0;
  if (s->lst) {
    uv_close((uv_handle_t *)s->lst, free_handle);
    s->lst = NULL;
  }
  s->draining = 1;
  for (int i = 0; i < nslots; i++) {
    pconn *c = slots[i];
    if (!c || c->srv != s) continue;
    if (!drain || c->state == C_READ || c->state == C_LINGER) conn_close(c);
  }
  if (!drain) {
    for (psrv **pp = &servers; *pp; pp = &(*pp)->next) {
      if (*pp == s) {
        *pp = s->next;
        break;
      }
    }
    for (int i = 0; i < nslots; i++)
      if (slots[i] && slots[i]->srv == s) slots[i]->srv = NULL;
    free(s);
  }
  return 0;
}

int sc_lua_proxyd_count(lua_State *L) {
  psrv *s = find_server(L);
  lua_pushinteger(L, s ? s->nconns : 0);
  return 1;
}
