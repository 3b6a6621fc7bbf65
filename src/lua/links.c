/* The links of an HTML document, parsed by Gumbo (an HTML5 parser, as a
 * browser parses: broken markup still yields the links a browser sees).
 *
 *   html_links(body, budget) -> base, hrefs | nil, err
 *       base: the first <base href> or nil; hrefs: the href of every <a>
 *       and <area>, in document order, raw (lua/scatter/links.lua joins,
 *       filters and canonicalises them). budget: seconds of parsing.
 *
 * Gumbo's tree construction walks the stack of open elements for many start
 * tags, so its time grows with the square of the nesting depth: 50,000
 * nested <div> took 3.4 s, and a hostile 1 MiB page would hold the loop for
 * a minute. Gumbo has no depth or time limit, but every node and token it
 * makes comes from our allocator: that is where the budget is checked, and
 * past it the parse is abandoned with a longjmp (as Lua's own errors are).
 * Every block lives on one list, so the abandoned tree is freed whole. */
#include <gumbo.h>
#include <lauxlib.h>
#include <lua.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "funcs.h"

typedef union block {
  struct {
    union block *prev, *next;
  } link;
  max_align_t align; /* what follows the header is aligned as malloc's is */
} block;

typedef struct {
  block head; /* a ring of every live block */
  const GumboNode **stack; /* the walk's, freed with the arena */
  double deadline;
  unsigned calls;
  int over; /* 1: past the budget, 2: out of memory */
  jmp_buf out;
} arena;

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *arena_alloc(void *ud, size_t size) {
  arena *a = ud;
  /* a clock read is ~20 ns; a start tag makes several blocks, and between
   * two of them the slow part is at most one walk of the open elements */
  if ((++a->calls & 15) == 0 && mono_now() > a->deadline) {
    a->over = 1;
    longjmp(a->out, 1);
  }
  block *b = malloc(sizeof(block) + size);
  if (!b) {
    a->over = 2;
    longjmp(a->out, 1);
  }
  b->link.next = a->head.link.next;
  b->link.prev = &a->head;
  a->head.link.next->link.prev = b;
  a->head.link.next = b;
  return b + 1;
}

static void arena_free(void *ud, void *p) {
  (void)ud;
  if (!p) return;
  block *b = (block *)p - 1;
  b->link.prev->link.next = b->link.next;
  b->link.next->link.prev = b->link.prev;
  free(b);
}

static void arena_drop(arena *a) {
  block *b = a->head.link.next;
  while (b != &a->head) {
    block *next = b->link.next;
    free(b);
    b = next;
  }
  a->head.link.next = a->head.link.prev = &a->head;
  free(a->stack);
  a->stack = NULL;
}

/* a Lua error raised while the links are pushed leaves the tree to this */
static int arena_gc(lua_State *L) {
  arena **ap = lua_touserdata(L, 1);
  if (*ap) {
    arena_drop(*ap);
    free(*ap);
    *ap = NULL;
  }
  return 0;
}

/* Pushes base and the hrefs; -1 when out of memory. */
static int walk(lua_State *L, arena *a, const GumboNode *root) {
  lua_pushnil(L);           /* base */
  lua_createtable(L, 0, 0); /* hrefs */
  int k = 0, have_base = 0;
  /* iterative walk: a deeply nested document must not blow the C stack */
  size_t cap = 64, top = 0;
  const GumboNode **stack = a->stack = malloc(cap * sizeof(*stack));
  if (!stack) return -1;
  stack[top++] = root;
  while (top > 0) {
    const GumboNode *node = stack[--top];
    if (node->type != GUMBO_NODE_ELEMENT && node->type != GUMBO_NODE_TEMPLATE)
      continue;
    const GumboElement *el = &node->v.element;
    GumboTag tag = el->tag;
    if (tag == GUMBO_TAG_A || tag == GUMBO_TAG_AREA || tag == GUMBO_TAG_BASE) {
      const GumboAttribute *href = gumbo_get_attribute(&el->attributes, "href");
      if (href && tag == GUMBO_TAG_BASE) {
        if (!have_base) {
          have_base = 1;
          lua_pushstring(L, href->value);
          lua_replace(L, -3);
        }
      } else if (href) {
        lua_pushstring(L, href->value);
        lua_rawseti(L, -2, ++k);
      }
    }
    /* children pushed last-first, so they pop in document order */
    for (unsigned i = el->children.length; i > 0; i--) {
      if (top == cap) {
        const GumboNode **ns = realloc(stack, 2 * cap * sizeof(*stack));
        if (!ns) return -1;
        stack = a->stack = ns;
        cap *= 2;
      }
      stack[top++] = el->children.data[i - 1];
    }
  }
  return 0;
}

static int parse_plain(lua_State *L, const char *body, size_t n) {
  GumboOptions opts = kGumboDefaultOptions;
  opts.max_errors = 0; /* parse errors are never read: do not record them */
  GumboOutput *out = gumbo_parse_with_options(&opts, body, n);
  if (!out) {
    lua_pushnil(L);
    lua_pushstring(L, "the HTML parser failed");
    return 2;
  }
  arena walk_only = {.stack = NULL};
  int rc = walk(L, &walk_only, out->root);
  free(walk_only.stack);
  gumbo_destroy_output(&opts, out);
  if (rc < 0) return luaL_error(L, "out of memory");
  return 2;
}

int sc_lua_html_links(lua_State *L) {
  size_t n;
  const char *body = luaL_checklstring(L, 1, &n);
  double budget = luaL_checknumber(L, 2);
  /* Tracking blocks costs a large page ~20% of its parse; a page with
   * too few tags to nest past the budget (~1.35 ns x depth^2 here, the
   * depth at most the number of '<') is parsed without it. */
  size_t tags = 0;
  for (const char *p = body, *end = body + n; (p = memchr(p, '<', (size_t)(end - p))); p++) tags++;
  if ((double)tags * (double)tags * 1.35e-9 < budget / 4) return parse_plain(L, body, n);
  /* malloc'd: a Lua userdata is only 8-byte aligned, the blocks' header
   * is max_align_t's 16 */
  arena **ap = lua_newuserdata(L, sizeof(*ap));
  *ap = NULL;
  if (luaL_newmetatable(L, "scatter.html_arena")) {
    lua_pushcfunction(L, arena_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  arena *a = *ap = malloc(sizeof(*a));
  if (!a) return luaL_error(L, "out of memory");
  a->head.link.next = a->head.link.prev = &a->head;
  a->stack = NULL;
  a->deadline = mono_now() + budget;
  a->calls = 0;
  a->over = 0;
  GumboOptions opts = kGumboDefaultOptions;
  opts.allocator = arena_alloc;
  opts.deallocator = arena_free;
  opts.userdata = a;
  opts.max_errors = 0; /* parse errors are never read: do not record them */
  GumboOutput *volatile out = NULL;
  if (setjmp(a->out) == 0) out = gumbo_parse_with_options(&opts, body, n);
  if (!out) {
    int over = a->over;
    arena_drop(a);
    lua_pushnil(L);
    if (over == 1)
      lua_pushfstring(L, "the HTML took over %f s to parse (Gumbo's time grows with the square of the nesting depth)",
                      budget);
    else
      lua_pushstring(L, over == 2 ? "out of memory parsing the HTML" : "the HTML parser failed");
    return 2;
  }
  /* the walk makes no blocks: the budget cannot end it half-way */
  a->deadline = 1e300;
  int rc = walk(L, a, out->root);
  gumbo_destroy_output(&opts, out);
  arena_drop(a);
  if (rc < 0) return luaL_error(L, "out of memory");
  return 2;
}
