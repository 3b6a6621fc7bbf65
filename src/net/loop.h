/* One libuv loop per process driving curl's multi interface: curl's socket
 * callback maps to uv_poll handles, its timer callback to a uv_timer, as in
 * curl's docs/examples/multi-uv.c. */
#ifndef SC_LOOP_H
#define SC_LOOP_H

#include <curl/curl.h>
#include <uv.h>

typedef struct sc_loop sc_loop_t;

/* Called once when a transfer ends (not after sc_loop_remove). */
typedef void (*sc_loop_done_cb)(CURL *easy, CURLcode result, void *ud);

/* A transfer's completion callback; owned by the caller (no allocation per
 * transfer) and kept alive until the callback runs or sc_loop_remove. */
typedef struct sc_loop_xfer {
  sc_loop_done_cb cb;
  void *ud;
  curl_socket_t sock; /* the loop's: the last socket curl watched for it */
  /* A CONNECT_ONLY transfer's socket outlives it: curl closes such a
   * connection when its handle leaves the multi, before cb runs, so with
   * detach set the loop keeps a dup of it in `detached` (else -1); cb's
   * caller owns it then. detach = 2 (a tunnel through an https://
   * proxy, whose bytes must go through curl_easy_send/recv): the handle
   * also stays in the multi after cb (`kept` set), which keeps its
   * connection; sc_loop_remove ends both. */
  int detach;
  int detached;
  int kept;
} sc_loop_xfer_t;

/* The process-wide loop, created on first use. NULL on failure. */
sc_loop_t *sc_loop_default(void);
uv_loop_t *sc_loop_uv(sc_loop_t *l);
CURLM *sc_loop_multi(sc_loop_t *l);

/* An easy handle for one transfer, fresh, reset or kept from an earlier
 * one (*kept: see sc_loop_easy_keep);
 * give it back with sc_loop_easy_done, never curl_easy_cleanup. Its
 * sockets are opened and closed through the loop (the OPENSOCKET and
 * CLOSESOCKET callbacks are set: do not override them). NULL when out of
 * memory. */
CURL *sc_loop_easy(sc_loop_t *l, int *kept);
void sc_loop_easy_done(sc_loop_t *l, CURL *easy);
/* Like sc_loop_easy_done, but without curl_easy_reset: the next
 * sc_loop_easy that returns it sets *kept = 1, and the caller then knows
 * which options it still carries (its own convention). */
void sc_loop_easy_keep(sc_loop_t *l, CURL *easy);

int sc_loop_add(sc_loop_t *l, CURL *easy, sc_loop_xfer_t *x);
void sc_loop_remove(sc_loop_t *l, CURL *easy);

/* One pass: wait at most `timeout` seconds for I/O or timers (< 0: until
 * something happens, 0: do not block), run what is due. Returns the number
 * of live handles (0: nothing left that could wake the loop). */
int sc_loop_run(sc_loop_t *l, double timeout);
/* Monotonic seconds. */
double sc_loop_now(void);
/* For embedding: the backend fd and libuv's own timeout (ms, -1 none). */
int sc_loop_fd(sc_loop_t *l);
int sc_loop_timeout(sc_loop_t *l);

#endif
