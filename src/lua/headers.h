/* A response head (status line and header lines, as curl collected them) as
 * a Lua table. Its own file so that spec/fuzz/fuzz_headers.c can link it
 * without the rest of the module. */
#ifndef SC_HEADERS_H
#define SC_HEADERS_H

#include <lua.h>
#include <stddef.h>

/* Pushes {lower-case name = value}; a repeated name (Set-Cookie) gets a list
 * of its values in order. Lines without a colon, status lines ("HTTP/...")
 * and names of 256 bytes or more are skipped. Never reads past h + n. */
void sc_headers_push(lua_State *L, const char *h, size_t n);

#endif
