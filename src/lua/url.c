/* URL helpers for the frontier (DESIGN.md section 8): canonical form (the
 * dedup key), joining a reference to a base, a body hash. The parsing and
 * resolving is libcurl's URL API; this file only picks the parts.
 *
 *   url_canonical(u) -> URL | nil, err   scheme and host lower-case, the
 *       default port and the fragment dropped, dot segments resolved
 *   url_join(base, ref) -> URL | nil, err   ref resolved against base, as a
 *       browser does (RFC 3986 section 5), fragment kept; spaces and
 *       non-ASCII bytes percent-encoded
 *   url_keys(list, prefix) -> keys | nil   keys[i] = prefix .. canonical
 *       form of list[i], for a list of URL strings (push_many's common
 *       case, in one call); nil when any element is not a string or not a
 *       good URL (the caller's slow path says which, and why)
 *   hash(s) -> 16 hex digits (FNV-1a 64: a key part, not a security hash) */
#include <ctype.h>
#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../core/targeturl.h"

#include "funcs.h"

#define MAX_URL 65536 /* pool.lua's M.MAX_URL */

/* The same words as the submit path's check (core.c's url_host). */
static int check_http(lua_State *L, const char *u, size_t n) {
  size_t sl = 0;
  const char *scheme = NULL;
  char host[1024], why[128];
  sc_url_err_t rc = sc_url_host(u, n, host, sizeof(host), &scheme, &sl);
  if (rc == SC_URL_OK) return 0;
  sc_url_why(rc, scheme, sl, why, sizeof(why));
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

static int curl_fail(lua_State *L, CURLU *h, CURLUcode rc) {
  curl_url_cleanup(h);
  lua_pushnil(L);
  lua_pushfstring(L, "malformed URL (%s)", curl_url_strerror(rc));
  return 2;
}

/* Sets h to the canonical form of u (n bytes, already checked by
 * check_http) and stores it in *out (curl_free it). A URL with no fragment
 * and no upper case in its authority skips those two steps: most do. */
static CURLUcode canonical(CURLU *h, const char *u, size_t n, char **out) {
  /* non-ASCII bytes percent-encoded (as url_join and a browser write
   * them), escapes in upper case (RFC 3986 6.2.2.1): "caf\xc3\xa9",
   * "caf%c3%a9" and "caf%C3%A9" are one page, one key */
  int high = 0, esc = 0;
  for (size_t i = 0; i < n; i++) {
    if ((unsigned char)u[i] >= 0x80)
      high = 1;
    else if (u[i] == '%')
      esc = 1;
  }
  CURLUcode rc = curl_url_set(h, CURLUPART_URL, u, high ? CURLU_URLENCODE : 0);
  if (rc != CURLUE_OK) return rc;
  if (memchr(u, '#', n)) rc = curl_url_set(h, CURLUPART_FRAGMENT, NULL, 0);
  const char *a = strstr(u, "://"), *p = a ? a + 3 : u;
  int upper = 0;
  for (; p < u + n && *p != '/' && *p != '?' && *p != '#'; p++)
    if (*p >= 'A' && *p <= 'Z') upper = 1;
  char *host = NULL;
  if (rc == CURLUE_OK && upper) {
    rc = curl_url_get(h, CURLUPART_HOST, &host, 0);
    if (rc == CURLUE_OK) {
      for (char *q = host; *q; q++)
        if (*q >= 'A' && *q <= 'Z') *q = (char)(*q + 32);
      rc = curl_url_set(h, CURLUPART_HOST, host, 0);
      curl_free(host);
    }
  }
  if (rc == CURLUE_OK)
    rc = curl_url_get(h, CURLUPART_URL, out, CURLU_NO_DEFAULT_PORT);
  if (rc == CURLUE_OK && (esc || high))
    for (char *q = *out; *q; q++)
      if (q[0] == '%' && isxdigit((unsigned char)q[1]) &&
          isxdigit((unsigned char)q[2])) {
        q[1] = (char)toupper((unsigned char)q[1]);
        q[2] = (char)toupper((unsigned char)q[2]);
      }
  return rc;
}

int sc_lua_url_canonical(lua_State *L) {
  size_t n;
  const char *u = luaL_checklstring(L, 1, &n);
  int r = check_http(L, u, n);
  if (r) return r;
  CURLU *h = curl_url();
  if (!h) return luaL_error(L, "out of memory");
  char *out = NULL;
  CURLUcode rc = canonical(h, u, n, &out);
  if (rc != CURLUE_OK) return curl_fail(L, h, rc);
  lua_pushstring(L, out);
  curl_free(out);
  curl_url_cleanup(h);
  return 1;
}

int sc_lua_url_keys(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t pn;
  const char *prefix = luaL_checklstring(L, 2, &pn);
  CURLU *h = curl_url(); /* one parse handle for the whole list */
  if (!h) return luaL_error(L, "out of memory");
  lua_newtable(L);
  luaL_Buffer b;
  for (int i = 1;; i++) {
    lua_rawgeti(L, 1, i);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      break;
    }
    size_t n;
    const char *u = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n)
                                                   : NULL;
    char *out = NULL;
    /* (over pool.lua's MAX_URL no request could send it: the slow path
     * refuses it, as push does, instead of queueing max_tries failures) */
    if (!u || n > MAX_URL || check_http(L, u, n) ||
        canonical(h, u, n, &out) != CURLUE_OK) {
      curl_url_cleanup(h);
      lua_pushnil(L);
      return 1;
    }
    lua_pop(L, 1);
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, prefix, pn);
    luaL_addstring(&b, out);
    curl_free(out);
    luaL_pushresult(&b);
    lua_rawseti(L, 3, i);
  }
  curl_url_cleanup(h);
  return 1;
}

int sc_lua_url_join(lua_State *L) {
  size_t bn, rn;
  const char *base = luaL_checklstring(L, 1, &bn);
  const char *ref = luaL_checklstring(L, 2, &rn);
  int r = check_http(L, base, bn);
  if (r) return r;
  CURLU *h = curl_url();
  if (!h) return luaL_error(L, "out of memory");
  CURLUcode rc = curl_url_set(h, CURLUPART_URL, base, 0);
  /* curl resolves a relative URL against the one already set, except a
   * bare fragment or an empty reference (7.88 drops the last segment):
   * those are the base itself (RFC 3986 section 5.2.2) */
  if (rc == CURLUE_OK && (rn == 0 || ref[0] == '#'))
    rc = curl_url_set(h, CURLUPART_FRAGMENT, rn > 1 ? ref + 1 : NULL, 0);
  /* a space or a non-ASCII byte is encoded as a browser does; without the
   * flags curl encoded them in a relative reference but refused them in
   * an absolute one ("http://a.org/a b.pdf": Bad path), so a page's link
   * was kept or dropped by how it was written */
  else if (rc == CURLUE_OK)
    rc = curl_url_set(h, CURLUPART_URL, ref,
                      CURLU_ALLOW_SPACE | CURLU_URLENCODE);
  char *out = NULL;
  if (rc == CURLUE_OK) rc = curl_url_get(h, CURLUPART_URL, &out, 0);
  if (rc != CURLUE_OK) return curl_fail(L, h, rc);
  curl_url_cleanup(h);
  r = check_http(L, out, strlen(out));
  if (r) {
    curl_free(out);
    return r;
  }
  lua_pushstring(L, out);
  curl_free(out);
  return 1;
}

int sc_lua_hash(lua_State *L) {
  size_t n;
  const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 1, &n);
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)h);
  lua_pushstring(L, buf);
  return 1;
}
