#include "redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Exported by hiredis 0.14 but not declared in its headers: the half of
 * redisAsyncHandleRead after the read, which read_replies does itself. */
void redisProcessCallbacks(redisAsyncContext *ac);

enum { ST_RESOLVING, ST_CONNECTING, ST_UP, ST_DOWN, ST_CLOSED };

typedef struct cmd {
  sc_redis_reply_cb cb; /* NULL: a handshake step */
  void *ud;
  const char *step;  /* a handshake step's command, for messages */
  uint64_t deadline; /* uv_now ms */
  struct cmd *next;
} cmd;

/* The poll hooks' data (what hiredis calls ev.data). Outlives its context
 * until uv_close's callback: libuv owns the handle until then. */
typedef struct ev {
  uv_poll_t poll;
  redisAsyncContext *ac; /* NULL once hiredis has let go of it */
  int events;  /* what hiredis wants watched */
  int started; /* what the poll handle watches now */
} ev;

typedef struct resolve { /* a name lookup; orphaned (r = NULL) on timeout */
  uv_getaddrinfo_t req;
  sc_redis_t *r;
} resolve;

struct sc_redis {
  uv_loop_t *loop;
  sc_redis_opts_t o;
  redisAsyncContext *ac; /* NULL while down */
  resolve *resolving;
  uv_timer_t timer; /* head command's deadline, or the next reconnect */
  uv_prepare_t flush; /* writes a loop pass's commands before it polls */
  int flushing, handles; /* handles: open ones, freed at 0 */
  int state, handshake_left;
  double backoff;
  uint64_t connect_deadline;
  cmd *head, *tail;
  int pending;         /* commands on the list, handshake steps included */
  redisReader *shadow; /* counts the replies read before hiredis sees them */
  char err[256]; /* why the connection is being torn down */
  sc_redis_state_cb cb;
  void *ud;
};

static void connect_now(sc_redis_t *r);
static void read_replies(ev *e);

/* ---- poll hooks (hiredis' libuv adapter, plus poll errors) ---- */

static void ev_closed(uv_handle_t *h) { free(h->data); }

static void on_poll(uv_poll_t *h, int status, int events) {
  ev *e = h->data;
  if (!e->ac) return;
  if (status < 0) {
    /* a refused connect or a reset: libuv has stopped the handle (the
     * stock adapter returns here, and a connect never ends) */
    e->started = 0;
    events = UV_READABLE; /* a read reports the error */
  }
  if (!(e->ac->c.flags & REDIS_CONNECTED)) {
    /* hiredis ends the connect (SO_ERROR) and sends the handshake */
    redisAsyncHandleWrite(e->ac);
    if (!e->ac || !(e->ac->c.flags & REDIS_CONNECTED)) return;
    events &= ~UV_WRITABLE;
  }
  if (events & UV_READABLE) read_replies(e);
  if (e->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(e->ac);
}

/* uv_poll_start costs two epoll_ctl calls (libuv takes the fd out of
 * epoll and puts it back), so the handle restarts only when the set of
 * events changes: hiredis asks for writes and stops them around every
 * command, four syscalls a round trip if each went through. */
static void ev_update(ev *e, int add, int flag) {
  if (add)
    e->events |= flag;
  else
    e->events &= ~flag;
  if (e->events == e->started) return;
  e->started = e->events;
  if (e->events)
    uv_poll_start(&e->poll, e->events, on_poll);
  else
    uv_poll_stop(&e->poll);
}

static void on_flush(uv_prepare_t *p) {
  sc_redis_t *r = p->data;
  uv_prepare_stop(p);
  if (r->state != ST_UP || !r->ac) return;
  r->flushing = 1;
  redisAsyncHandleWrite(r->ac); /* may drop the context (a write error) */
  r->flushing = 0;
}

static void ev_add_read(void *p) { ev_update(p, 1, UV_READABLE); }
static void ev_del_read(void *p) { ev_update(p, 0, UV_READABLE); }
static void ev_del_write(void *p) { ev_update(p, 0, UV_WRITABLE); }

/* A ready connection's commands are not written one by one on writable
 * events: the flush, a uv_prepare run just before the loop polls, writes
 * the whole pass's commands at once. Only what the socket would not take
 * (and the connect, the handshake) waits for UV_WRITABLE. */
static void ev_add_write(void *p) {
  ev *e = p;
  sc_redis_t *r = e->ac ? e->ac->data : NULL;
  if (r && r->state == ST_UP && !r->flushing) {
    uv_prepare_start(&r->flush, on_flush);
    return;
  }
  ev_update(e, 1, UV_WRITABLE);
}

static void ev_cleanup(void *p) {
  ev *e = p;
  e->ac = NULL;
  uv_close((uv_handle_t *)&e->poll, ev_closed);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop) {
  ev *e = calloc(1, sizeof(*e));
  if (!e) return -1;
  if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) {
    free(e);
    return -1;
  }
  e->poll.data = e;
  e->ac = ac;
  ac->ev.data = e;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  return 0;
}

/* ---- the deadline timer ---- */

static void on_timer(uv_timer_t *t);

/* An idle connection keeps no loop alive (like the metrics server): its
 * handles are referenced only while a command or a connect is under way,
 * so a script whose threads all wait on nothing still ends (or reports
 * a deadlock) instead of sleeping forever on the connection's socket. */
static void hold_loop(sc_redis_t *r, int on) {
  ev *e = r->ac ? r->ac->ev.data : NULL;
  void (*set)(uv_handle_t *) = on ? uv_ref : uv_unref;
  set((uv_handle_t *)&r->timer);
  if (e) set((uv_handle_t *)&e->poll);
}

static void arm(sc_redis_t *r) {
  if (r->state == ST_CLOSED) return;
  hold_loop(r, r->head != NULL || r->state == ST_RESOLVING);
  uint64_t at;
  if (r->state == ST_RESOLVING)
    at = r->connect_deadline;
  else if (r->head)
    at = r->head->deadline;
  else {
    uv_timer_stop(&r->timer);
    return;
  }
  uint64_t now = uv_now(r->loop);
  uv_timer_start(&r->timer, on_timer, at > now ? at - now : 0, 0);
}

static void went_down(sc_redis_t *r);

/* Frees the context; hiredis fails every command on it (reply NULL) and,
 * when it was connected, calls on_disconnect. */
static void drop(sc_redis_t *r, const char *why) {
  if (!r->err[0] && why) snprintf(r->err, sizeof(r->err), "%s", why);
  redisAsyncContext *ac = r->ac;
  if (!ac) return;
  int connected = (ac->c.flags & REDIS_CONNECTED) != 0;
  redisAsyncFree(ac); /* deferred when inside one of its callbacks */
  /* no hiredis callback reports an unconnected context's end */
  if (!connected && r->ac == ac) went_down(r);
}

static void went_down(sc_redis_t *r) {
  r->ac = NULL;
  redisReaderFree(r->shadow); /* and what it holds of a partial reply */
  r->shadow = NULL;
  if (r->state == ST_CLOSED) return;
  r->state = ST_DOWN;
  char why[sizeof(r->err)];
  snprintf(why, sizeof(why), "%s", r->err[0] ? r->err : "connection lost");
  r->cb(r, 0, why, r->ud);
  uint64_t ms = (uint64_t)(r->backoff * 1000.0);
  r->backoff *= 2;
  if (r->backoff > r->o.backoff_max) r->backoff = r->o.backoff_max;
  hold_loop(r, 0); /* whoever waits for the reconnect has a timer of its own */
  uv_timer_start(&r->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t) {
  sc_redis_t *r = t->data;
  if (r->state == ST_DOWN) {
    connect_now(r);
    return;
  }
  char why[128];
  if (r->state == ST_RESOLVING) {
    r->resolving->r = NULL; /* its callback frees it */
    r->resolving = NULL;
    snprintf(r->err, sizeof(r->err), "cannot resolve %s: no answer within %gs",
             r->o.host, r->o.connect_timeout);
    went_down(r);
    return;
  }
  if (r->head && !r->head->cb)
    snprintf(why, sizeof(why), "no connection within %gs",
             r->o.connect_timeout);
  else
    snprintf(why, sizeof(why), "no reply within %gs", r->o.timeout);
  drop(r, why);
}

/* ---- reading: hiredis 0.14 aborts (an assert) on a reply other than an
 * error with no command waiting, so the socket is read here and a reader
 * of our own (hiredis' parser with no reply functions: it builds nothing)
 * counts the replies before hiredis sees them. ---- */

/* +OK, -ERR ..., "bulk", :1, *2 (an array of 2), nil: 40 bytes at most */
static void describe(const redisReply *p, char *out, size_t n) {
  char t[41];
  size_t k = p->str && p->len < 40 ? p->len : p->str ? 40 : 0;
  for (size_t i = 0; i < k; i++) {
    unsigned char ch = (unsigned char)p->str[i];
    t[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  t[k] = '\0';
  int y = p->type;
  const char *more = p->len > k ? "..." : "";
  if (y == REDIS_REPLY_NIL)
    snprintf(out, n, "nil");
  else if (y == REDIS_REPLY_INTEGER)
    snprintf(out, n, ":%lld", p->integer);
  else if (y == REDIS_REPLY_ARRAY)
    snprintf(out, n, "*%zu", p->elements);
  else if (y == REDIS_REPLY_STRING)
    snprintf(out, n, "\"%s%s\"", t, more);
  else
    snprintf(out, n, "%c%s%s", y == REDIS_REPLY_ERROR ? '-' : '+', t, more);
}

/* The message for a reply nobody asked for: hiredis' reader, in step with
 * ours, builds the replies this read completes; the last is the one. */
static void surplus(sc_redis_t *r, redisReader *rd, const char *buf, size_t n) {
  void *rep = NULL;
  if (redisReaderFeed(rd, buf, n) == REDIS_OK)
    for (int i = 0; i <= r->pending; i++) {
      if (rep) freeReplyObject(rep);
      if (redisReaderGetReply(rd, &rep) != REDIS_OK || !rep) break;
    }
  if (!rep) { /* an error the counting reader, validating less, let by */
    drop(r, rd->err ? rd->errstr : "out of step with the server");
    return;
  }
  char what[64];
  describe(rep, what, sizeof(what));
  freeReplyObject(rep);
  snprintf(r->err, sizeof(r->err),
           r->state == ST_UP
               ? "out of step with the server: a reply nobody asked for (%s)"
               : "not Redis (a reply nobody asked for: %s)",
           what);
  drop(r, NULL);
}

/* One read, as redisBufferRead does it (no syscall more than hiredis' own
 * handler, its words for an end), counted, then hiredis' reader and
 * callbacks (which report a protocol error after the replies before it). */
static void read_replies(ev *e) {
  redisAsyncContext *ac = e->ac;
  sc_redis_t *r = ac->data;
  char buf[16 * 1024];
  ssize_t n = read(ac->c.fd, buf, sizeof(buf));
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    drop(r, n == 0 ? "Server closed the connection" : strerror(errno));
    return;
  }
  ev_update(e, 1, UV_READABLE); /* restarts the handle after a poll error */
  if (n < 0) return;
  redisReader *sh = r->shadow;
  int replies = 0;
  void *reply = NULL; /* without reply functions: the reply's type */
  if (redisReaderFeed(sh, buf, (size_t)n) == REDIS_OK)
    while (replies <= r->pending &&
           redisReaderGetReply(sh, &reply) == REDIS_OK && reply)
      replies++;
  /* more than the commands outstanding drops the connection; an error
   * hiredis copes with (it drops it with the error's text: no clients) */
  if (replies > r->pending && reply != (void *)(size_t)REDIS_REPLY_ERROR)
    surplus(r, ac->c.reader, buf, (size_t)n);
  else if (sh->err && sh->err != REDIS_ERR_PROTOCOL)
    drop(r, sh->errstr); /* out of memory */
  else if (redisReaderFeed(ac->c.reader, buf, (size_t)n) != REDIS_OK)
    drop(r, "out of memory");
  else
    redisProcessCallbacks(ac); /* may free ac */
}

/* ---- hiredis callbacks ---- */

static const char *lost_why(sc_redis_t *r, const redisAsyncContext *ac) {
  if (r->err[0]) return r->err;
  if (ac && ac->err && ac->errstr) return ac->errstr;
  return "connection lost";
}

/* AUTH and SELECT answer OK and PING PONG, or an error (a refusal); else
 * not Redis: a server saying +OK to anything and hanging up would pass as
 * ready, and be reconnected to for as long as callers retry. */
static void handshake_reply(sc_redis_t *r, const cmd *c,
                            const redisReply *reply) {
  const char *want = strcmp(c->step, "PING") == 0 ? "PONG" : "OK";
  if (reply->type == REDIS_REPLY_ERROR) {
    snprintf(r->err, sizeof(r->err), "handshake refused: %s", reply->str);
    drop(r, NULL);
  } else if (reply->type != REDIS_REPLY_STATUS || strcmp(reply->str, want)) {
    char what[64];
    describe(reply, what, sizeof(what));
    snprintf(r->err, sizeof(r->err), "not Redis (%s answered %s)", c->step,
             what);
    drop(r, NULL);
  } else if (--r->handshake_left == 0 && r->state == ST_CONNECTING) {
    r->state = ST_UP;
    r->backoff = 0.1;
    r->cb(r, 1, NULL, r->ud);
  }
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata) {
  sc_redis_t *r = ac->data;
  redisReply *reply = reply_;
  cmd *c = privdata;
  /* replies come in command order: c is the head */
  r->head = c->next;
  if (!r->head) r->tail = NULL;
  r->pending--;
  if (!c->cb) {
    if (reply) handshake_reply(r, c, reply);
  } else if (reply) {
    c->cb(r, reply, NULL, c->ud);
  } else {
    c->cb(r, NULL, lost_why(r, ac), c->ud);
  }
  free(c);
  if (r->ac == ac) arm(r);
}

static void on_connect(const redisAsyncContext *ac, int status) {
  sc_redis_t *r = ac->data;
  if (status == REDIS_OK) return; /* ready once the handshake replies */
  if (!r->err[0]) snprintf(r->err, sizeof(r->err), "%s", ac->errstr);
  /* hiredis frees ac right after this (failing the handshake commands,
   * which need nothing): from here on it is not ours */
  went_down(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  sc_redis_t *r = ac->data;
  if (status != REDIS_OK && !r->err[0])
    snprintf(r->err, sizeof(r->err), "%s", ac->errstr);
  went_down(r);
}

/* ---- connecting ---- */

static void enqueue(sc_redis_t *r, cmd *c) {
  if (r->tail)
    r->tail->next = c;
  else
    r->head = c;
  r->tail = c;
  r->pending++;
}

/* Queues a handshake step: 0, or -1 (out of memory: dropped). */
static int step(sc_redis_t *r, int n, const char **argv) {
  size_t lens[3];
  for (int i = 0; i < n; i++) lens[i] = strlen(argv[i]);
  cmd *c = calloc(1, sizeof(*c));
  if (!c ||
      redisAsyncCommandArgv(r->ac, on_reply, c, n, argv, lens) != REDIS_OK) {
    free(c);
    drop(r, "out of memory");
    return -1;
  }
  c->deadline = r->connect_deadline;
  c->step = argv[0];
  r->handshake_left++;
  enqueue(r, c);
  return 0;
}

static void start_context(sc_redis_t *r, const char *ip) {
  r->shadow = redisReaderCreateWithFunctions(NULL);
  redisAsyncContext *ac = r->shadow ? redisAsyncConnect(ip, r->o.port) : NULL;
  const char *fail = !ac ? "out of memory" : ac->err ? ac->errstr : NULL;
  if (!fail) {
    ac->data = r;
    if (ev_attach(ac, r->loop) < 0) fail = "cannot watch the socket";
  }
  if (fail) {
    snprintf(r->err, sizeof(r->err), "%s", fail);
    if (ac) redisAsyncFree(ac);
    went_down(r);
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  r->ac = ac;
  r->state = ST_CONNECTING;
  /* the handshake: AUTH, SELECT, and a PING that only Redis answers PONG */
  char db[16];
  snprintf(db, sizeof(db), "%d", r->o.db);
  const char *auth[3] = {"AUTH", r->o.user ? r->o.user : r->o.password,
                         r->o.password};
  const char *select[2] = {"SELECT", db}, *ping[1] = {"PING"};
  r->handshake_left = 0;
  if ((r->o.password && step(r, r->o.user ? 3 : 2, auth) < 0) ||
      (r->o.db && step(r, 2, select) < 0) || step(r, 1, ping) < 0)
    return;
  arm(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  resolve *rs = req->data;
  sc_redis_t *r = rs->r;
  free(rs);
  if (!r) {
    uv_freeaddrinfo(res);
    return;
  }
  r->resolving = NULL;
  char ip[64] = "";
  if (status == 0 && res) {
    if (res->ai_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof(ip));
    else
      uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof(ip));
  }
  uv_freeaddrinfo(res);
  if (!ip[0]) {
    snprintf(r->err, sizeof(r->err), "cannot resolve %s: %s", r->o.host,
             status < 0 ? uv_strerror(status) : "no address");
    went_down(r);
    return;
  }
  start_context(r, ip);
}

static int is_numeric(const char *h) {
  unsigned char buf[16];
  return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/* hiredis resolves names with a blocking getaddrinfo: names go through
 * libuv's thread pool first */
static void connect_now(sc_redis_t *r) {
  r->err[0] = '\0';
  uv_update_time(r->loop);
  r->connect_deadline =
      uv_now(r->loop) + (uint64_t)(r->o.connect_timeout * 1000.0);
  if (is_numeric(r->o.host)) {
    start_context(r, r->o.host);
    return;
  }
  resolve *rs = calloc(1, sizeof(*rs));
  if (!rs) {
    snprintf(r->err, sizeof(r->err), "out of memory");
    went_down(r);
    return;
  }
  rs->r = r;
  rs->req.data = rs;
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_socktype = SOCK_STREAM;
  int rc =
      uv_getaddrinfo(r->loop, &rs->req, on_resolved, r->o.host, NULL, &hints);
  if (rc < 0) {
    free(rs);
    snprintf(r->err, sizeof(r->err), "cannot resolve %s: %s", r->o.host,
             uv_strerror(rc));
    went_down(r);
    return;
  }
  r->resolving = rs;
  r->state = ST_RESOLVING;
  arm(r);
}

/* ---- the interface ---- */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void free_opts(sc_redis_opts_t *o) {
  free((char *)o->host);
  free((char *)o->password);
  free((char *)o->user);
}

int sc_redis_open(uv_loop_t *loop, const sc_redis_opts_t *o,
                  sc_redis_state_cb cb, void *ud, sc_redis_t **out) {
  sc_redis_t *r = calloc(1, sizeof(*r));
  if (!r) return UV_ENOMEM;
  r->loop = loop;
  r->o = *o;
  r->o.host = strdup(o->host);
  r->o.password = dup_or_null(o->password);
  r->o.user = dup_or_null(o->user);
  if (!r->o.host || (o->password && !r->o.password) ||
      (o->user && !r->o.user)) {
    free_opts(&r->o);
    free(r);
    return UV_ENOMEM;
  }
  if (r->o.backoff_max < 0.1) r->o.backoff_max = 0.1;
  r->backoff = 0.1;
  r->cb = cb;
  r->ud = ud;
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  /* never holds the loop: a command does (its deadline timer) */
  uv_prepare_init(loop, &r->flush);
  uv_unref((uv_handle_t *)&r->flush);
  r->flush.data = r;
  r->handles = 2;
  *out = r;
  connect_now(r);
  return 0;
}

int sc_redis_command(sc_redis_t *r, int argc, const char **argv,
                     const size_t *lens, double extra, sc_redis_reply_cb cb,
                     void *ud) {
  if (r->state != ST_UP || !r->ac) return UV_ENOTCONN;
  cmd *c = calloc(1, sizeof(*c));
  if (!c) return UV_ENOMEM;
  c->cb = cb;
  c->ud = ud;
  uv_update_time(r->loop);
  c->deadline = uv_now(r->loop) +
                (uint64_t)((r->o.timeout + (extra > 0 ? extra : 0)) * 1000.0);
  /* a command behind a blocking one cannot answer before it */
  if (r->tail && r->tail->deadline > c->deadline)
    c->deadline = r->tail->deadline;
  if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, lens) != REDIS_OK) {
    free(c);
    return UV_ENOTCONN;
  }
  int was_empty = r->head == NULL;
  enqueue(r, c);
  if (was_empty) arm(r);
  return 0;
}

int sc_redis_is_up(const sc_redis_t *r) { return r->state == ST_UP; }

static void handle_closed(uv_handle_t *h) {
  sc_redis_t *r = h->data;
  if (--r->handles > 0) return;
  redisReaderFree(r->shadow); /* a context closed before it connected */
  free_opts(&r->o);
  free(r);
}

void sc_redis_close(sc_redis_t *r) {
  if (r->state == ST_CLOSED) return;
  r->state = ST_CLOSED;
  if (r->resolving) r->resolving->r = NULL;
  snprintf(r->err, sizeof(r->err), "connection closed");
  if (r->ac) redisAsyncFree(r->ac);
  r->ac = NULL;
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->timer, handle_closed);
  uv_close((uv_handle_t *)&r->flush, handle_closed);
}
