/* A SQLite database handle for Lua (see sqlite.h).
 *
 * Durability settings are the caller's (PRAGMAs through exec): this file
 * only opens, runs SQL text and makes statements. A handle closed while
 * statements live is closed with sqlite3_close_v2, which keeps it until the
 * last statement is finalised (by its __gc), so no order of collection can
 * use freed memory. */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>

#include "sqlite.h"

#include "funcs.h"

int sc_sqlite_fail(lua_State *L, sqlite3 *db, const char *what) {
  lua_pushnil(L);
  lua_pushfstring(L, "sqlite: %s: %s", what,
                  db ? sqlite3_errmsg(db) : "out of memory");
  return 2;
}

static sc_sqlite_db *check_db(lua_State *L) {
  sc_sqlite_db *d = luaL_checkudata(L, 1, SC_SQLITE_DB_MT);
  if (!d->db) luaL_error(L, "sqlite: the database is closed");
  return d;
}

static int l_exec(lua_State *L) {
  sc_sqlite_db *d = check_db(L);
  const char *sql = luaL_checkstring(L, 2);
  char *msg = NULL;
  if (sqlite3_exec(d->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "sqlite: %s", msg ? msg : sqlite3_errmsg(d->db));
    sqlite3_free(msg);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_prepare(lua_State *L) { return sc_sqlite_stmt_new(L, check_db(L)); }

static int l_changes(lua_State *L) {
  lua_pushnumber(L, sqlite3_changes(check_db(L)->db));
  return 1;
}

static int l_in_txn(lua_State *L) {
  lua_pushboolean(L, !sqlite3_get_autocommit(check_db(L)->db));
  return 1;
}

static int l_close(lua_State *L) {
  sc_sqlite_db *d = luaL_checkudata(L, 1, SC_SQLITE_DB_MT);
  if (d->db) {
    sqlite3_close_v2(d->db);
    d->db = NULL;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg db_methods[] = {{"exec", l_exec},
                                      {"prepare", l_prepare},
                                      {"changes", l_changes},
                                      {"in_transaction", l_in_txn},
                                      {"close", l_close},
                                      {NULL, NULL}};

/* sqlite_open(path, readonly) -> db | nil, err. A missing file is created
 * unless readonly. */
int sc_lua_sqlite_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int ro = lua_toboolean(L, 2);
  if (luaL_newmetatable(L, SC_SQLITE_DB_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, db_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  sc_sqlite_db *d = lua_newuserdata(L, sizeof(*d));
  d->db = NULL;
  luaL_getmetatable(L, SC_SQLITE_DB_MT);
  lua_setmetatable(L, -2);
  /* SQLite counts every allocation under a global mutex unless told not
   * to (it must be told before its first use); nothing here reads the
   * counts. Each row the frontier writes makes several allocations (this
   * build has no lookaside). */
  static int configured;
  if (!configured) {
    configured = 1;
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    /* a path is a file name: Debian's SQLite reads "file:x.db" as a URI
     * (the database x.db) while the lock beside it was "file:x.db-lock",
     * so a writer opening "x.db" took another lock on the same file */
    sqlite3_config(SQLITE_CONFIG_URI, 0);
  }
  int flags = ro ? SQLITE_OPEN_READONLY
                 : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "sqlite: cannot open %s: %s", path,
                    db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return 2;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);
  d->db = db;
  return 1;
}
