/* libFuzzer target: a response head as a Lua table (src/lua/headers.c).
 *
 * The head is copied into a buffer of exactly its size, as curl's callback
 * data would end, so any read past it is caught by ASan. The table must hold
 * only lower-case string names mapped to a string or a non-empty list of
 * strings, and one value for every field line (a repeated name keeps all
 * of its values), counted here by a plain reading of the same lines. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lua/headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct input {
  const char *h;
  size_t n;
} input;

static int push(lua_State *L) {
  input *in = lua_touserdata(L, 1);
  sc_headers_push(L, in->h, in->n);
  return 1;
}

/* Field lines: a colon after a name of 1-255 bytes, not a status line. */
static size_t count_fields(const char *h, size_t n) {
  size_t fields = 0;
  for (size_t at = 0; at < n;) {
    size_t end = at;
    while (end < n && h[end] != '\n') end++;
    size_t ll = end - at;
    if (ll > 0 && h[at + ll - 1] == '\r') ll--;
    size_t colon = 0;
    while (colon < ll && h[at + colon] != ':') colon++;
    int status = ll >= 5 && memcmp(h + at, "HTTP/", 5) == 0;
    if (colon < ll && colon > 0 && colon < 256 && !status) fields++;
    at = end + 1;
  }
  return fields;
}

static void check(lua_State *L, size_t fields) {
  size_t values = 0;
  if (!lua_istable(L, -1)) abort();
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) != LUA_TSTRING) abort();
    size_t nl;
    const char *name = lua_tolstring(L, -2, &nl);
    if (nl == 0 || nl >= 256) abort();
    for (size_t i = 0; i < nl; i++)
      if (name[i] >= 'A' && name[i] <= 'Z') abort();
    if (lua_type(L, -1) == LUA_TTABLE) {
      size_t len = lua_objlen(L, -1);
      if (len < 2) abort();
      for (size_t i = 1; i <= len; i++) {
        lua_rawgeti(L, -1, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING) abort();
        lua_pop(L, 1);
      }
      values += len;
    } else if (lua_type(L, -1) != LUA_TSTRING) {
      abort();
    } else {
      values++;
    }
    lua_pop(L, 1);
  }
  if (values != fields) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  if (!L) L = luaL_newstate();
  char *h = malloc(size ? size : 1);
  if (!h) return 0;
  memcpy(h, data, size);
  input in = {h, size};
  lua_pushcfunction(L, push);
  lua_pushlightuserdata(L, &in);
  if (lua_pcall(L, 1, 1, 0) == 0) check(L, count_fields(h, size));
  lua_settop(L, 0);
  free(h);
  return 0;
}
