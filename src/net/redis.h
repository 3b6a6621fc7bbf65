/* A Redis connection on the process loop: hiredis 0.14's async context for
 * the protocol, driven by our own uv_poll hooks, with what 0.14 lacks
 * around it (DESIGN.md section 9):
 *
 *  - timeouts: one uv timer per connection bounds the connect, the
 *    handshake and the oldest outstanding command; when it fires the
 *    connection is dropped and every command on it fails;
 *  - connect errors: libuv reports a refused connect as a poll error,
 *    which hiredis' own libuv adapter ignores (the connect callback never
 *    runs); our hook hands it to hiredis so it does;
 *  - free-after-disconnect: the context is never touched after hiredis'
 *    disconnect or connect-failure callback;
 *  - replies nobody asked for: 0.14 aborts the process on one (an assert),
 *    so replies are read and counted (by hiredis' parser) before hiredis
 *    sees them, and more replies than commands drop the connection: "not
 *    Redis (...)" during the handshake;
 *  - the handshake: AUTH and SELECT must answer OK and PING PONG (or an
 *    error, "handshake refused"); any other answer is "not Redis (PING
 *    answered ...)", so an open fails at once instead of reconnecting;
 *  - reconnects: a connection that goes down is retried with exponential
 *    backoff until sc_redis_close.
 *
 * One connection runs its commands in order; a blocking command (XREADGROUP
 * BLOCK) holds it up, so such commands want a connection of their own.
 * Callbacks only record results: they never re-enter this module. */
#ifndef SC_REDIS_H
#define SC_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <uv.h>

typedef struct sc_redis sc_redis_t;

typedef struct sc_redis_opts {
  const char *host; /* TCP host (numeric or a name hiredis resolves) */
  int port;
  const char *password;   /* NULL: no AUTH */
  const char *user;       /* NULL: AUTH with the password alone */
  int db;                 /* SELECT db after connecting when non-zero */
  double connect_timeout; /* seconds for connect + handshake */
  double timeout;         /* seconds a reply may take (plus a command's own) */
  double backoff_max;     /* longest wait between reconnects */
} sc_redis_opts_t;

/* up = 1: connected and ready; up = 0: a connect attempt failed or the
 * connection went down (err says why); a retry follows after a backoff. */
typedef void (*sc_redis_state_cb)(sc_redis_t *r, int up, const char *err,
                                  void *ud);
/* reply: hiredis' (valid during the call only), or NULL with err set when
 * the command did not complete (connection lost, timeout, closed). */
typedef void (*sc_redis_reply_cb)(sc_redis_t *r, const redisReply *reply,
                                  const char *err, void *ud);

/* Starts connecting; the state callback reports the outcome. */
int sc_redis_open(uv_loop_t *loop, const sc_redis_opts_t *o,
                  sc_redis_state_cb cb, void *ud, sc_redis_t **out);
/* Sends one command (binary-safe argv). extra: seconds the command may
 * take on top of the timeout (a blocking read's own timeout). Returns
 * UV_ENOTCONN while the connection is not up (nothing is sent, the
 * callback will not be called), UV_ENOMEM. */
int sc_redis_command(sc_redis_t *r, int argc, const char **argv,
                     const size_t *lens, double extra, sc_redis_reply_cb cb,
                     void *ud);
int sc_redis_is_up(const sc_redis_t *r);
/* Outstanding commands' callbacks run before this returns, with err
 * "connection closed"; no callback runs after it. */
void sc_redis_close(sc_redis_t *r);

#endif
