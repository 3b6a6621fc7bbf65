/* Relays bytes both ways between two connected streams (a CONNECT tunnel:
 * the client and the proxy's socket), with backpressure: a direction
 * stops reading while its destination holds more than SC_TUNNEL_HIGH
 * unwritten bytes, and reads again once that falls to SC_TUNNEL_LOW. An
 * end of stream on one side becomes a shutdown (half-close) of the other
 * once what was read before it is written. The owner keeps both handles:
 * while relaying, the tunnel uses their `data` fields. */
#ifndef SC_TUNNEL_H
#define SC_TUNNEL_H

#include <stdint.h>
#include <uv.h>

#define SC_TUNNEL_HIGH (1024 * 1024)
#define SC_TUNNEL_LOW (256 * 1024)

typedef struct sc_tunnel sc_tunnel_t;
/* Called once: status 0 when both directions ended, else a libuv error.
 * The owner then closes both handles (from inside the callback if it
 * likes: the tunnel does not touch them afterwards). */
typedef void (*sc_tunnel_cb)(sc_tunnel_t *t, int status);

typedef struct sc_tunnel_dir {
  sc_tunnel_t *t;
  uv_stream_t *from, *to;
  int reading, eof, shut;
  uv_shutdown_t sreq;
} sc_tunnel_dir_t;

struct sc_tunnel {
  sc_tunnel_dir_t d[2]; /* d[0]: a to b, d[1]: b to a */
  int ended;
  sc_tunnel_cb cb;
  void *data;
  uint64_t bytes[2]; /* relayed a to b, b to a */
};

/* Starts relaying. A negative return: nothing started, cb never runs. */
int sc_tunnel_start(sc_tunnel_t *t, uv_stream_t *a, uv_stream_t *b,
                    sc_tunnel_cb cb);
/* Stops reading both ways; cb does not run afterwards. Writes already
 * queued are the handles' (closing them cancels them). */
void sc_tunnel_stop(sc_tunnel_t *t);

#endif
