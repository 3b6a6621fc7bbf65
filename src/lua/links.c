/* The links of an HTML document, parsed by Gumbo (an HTML5 parser, as a
 * browser parses: broken markup still yields the links a browser sees).
 *
 *   html_links(body) -> base, hrefs   base: the first <base href> or nil;
 *       hrefs: the href of every <a> and <area>, in document order, raw
 *       (lua/scatter/links.lua joins, filters and canonicalises them). */
#include <gumbo.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>

#include "funcs.h"

int sc_lua_html_links(lua_State *L) {
  size_t n;
  const char *body = luaL_checklstring(L, 1, &n);
  GumboOutput *out = gumbo_parse_with_options(&kGumboDefaultOptions, body, n);
  if (!out) return luaL_error(L, "html_links: the parser failed");
  lua_pushnil(L);         /* base */
  lua_createtable(L, 0, 0); /* hrefs */
  int k = 0, have_base = 0;
  /* iterative walk: a deeply nested document must not blow the C stack */
  size_t cap = 64, top = 0;
  const GumboNode **stack = malloc(cap * sizeof(*stack));
  if (!stack) {
    gumbo_destroy_output(&kGumboDefaultOptions, out);
    return luaL_error(L, "out of memory");
  }
  stack[top++] = out->root;
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
        if (!ns) {
          free(stack);
          gumbo_destroy_output(&kGumboDefaultOptions, out);
          return luaL_error(L, "out of memory");
        }
        stack = ns;
        cap *= 2;
      }
      stack[top++] = el->children.data[i - 1];
    }
  }
  free(stack);
  gumbo_destroy_output(&kGumboDefaultOptions, out);
  return 2;
}
