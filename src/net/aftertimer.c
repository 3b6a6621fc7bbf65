/* A timer whose callback runs after the loop's next I/O poll: see
 * aftertimer.h for why. Three handles: the timer, an idle handle that
 * keeps the poll from sleeping once the timer is due, and the check
 * handle that runs right after the poll. */
#include "aftertimer.h"

#include <stdlib.h>

struct sc_aftertimer_s {
  uv_timer_t timer;
  uv_idle_t idle;
  uv_check_t check;
  sc_aftertimer_cb cb;
  void *ud;
  int open; /* handles not closed yet, to free the struct after the last */
};

static void on_idle(uv_idle_t *h) { (void)h; }

static void on_check(uv_check_t *h) {
  sc_aftertimer_t *t = h->data;
  uv_idle_stop(&t->idle);
  uv_check_stop(&t->check);
  t->cb(t->ud);
}

static void on_timer(uv_timer_t *h) {
  sc_aftertimer_t *t = h->data;
  uv_idle_start(&t->idle, on_idle);
  uv_check_start(&t->check, on_check);
}

int sc_aftertimer_new(uv_loop_t *loop, sc_aftertimer_cb cb, void *ud,
                      sc_aftertimer_t **out) {
  sc_aftertimer_t *t = calloc(1, sizeof(*t));
  if (!t) return UV_ENOMEM;
  t->cb = cb;
  t->ud = ud;
  uv_timer_init(loop, &t->timer);
  uv_idle_init(loop, &t->idle);
  uv_check_init(loop, &t->check);
  t->timer.data = t->idle.data = t->check.data = t;
  t->open = 3;
  *out = t;
  return 0;
}

void sc_aftertimer_start(sc_aftertimer_t *t, uint64_t ms) {
  uv_timer_stop(&t->timer);
  if (ms == 0) {
    /* due now: after this poll. A pending check is kept, not pushed back:
     * a restart at every reply would put it off for as long as they come */
    uv_idle_start(&t->idle, on_idle);
    uv_check_start(&t->check, on_check);
    return;
  }
  uv_idle_stop(&t->idle);
  uv_check_stop(&t->check);
  uv_timer_start(&t->timer, on_timer, ms, 0);
}

void sc_aftertimer_stop(sc_aftertimer_t *t) {
  uv_timer_stop(&t->timer);
  uv_idle_stop(&t->idle);
  uv_check_stop(&t->check);
}

static void on_closed(uv_handle_t *h) {
  sc_aftertimer_t *t = h->data;
  if (--t->open == 0) free(t);
}

void sc_aftertimer_close(sc_aftertimer_t *t) {
  sc_aftertimer_stop(t);
  uv_close((uv_handle_t *)&t->timer, on_closed);
  uv_close((uv_handle_t *)&t->idle, on_closed);
  uv_close((uv_handle_t *)&t->check, on_closed);
}
