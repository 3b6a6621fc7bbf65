#include "ops.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "funcs.h"

typedef struct result {
  uint32_t id;
  int status;
  char *body, *err;
  size_t len;
  struct result *next;
} result;

static result *head, **tail = &head;
static uint32_t next_id = 1;

uint32_t sc_ops_new(void) {
  uint32_t id = next_id++;
  if (next_id == 0) next_id = 1;
  return id;
}

static char *dup(const char *s, size_t n) {
  char *r = malloc(n + 1);
  if (!r) abort(); /* a lost completion would hang its waiter forever */
  memcpy(r, s, n);
  r[n] = '\0';
  return r;
}

void sc_ops_done(uint32_t id, int status, const char *body, size_t len,
                 const char *err) {
  result *r = calloc(1, sizeof(*r));
  if (!r) abort();
  r->id = id;
  r->status = status;
  if (body) {
    r->body = dup(body, len);
    r->len = len;
  }
  if (err) r->err = dup(err, strlen(err));
  *tail = r;
  tail = &r->next;
  sc_events_push(0, id, 0);
}

int sc_ops_push(lua_State *L, uint32_t id) {
  for (result **pp = &head; *pp; pp = &(*pp)->next) {
    result *r = *pp;
    if (r->id != id) continue;
    *pp = r->next;
    if (tail == &r->next) tail = pp;
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    if (r->body) {
      lua_pushlstring(L, r->body, r->len);
      lua_setfield(L, -2, "body");
    }
    if (r->err) {
      lua_pushstring(L, r->err);
      lua_setfield(L, -2, "err");
    }
    free(r->body);
    free(r->err);
    free(r);
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

int sc_lua_op_take(lua_State *L) {
  return sc_ops_push(L, (uint32_t)luaL_checknumber(L, 1));
}
