/* _GNU_SOURCE (the build's) gives splice, pipe2 and F_SETPIPE_SZ */
#include "tunnel.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A direction that moved bytes this many times in a row lets the loop
 * run (other clients, the other direction) before it goes on. */
#define TURNS 16
/* Each wakeup costs serve ~35 us (a context switch, epoll, two splices)
 * and a bulk sender delivers 64 KiB at a time: once reads come that big,
 * the socket's SO_RCVLOWAT asks the kernel to wake us per LOWAT instead,
 * and a TAIL_MS timer after each read picks up the rest of a burst that
 * stays below it. Reads under SMALL (interactive traffic) put it back. */
#define LOWAT (256 * 1024)
#define BULK (32 * 1024)
#define SMALL (16 * 1024)
#define TAIL_MS 1

enum { AGAIN = -1000000 };

static void end(sc_tunnel_t *t, int status);
static void watch(sc_tunnel_t *t);

static int uv_err(int e) { return e ? -e : UV_EIO; }

/* ---- one direction's reads and writes: > 0 bytes, 0 EOF, AGAIN, < 0 ---- */

static ssize_t curl_out(CURL *e, const char *p, size_t n) {
  size_t w = 0;
  CURLcode rc = curl_easy_send(e, p, n, &w);
  if (rc == CURLE_AGAIN) return AGAIN;
  if (rc != CURLE_OK) return UV_EPIPE;
  return (ssize_t)w;
}

static ssize_t fd_out(int fd, const char *p, size_t n) {
  ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
  if (w >= 0) return w;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return AGAIN;
  return uv_err(errno);
}

/* Writes from p; keeps a curl send that must be repeated identically
 * (OpenSSL's rule for SSL_write after WANT_WRITE). */
static ssize_t send_from(sc_tunnel_t *t, sc_tunnel_dir_t *d, const char *p,
                         size_t n) {
  CURL *e = t->easy[d->to];
  if (!e) return fd_out(t->fd[d->to], p, n);
  if (d->again) n = d->again;
  ssize_t w = curl_out(e, p, n);
  d->again = w == AGAIN ? n : 0;
  return w;
}

static size_t pending(const sc_tunnel_dir_t *d) {
  return (d->pre_len - d->pre_off) + d->inpipe + (d->len - d->off);
}

static ssize_t out(sc_tunnel_t *t, sc_tunnel_dir_t *d) {
  if (d->pre_off < d->pre_len) {
    ssize_t w = send_from(t, d, d->pre + d->pre_off, d->pre_len - d->pre_off);
    if (w > 0 && (d->pre_off += (size_t)w) == d->pre_len) {
      free(d->pre);
      d->pre = NULL;
      d->pre_off = d->pre_len = 0;
    }
    return w;
  }
#ifdef __linux__
  if (d->pipe[0] >= 0) {
    ssize_t w = splice(d->pipe[0], NULL, t->fd[d->to], NULL, d->inpipe,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (w < 0) return errno == EAGAIN || errno == EINTR ? AGAIN : uv_err(errno);
    d->inpipe -= (size_t)w;
    return w;
  }
#endif
  ssize_t w = send_from(t, d, d->buf + d->off, d->len - d->off);
  if (w > 0 && (d->off += (size_t)w) == d->len) d->off = d->len = 0;
  return w;
}

static size_t room(sc_tunnel_dir_t *d) {
  if (d->pipe[0] >= 0) return d->inpipe ? 0 : SC_TUNNEL_PIPE;
  if (d->len == SC_TUNNEL_BUF && d->off && !d->again) {
    memmove(d->buf, d->buf + d->off, d->len - d->off);
    d->len -= d->off;
    d->off = 0;
  }
  return SC_TUNNEL_BUF - d->len;
}

static ssize_t in(sc_tunnel_t *t, sc_tunnel_dir_t *d, size_t n) {
  int fd = t->fd[d->from];
  CURL *e = t->easy[d->from];
  ssize_t r;
#ifdef __linux__
  if (d->pipe[0] >= 0) {
    r = splice(fd, NULL, d->pipe[1], NULL, n,
               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r > 0) d->inpipe += (size_t)r;
  } else
#endif
      if (e) {
    size_t got = 0;
    CURLcode rc = curl_easy_recv(e, d->buf + d->len, n, &got);
    if (rc == CURLE_AGAIN) return AGAIN;
    /* the proxy's TLS ended without close_notify: the peer is gone */
    if (rc != CURLE_OK) return 0;
    r = (ssize_t)got;
  } else {
    r = read(fd, d->buf + d->len, n);
  }
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return AGAIN;
    return uv_err(errno);
  }
  if (d->pipe[0] < 0) d->len += (size_t)r;
  return r;
}

static void set_lowat(sc_tunnel_t *t, sc_tunnel_dir_t *d, int on) {
  int v = on ? LOWAT : 1;
  if (setsockopt(t->fd[d->from], SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) == 0)
    d->lowat = on;
}

static void on_tail(uv_timer_t *h);

/* After a pump that read `got` bytes from a plain socket. Only the tail
 * timer's pump says a burst is over: any other may have come for the
 * other side's readiness and found less than a wakeup's worth. */
static void pace(sc_tunnel_t *t, sc_tunnel_dir_t *d, size_t got, int tail) {
  if (t->easy[d->from] || t->ntimers < 2 || d->eof) return;
  if (!d->lowat && got >= BULK)
    set_lowat(t, d, 1);
  else if (d->lowat && (got ? got < SMALL : tail))
    set_lowat(t, d, 0);
  if (d->lowat)
    uv_timer_start(&t->tail[d == &t->d[0] ? 0 : 1], on_tail, TAIL_MS, 0);
}

/* Moves what it can one way; then says which readiness it waits for. */
static void pump_as(sc_tunnel_t *t, sc_tunnel_dir_t *d, int tail) {
  int rd_again = 0, wr_again = 0, turns = 0, tried = 0;
  size_t got = 0;
  while (!t->ended && turns < TURNS) {
    int moved = 0;
    if (pending(d) && !wr_again) {
      ssize_t w = out(t, d);
      if (w == AGAIN)
        wr_again = 1;
      else if (w < 0) {
        end(t, (int)w);
        return;
      } else
        moved = 1;
    }
    size_t n;
    /* while the other side is full, reading on would only fill the pipe
     * or the buffer: wait for it to drain */
    if (!d->eof && !wr_again && !rd_again && (n = room(d)) > 0) {
      ssize_t r = in(t, d, n);
      tried = 1;
      if (r == AGAIN) {
        rd_again = 1;
      } else if (r < 0) {
        end(t, (int)r);
        return;
      } else {
        if (r == 0) d->eof = 1;
        t->bytes[d == &t->d[0] ? 0 : 1] += (uint64_t)r;
        moved = 1;
        got += (size_t)r;
        if (r > 0) pace(t, d, (size_t)r, tail);
      }
    }
    if (!moved) break;
    turns++;
  }
  if (t->ended) return;
  if (tried && !got) pace(t, d, 0, tail);
  if (d->eof && !pending(d) && !d->shut) {
    d->shut = 1;
    /* a peer gone before our shutdown reached it is an end, not an error */
    if (shutdown(t->fd[d->to], SHUT_WR) < 0 && errno != ENOTCONN) {
      end(t, uv_err(errno));
      return;
    }
    if (t->d[0].shut && t->d[1].shut) {
      end(t, 0);
      return;
    }
  }
  /* after TURNS, a writable `to` brings it back at once: a curl end may
   * hold decrypted bytes that no readiness of the socket announces */
  d->want_w = pending(d) > 0 || turns == TURNS;
  d->want_r = !d->eof && !d->want_w;
}

static void pump(sc_tunnel_t *t, sc_tunnel_dir_t *d) { pump_as(t, d, 0); }

static void on_tail(uv_timer_t *h) {
  sc_tunnel_t *t = h->data;
  if (t->ended) return;
  pump_as(t, &t->d[h == &t->tail[0] ? 0 : 1], 1);
  if (!t->ended) watch(t);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sc_tunnel_t *t = h->data;
  int i = h == &t->poll[0] ? 0 : 1;
  if (t->ended) return;
  if (status < 0) {
    end(t, status);
    return;
  }
  if (events & UV_READABLE) pump(t, &t->d[i]);
  if (events & UV_WRITABLE) pump(t, &t->d[1 - i]);
  if (!t->ended) watch(t);
}

/* End i waits to read for d[i] and to write for d[1 - i]. */
static void watch(sc_tunnel_t *t) {
  for (int i = 0; i < 2; i++) {
    int ev = (t->d[i].want_r ? UV_READABLE : 0) |
             (t->d[1 - i].want_w ? UV_WRITABLE : 0);
    if (ev == t->events[i]) continue;
    int rc = ev ? uv_poll_start(&t->poll[i], ev, on_poll)
                : uv_poll_stop(&t->poll[i]);
    if (rc < 0) {
      end(t, rc);
      return;
    }
    t->events[i] = ev;
  }
}

/* A check every quarter of idle_ms (not a timer restarted per read: a
 * bulk tunnel reads thousands of times a second), so a silent tunnel ends
 * between idle_ms and 1.25 x idle_ms after its last byte. */
static void on_idle(uv_timer_t *h) {
  sc_tunnel_t *t = h->data;
  uint64_t now = uv_now(h->loop), moved = t->bytes[0] + t->bytes[1];
  if (moved != t->seen) {
    t->seen = moved;
    t->quiet_since = now;
  } else if (now - t->quiet_since >= t->idle_ms) {
    end(t, UV_ETIMEDOUT);
  }
}

static void end(sc_tunnel_t *t, int status) {
  if (t->ended) return;
  t->ended = 1;
  for (int i = 0; i < t->npolls; i++) uv_poll_stop(&t->poll[i]);
  for (int i = 0; i < t->ntimers; i++) uv_timer_stop(&t->tail[i]);
  if (t->idle_on) uv_timer_stop(&t->idle);
  if (t->started) t->cb(t, status);
}

static int open_pipe(sc_tunnel_dir_t *d) {
#ifdef __linux__
  if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
    d->pipe[0] = d->pipe[1] = -1;
    return -1;
  }
  /* fewer, larger splices; a user over its pipe quota keeps the default */
  (void)fcntl(d->pipe[1], F_SETPIPE_SZ, SC_TUNNEL_PIPE);
  return 0;
#else
  (void)d;
  return -1;
#endif
}

int sc_tunnel_start(sc_tunnel_t *t, uv_loop_t *loop, const sc_tunnel_end_t e[2],
                    uint64_t idle_ms, sc_tunnel_cb cb) {
  void *data = t->data;
  memset(t, 0, sizeof(*t));
  t->data = data;
  t->cb = cb;
  t->idle_ms = idle_ms;
  for (int i = 0; i < 2; i++) {
    t->fd[i] = e[i].fd;
    t->easy[i] = e[i].easy;
    sc_tunnel_dir_t *d = &t->d[i];
    d->from = i;
    d->to = 1 - i;
    d->pipe[0] = d->pipe[1] = -1;
    /* every read and write here must return rather than wait */
    int fl = e[i].fd >= 0 ? fcntl(e[i].fd, F_GETFL) : -1;
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(e[i].fd, F_SETFL, fl | O_NONBLOCK);
  }
  t->splice = !e[0].easy && !e[1].easy && !e[0].copy && !e[1].copy;
  for (int i = 0; i < 2 && t->splice; i++)
    if (open_pipe(&t->d[i]) < 0) t->splice = 0;
  for (int i = 0; i < 2; i++) {
    sc_tunnel_dir_t *d = &t->d[i];
    /* what end 1 - i is to get first travels with d[i] */
    const sc_tunnel_end_t *dst = &e[1 - i];
    if (!t->splice) {
      if (d->pipe[0] >= 0) {
        close(d->pipe[0]);
        close(d->pipe[1]);
        d->pipe[0] = d->pipe[1] = -1;
      }
      d->buf = malloc(SC_TUNNEL_BUF);
      if (!d->buf) return UV_ENOMEM;
      if (dst->pre_len > SC_TUNNEL_BUF) return UV_E2BIG;
      if (dst->pre_len) memcpy(d->buf, dst->pre, dst->pre_len);
      d->len = dst->pre_len;
    } else if (dst->pre_len) {
      d->pre = malloc(dst->pre_len);
      if (!d->pre) return UV_ENOMEM;
      memcpy(d->pre, dst->pre, dst->pre_len);
      d->pre_len = dst->pre_len;
    }
  }
  for (int i = 0; i < 2; i++) {
    int rc = uv_poll_init_socket(loop, &t->poll[i], t->fd[i]);
    if (rc < 0) return rc;
    t->poll[i].data = t;
    t->npolls++;
    t->open++;
  }
  for (int i = 0; i < 2; i++) {
    uv_timer_init(loop, &t->tail[i]);
    t->tail[i].data = t;
    t->ntimers++;
    t->open++;
  }
  if (idle_ms) {
    uv_timer_init(loop, &t->idle);
    t->idle.data = t;
    t->idle_on = 1;
    t->open++;
    t->quiet_since = uv_now(loop);
    uint64_t every = idle_ms / 4 ? idle_ms / 4 : 1;
    uv_timer_start(&t->idle, on_idle, every, every);
  }
  t->started = 1;
  for (int i = 0; i < 2 && !t->ended; i++) pump(t, &t->d[i]);
  if (!t->ended) watch(t);
  return 0;
}

static void release(sc_tunnel_t *t) {
  for (int i = 0; i < 2; i++) {
    sc_tunnel_dir_t *d = &t->d[i];
    if (t->fd[i] >= 0) close(t->fd[i]);
    t->fd[i] = -1;
    for (int k = 0; k < 2; k++)
      if (d->pipe[k] >= 0) close(d->pipe[k]);
    d->pipe[0] = d->pipe[1] = -1;
    free(d->buf);
    free(d->pre);
    d->buf = d->pre = NULL;
  }
}

static void on_handle_closed(uv_handle_t *h) {
  sc_tunnel_t *t = h->data;
  if (--t->open) return;
  release(t);
  if (t->closed) t->closed(t);
}

void sc_tunnel_close(sc_tunnel_t *t, sc_tunnel_closed_cb closed) {
  t->started = 0; /* cb never runs again */
  end(t, 0);
  t->closed = closed;
  if (!t->open) {
    release(t);
    if (closed) closed(t);
    return;
  }
  for (int i = 0; i < t->npolls; i++)
    uv_close((uv_handle_t *)&t->poll[i], on_handle_closed);
  for (int i = 0; i < t->ntimers; i++)
    uv_close((uv_handle_t *)&t->tail[i], on_handle_closed);
  if (t->idle_on) uv_close((uv_handle_t *)&t->idle, on_handle_closed);
  t->npolls = t->ntimers = t->idle_on = 0;
}
