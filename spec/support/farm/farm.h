/* scatter-farm's shared state: the proxies, their connections, and the
 * functions the protocol files (socks.c, httpx.c, tls.c) share with the
 * connection plumbing (conn.c), the control port (ctl.c) and main (farm.c).
 */
#ifndef FARM_H
#define FARM_H

#include <uv.h>

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define READ_CHUNK (64 * 1024)
#define HIGH_WATER (1024 * 1024) /* stop reading a side above this */
#define LOW_WATER (256 * 1024)   /* ...and resume below this */
#define HS_MAX 8192              /* any handshake or proxy request head fits */
#define LINGER_MS 2000           /* how long we wait for a peer's FIN */
#define DROP_MS 50               /* drop_mid: RST this long after the last byte */
#define BACKLOG 1024
#define RETRY_GRACE_MS 250 /* ratelimit: requests under way when a 429 went out */

#define container_of(ptr, type, field) \
  ((type *)((char *)(ptr) - offsetof(type, field)))

enum kind {
  K_GOOD, K_SLOW, K_REFUSE, K_BLACKHOLE, K_HANDSHAKE_FAIL,
  K_FLAKY, K_BLOCK, K_TAMPER, K_DIE_AFTER, K_DROP_MID, K_RATELIMIT,
  K_BLOCK_AFTER, K__COUNT
};
extern const char *const kind_names[K__COUNT];

enum proto { P_SOCKS5, P_SOCKS4, P_HTTP, P_HTTPS, P__COUNT };
extern const char *const proto_names[P__COUNT];

/* what an HTTP proxy tells the target about its client (check --anonymity) */
enum anon { A_ELITE, A_ANONYMOUS, A_TRANSPARENT };

typedef struct profile_s {
  enum kind kind;
  enum proto proto;
  enum anon anon;
  double latency, jitter, p, wait;
  uint64_t n, bytes;
  int auth;
  char user[256], pass[256];
  char basic[700]; /* "Basic base64(user:pass)" for HTTP proxies */
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
  uint64_t in_window;   /* ratelimit: accepts inside a Retry-After window */
  uint64_t retry_from, retry_until; /* ratelimit: the last 429's window (ms) */
  conn_t *conns;
  uv_tcp_t *inner; /* https: the plain HTTP proxy behind the TLS front */
  struct sockaddr_storage inner_addr;
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
  int handles, closing, dropping, inner;
  int tunnel;            /* SOCKS or CONNECT: the target's head follows */
  int canned_status;     /* block/ratelimit: the answer given for the target */
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
  char *fwd;             /* HTTP absolute-form: the head sent to the target */
  size_t fwd_len;
  size_t hs_len, hs_off;
  unsigned char hs[HS_MAX];
};

/* Growable string for control replies (stats can be long). */
typedef struct { char *p; size_t len, cap; } sbuf_t;

/* Small writes are copied, so callers can use stack buffers; `ctx` is the
 * conn_t or ctl_t that gets the error. */
typedef struct { uv_write_t req; void *ctx; int quit; char data[]; } msg_t;

extern uv_loop_t *loop;
extern proxy_t *proxies;
extern size_t nproxies;
extern FILE *logfp;
extern uint64_t total_accepted, total_active;
extern int stopping;

/* farm.c */
void die(const char *fmt, ...);
void *xrealloc(void *p, size_t sz);
void *xcalloc(size_t n, size_t sz);
double rng_unit(void);
int parse_u64(const char *s, uint64_t *out);
int parse_ip(const char *s, int port, struct sockaddr_storage *ss);
void set_port(struct sockaddr_storage *ss, int port);
int get_port(const struct sockaddr_storage *ss);
void sb_printf(sbuf_t *b, const char *fmt, ...);
int parse_profile(char *s, profile_t *p, uint64_t *count, char *err, size_t errlen);
int map_lookup(const char *host, struct sockaddr_storage *out);
int proxy_sync(proxy_t *px);
const char *proxy_state(const proxy_t *px);
void on_free_handle(uv_handle_t *h);
void farm_stop(void);

/* conn.c: connection plumbing shared by every protocol */
conn_t *conn_new(proxy_t *px, uv_stream_t *server, int inner);
void conn_close(conn_t *c, int reset);
void conn_drain(conn_t *c);
void cli_send(conn_t *c, const void *data, size_t len);
int send_copy(uv_stream_t *s, const void *data, size_t len, uv_write_cb cb,
              void *ctx, int quit);
size_t hdr_scan(unsigned *state, const char *p, size_t n);
void log_request(conn_t *c, const char *action);
/* The destination is in c->dst/host/dport (resolved): applies the
 * profile (block, ratelimit, flaky) or connects to it. */
void conn_serve(conn_t *c);
/* The target's answer given by the farm itself (block, ratelimit). */
void canned_respond(conn_t *c);
void on_discard_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf);
void on_discard_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* socks.c, httpx.c: each protocol's side of a connection */
void socks5_process(conn_t *c);
void socks5_reply(conn_t *c, int err); /* err: 0 granted, <0 uv error, 1 flaky */
void socks4_process(conn_t *c);
void socks4_reply(conn_t *c, int err);
void http_process(conn_t *c);
void http_reply(conn_t *c, int err);
void http_respond(conn_t *c, int status, const char *reason,
                  const char *headers, const char *body);

/* tls.c: the TLS front of https proxies */
int tls_init(const char *cert, const char *key);
void tls_accept(proxy_t *px, uv_stream_t *server);

/* ctl.c */
int ctl_start(uint64_t *port);
void ctl_stop(void);

#endif
