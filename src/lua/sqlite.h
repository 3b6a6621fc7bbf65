/* The SQLite binding for the embedded frontier (lua/scatter/queue_sqlite.lua):
 * a database handle (sqlite.c) and its prepared statements (sqlite_stmt.c),
 * luv style: one userdata type per file, failures are nil, err. */
#ifndef SC_LUA_SQLITE_H
#define SC_LUA_SQLITE_H

#include <lua.h>
#include <sqlite3.h>

#define SC_SQLITE_DB_MT "scatter.sqlite.db"
#define SC_SQLITE_STMT_MT "scatter.sqlite.stmt"

typedef struct {
  sqlite3 *db; /* NULL once closed */
} sc_sqlite_db;

/* Pushes nil and "sqlite: <what>: <message>"; returns 2. */
int sc_sqlite_fail(lua_State *L, sqlite3 *db, const char *what);

/* db at index 1 and sql at 2: pushes a statement userdata or nil, err. */
int sc_sqlite_stmt_new(lua_State *L, sc_sqlite_db *d);

#endif
