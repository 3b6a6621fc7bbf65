/* SIGINT, SIGTERM, SIGHUP and SIGPIPE for `scatter run` and
 * scatter.on_signal (lua/scatter/signals.lua). SIGHUP (a closed terminal)
 * and SIGPIPE (`scatter run x.lua | head -1`) killed a run without saving
 * state: they are a stop like SIGTERM.
 *
 * A plain sigaction handler rather than uv_signal_t: libuv delivers a
 * uv_signal_t callback only when the loop turns, and the second signal must
 * end the process even when it does not (a classifier stuck in a loop, a
 * shutdown that hangs). The handler only does async-signal-safe things:
 * _exit, or uv_async_send to report the first signal to the loop. */
#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "../net/loop.h"
#include "ops.h"

#include "funcs.h"

static volatile sig_atomic_t got; /* the first signal's number */
static uv_async_t async;
static uint32_t op_id;

static void handler(int sig) {
  /* every write to a closed pipe raises SIGPIPE again: only a different
   * signal is the user's "again" */
  if (got && sig == SIGPIPE) return;
  if (got) _exit(128 + sig);
  got = sig;
  uv_async_send(&async);
}

static void on_async(uv_async_t *a) {
  (void)a;
  sc_ops_done(op_id, got, NULL, 0, NULL);
}

static const int SIGNALS[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};

/* core.signal_watch() -> op id: from now on the first SIGINT, SIGTERM,
 * SIGHUP or SIGPIPE is
 * the op's result {status = signal number}; a second one exits the process
 * at once with 128 + its number. Calling it again returns the same op. */
int sc_lua_signal_watch(lua_State *L) {
  if (!op_id) {
    sc_loop_t *l = sc_loop_default();
    if (!l || uv_async_init(sc_loop_uv(l), &async, on_async) < 0)
      return luaL_error(L, "scatter: cannot watch signals");
    /* waiting for a signal is no reason to keep the loop running */
    uv_unref((uv_handle_t *)&async);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    /* one handler at a time: `got` is then never raced */
    for (size_t i = 0; i < sizeof(SIGNALS) / sizeof(SIGNALS[0]); i++)
      sigaddset(&sa.sa_mask, SIGNALS[i]);
    op_id = sc_ops_new();
    for (size_t i = 0; i < sizeof(SIGNALS) / sizeof(SIGNALS[0]); i++)
      if (sigaction(SIGNALS[i], &sa, NULL) < 0)
        return luaL_error(L, "scatter: cannot watch signals");
  }
  lua_pushnumber(L, op_id);
  return 1;
}
