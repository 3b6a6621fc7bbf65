/* Proxy lists loaded a slice at a time, for lua/scatter/feed.lua
 * (DESIGN.md section 13): a 3.18M-line list used to block scatter.pool{}
 * for 13.7 s at 1.1 GB, parsed into a Lua table of keys with a Lua set
 * beside it. Here the lines of a list's body are parsed in C, each key
 * goes straight into the scheduler (whose intern table merges
 * duplicates), and the list itself is an array of proxy ids: no Lua value
 * per line. The feed parses one slice per loop turn, so dispatch starts
 * with the first proxies while the rest load.
 *
 * An idlist is a source's list (ids in list order, each once) or the
 * feed's set of every proxy it manages, with the ones it retired.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/proxyurl.h"
#include "pool.h"

#include "funcs.h"

#define IDLIST_MT "scatter.idlist"

typedef struct idlist {
  uint32_t *ids;
  uint32_t n, cap;
  uint64_t *seen, *out; /* bitmaps by proxy id: listed here; retired */
  uint32_t words;
} idlist;

static idlist *check_list(lua_State *L, int i) {
  return luaL_checkudata(L, i, IDLIST_MT);
}

static int bit(const uint64_t *m, uint32_t words, uint32_t id) {
  return id / 64 < words && (m[id / 64] >> (id % 64) & 1);
}

/* Room for id in both bitmaps; 0 or -1 (out of memory). */
static int fit(idlist *l, uint32_t id) {
  if (id / 64 < l->words) return 0;
  uint32_t w = l->words ? l->words : 64;
  while (w <= id / 64) w *= 2;
  uint64_t *s = realloc(l->seen, w * sizeof(uint64_t));
  if (!s) return -1;
  l->seen = s;
  uint64_t *o = realloc(l->out, w * sizeof(uint64_t));
  if (!o) return -1;
  l->out = o;
  memset(s + l->words, 0, (w - l->words) * sizeof(uint64_t));
  memset(o + l->words, 0, (w - l->words) * sizeof(uint64_t));
  l->words = w;
  return 0;
}

/* Adds id unless the list has it: 1 added, 0 had it, -1 out of memory. */
static int add(idlist *l, uint32_t id) {
  if (fit(l, id) < 0) return -1;
  if (bit(l->seen, l->words, id)) return 0;
  if (l->n == l->cap) {
    uint32_t c = l->cap ? l->cap * 2 : 256;
    uint32_t *v = realloc(l->ids, c * sizeof(uint32_t));
    if (!v) return -1;
    l->ids = v;
    l->cap = c;
  }
  l->ids[l->n++] = id;
  l->seen[id / 64] |= 1ull << (id % 64);
  return 1;
}

static int l_gc(lua_State *L) {
  idlist *l = check_list(L, 1);
  free(l->ids);
  free(l->seen);
  free(l->out);
  memset(l, 0, sizeof(*l));
  return 0;
}

static int l_len(lua_State *L) {
  lua_pushnumber(L, check_list(L, 1)->n);
  return 1;
}

/* list:rows() -> { id + 1, ... }: the state file's proxy rows */
static int l_rows(lua_State *L) {
  idlist *l = check_list(L, 1);
  lua_createtable(L, (int)l->n, 0);
  for (uint32_t i = 0; i < l->n; i++) {
    lua_pushnumber(L, (lua_Number)l->ids[i] + 1);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

/* list:add(ids) -> list: ids (a table of proxy ids) appended */
static int l_add(lua_State *L) {
  idlist *l = check_list(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int n = (int)lua_objlen(L, 2);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    lua_Number v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!(v >= 0 && v < 4294967295.0) || v != (uint32_t)v)
      return luaL_argerror(L, 2, "not a list of proxy ids");
    if (add(l, (uint32_t)v) < 0) return luaL_error(L, "scatter: out of memory");
  }
  lua_settop(L, 1);
  return 1;
}

/* list:retired(pool, key) -> true when the key's proxy is one this
 * (feed's) set retired */
static int l_retired(lua_State *L) {
  idlist *l = check_list(L, 1);
  sc_sched_t *s = sc_lua_pool_sched(L, 2);
  const char *key = luaL_checkstring(L, 3);
  uint32_t id;
  lua_pushboolean(L, sc_sched_proxy_find(s, key, &id) == 0 && bit(l->out, l->words, id));
  return 1;
}

/* list:out(id) -> true when this (feed's) set retired the proxy: a
 * session pinned to it must move (its source no longer lists it) */
static int l_out(lua_State *L) {
  idlist *l = check_list(L, 1);
  lua_Number v = luaL_checknumber(L, 2);
  lua_pushboolean(L, v >= 0 && v < 4294967295.0 &&
                         bit(l->out, l->words, (uint32_t)v));
  return 1;
}

/* core.list_new() -> an empty idlist */
int sc_lua_list_new(lua_State *L) {
  idlist *l = lua_newuserdata(L, sizeof(*l));
  memset(l, 0, sizeof(*l));
  if (luaL_newmetatable(L, IDLIST_MT)) {
    static const luaL_Reg m[] = {{"rows", l_rows},
                                 {"add", l_add},
                                 {"retired", l_retired},
                                 {"out", l_out},
                                 {NULL, NULL}};
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_len);
    lua_setfield(L, -2, "__len");
    lua_newtable(L);
    luaL_register(L, NULL, m);
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
  return 1;
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* core.list_load(list, pool, body, from, budget[, scheme]) -> next, new,
 * bad, first_bad, socks4, first_why: parses the lines of body from byte
 * offset `from` (0-based) for about `budget` seconds (at least one line),
 * adding each proxy to the pool and to the list. next: where the next
 * slice starts, or nil at the end; new: proxies new to the pool; bad:
 * lines that are no proxy (first_bad: the first of them, or nil;
 * first_why: what is wrong with it, for the warning); socks4: socks4://
 * keys. */
int sc_lua_list_load(lua_State *L) {
  idlist *l = check_list(L, 1);
  sc_sched_t *s = sc_lua_pool_sched(L, 2);
  size_t blen, sl;
  const char *body = luaL_checklstring(L, 3, &blen);
  lua_Number from = luaL_checknumber(L, 4);
  double budget = luaL_checknumber(L, 5);
  const char *sn = luaL_optlstring(L, 6, "socks5", &sl);
  sc_proxy_scheme_t dflt;
  if (sc_proxy_scheme_parse(sn, sl, &dflt) != 0)
    return luaL_argerror(L, 6, "unknown proxy scheme");
  if (!(from >= 0) || from > (lua_Number)blen) return luaL_argerror(L, 4, "not an offset in body");
  size_t at = (size_t)from;
  double until = mono() + budget;
  uint32_t fresh = 0, bad = 0, socks4 = 0, lines = 0;
  const char *first_bad = NULL, *first_why = NULL;
  size_t first_len = 0;
  while (at < blen) {
    const char *line = body + at;
    const char *nl = memchr(line, '\n', blen - at);
    size_t len = nl ? (size_t)(nl - line) : blen - at;
    at += len + (nl != NULL);
    char key[512];
    const char *why = NULL;
    int rc = sc_proxy_parse_as(line, len, dflt, key, sizeof(key), &why);
    if (rc < 0) {
      if (!first_bad) { /* shown in a warning: without a CRLF's CR */
        first_bad = line;
        first_len = len && line[len - 1] == '\r' ? len - 1 : len;
        first_why = why;
      }
      bad++;
    } else if (rc == 0) {
      uint32_t before = sc_sched_proxy_count(s), id;
      if (sc_sched_proxy_add(s, key, &id) < 0) return luaL_error(L, "scatter: out of memory");
      fresh += id >= before;
      int r = add(l, id);
      if (r < 0) return luaL_error(L, "scatter: out of memory");
      if (r == 1 && strncmp(key, "socks4://", 9) == 0) socks4++;
    }
    if (++lines % 256 == 0 && mono() >= until) break;
  }
  if (at < blen) lua_pushnumber(L, (lua_Number)at);
  else lua_pushnil(L);
  lua_pushnumber(L, fresh);
  lua_pushnumber(L, bad);
  if (first_bad) lua_pushlstring(L, first_bad, first_len);
  else lua_pushnil(L);
  lua_pushnumber(L, socks4);
  if (first_why) lua_pushstring(L, first_why);
  else lua_pushnil(L);
  return 6;
}

/* core.list_apply(pool, known, lists) -> retired, revived: the pool's
 * membership brought in line with `lists` (a table of idlists: the
 * inline proxies and each source's latest list). Every listed proxy joins
 * `known` (the feed's set); a known proxy no list has is retired, a
 * retired one listed again revived, all under one hold (nothing
 * dispatches half-way). Proxies the feed never listed (scatter.share's
 * dealing, say) are not touched. */
int sc_lua_list_apply(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  idlist *known = check_list(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  uint32_t words = (sc_sched_proxy_count(s) + 63) / 64;
  uint64_t *member = calloc(words ? words : 1, sizeof(uint64_t));
  if (!member) return luaL_error(L, "scatter: out of memory");
  int n = (int)lua_objlen(L, 3);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 3, i);
    idlist *l = luaL_testudata(L, -1, IDLIST_MT);
    lua_pop(L, 1);
    if (!l) {
      free(member);
      return luaL_argerror(L, 3, "not a list of idlists");
    }
    for (uint32_t k = 0; k < l->n; k++) {
      uint32_t id = l->ids[k];
      if (id / 64 >= words) continue; /* not this pool's */
      member[id / 64] |= 1ull << (id % 64);
      if (add(known, id) < 0) {
        free(member);
        return luaL_error(L, "scatter: out of memory");
      }
    }
  }
  uint32_t retired = 0, revived = 0;
  sc_sched_hold(s, 1);
  for (uint32_t k = 0; k < known->n; k++) {
    uint32_t id = known->ids[k];
    if (id / 64 >= words) continue;
    int out = !(member[id / 64] >> (id % 64) & 1);
    if (out == bit(known->out, known->words, id)) continue;
    sc_sched_proxy_retire(s, id, out);
    if (out) {
      known->out[id / 64] |= 1ull << (id % 64);
      retired++;
    } else {
      known->out[id / 64] &= ~(1ull << (id % 64));
      revived++;
    }
  }
  sc_sched_hold(s, 0);
  free(member);
  lua_pushnumber(L, retired);
  lua_pushnumber(L, revived);
  return 2;
}

/* core.list_probe(pool, list) -> how many dead proxies of the list got a
 * probe (sc_sched_proxy_probe; they must have rested cooldown_max) */
int sc_lua_list_probe(lua_State *L) {
  sc_sched_t *s = sc_lua_pool_sched(L, 1);
  idlist *l = check_list(L, 2);
  uint32_t count = sc_sched_proxy_count(s);
  int armed = 0;
  sc_sched_hold(s, 1);
  for (uint32_t k = 0; k < l->n; k++)
    if (l->ids[k] < count) armed += sc_sched_proxy_probe(s, l->ids[k]) == 1;
  sc_sched_hold(s, 0);
  lua_pushinteger(L, armed);
  return 1;
}
