/* A minimal HTTP/1.1 server on the process loop, for the Prometheus
 * endpoint (lua/scatter/metrics.lua). One request per connection: C reads
 * the request head, queues it as a result of the server's op (ops.h) and
 * waits; Lua renders the answer and calls core.httpd_respond, which writes
 * it and closes the connection. C never calls Lua.
 *
 *   core.httpd_listen(host, port) -> op id, bound port | nil, err
 *       each request: op result {status = connection id,
 *                                body = "METHOD TARGET"}
 *   core.httpd_respond(conn, status, content_type, body) -> true | nil, err
 *   core.httpd_close(op id)
 *
 * Every handle is unref'd: a metrics endpoint must never keep a finished
 * crawl alive, nor can a silent client (idle connections are dropped after
 * IDLE_MS). Malformed or oversized requests are answered here (400/431). */
#include <arpa/inet.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/loop.h"
#include "ops.h"

#include "funcs.h"

#define HEAD_MAX 8192
#define IDLE_MS 10000
#define MAX_CONNS 64

typedef struct server server;

typedef struct conn {
  uv_tcp_t tcp;
  uv_timer_t idle;
  server *srv; /* NULL once its server is closed */
  int id;
  int closing, handles_open;
  int waiting; /* the request was handed to Lua */
  size_t len;
  char buf[HEAD_MAX];
  struct conn *prev, *next;
} conn;

struct server {
  uv_tcp_t tcp;
  uint32_t op;
  int nconns;
  conn *conns;
  server *next;
};

static server *servers;
static int next_conn_id = 1;

static void conn_free_cb(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->handles_open == 0) free(c);
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->srv) {
    if (c->prev) c->prev->next = c->next;
    else c->srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->srv->nconns--;
    c->srv = NULL;
  }
  uv_timer_stop(&c->idle);
  uv_close((uv_handle_t *)&c->idle, conn_free_cb);
  uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
}

static conn *conn_find(int id) {
  for (server *s = servers; s; s = s->next)
    for (conn *c = s->conns; c; c = c->next)
      if (c->id == id) return c;
  return NULL;
}

typedef struct wreq {
  uv_write_t w;
  conn *c;
  char data[];
} wreq;

static void on_written(uv_write_t *w, int status) {
  (void)status;
  wreq *r = (wreq *)w;
  conn_close(r->c);
  free(r);
}

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  default: return "Unknown";
  }
}

/* Writes the whole response, then closes. Returns < 0 if it cannot. */
static int conn_reply(conn *c, int status, const char *ctype, const char *body,
                      size_t blen) {
  char head[512];
  int hl = snprintf(head, sizeof(head),
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    status, reason(status), ctype, blen);
  if (hl < 0 || (size_t)hl >= sizeof(head)) return UV_EINVAL;
  wreq *r = malloc(sizeof(*r) + (size_t)hl + blen);
  if (!r) return UV_ENOMEM;
  r->c = c;
  memcpy(r->data, head, (size_t)hl);
  if (blen) memcpy(r->data + hl, body, blen);
  uv_buf_t b = uv_buf_init(r->data, (unsigned)((size_t)hl + blen));
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_stop(&c->idle);
  int rc = uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
  if (rc < 0) free(r);
  return rc;
}

static void reply_and_close(conn *c, int status, const char *msg) {
  if (conn_reply(c, status, "text/plain; charset=utf-8", msg, strlen(msg)) < 0)
    conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  conn *c = h->data;
  (void)hint;
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(HEAD_MAX - c->len));
}

/* "METHOD SP TARGET SP HTTP/1.x" -> "METHOD TARGET" in out. */
static int parse_request_line(const char *p, size_t n, char *out,
                              size_t cap) {
  const char *e = memchr(p, '\r', n);
  if (!e) e = memchr(p, '\n', n);
  if (!e) return -1;
  const char *sp1 = memchr(p, ' ', (size_t)(e - p));
  if (!sp1 || sp1 == p) return -1;
  const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(e - sp1 - 1));
  if (!sp2 || sp2 == sp1 + 1) return -1;
  if ((size_t)(e - sp2 - 1) < 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
    return -1;
  for (const char *q = p; q < sp1; q++)
    if (*q < 'A' || *q > 'Z') return -1;
  size_t len = (size_t)(sp2 - p);
  if (len >= cap) return -1;
  memcpy(out, p, len);
  out[len] = '\0';
  return 0;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn *c = st->data;
  (void)buf;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)nread;
  const char *end = NULL;
  for (size_t i = 3; i < c->len && !end; i++)
    if (memcmp(c->buf + i - 3, "\r\n\r\n", 4) == 0) end = c->buf + i;
  if (!end) {
    for (size_t i = 1; i < c->len && !end; i++)
      if (c->buf[i - 1] == '\n' && c->buf[i] == '\n') end = c->buf + i;
  }
  if (!end) {
    if (c->len == HEAD_MAX) reply_and_close(c, 431, "request head too large\n");
    return;
  }
  char line[HEAD_MAX];
  if (parse_request_line(c->buf, c->len, line, sizeof(line)) < 0) {
    reply_and_close(c, 400, "bad request\n");
    return;
  }
  uv_read_stop(st);
  c->waiting = 1;
  sc_ops_done(c->srv->op, c->id, line, strlen(line), NULL);
}

static void on_idle(uv_timer_t *t) { conn_close(t->data); }

static void on_connection(uv_stream_t *st, int status) {
  server *s = st->data;
  if (status < 0) return;
  conn *c = calloc(1, sizeof(*c));
  if (!c) return;
  uv_loop_t *loop = st->loop;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->idle);
  c->tcp.data = c->idle.data = c;
  c->handles_open = 2;
  uv_unref((uv_handle_t *)&c->tcp);
  uv_unref((uv_handle_t *)&c->idle);
  if (uv_accept(st, (uv_stream_t *)&c->tcp) < 0) {
    c->closing = 1;
    uv_close((uv_handle_t *)&c->idle, conn_free_cb);
    uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
    return;
  }
  c->srv = s;
  c->id = next_conn_id++;
  if (next_conn_id <= 0) next_conn_id = 1;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  if (s->nconns > MAX_CONNS) {
    reply_and_close(c, 503, "too many connections\n");
    return;
  }
  uv_timer_start(&c->idle, on_idle, IDLE_MS, 0);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
    conn_close(c);
}

static void server_free_cb(uv_handle_t *h) { free(h->data); }

static void server_close(server *s) {
  for (server **pp = &servers; *pp; pp = &(*pp)->next) {
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  }
  while (s->conns) conn_close(s->conns);
  uv_close((uv_handle_t *)&s->tcp, server_free_cb);
}

int sc_lua_httpd_listen(lua_State *L) {
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
  server *s = calloc(1, sizeof(*s));
  if (!s) return luaL_error(L, "scatter: out of memory");
  uv_tcp_init(sc_loop_uv(loop), &s->tcp);
  s->tcp.data = s;
  int rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->tcp, 64, on_connection);
  if (rc < 0) {
    uv_close((uv_handle_t *)&s->tcp, server_free_cb);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  uv_unref((uv_handle_t *)&s->tcp);
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  int bport = port;
  if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &blen) == 0)
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

int sc_lua_httpd_respond(lua_State *L) {
  int id = (int)luaL_checkinteger(L, 1);
  int status = (int)luaL_checkinteger(L, 2);
  const char *ctype = luaL_checkstring(L, 3);
  size_t blen;
  const char *body = luaL_checklstring(L, 4, &blen);
  luaL_argcheck(L, status >= 100 && status <= 599, 2, "not an HTTP status");
  luaL_argcheck(L, !strpbrk(ctype, "\r\n"), 3, "contains CR or LF");
  conn *c = conn_find(id);
  if (!c || !c->waiting) {
    lua_pushnil(L);
    lua_pushliteral(L, "no such connection (closed by the client?)");
    return 2;
  }
  c->waiting = 0;
  int rc = conn_reply(c, status, ctype, body, blen);
  if (rc < 0) {
    conn_close(c);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

int sc_lua_httpd_close(lua_State *L) {
  uint32_t op = (uint32_t)luaL_checknumber(L, 1);
  for (server *s = servers; s; s = s->next) {
    if (s->op == op) {
      server_close(s);
      break;
    }
  }
  return 0;
}

