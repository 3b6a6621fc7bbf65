/* scatter.redis connections for lua/scatter/redis.lua (src/net/redis.h):
 *
 *   core.redis_open(host, port, opts) -> conn, state op id | nil, err
 *       opts: { password=, user=, db=, connect_timeout=, timeout=,
 *               backoff_max= }; the state op completes at each change:
 *       {status = 1 (up) | 0 (down), err = why}
 *   conn:send(extra, args) -> op id | nil, err
 *       args: an array of strings/numbers (binary-safe); the op's result is
 *       {status = 0, body = an encoded reply} or {status = -1, err = why}
 *   conn:up() -> boolean
 *   conn:close()
 *   core.redis_decode(body) -> value | nil, error reply
 *
 * C never calls Lua: a reply is copied into a flat encoding (a type byte,
 * then a length or value) that travels as the op's body and is turned into
 * Lua values by redis_decode when the waiter runs. Nil replies decode as
 * false, nested error replies as {err = message}. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../net/loop.h"
#include "../net/redis.h"
#include "ops.h"

#include "funcs.h"

#define REDIS_MT "scatter.redis"
#define MAX_ARGS 100000

typedef struct lredis {
  sc_redis_t *r; /* NULL once closed */
  uint32_t state_op;
} lredis;

typedef struct buf {
  char *p;
  size_t n, cap;
  int oom;
} buf;

static void put(buf *b, const void *d, size_t n) {
  if (b->oom) return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n) cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->n, d, n);
  b->n += n;
}

static void put_len(buf *b, char type, size_t len) {
  uint32_t l = (uint32_t)len;
  put(b, &type, 1);
  put(b, &l, sizeof(l));
}

static void encode(buf *b, const redisReply *r) {
  switch (r->type) {
  case REDIS_REPLY_INTEGER: {
    int64_t v = r->integer;
    put(b, "i", 1);
    put(b, &v, sizeof(v));
    break;
  }
  case REDIS_REPLY_NIL: put(b, "n", 1); break;
  case REDIS_REPLY_ARRAY:
    put_len(b, 'a', r->elements);
    for (size_t i = 0; i < r->elements; i++) encode(b, r->element[i]);
    break;
  case REDIS_REPLY_ERROR:
    put_len(b, 'e', r->len);
    put(b, r->str, r->len);
    break;
  default: /* string, status */
    put_len(b, 's', r->len);
    put(b, r->str, r->len);
    break;
  }
}

static void on_reply(sc_redis_t *r, const redisReply *reply, const char *err,
                     void *ud) {
  uint32_t id = (uint32_t)(uintptr_t)ud;
  (void)r;
  if (!reply) {
    sc_ops_done(id, -1, NULL, 0, err);
    return;
  }
  buf b = {0};
  encode(&b, reply);
  if (b.oom)
    sc_ops_done(id, -1, NULL, 0, "out of memory");
  else
    sc_ops_done(id, 0, b.p, b.n, NULL);
  free(b.p);
}

static void on_state(sc_redis_t *r, int up, const char *err, void *ud) {
  lredis *lr = ud;
  (void)r;
  sc_ops_done(lr->state_op, up, NULL, 0, err);
}

static lredis *check(lua_State *L) {
  lredis *lr = luaL_checkudata(L, 1, REDIS_MT);
  if (!lr->r) luaL_error(L, "scatter.redis: the connection is closed");
  return lr;
}

static double opt_num(lua_State *L, int t, const char *k, double d) {
  lua_getfield(L, t, k);
  double v = lua_isnil(L, -1) ? d : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static const char *opt_str(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *v = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
  lua_pop(L, 1);
  return v; /* still referenced by the options table */
}

static int l_send(lua_State *L) {
  lredis *lr = check(L);
  double extra = luaL_checknumber(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  int argc = (int)lua_objlen(L, 3);
  if (argc < 1 || argc > MAX_ARGS)
    return luaL_argerror(L, 3, "1 to 100000 arguments expected");
  const char **argv = malloc(sizeof(*argv) * (size_t)argc);
  size_t *lens = malloc(sizeof(*lens) * (size_t)argc);
  if (!argv || !lens) {
    free(argv);
    free(lens);
    return luaL_error(L, "scatter.redis: out of memory");
  }
  lua_settop(L, 3);
  /* the strings stay referenced by this stack until sent */
  if (!lua_checkstack(L, argc + LUA_MINSTACK)) {
    free(argv);
    free(lens);
    return luaL_error(L, "scatter.redis: too many arguments");
  }
  for (int i = 0; i < argc; i++) {
    lua_rawgeti(L, 3, i + 1);
    int t = lua_type(L, -1);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
      free(argv);
      free(lens);
      return luaL_error(L, "scatter.redis: argument %d is a %s, not a string",
                        i + 1, lua_typename(L, t));
    }
    argv[i] = lua_tolstring(L, -1, &lens[i]);
  }
  uint32_t id = sc_ops_new();
  int rc = sc_redis_command(lr->r, argc, argv, lens, extra, on_reply,
                            (void *)(uintptr_t)id);
  free(argv);
  free(lens);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, rc == UV_ENOTCONN ? "not connected" : uv_strerror(rc));
    return 2;
  }
  lua_pushnumber(L, id);
  return 1;
}

static int l_up(lua_State *L) {
  lredis *lr = luaL_checkudata(L, 1, REDIS_MT);
  lua_pushboolean(L, lr->r && sc_redis_is_up(lr->r));
  return 1;
}

static int l_close(lua_State *L) {
  lredis *lr = luaL_checkudata(L, 1, REDIS_MT);
  if (lr->r) sc_redis_close(lr->r);
  lr->r = NULL;
  return 0;
}

static const luaL_Reg methods[] = {
    {"send", l_send}, {"up", l_up}, {"close", l_close}, {NULL, NULL}};

int sc_lua_redis_open(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  if (port < 1 || port > 65535) return luaL_argerror(L, 2, "not a TCP port");
  if (!lua_isnoneornil(L, 3))
    luaL_checktype(L, 3, LUA_TTABLE);
  else {
    lua_settop(L, 2);
    lua_newtable(L);
  }
  sc_redis_opts_t o = {
      .host = host,
      .port = port,
      .password = opt_str(L, 3, "password"),
      .user = opt_str(L, 3, "user"),
      .db = (int)opt_num(L, 3, "db", 0),
      .connect_timeout = opt_num(L, 3, "connect_timeout", 5),
      .timeout = opt_num(L, 3, "timeout", 10),
      .backoff_max = opt_num(L, 3, "backoff_max", 5),
  };
  sc_loop_t *loop = sc_loop_default();
  if (!loop) return luaL_error(L, "scatter: cannot initialise libuv/libcurl");
  lredis *lr = lua_newuserdata(L, sizeof(*lr));
  lr->r = NULL;
  lr->state_op = sc_ops_new();
  if (luaL_newmetatable(L, REDIS_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  int rc = sc_redis_open(sc_loop_uv(loop), &o, on_state, lr, &lr->r);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushnumber(L, lr->state_op);
  return 2;
}

/* ---- decoding ---- */

typedef struct rd {
  const char *p, *end;
} rd;

static int get(rd *d, void *out, size_t n) {
  if ((size_t)(d->end - d->p) < n) return -1;
  memcpy(out, d->p, n);
  d->p += n;
  return 0;
}

static int decode(lua_State *L, rd *d, int depth) {
  char t;
  uint32_t len;
  if (depth > 64 || get(d, &t, 1) < 0) return -1;
  luaL_checkstack(L, 4, "scatter.redis: reply too deep");
  switch (t) {
  case 'n': lua_pushboolean(L, 0); return 0;
  case 'i': {
    int64_t v;
    if (get(d, &v, sizeof(v)) < 0) return -1;
    lua_pushnumber(L, (lua_Number)v);
    return 0;
  }
  case 's':
  case 'e':
    if (get(d, &len, sizeof(len)) < 0 || (size_t)(d->end - d->p) < len)
      return -1;
    if (t == 'e' && depth > 0) lua_createtable(L, 0, 1);
    lua_pushlstring(L, d->p, len);
    if (t == 'e' && depth > 0) lua_setfield(L, -2, "err");
    d->p += len;
    return 0;
  case 'a':
    if (get(d, &len, sizeof(len)) < 0) return -1;
    lua_createtable(L, (int)(len < 1024 ? len : 1024), 0);
    for (uint32_t i = 0; i < len; i++) {
      if (decode(L, d, depth + 1) < 0) return -1;
      lua_rawseti(L, -2, (int)i + 1);
    }
    return 0;
  default: return -1;
  }
}

int sc_lua_redis_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  rd d = {s, s + n};
  if (n > 0 && s[0] == 'e') {
    lua_pushnil(L);
    if (decode(L, &d, 0) < 0) return luaL_error(L, "scatter.redis: bad reply");
    return 2;
  }
  if (decode(L, &d, 0) < 0 || d.p != d.end)
    return luaL_error(L, "scatter.redis: bad reply encoding");
  return 1;
}
