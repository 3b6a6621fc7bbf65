/* The pool userdata's structures, shared by pool.c (the pool and its
 * transport) and response.c (responses and verdicts of its attempts).
 */
#ifndef SC_LUA_POOL_INT_H
#define SC_LUA_POOL_INT_H

#include <lauxlib.h>
#include <lua.h>

#include "../core/sched.h"
#include "../net/aftertimer.h"
#include "../net/loop.h"
#include "../net/xfer.h"

#define POOL_MT "scatter.pool"

typedef struct lpool lpool;

typedef struct lreq { /* a task's request; the scheduler's task ud */
  sc_req_t req;
  lpool *pool;
  struct lreq *prev, *next;
  /* allocated at the first failure: most tasks never fail, and 100,000
   * pending tasks paid 1 KiB each for it (bench/memory.lua) */
  char *last_error;
  /* consensus on a 404/410 (DESIGN.md, Hardening): the first such status
   * and the proxy that gave it; a different proxy agreeing makes it final */
  long gone_status;
  uint32_t gone_proxy;
} lreq;

#define LAST_ERROR_SIZE 1024

typedef struct latt { /* an attempt's transport data */
  sc_xfer_t *x;
  lpool *pool;
  sc_handle_t handle;
} latt;

struct lpool {
  sc_sched_t *sched;
  sc_aftertimer_t *wake; /* the scheduler's timer */
  sc_xfer_opts_t xo;
  char *ca_file;
  char *proxy_ca_file;
  int id;
  int no_tls_share; /* tls_session_sharing = false */
  int no_consensus; /* consensus_404 = false */
  lreq *reqs; /* every live request, to free them at close */
};

/* The open pool at stack index i; raises when it is closed. */
lpool *sc_lua_pool_check(lua_State *L, int i);
/* The request's error buffer, allocated on first use; NULL when out of
 * memory (the error is then not kept). */
char *sc_lua_pool_error_buf(lreq *r);
void sc_lua_pool_req_free(lpool *p, lreq *r);
void sc_lua_pool_latt_free(latt *la);
void sc_lua_slist_from(lua_State *L, int i, struct curl_slist **l);
/* Pushes a list of the lines of l. */
void sc_lua_slist_push(lua_State *L, const struct curl_slist *l);

static inline sc_handle_t check_handle(lua_State *L, int i) {
  return (sc_handle_t)luaL_checknumber(L, i);
}

/* Sets response.c's pool methods in the table on top (two of them are
 * closures over the response keys). */
void sc_lua_response_register(lua_State *L);
extern const luaL_Reg sc_lua_pool_methods[];
/* direct.c: a session's pinned requests (its methods; freed at close) */
void sc_lua_direct_register(lua_State *L);
void sc_lua_direct_close_pool(lpool *p);

#endif
