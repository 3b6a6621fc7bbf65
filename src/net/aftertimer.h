/* A timer whose callback runs after the loop has polled for I/O.
 *
 * libuv runs expired timers before it polls, so after any stretch of work
 * on the loop (Lua, a commit) a due timer fires before the replies that
 * came in meanwhile are read. The scheduler's timer starts hedges and
 * deadlines: fired first, it hedged requests whose answers were already
 * in the socket buffers. This timer's expiry only arms an idle handle
 * (the poll does not wait) and a check handle, whose callback, right
 * after the poll, calls the user's. */
#ifndef SC_AFTERTIMER_H
#define SC_AFTERTIMER_H

#include <stdint.h>
#include <uv.h>

typedef void (*sc_aftertimer_cb)(void *ud);
typedef struct sc_aftertimer_s sc_aftertimer_t;

/* Returns 0 and *out, or UV_ENOMEM. */
int sc_aftertimer_new(uv_loop_t *loop, sc_aftertimer_cb cb, void *ud,
                      sc_aftertimer_t **out);
/* Calls cb once, after the first poll that ends at least ms from now on
 * libuv's cached clock; replaces any earlier start. */
void sc_aftertimer_start(sc_aftertimer_t *t, uint64_t ms);
void sc_aftertimer_stop(sc_aftertimer_t *t);
/* Stops it and frees it once libuv has closed its handles. */
void sc_aftertimer_close(sc_aftertimer_t *t);

#endif
