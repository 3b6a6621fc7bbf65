/* SIGINT and SIGTERM for `scatter run` (lua/scatter/cmd/run.lua).
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
  if (got) _exit(128 + sig);
  got = sig;
  uv_async_send(&async);
}

static void on_async(uv_async_t *a) {
  (void)a;
  sc_ops_done(op_id, got, NULL, 0, NULL);
}

/* core.signal_watch() -> op id: from now on the first SIGINT or SIGTERM is
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
    sigaddset(&sa.sa_mask, SIGINT); /* one handler at a time: `got` is */
    sigaddset(&sa.sa_mask, SIGTERM); /* then never raced */
    op_id = sc_ops_new();
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
      return luaL_error(L, "scatter: cannot watch signals");
  }
  lua_pushnumber(L, op_id);
  return 1;
}
