/* State snapshots for lua/scatter/state.lua (DESIGN.md section 5).
 *
 * C reads the scheduler into plain rows and writes them back; the JSON
 * itself is lua-cjson's, in Lua. Rows are read in slices so that a big
 * snapshot never holds the loop for long. The scheduler's clock is
 * monotonic; the file holds wall-clock times, converted with the offset
 * between the two clocks (state_clock) at save and at load.
 *
 * Row layouts (versions 1 and 2; state.lua writes them as the file's
 * "proxy_fields" and "pair_fields"):
 *   proxy: key, attempts, successes, dead_since (wall; -1: alive)
 *   pair:  proxy (1-based row in the proxies array), outcomes, successes,
 *          consecutive_fails, last_success (wall; -1: never),
 *          cooldown_until (wall; 0: none), latency_ewma, latency_p50,
 *          latency_p95 (seconds; -1: unknown)
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/proxyurl.h"
#include "../net/afile.h"
#include "../net/loop.h"
#include "ops.h"
#include "pool.h"

#include "funcs.h"

#define PROXY_FIELDS 4
#define PAIR_FIELDS 9

/* Fewer digits, smaller file: milliseconds are plenty for these times. */
static double quantize(double x, double q) { return floor(x / q + 0.5) * q; }

static void seti(lua_State *L, int i, double v) {
  lua_pushnumber(L, v);
  lua_rawseti(L, -2, i);
}

/* The rows table: the caller's buffer (argument `buf`) when it passes one,
 * its row tables reused, so that a save makes little garbage (a GC step in
 * a heap of 10^5 fresh tables would stall the loop). */
static void rows_begin(lua_State *L, int buf, int n) {
  if (lua_type(L, buf) == LUA_TTABLE) lua_pushvalue(L, buf);
  else lua_createtable(L, n, 0);
}

/* Pushes row k of the rows table on top of it, reused if there is one. */
static void row_at(lua_State *L, int k, int fields) {
  lua_rawgeti(L, -1, k);
  if (lua_type(L, -1) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, fields, 0);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, k);
}

/* Drops rows past k, left from a longer slice. */
static void rows_end(lua_State *L, int k) {
  int n = (int)lua_objlen(L, -1);
  for (int i = n; i > k; i--) {
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
}

/* core.state_clock() -> wall, monotonic (seconds) */
int sc_lua_state_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec / 1e9);
  lua_pushnumber(L, sc_loop_now());
  return 2;
}

static void slice(lua_State *L, uint32_t total, uint32_t *from, uint32_t *to) {
  lua_Number f = luaL_checknumber(L, 2), n = luaL_checknumber(L, 3);
  if (f < 0 || n < 0) luaL_argerror(L, 2, "negative slice");
  *from = f > total ? total : (uint32_t)f;
  *to = f + n > total ? total : (uint32_t)(f + n);
}

/* core.state_proxies(pool, from, n, wall_offset [, buf]) -> rows, total:
 * proxies with ids from .. from+n-1 (ids are 0-based; row i of the whole
 * list is id i-1). */
int sc_lua_state_proxies(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  double off = luaL_checknumber(L, 4);
  uint32_t total = sc_sched_proxy_count(s), from, to;
  slice(L, total, &from, &to);
  rows_begin(L, 5, (int)(to - from));
  for (uint32_t id = from; id < to; id++) {
    sc_proxy_info_t pi;
    sc_sched_proxy_info(s, id, &pi);
    row_at(L, (int)(id - from + 1), PROXY_FIELDS);
    lua_pushstring(L, sc_sched_proxy_key(s, id));
    lua_rawseti(L, -2, 1);
    seti(L, 2, pi.attempts);
    seti(L, 3, pi.successes);
    seti(L, 4, pi.dead ? quantize(pi.dead_since + off, 1e-3) : -1);
    lua_pop(L, 1);
  }
  rows_end(L, (int)(to - from));
  lua_pushnumber(L, total);
  return 2;
}

/* core.state_hosts(pool) -> { name of host id 0, ... } */
int sc_lua_state_hosts(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  uint32_t n = sc_sched_host_count(s);
  lua_createtable(L, (int)n, 0);
  for (uint32_t i = 0; i < n; i++) {
    lua_pushstring(L, sc_sched_host_name(s, i));
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

/* core.state_pairs(pool, host, from, n, wall_offset [, buf]) -> rows,
 * total: the pairs of host (1-based, as in state_hosts) with proxies from
 * .. from+n-1 that have any history; total is the proxy count. */
int sc_lua_state_pairs(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  lua_Number hn = luaL_checknumber(L, 2);
  if (hn < 1 || hn > sc_sched_host_count(s))
    return luaL_argerror(L, 2, "no such host");
  uint32_t hid = (uint32_t)hn - 1;
  lua_remove(L, 2); /* slice() reads from, n at 2 and 3 */
  double off = luaL_checknumber(L, 4);
  uint32_t total = sc_sched_proxy_count(s), from, to;
  slice(L, total, &from, &to);
  double tn = sc_loop_now();
  rows_begin(L, 5, (int)(to - from)); /* buf, after the lua_remove */
  int k = 0;
  for (uint32_t id = from; id < to; id++) {
    sc_pair_info_t pi;
    sc_sched_pair_info(s, id, hid, &pi);
    if (pi.outcomes == 0 && pi.last_success < 0 && pi.consecutive_fails == 0)
      continue;
    row_at(L, ++k, PAIR_FIELDS);
    seti(L, 1, id + 1);
    seti(L, 2, pi.outcomes);
    seti(L, 3, pi.successes);
    seti(L, 4, pi.consecutive_fails);
    seti(L, 5, pi.last_success < 0 ? -1 : quantize(pi.last_success + off, 1e-3));
    seti(L, 6, pi.cooldown_until <= tn ? 0 : quantize(pi.cooldown_until + off, 1e-3));
    seti(L, 7, pi.latency_ewma < 0 ? -1 : quantize(pi.latency_ewma, 1e-4));
    seti(L, 8, pi.latency_p50 < 0 ? -1 : quantize(pi.latency_p50, 1e-4));
    seti(L, 9, pi.latency_p95 < 0 ? -1 : quantize(pi.latency_p95, 1e-4));
    lua_pop(L, 1);
  }
  rows_end(L, k);
  lua_pushnumber(L, total);
  return 2;
}

/* ---- checking a decoded section before anything is restored ---- */

typedef struct where {
  char msg[300];
} where;

__attribute__((format(printf, 2, 3))) static int bad(where *w,
                                                     const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->msg, sizeof(w->msg), fmt, ap);
  va_end(ap);
  return -1;
}

static int is_num(lua_State *L, int idx, double lo, double hi, int integer) {
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  double v = lua_tonumber(L, idx);
  if (!isfinite(v) || v < lo || v > hi) return 0;
  return !integer || v == floor(v);
}

/* An array: a table whose length covers every key. */
static int is_array(lua_State *L, int idx, int *len) {
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  int n = (int)lua_objlen(L, idx), count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx < 0 ? idx - 1 : idx)) {
    lua_pop(L, 1);
    if (++count > n) {
      lua_pop(L, 1);
      return 0;
    }
  }
  *len = n;
  return 1;
}

static int check_proxies(lua_State *L, int t, int n, where *w) {
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, t, i);
    int len = 0;
    if (!is_array(L, -1, &len) || len != PROXY_FIELDS)
      return bad(w, "proxies[%d] is not an array of %d fields", i, PROXY_FIELDS);
    lua_rawgeti(L, -1, 1);
    size_t kl;
    const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &kl) : NULL;
    char canon[512];
    if (!key || sc_proxy_parse(key, kl, canon, sizeof(canon), NULL) != 0 ||
        strcmp(canon, key) != 0)
      return bad(w, "proxies[%d][1] is not a proxy key", i);
    lua_rawgeti(L, -2, 2);
    lua_rawgeti(L, -3, 3);
    lua_rawgeti(L, -4, 4);
    if (!is_num(L, -3, 0, 4294967295.0, 1))
      return bad(w, "proxies[%d][2] (attempts) is not a count", i);
    if (!is_num(L, -2, 0, lua_tonumber(L, -3), 1))
      return bad(w, "proxies[%d][3] (successes) is not a count <= attempts", i);
    if (!is_num(L, -1, -1, 1e12, 0))
      return bad(w, "proxies[%d][4] (dead_since) is not a time", i);
    lua_pop(L, 5);
  }
  return 0;
}

static int check_pairs(lua_State *L, int t, const char *host, int nproxies,
                       where *w) {
  int n = 0;
  if (!is_array(L, t, &n))
    return bad(w, "hosts[\"%.200s\"] is not an array", host);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, t, i);
    int len = 0;
    if (!is_array(L, -1, &len) || len != PAIR_FIELDS)
      return bad(w, "hosts[\"%.200s\"][%d] is not an array of %d fields", host, i, PAIR_FIELDS);
    int row = lua_gettop(L);
    static const struct {
      double lo, hi;
      int integer;
    } f[PAIR_FIELDS] = {{1, 0, 1},  {0, 64, 1},     {0, 64, 1},
                        {0, 65535, 1}, {-1, 1e12, 0}, {-1, 1e12, 0},
                        {-1, 1e6, 0}, {-1, 1e6, 0},  {-1, 1e6, 0}};
    for (int j = 0; j < PAIR_FIELDS; j++) {
      lua_rawgeti(L, row, j + 1);
      double hi = j == 0 ? nproxies : j == 2 ? lua_tonumber(L, row + 2) : f[j].hi;
      if (!is_num(L, -1, f[j].lo, hi, f[j].integer))
        return bad(w, "hosts[\"%.200s\"][%d][%d] is out of range or not a number", host, i, j + 1);
    }
    lua_settop(L, row - 1);
  }
  return 0;
}

/* recent (version 2): adaptive K's window, "0"/"1" oldest first;
 * finished: the attempts finished. Both optional (version 1 has none). */
static int check_recent(lua_State *L, int sec, where *w) {
  lua_getfield(L, sec, "recent");
  if (!lua_isnil(L, -1)) {
    size_t n;
    const char *r = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (!r || n > SC_RECENT_MAX || strspn(r, "01") != n)
      return bad(w, "recent is not a string of at most %d 0s and 1s", SC_RECENT_MAX);
  }
  lua_getfield(L, sec, "finished");
  if (!lua_isnil(L, -1) && !is_num(L, -1, 0, 9007199254740992.0, 1))
    return bad(w, "finished is not a count");
  lua_pop(L, 2);
  return 0;
}

static int check_section(lua_State *L, int sec, where *w) {
  if (lua_type(L, sec) != LUA_TTABLE)
    return bad(w, "the section is not an object");
  if (check_recent(L, sec, w) < 0) return -1;
  lua_getfield(L, sec, "proxies");
  int np = 0;
  if (!is_array(L, -1, &np))
    return bad(w, "proxies is not an array");
  if (check_proxies(L, lua_gettop(L), np, w) < 0) return -1;
  lua_getfield(L, sec, "hosts");
  if (lua_type(L, -1) != LUA_TTABLE)
    return bad(w, "hosts is not an object");
  int hosts = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, hosts)) {
    size_t hl = 0;
    const char *h = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &hl) : NULL;
    if (!h || hl == 0 || hl > 255)
      return bad(w, "hosts has a key that is not a host name");
    if (check_pairs(L, lua_gettop(L), h, np, w) < 0) return -1;
    lua_pop(L, 1);
  }
  return 0;
}

/* core.state_check(section) -> true | nil, what is wrong */
int sc_lua_state_check(lua_State *L) {
  where w;
  lua_settop(L, 1);
  luaL_checkstack(L, 32, "state_check");
  if (check_section(L, 1, &w) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, w.msg);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.state_restore(pool, section, wall_offset) -> ids: the section must
 * have passed state_check. ids[i] is the proxy id of proxies[i]. Pairs go
 * first: a proxy restored dead must not have its pairs placed again. */
int sc_lua_state_restore(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  double off = luaL_checknumber(L, 3);
  lua_settop(L, 3);
  luaL_checkstack(L, 32, "state_restore");
  lua_getfield(L, 2, "proxies"); /* 4 */
  int np = (int)lua_objlen(L, 4);
  lua_createtable(L, np, 0); /* 5: ids */
  uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(np + 1));
  if (!ids) return luaL_error(L, "scatter: out of memory");
  sc_sched_hold(s, 1);
  int rc = 0;
  for (int i = 1; i <= np && rc == 0; i++) {
    lua_rawgeti(L, 4, i);
    lua_rawgeti(L, -1, 1);
    rc = sc_sched_proxy_add(s, lua_tostring(L, -1), &ids[i]);
    lua_pop(L, 2);
    lua_pushnumber(L, ids[i]);
    lua_rawseti(L, 5, i);
  }
  double tn = sc_loop_now();
  lua_getfield(L, 2, "hosts"); /* 6 */
  lua_pushnil(L);
  while (rc == 0 && lua_next(L, 6)) {
    size_t hl;
    const char *h = lua_tolstring(L, -2, &hl);
    uint32_t hid;
    rc = sc_sched_host_id(s, h, hl, &hid);
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n && rc == 0; i++) {
      lua_rawgeti(L, -1, i);
      double v[PAIR_FIELDS];
      for (int j = 0; j < PAIR_FIELDS; j++) {
        lua_rawgeti(L, -1 - j, j + 1);
        v[j] = lua_tonumber(L, -1);
      }
      lua_pop(L, PAIR_FIELDS + 1);
      double until = v[5] > 0 ? v[5] - off : 0;
      sc_pair_info_t pi = {
          .outcomes = (uint32_t)v[1],
          .successes = (uint32_t)v[2],
          .consecutive_fails = (uint32_t)v[3],
          .last_success = v[4] < 0 ? -1 : v[4] - off,
          .cooldown_until = until > tn ? until : 0,
          .rate_next = 0,
          .latency_ewma = v[6],
          .latency_p50 = v[7],
          .latency_p95 = v[8],
      };
      sc_sched_pair_restore(s, ids[(int)v[0]], hid, &pi);
    }
    lua_pop(L, 1);
  }
  for (int i = 1; i <= np && rc == 0; i++) {
    lua_rawgeti(L, 4, i);
    double v[PROXY_FIELDS - 1];
    for (int j = 0; j < PROXY_FIELDS - 1; j++) {
      lua_rawgeti(L, -1 - j, j + 2);
      v[j] = lua_tonumber(L, -1);
    }
    lua_pop(L, PROXY_FIELDS);
    sc_proxy_info_t pi = {(uint32_t)v[0], (uint32_t)v[1], v[2] >= 0,
                          v[2] >= 0 ? v[2] - off : 0};
    sc_sched_proxy_restore(s, ids[i], &pi);
  }
  sc_sched_hold(s, 0);
  free(ids);
  if (rc < 0) return luaL_error(L, "scatter: restoring state: error %d", rc);
  lua_pushvalue(L, 5);
  return 1;
}

/* core.state_recent(pool) -> recent, finished: adaptive K's window as
 * "0"/"1" (oldest first) and the attempts finished, restored ones
 * included. */
int sc_lua_state_recent(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  uint8_t bits[SC_RECENT_MAX];
  char str[SC_RECENT_MAX];
  uint32_t n;
  uint64_t finished;
  sc_sched_recent(s, bits, &n, &finished);
  for (uint32_t i = 0; i < n; i++) str[i] = (char)('0' + bits[i]);
  lua_pushlstring(L, str, n);
  lua_pushnumber(L, (lua_Number)finished);
  return 2;
}

/* core.state_recent_restore(pool, recent, finished): recent as
 * state_recent gives it (checked by state_check). */
int sc_lua_state_recent_restore(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  size_t n;
  const char *r = luaL_checklstring(L, 2, &n);
  lua_Number f = luaL_checknumber(L, 3);
  if (n > SC_RECENT_MAX || strspn(r, "01") != n)
    return luaL_argerror(L, 2, "not a string of 0s and 1s");
  if (!(f >= 0 && f <= 9007199254740992.0)) return luaL_argerror(L, 3, "not a count");
  uint8_t bits[SC_RECENT_MAX];
  for (size_t i = 0; i < n; i++) bits[i] = (uint8_t)(r[i] - '0');
  sc_sched_recent_restore(s, bits, (uint32_t)n, (uint64_t)f);
  return 0;
}

/* ---- atomic writes ---- */

static void on_written(int status, const char *err, void *ud) {
  sc_ops_done((uint32_t)(uintptr_t)ud, status, NULL, 0, err);
}

/* core.write_atomic(path, data | {parts...}, mode) -> op id; the result is
 * {status = 0} or {status = -errno, err = "step path: reason"}. */
int sc_lua_write_atomic(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int mode = (int)luaL_optinteger(L, 3, 0600);
  size_t len = 0;
  char *buf;
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *d = lua_tolstring(L, 2, &len);
    buf = malloc(len ? len : 1);
    if (buf) memcpy(buf, d, len);
  } else {
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_objlen(L, 2);
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, 2, i);
      if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "scatter: write_atomic: part %d is not a string", i);
      len += lua_objlen(L, -1);
      lua_pop(L, 1);
    }
    buf = malloc(len ? len : 1);
    size_t at = 0;
    for (int i = 1; buf && i <= n; i++) {
      lua_rawgeti(L, 2, i);
      size_t pl;
      const char *p = lua_tolstring(L, -1, &pl);
      memcpy(buf + at, p, pl);
      at += pl;
      lua_pop(L, 1);
    }
  }
  sc_loop_t *loop = sc_loop_default();
  if (!buf || !loop) {
    free(buf);
    return luaL_error(L, "scatter: write_atomic: out of memory");
  }
  uint32_t id = sc_ops_new();
  int rc = sc_afile_write(sc_loop_uv(loop), path, buf, len, mode, on_written,
                          (void *)(uintptr_t)id);
  if (rc < 0) {
    free(buf);
    return luaL_error(L, "scatter: write_atomic: %s", uv_strerror(rc));
  }
  lua_pushnumber(L, id);
  return 1;
}

/* core.fdatasync_async(fd) -> op id; the result is {status = 0} or
 * {status = -errno, err = "fdatasync: reason"}. For the frontier's output
 * file: its commit waits for the sync, the loop does not. */
int sc_lua_fdatasync_async(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  sc_loop_t *loop = sc_loop_default();
  if (!loop) return luaL_error(L, "scatter: fdatasync_async: out of memory");
  uint32_t id = sc_ops_new();
  int rc = sc_afile_sync(sc_loop_uv(loop), fd, on_written,
                         (void *)(uintptr_t)id);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "fdatasync: %s", uv_strerror(rc));
    return 2;
  }
  lua_pushnumber(L, id);
  return 1;
}
