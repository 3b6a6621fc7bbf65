/* Relays bytes both ways between two ends of a CONNECT tunnel (the
 * client and the proxy's connection), with backpressure: a direction
 * stops reading while what it read is not yet written. An end of stream
 * on one side becomes a shutdown (half-close) of the other once what was
 * read before it is written.
 *
 * Each end is a connected socket, polled through its own uv_poll_t (the
 * caller hands over a descriptor the tunnel owns: a dup of a libuv
 * stream's, which the stream then must neither read nor write). An end
 * may instead carry its bytes through libcurl (curl_easy_send/recv on a
 * CONNECT_ONLY handle still in the multi: a tunnel through an https://
 * proxy, whose TLS stays in curl); its descriptor is then only polled.
 *
 * Between two plain sockets on Linux the bytes move with splice(2)
 * through a pipe per direction and never enter this process; otherwise
 * (a curl end, no pipe to be had) through a buffer per direction. A
 * splice into a socket whose peer is gone raises SIGPIPE (no flag can
 * stop it): the process must block or ignore it. */
#ifndef SC_TUNNEL_H
#define SC_TUNNEL_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Per direction: the pipe's size asked for (splice), or the buffer's. */
#define SC_TUNNEL_PIPE (1024 * 1024)
#define SC_TUNNEL_BUF (64 * 1024)

typedef struct sc_tunnel sc_tunnel_t;
/* Called once: status 0 when both directions ended, else a libuv error.
 * The owner then calls sc_tunnel_close (from inside the callback if it
 * likes). */
typedef void (*sc_tunnel_cb)(sc_tunnel_t *t, int status);
typedef void (*sc_tunnel_closed_cb)(sc_tunnel_t *t);

typedef struct sc_tunnel_dir {
  int from, to;    /* end indexes */
  int pipe[2];     /* splice: the pipe, else -1 */
  size_t inpipe;   /* splice: bytes in the pipe */
  char *buf;       /* buffer mode: SC_TUNNEL_BUF bytes */
  size_t off, len; /* buffer mode: unwritten bytes are buf[off, len) */
  size_t again;    /* a curl send that must be retried as it was */
  char *pre;       /* written before anything read (splice mode) */
  size_t pre_off, pre_len;
  int eof, shut, want_r, want_w;
  int lowat; /* SO_RCVLOWAT raised on `from` (a bulk transfer) */
} sc_tunnel_dir_t;

struct sc_tunnel {
  uv_poll_t poll[2];
  uv_timer_t tail[2]; /* per direction: reads what a raised lowat holds */
  uv_timer_t idle;    /* ends a tunnel silent both ways for idle_ms */
  uint64_t idle_ms, quiet_since, seen;
  int fd[2];
  CURL *easy[2];
  sc_tunnel_dir_t d[2]; /* d[0]: end 0 to end 1, d[1]: end 1 to end 0 */
  int events[2];
  int started, ended, npolls, ntimers, idle_on, open, splice;
  sc_tunnel_cb cb;
  sc_tunnel_closed_cb closed;
  void *data;
  uint64_t bytes[2]; /* relayed 0 to 1, 1 to 0 */
};

typedef struct sc_tunnel_end {
  int fd;          /* the tunnel's from now on, even when start fails */
  CURL *easy;      /* NULL: fd carries the bytes; else curl does (caller's) */
  const char *pre; /* written to this end before anything relayed */
  size_t pre_len;
  int copy; /* through the buffer even where splice would do */
} sc_tunnel_end_t;

/* Starts relaying between ends e[0] and e[1]; a tunnel that moves no byte
 * either way for idle_ms (0: never) ends with UV_ETIMEDOUT. A negative
 * return: nothing started, cb never runs; sc_tunnel_close still releases
 * the descriptors. */
int sc_tunnel_start(sc_tunnel_t *t, uv_loop_t *loop, const sc_tunnel_end_t e[2],
                    uint64_t idle_ms, sc_tunnel_cb cb);
/* Stops relaying (cb does not run afterwards) and closes the tunnel's
 * handles and descriptors; closed runs once they are gone (libuv closes
 * handles asynchronously), or at once if nothing was open. Never calls
 * curl: a curl end's handle is the caller's to remove afterwards. */
void sc_tunnel_close(sc_tunnel_t *t, sc_tunnel_closed_cb closed);

#endif
