#include "headers.h"

#include <string.h>
#include <strings.h>

void sc_headers_push(lua_State *L, const char *h, size_t n) {
  /* sized for one field a line: no rehash while it fills */
  int lines = 0;
  for (const char *q = h; q && q < h + n; lines++) {
    q = memchr(q, '\n', (size_t)(h + n - q));
    if (q) q++;
  }
  lua_createtable(L, 0, lines);
  enum { MAX_SEEN = 64 };
  const char *seen_at[MAX_SEEN];
  size_t seen_len[MAX_SEEN];
  int nseen = 0;
  const char *p = h, *e = h + n;
  while (p < e) {
    const char *eol = memchr(p, '\n', (size_t)(e - p));
    const char *le = eol ? eol : e;
    size_t ll = (size_t)(le - p); /* the line without its \r\n */
    if (ll > 0 && p[ll - 1] == '\r') ll--;
    const char *ve = p + ll;
    const char *colon = memchr(p, ':', ll);
    /* the last line ends at h + n with no NUL after it: a short line must
     * not be compared as if it had 5 bytes */
    int status_line = ll >= 5 && memcmp(p, "HTTP/", 5) == 0;
    if (colon && colon > p && !status_line) {
      char name[256];
      size_t nl = (size_t)(colon - p);
      if (nl < sizeof(name)) {
        for (size_t i = 0; i < nl; i++) {
          char c = p[i];
          name[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        const char *v = colon + 1;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        const char *vend = ve;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) vend--;
        /* a name seen before (Set-Cookie) takes the slow path: its
         * values become a list */
        int seen = nseen == MAX_SEEN;
        for (int i = 0; i < nseen && !seen; i++)
          seen = seen_len[i] == nl && strncasecmp(seen_at[i], p, nl) == 0;
        if (!seen && nseen < MAX_SEEN) {
          seen_at[nseen] = p;
          seen_len[nseen++] = nl;
        }
        lua_pushlstring(L, name, nl); /* t name */
        if (!seen) {
          lua_pushlstring(L, v, (size_t)(vend - v));
          lua_rawset(L, -3);
        } else {
          lua_pushvalue(L, -1);
          lua_rawget(L, -3); /* t name old */
          int t = lua_type(L, -1);
          if (t == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushlstring(L, v, (size_t)(vend - v));
            lua_rawset(L, -3);
          } else if (t == LUA_TSTRING) {
            lua_createtable(L, 2, 0); /* t name old list */
            lua_insert(L, -2);
            lua_rawseti(L, -2, 1);
            lua_pushlstring(L, v, (size_t)(vend - v));
            lua_rawseti(L, -2, 2);
            lua_rawset(L, -3);
          } else {
            lua_pushlstring(L, v, (size_t)(vend - v));
            lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
            lua_pop(L, 2);
          }
        }
      }
    }
    if (!eol) break;
    p = eol + 1;
  }
}
