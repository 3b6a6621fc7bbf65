/* Asynchronous operations for the Lua side (source fetches, file writes,
 * signals): C starts the work and, when it ends, queues a result under the
 * op's id. core.poll reports it as the event (0, id, 0); the runtime takes
 * it with core.op_take(id). C never calls Lua. */
#ifndef SC_OPS_H
#define SC_OPS_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

uint32_t sc_ops_new(void); /* a fresh id, never 0 */
/* Queues a result (copied). An op may complete more than once (signals). */
void sc_ops_done(uint32_t id, int status, const char *body, size_t len,
                 const char *err);
/* Pushes {status=, body=, err=} for the oldest result of id, or nil. */
int sc_ops_push(lua_State *L, uint32_t id);

#endif
