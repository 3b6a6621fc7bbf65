/* The CONNECT relay (src/net/tunnel.c) alone, between two socketpairs:
 * megabytes both ways at once through splice and through the buffer, a
 * reader that pauses (backpressure), what each end gets first (`pre`),
 * the half-close passed on, a peer that vanishes mid-stream, and the idle
 * bound (a silent tunnel ends; one that trickles stays open).
 *
 * Prints "N passed, N failed" (tests) and exits 1 on any failure. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/net/tunnel.h"
#include "check.h"

#define UP (8u << 20)   /* client to server */
#define DOWN (4u << 20) /* server to client */

typedef struct side {
  int fd;
  uv_poll_t poll;
  uv_timer_t pause;
  const char *out; /* sent, then a half-close */
  size_t out_len, out_off;
  const char *want; /* expected, in order */
  size_t want_len, got;
  int bad, eof, shut, closed, paused, pause_after, vanish_after, events;
} side;

typedef struct run {
  sc_tunnel_t t;
  side cli, srv;
  int ends, status, closed;
} run;

static char *fill(size_t n, unsigned seed) {
  char *p = malloc(n);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = (char)(seed >> 16);
  }
  return p;
}

static void side_watch(side *s);
static void on_pause_done(uv_timer_t *t);

static void on_side(uv_poll_t *h, int status, int events) {
  side *s = h->data;
  if (status < 0) { /* libuv stopped the handle (POLLERR): a reset peer */
    s->events = 0;
    s->eof = 1;
    s->out_off = s->out_len;
    events = 0;
  }
  if ((events & UV_WRITABLE) && s->out_off < s->out_len) {
    ssize_t w =
        send(s->fd, s->out + s->out_off, s->out_len - s->out_off, MSG_NOSIGNAL);
    if (w > 0)
      s->out_off += (size_t)w;
    else if (errno != EAGAIN)
      s->out_off = s->out_len; /* peer gone */
  }
  if (s->out_off == s->out_len && !s->shut) {
    shutdown(s->fd, SHUT_WR);
    s->shut = 1;
  }
  if ((events & UV_READABLE) && !s->eof && !s->paused) {
    char buf[65536];
    ssize_t r = read(s->fd, buf, sizeof buf);
    if (r > 0) {
      if (s->got + (size_t)r > s->want_len ||
          memcmp(buf, s->want + s->got, (size_t)r) != 0)
        s->bad = 1;
      s->got += (size_t)r;
      if (s->pause_after && s->got >= (size_t)s->pause_after) {
        s->pause_after = 0;
        s->paused = 1;
        uv_timer_start(&s->pause, on_pause_done, 50, 0);
      }
      if (s->vanish_after && s->got >= (size_t)s->vanish_after) {
        s->eof = s->shut = 1; /* an abrupt close: nothing more either way */
        s->out_off = s->out_len;
      }
    } else if (r == 0 || errno != EAGAIN) {
      s->eof = 1;
    }
  }
  side_watch(s);
}

static void side_watch(side *s) {
  int ev = (!s->eof && !s->paused ? UV_READABLE : 0) |
           (s->out_off < s->out_len ? UV_WRITABLE : 0);
  if (!ev && !s->paused && !s->closed) {
    s->closed = 1;
    uv_close((uv_handle_t *)&s->poll, NULL);
    uv_close((uv_handle_t *)&s->pause, NULL);
    close(s->fd);
    return;
  }
  if (!s->closed && ev != s->events) {
    if (ev)
      uv_poll_start(&s->poll, ev, on_side);
    else
      uv_poll_stop(&s->poll);
    s->events = ev;
  }
}

static void on_pause_done(uv_timer_t *t) {
  side *s = t->data;
  s->paused = 0;
  side_watch(s);
}

static void on_closed(sc_tunnel_t *t) { ((run *)t->data)->closed++; }

static void on_end(sc_tunnel_t *t, int status) {
  run *r = t->data;
  r->ends++;
  r->status = status;
  sc_tunnel_close(t, on_closed);
}

static void side_init(uv_loop_t *loop, side *s, int fd, const char *out,
                      size_t out_len, const char *want, size_t want_len) {
  memset(s, 0, sizeof(*s));
  s->fd = fd;
  s->out = out;
  s->out_len = out_len;
  s->want = want;
  s->want_len = want_len;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  uv_poll_init(loop, &s->poll, fd);
  s->poll.data = s;
  uv_timer_init(loop, &s->pause);
  s->pause.data = s;
}

/* copy: the buffer path; vanish: the server closes after that many bytes */
static void relay(int copy, size_t vanish) {
  uv_loop_t *loop = uv_default_loop();
  int a[2], b[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0, "socketpair");
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0, "socketpair");
  static const char HELLO[] = "HTTP/1.1 200 Connection established\r\n\r\n";
  static const char EARLY[] = "sent with the CONNECT";
  char *up = fill(UP, 1), *down = fill(DOWN, 2);
  /* what each side expects: the tunnel's pre first */
  size_t hl = sizeof(HELLO) - 1, el = sizeof(EARLY) - 1;
  char *cli_want = malloc(hl + DOWN), *srv_want = malloc(el + UP);
  memcpy(cli_want, HELLO, hl);
  memcpy(cli_want + hl, down, DOWN);
  memcpy(srv_want, EARLY, el);
  memcpy(srv_want + el, up, UP);
  run r;
  memset(&r, 0, sizeof(r));
  side_init(loop, &r.cli, a[0], up, UP, cli_want, hl + DOWN);
  side_init(loop, &r.srv, b[1], down, DOWN, srv_want, el + UP);
  r.srv.pause_after = 1 << 20;
  r.srv.vanish_after = (int)vanish;
  r.t.data = &r;
  sc_tunnel_end_t e[2] = {{a[1], NULL, HELLO, hl, copy},
                          {b[0], NULL, EARLY, el, copy}};
  /* (an idle bound that a busy tunnel never meets: its check runs) */
  CHECK(sc_tunnel_start(&r.t, loop, e, 2000, on_end) == 0, "start");
  CHECK(r.t.splice == !copy, "splice %d with copy %d", r.t.splice, copy);
  side_watch(&r.cli);
  side_watch(&r.srv);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK(r.ends == 1, "the end callback ran %d times", r.ends);
  CHECK(r.closed == 1, "closed ran %d times", r.closed);
  if (!vanish) {
    CHECK(r.status == 0, "status %d (%s)", r.status, uv_strerror(r.status));
    CHECK(!r.cli.bad && r.cli.got == hl + DOWN, "client got %zu bytes, bad %d",
          r.cli.got, r.cli.bad);
    CHECK(!r.srv.bad && r.srv.got == el + UP, "server got %zu bytes, bad %d",
          r.srv.got, r.srv.bad);
    CHECK(r.t.bytes[0] == UP && r.t.bytes[1] == DOWN, "relayed %llu / %llu",
          (unsigned long long)r.t.bytes[0], (unsigned long long)r.t.bytes[1]);
  } else {
    CHECK(!r.cli.bad && !r.srv.bad, "what did arrive is intact");
    CHECK(r.cli.eof && r.cli.closed, "the client saw the end");
  }
  free(up);
  free(down);
  free(cli_want);
  free(srv_want);
}

/* A client that sends a byte every TRICKLE_MS, `trickles` times, then
 * nothing: the tunnel (idle bound IDLE_MS) must stay open while bytes
 * move and end with UV_ETIMEDOUT once they stop. */
#define IDLE_MS 100
#define TRICKLE_MS 30
typedef struct quiet {
  sc_tunnel_t t;
  uv_timer_t tick;
  int fd, left, ends, status, closed;
  uint64_t t0, ended_at;
} quiet;

static void on_quiet_closed(sc_tunnel_t *t) { ((quiet *)t->data)->closed++; }

static void on_quiet_end(sc_tunnel_t *t, int status) {
  quiet *q = t->data;
  q->ends++;
  q->status = status;
  q->ended_at = uv_now(uv_default_loop());
  uv_timer_stop(&q->tick);
  uv_close((uv_handle_t *)&q->tick, NULL);
  sc_tunnel_close(t, on_quiet_closed);
}

static void on_tick(uv_timer_t *h) {
  quiet *q = h->data;
  if (q->left-- > 0)
    CHECK(send(q->fd, "x", 1, MSG_NOSIGNAL) == 1, "trickle send");
}

static void idle_after(int trickles) {
  uv_loop_t *loop = uv_default_loop();
  int a[2], b[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0, "socketpair");
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0, "socketpair");
  quiet q;
  memset(&q, 0, sizeof(q));
  q.t.data = &q;
  q.fd = a[0];
  q.left = trickles;
  uv_update_time(loop);
  q.t0 = uv_now(loop);
  uv_timer_init(loop, &q.tick);
  q.tick.data = &q;
  uv_timer_start(&q.tick, on_tick, TRICKLE_MS, TRICKLE_MS);
  sc_tunnel_end_t e[2] = {{a[1], NULL, NULL, 0, 0}, {b[0], NULL, NULL, 0, 0}};
  CHECK(sc_tunnel_start(&q.t, loop, e, IDLE_MS, on_quiet_end) == 0, "start");
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK(q.ends == 1 && q.closed == 1, "ended %d, closed %d", q.ends, q.closed);
  CHECK(q.status == UV_ETIMEDOUT, "status %d (%s)", q.status,
        uv_strerror(q.status));
  CHECK(q.t.bytes[0] == (uint64_t)trickles, "relayed %llu of %d",
        (unsigned long long)q.t.bytes[0], trickles);
  /* silence began with the last trickle; the check runs every IDLE_MS/4 */
  uint64_t quiet_from = (uint64_t)trickles * TRICKLE_MS,
           took = q.ended_at - q.t0;
  CHECK(took >= quiet_from + IDLE_MS, "ended after %llu ms, silent from %llu",
        (unsigned long long)took, (unsigned long long)quiet_from);
  /* (generous: a loaded sanitizer run delays timers, not this bound) */
  CHECK(took < quiet_from + 30 * IDLE_MS, "ended only after %llu ms",
        (unsigned long long)took);
  char c;
  CHECK(recv(a[0], &c, 1, 0) == 0, "the client's end is closed");
  int got = 0;
  while (recv(b[1], &c, 1, MSG_DONTWAIT) == 1) got++;
  CHECK(got == trickles, "the server end got %d of %d bytes", got, trickles);
  close(a[0]);
  close(b[1]);
}

static void silent_tunnel_times_out(void) { idle_after(0); }
static void trickling_tunnel_stays_open(void) { idle_after(10); }

static void splice_both_ways(void) { relay(0, 0); }
static void buffer_both_ways(void) { relay(1, 0); }
static void splice_peer_vanishes(void) { relay(0, 3u << 20); }
static void buffer_peer_vanishes(void) { relay(1, 3u << 20); }

int main(void) {
  /* splice(2) into a socket whose peer is gone raises SIGPIPE: the
   * tunnel's owner keeps it off (proxyd blocks it), as this test does */
  signal(SIGPIPE, SIG_IGN);
  RUN(splice_both_ways);
  RUN(buffer_both_ways);
  RUN(splice_peer_vanishes);
  RUN(buffer_peer_vanishes);
  RUN(silent_tunnel_times_out);
  RUN(trickling_tunnel_stays_open);
  return CHECK_DONE();
}
