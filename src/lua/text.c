/* Text checks for what scatter writes as JSON (lua/scatter/json.lua):
 *
 *   utf8_bad(s) -> nil | offset   nil when s is UTF-8 (RFC 3629: no
 *       overlong forms, no surrogates, nothing past U+10FFFF); else the
 *       1-based offset of the first byte that is not
 *
 * lua-cjson copies a string's bytes into its output as they are: a
 * latin-1 or binary body made a line that strict JSON readers refuse. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <string.h>

#include "funcs.h"

/* The length of the UTF-8 sequence at p (n bytes left), 0 if none. */
static size_t seq_len(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  size_t len;
  unsigned lo = 0x80, hi = 0xbf; /* the second byte's range */
  if (c < 0x80) return 1;
  if (c < 0xc2) return 0; /* a continuation byte, or overlong */
  if (c < 0xe0) {
    len = 2;
  } else if (c < 0xf0) {
    len = 3;
    if (c == 0xe0) lo = 0xa0; /* overlong */
    if (c == 0xed) hi = 0x9f; /* surrogates */
  } else if (c < 0xf5) {
    len = 4;
    if (c == 0xf0) lo = 0x90; /* overlong */
    if (c == 0xf4) hi = 0x8f; /* past U+10FFFF */
  } else {
    return 0;
  }
  if (n < len || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((p[i] & 0xc0) != 0x80) return 0;
  return len;
}

int sc_lua_utf8_bad(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  size_t i = 0;
  while (i < n) {
    /* (ASCII a word at a time: most text is) */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    size_t len = seq_len(s + i, n - i);
    if (len == 0) {
      lua_pushinteger(L, (lua_Integer)(i + 1));
      return 1;
    }
    i += len;
  }
  return 0;
}
