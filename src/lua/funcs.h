/* The Lua-facing functions of the binding files other than core.c, which
 * registers them all in the scatter.core table. */
#ifndef SC_LUA_FUNCS_H
#define SC_LUA_FUNCS_H

#include <lua.h>

int sc_lua_pool_new(lua_State *L);    /* pool.c */
int sc_lua_parse_proxy(lua_State *L);
int sc_lua_now(lua_State *L);         /* events.c */
int sc_lua_poll(lua_State *L);
int sc_lua_fd(lua_State *L);
int sc_lua_backend_timeout(lua_State *L);
int sc_lua_op_take(lua_State *L);     /* ops.c */
int sc_lua_simulate(lua_State *L); /* sim.c */
int sc_lua_fetch(lua_State *L);    /* fetch.c */
int sc_lua_probe(lua_State *L);    /* probe.c */
int sc_lua_state_clock(lua_State *L); /* state.c */
int sc_lua_state_proxies(lua_State *L);
int sc_lua_state_hosts(lua_State *L);
int sc_lua_state_pairs(lua_State *L);
int sc_lua_state_check(lua_State *L);
int sc_lua_state_restore(lua_State *L);
int sc_lua_state_recent(lua_State *L);
int sc_lua_state_recent_restore(lua_State *L);
int sc_lua_write_atomic(lua_State *L);
int sc_lua_fdatasync_async(lua_State *L);
int sc_lua_pool_hold(lua_State *L); /* feed.c */
int sc_lua_pool_add_keys(lua_State *L);
int sc_lua_pool_retire(lua_State *L);
int sc_lua_pool_probe(lua_State *L);
int sc_lua_list_new(lua_State *L);
int sc_lua_list_load(lua_State *L);
int sc_lua_list_apply(lua_State *L);
int sc_lua_list_probe(lua_State *L);
int sc_lua_signal_watch(lua_State *L); /* signal.c */
int sc_lua_httpd_listen(lua_State *L); /* httpd.c */
int sc_lua_httpd_respond(lua_State *L);
int sc_lua_httpd_close(lua_State *L);
int sc_lua_redis_open(lua_State *L); /* redis.c */
int sc_lua_redis_decode(lua_State *L);
int sc_lua_sqlite_open(lua_State *L); /* sqlite.c */
int sc_lua_url_canonical(lua_State *L); /* url.c */
int sc_lua_url_keys(lua_State *L);      /* url.c */
int sc_lua_url_join(lua_State *L);
int sc_lua_hash(lua_State *L);
int sc_lua_utf8_bad(lua_State *L);
int sc_lua_html_links(lua_State *L); /* links.c */
int sc_lua_proxyd_listen(lua_State *L); /* proxyd.c */
int sc_lua_proxyd_request(lua_State *L);
int sc_lua_proxyd_respond(lua_State *L);
int sc_lua_proxyd_tunnel(lua_State *L);
int sc_lua_proxyd_close(lua_State *L);
int sc_lua_proxyd_count(lua_State *L);

int sc_lua_read_file(lua_State *L); /* readfile.c */
int sc_lua_lock_file(lua_State *L);
int sc_lua_unlock_file(lua_State *L);
int sc_lua_watchdog_arm(lua_State *L); /* watchdog.c */
int sc_lua_watchdog_disarm(lua_State *L);

#endif
