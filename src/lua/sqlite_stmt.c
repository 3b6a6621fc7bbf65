/* A prepared SQLite statement for Lua (see sqlite.h).
 *
 *   st:exec(...)  binds the arguments, runs to the end: changes or nil, err
 *   st:one(...)   binds, takes the first row: true, col1, col2... | false
 *   st:bind(...)  then st:step() -> row (array of columns) | false at the
 *                 end | nil, err: for results too big for one table
 *   st:bind(...)  then st:fetch(names) -> every row as a table whose
 *                 fields are named by names[i] for column i (NULLs left
 *                 out) | nil, err: one C call for a whole result, so a
 *                 row costs no Lua work of its own (the frontier's lease)
 *   st:exec_many(n, ...)  runs the statement n times; an argument that is
 *                 a table binds its [i] on run i, any other value binds
 *                 itself every run: total changes | nil, err (runs before
 *                 the failing one stay done: the caller's transaction
 *                 decides)
 *
 * Arguments bind by position: nil is NULL, an integral number an INTEGER,
 * another number a REAL, a string TEXT (its bytes as given, NULs too),
 * a boolean 0/1. Columns come back as numbers, strings or nil. */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>

#include "sqlite.h"

typedef struct {
  sqlite3_stmt *st; /* NULL once finalised */
  sqlite3 *db;
} sc_sqlite_stmt;

static sc_sqlite_stmt *check_stmt(lua_State *L) {
  sc_sqlite_stmt *s = luaL_checkudata(L, 1, SC_SQLITE_STMT_MT);
  if (!s->st) luaL_error(L, "sqlite: the statement is finalised");
  return s;
}

/* Binds the Lua value at idx to parameter i; returns SQLite's code. copy
 * = 0 binds strings in place: only while the value stays reachable until
 * the statement is reset. */
static int bind_one(lua_State *L, sc_sqlite_stmt *s, int i, int idx,
                    int copy) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return sqlite3_bind_null(s->st, i);
  case LUA_TBOOLEAN: return sqlite3_bind_int(s->st, i, lua_toboolean(L, idx));
  case LUA_TNUMBER: {
    double v = lua_tonumber(L, idx);
    if (v == floor(v) && fabs(v) < 9.0e15)
      return sqlite3_bind_int64(s->st, i, (sqlite3_int64)v);
    return sqlite3_bind_double(s->st, i, v);
  }
  case LUA_TSTRING: {
    size_t len;
    const char *p = lua_tolstring(L, idx, &len);
    return sqlite3_bind_text(s->st, i, p, (int)len,
                             copy ? SQLITE_TRANSIENT : SQLITE_STATIC);
  }
  default:
    return luaL_error(L, "sqlite: bad argument #%d (%s cannot be bound)", i,
                      luaL_typename(L, idx));
  }
}

static int check_nargs(lua_State *L, sc_sqlite_stmt *s, int n) {
  if (n > sqlite3_bind_parameter_count(s->st))
    return luaL_error(L, "sqlite: %d arguments for %d parameters", n,
                      sqlite3_bind_parameter_count(s->st));
  return 0;
}

/* Binds arguments 2..top; returns 0 or pushes nil, err and returns 2.
 * copy = 0 binds strings in place: only for exec and one, which run the
 * statement while the arguments are on the Lua stack, and clear the
 * bindings before they return. */
static int bind_args(lua_State *L, sc_sqlite_stmt *s, int copy) {
  sqlite3_reset(s->st);
  sqlite3_clear_bindings(s->st);
  int n = lua_gettop(L) - 1;
  check_nargs(L, s, n);
  for (int i = 1; i <= n; i++)
    if (bind_one(L, s, i, i + 1, copy) != SQLITE_OK)
      return sc_sqlite_fail(L, s->db, "bind");
  return 0;
}

static void push_col(lua_State *L, sqlite3_stmt *st, int c) {
  switch (sqlite3_column_type(st, c)) {
  case SQLITE_INTEGER:
    lua_pushnumber(L, (lua_Number)sqlite3_column_int64(st, c));
    break;
  case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(st, c)); break;
  case SQLITE_NULL: lua_pushnil(L); break;
  default: {
    const void *p = sqlite3_column_blob(st, c);
    lua_pushlstring(L, p ? p : "", (size_t)sqlite3_column_bytes(st, c));
  }
  }
}

static int l_exec(lua_State *L) {
  sc_sqlite_stmt *s = check_stmt(L);
  int r = bind_args(L, s, 0);
  if (r) {
    sqlite3_clear_bindings(s->st);
    return r;
  }
  int rc;
  while ((rc = sqlite3_step(s->st)) == SQLITE_ROW) {}
  if (rc != SQLITE_DONE) {
    r = sc_sqlite_fail(L, s->db, "step");
    sqlite3_reset(s->st);
    sqlite3_clear_bindings(s->st);
    return r;
  }
  sqlite3_reset(s->st);
  sqlite3_clear_bindings(s->st);
  lua_pushnumber(L, sqlite3_changes(s->db));
  return 1;
}

static int l_one(lua_State *L) {
  sc_sqlite_stmt *s = check_stmt(L);
  int r = bind_args(L, s, 1);
  if (r) return r;
  int rc = sqlite3_step(s->st);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(s->st);
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc != SQLITE_ROW) {
    r = sc_sqlite_fail(L, s->db, "step");
    sqlite3_reset(s->st);
    return r;
  }
  int n = sqlite3_column_count(s->st);
  luaL_checkstack(L, n + 1, "sqlite: too many columns");
  lua_pushboolean(L, 1);
  for (int c = 0; c < n; c++) push_col(L, s->st, c);
  sqlite3_reset(s->st);
  return n + 1;
}

static int l_bind(lua_State *L) {
  sc_sqlite_stmt *s = check_stmt(L);
  int r = bind_args(L, s, 1);
  if (r) return r;
  lua_pushboolean(L, 1);
  return 1;
}

static int l_step(lua_State *L) {
  sc_sqlite_stmt *s = check_stmt(L);
  int rc = sqlite3_step(s->st);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(s->st);
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc != SQLITE_ROW) {
    int r = sc_sqlite_fail(L, s->db, "step");
    sqlite3_reset(s->st);
    return r;
  }
  int n = sqlite3_column_count(s->st);
  lua_createtable(L, n, 0);
  for (int c = 0; c < n; c++) {
    push_col(L, s->st, c);
    lua_rawseti(L, -2, c + 1);
  }
  return 1;
}

static int l_fetch(lua_State *L) {
  sc_sqlite_stmt *s = check_stmt(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  int n = sqlite3_column_count(s->st);
  luaL_checkstack(L, n + 4, "sqlite: too many columns");
  for (int c = 0; c < n; c++) { /* the names at 3 .. n + 2 */
    lua_rawgeti(L, 2, c + 1);
    if (!lua_isstring(L, -1))
      return luaL_error(L, "sqlite: fetch: no name for column %d", c + 1);
  }
  lua_newtable(L);
  int out = lua_gettop(L), rows = 0, rc;
  while ((rc = sqlite3_step(s->st)) == SQLITE_ROW) {
    lua_createtable(L, 0, n + 2);
    for (int c = 0; c < n; c++) {
      if (sqlite3_column_type(s->st, c) == SQLITE_NULL) continue;
      lua_pushvalue(L, 3 + c);
      push_col(L, s->st, c);
      lua_rawset(L, -3);
    }
    lua_rawseti(L, out, ++rows);
  }
  if (rc != SQLITE_DONE) {
    int r = sc_sqlite_fail(L, s->db, "step");
    sqlite3_reset(s->st);
    return r;
  }
  sqlite3_reset(s->st);
  sqlite3_clear_bindings(s->st);
  return 1;
}

static int l_exec_many(lua_State *L) {
  sc_sqlite_stmt *s = check_stmt(L);
  lua_Integer rows = luaL_checkinteger(L, 2);
  int n = lua_gettop(L) - 2;
  check_nargs(L, s, n);
  luaL_checkstack(L, n + 2, "sqlite: too many arguments");
  double changes = 0;
  sqlite3_reset(s->st);
  sqlite3_clear_bindings(s->st);
  for (int i = 1; i <= n; i++) /* the constants, once */
    if (!lua_istable(L, i + 2) &&
        bind_one(L, s, i, i + 2, 1) != SQLITE_OK)
      return sc_sqlite_fail(L, s->db, "bind");
  for (lua_Integer r = 1; r <= rows; r++) {
    int top = lua_gettop(L), rc = SQLITE_OK;
    /* each row's values stay on the stack until the reset: bound in place */
    for (int i = 1; i <= n && rc == SQLITE_OK; i++) {
      if (!lua_istable(L, i + 2)) continue;
      lua_rawgeti(L, i + 2, (int)r);
      rc = bind_one(L, s, i, lua_gettop(L), 0);
    }
    const char *what = "bind";
    if (rc == SQLITE_OK) {
      what = "step";
      while ((rc = sqlite3_step(s->st)) == SQLITE_ROW) {}
      if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
      int ret = sc_sqlite_fail(L, s->db, what);
      sqlite3_reset(s->st);
      sqlite3_clear_bindings(s->st);
      return ret;
    }
    changes += sqlite3_changes(s->db);
    sqlite3_reset(s->st);
    lua_settop(L, top);
  }
  sqlite3_clear_bindings(s->st);
  lua_pushnumber(L, changes);
  return 1;
}

static int l_reset(lua_State *L) {
  sqlite3_reset(check_stmt(L)->st);
  return 0;
}

static int l_finalize(lua_State *L) {
  sc_sqlite_stmt *s = luaL_checkudata(L, 1, SC_SQLITE_STMT_MT);
  if (s->st) {
    sqlite3_finalize(s->st);
    s->st = NULL;
  }
  return 0;
}

static const luaL_Reg stmt_methods[] = {
    {"exec", l_exec}, {"one", l_one},     {"bind", l_bind},
    {"step", l_step}, {"fetch", l_fetch}, {"exec_many", l_exec_many},
    {"reset", l_reset}, {"finalize", l_finalize},
    {NULL, NULL}};

int sc_sqlite_stmt_new(lua_State *L, sc_sqlite_db *d) {
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  if (luaL_newmetatable(L, SC_SQLITE_STMT_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, stmt_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_finalize);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  sc_sqlite_stmt *s = lua_newuserdata(L, sizeof(*s));
  s->st = NULL;
  s->db = d->db;
  luaL_getmetatable(L, SC_SQLITE_STMT_MT);
  lua_setmetatable(L, -2);
  /* the handle stays alive while a statement can use it */
  lua_createtable(L, 1, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lua_setfenv(L, -2);
  if (sqlite3_prepare_v2(d->db, sql, (int)len, &s->st, NULL) != SQLITE_OK)
    return sc_sqlite_fail(L, d->db, "prepare");
  return 1;
}
