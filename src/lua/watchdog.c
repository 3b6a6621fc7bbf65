/* The classifier watchdog (classifier_timeout): a classifier runs on the
 * loop's thread, so an endless one blocked every pool and no uv timer
 * could fire. A POSIX timer aimed at the loop's thread (SIGEV_THREAD_ID)
 * fires while it runs; its signal handler sets a Lua hook (lua_sethook is
 * safe to call from a signal handler) that raises classifier_timeout at
 * the next call, return or instruction count. LuaJIT does not run hooks
 * inside compiled traces: a loop compiled without calls cannot be
 * interrupted, and then the timer, firing again each period, says so on
 * stderr with the pool's name (write(2) is async-signal-safe), so the
 * hang is never silent. */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "funcs.h"

static lua_State *wl;     /* where the hook is set (LuaJIT's are global) */
static lua_State *target; /* the classifier's coroutine: only it is stopped */
static timer_t timer;
static int have_timer;
static volatile sig_atomic_t armed, fired;
static char who[200];
static size_t who_len;

static void hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  /* the classifier already returned to scatter's code: disarm clears it */
  if (L != target) return;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "classifier_timeout: interrupted after classifier_timeout");
}

static void say(const char *a, const char *b) {
  ssize_t r = write(2, a, strlen(a));
  r = write(2, who, who_len);
  r = write(2, b, strlen(b));
  (void)r;
}

static void on_alarm(int sig) {
  (void)sig;
  if (!armed) return;
  int e = errno;
  if (!fired) {
    fired = 1;
    lua_sethook(wl, hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1000);
  } else if (fired == 1) {
    fired = 2;
    say("scatter: WARN ", " classifier running past classifier_timeout cannot "
                          "be interrupted (compiled code): the loop is "
                          "blocked until it returns\n");
  }
  errno = e;
}

static int set(double s) {
  struct itimerspec it;
  memset(&it, 0, sizeof(it));
  if (s > 0) {
    it.it_value.tv_sec = (time_t)s;
    it.it_value.tv_nsec = (long)((s - (double)(time_t)s) * 1e9);
    if (it.it_value.tv_sec == 0 && it.it_value.tv_nsec == 0)
      it.it_value.tv_nsec = 1;
    it.it_interval = it.it_value;
  }
  return timer_settime(timer, 0, &it, NULL);
}

/* core.watchdog_arm(seconds, name, co): from now until watchdog_disarm, a
 * run of coroutine co longer than seconds is interrupted (or reported).
 * Returns true, or nil, why when no timer can be made (then classifiers
 * run unwatched). */
int sc_lua_watchdog_arm(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  size_t n;
  const char *name = luaL_optlstring(L, 2, "", &n);
  luaL_checktype(L, 3, LUA_TTHREAD);
  target = lua_tothread(L, 3);
  if (!have_timer) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    struct sigevent ev;
    memset(&ev, 0, sizeof(ev));
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGALRM;
    ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    if (sigaction(SIGALRM, &sa, NULL) < 0 ||
        timer_create(CLOCK_MONOTONIC, &ev, &timer) < 0) {
      lua_pushnil(L);
      lua_pushstring(L, strerror(errno));
      return 2;
    }
    have_timer = 1;
  }
  who_len = 0;
  if (n > 0 && n < sizeof(who) - 3) {
    who[0] = '[';
    memcpy(who + 1, name, n);
    who[n + 1] = ']';
    who_len = n + 2;
  }
  wl = L;
  fired = 0;
  armed = 1;
  if (set(s) < 0) {
    armed = 0;
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.watchdog_disarm() -> fired (the classifier overran) */
int sc_lua_watchdog_disarm(lua_State *L) {
  armed = 0;
  if (have_timer) set(0);
  int f = fired;
  if (f) lua_sethook(L, NULL, 0, 0);
  fired = 0;
  target = NULL;
  lua_pushboolean(L, f);
  return 1;
}
