/* scatter.core: the C side of the Lua module. This file registers the
 * functions of every binding file (funcs.h) and the pool's methods
 * (pool.c, response.c), and holds the small stateless helpers.
 *
 * C never calls into Lua. A finished attempt that carries an HTTP response
 * is queued as an event; the Lua runtime drains the queue after each loop
 * pass (core.poll), classifies the response and reports the verdict
 * (pool:verdict). Transport failures never need Lua and are settled here.
 * So a classifier that errors or yields can never unwind through libuv.
 */
#include <lauxlib.h>
#include <lua.h>

#include "../core/proxyurl.h"
#include "../core/targeturl.h"
#include <time.h>

#include "../net/loop.h"
#include "../net/retryafter.h"
#include "../net/xfer.h"
#include "funcs.h"
#include "pool_int.h"

/* core.url_host(url) -> lower-cased host, or nil, why */
static int l_url_host(lua_State *L) {
  size_t n, sl = 0;
  const char *u = luaL_checklstring(L, 1, &n);
  const char *scheme = NULL;
  char host[1024];
  sc_url_err_t rc = sc_url_host(u, n, host, sizeof(host), &scheme, &sl);
  if (rc == SC_URL_OK) {
    lua_pushstring(L, host);
    return 1;
  }
  char why[128];
  lua_pushnil(L);
  if (sc_url_why(rc, scheme, sl, why, sizeof(why)))
    lua_pushfstring(L, "%s: %s", why, u);
  else
    lua_pushstring(L, why);
  return 2;
}

static int l_redact(lua_State *L) {
  char out[600];
  sc_proxy_redact(luaL_checkstring(L, 1), out, sizeof(out));
  lua_pushstring(L, out);
  return 1;
}

/* core.retry_after(value) -> seconds, or nil for no valid Retry-After */
static int l_retry_after(lua_State *L) {
  size_t n;
  const char *v = luaL_checklstring(L, 1, &n);
  double s = sc_retry_after_value(v, n, (double)time(NULL));
  if (s < 0) return 0;
  lua_pushnumber(L, s);
  return 1;
}

static int l_versions(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, curl_version());
  lua_setfield(L, -2, "curl");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "uv");
  return 1;
}

static const luaL_Reg funcs[] = {{"pool_new", sc_lua_pool_new},
                                 {"simulate", sc_lua_simulate},
                                 {"now", sc_lua_now},
                                 {"url_host", l_url_host},
                                 {"op_take", sc_lua_op_take},
                                 {"fetch", sc_lua_fetch},
                                 {"state_clock", sc_lua_state_clock},
                                 {"state_proxies", sc_lua_state_proxies},
                                 {"state_hosts", sc_lua_state_hosts},
                                 {"state_pairs", sc_lua_state_pairs},
                                 {"state_check", sc_lua_state_check},
                                 {"state_restore", sc_lua_state_restore},
                                 {"state_recent", sc_lua_state_recent},
                                 {"state_recent_restore", sc_lua_state_recent_restore},
                                 {"write_atomic", sc_lua_write_atomic},
                                 {"fdatasync_async", sc_lua_fdatasync_async},
                                 {"read_file", sc_lua_read_file},
                                 {"lock_file", sc_lua_lock_file},
                                 {"unlock_file", sc_lua_unlock_file},
                                 {"watchdog_arm", sc_lua_watchdog_arm},
                                 {"watchdog_disarm", sc_lua_watchdog_disarm},
                                 {"pool_hold", sc_lua_pool_hold},
                                 {"pool_add_keys", sc_lua_pool_add_keys},
                                 {"pool_retire", sc_lua_pool_retire},
                                 {"pool_probe", sc_lua_pool_probe},
                                 {"list_new", sc_lua_list_new},
                                 {"list_load", sc_lua_list_load},
                                 {"list_apply", sc_lua_list_apply},
                                 {"list_probe", sc_lua_list_probe},
                                 {"signal_watch", sc_lua_signal_watch},
                                 {"probe", sc_lua_probe},
                                 {"httpd_listen", sc_lua_httpd_listen},
                                 {"httpd_respond", sc_lua_httpd_respond},
                                 {"httpd_close", sc_lua_httpd_close},
                                 {"redis_open", sc_lua_redis_open},
                                 {"redis_decode", sc_lua_redis_decode},
                                 {"sqlite_open", sc_lua_sqlite_open},
                                 {"url_canonical", sc_lua_url_canonical},
                                 {"url_keys", sc_lua_url_keys},
                                 {"url_join", sc_lua_url_join},
                                 {"hash", sc_lua_hash},
                                 {"utf8_bad", sc_lua_utf8_bad},
                                 {"html_links", sc_lua_html_links},
                                 {"proxyd_listen", sc_lua_proxyd_listen},
                                 {"proxyd_request", sc_lua_proxyd_request},
                                 {"proxyd_respond", sc_lua_proxyd_respond},
                                 {"proxyd_tunnel", sc_lua_proxyd_tunnel},
                                 {"proxyd_close", sc_lua_proxyd_close},
                                 {"proxyd_count", sc_lua_proxyd_count},
                                 {"poll", sc_lua_poll},
                                 {"fd", sc_lua_fd},
                                 {"backend_timeout", sc_lua_backend_timeout},
                                 {"parse_proxy", sc_lua_parse_proxy},
                                 {"redact", l_redact},
                                 {"retry_after", l_retry_after},
                                 {"versions", l_versions},
                                 {NULL, NULL}};
int luaopen_scatter_core(lua_State *L) {
  if (luaL_newmetatable(L, POOL_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, sc_lua_pool_methods);
    sc_lua_response_register(L);
    sc_lua_direct_register(L);
    lua_getfield(L, -1, "close");
    lua_setfield(L, -3, "__gc");
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
