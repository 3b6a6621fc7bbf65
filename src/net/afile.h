/* Atomic file replacement off the event loop (DESIGN.md section 5): the
 * data goes to a temp file in the target's directory (created with the
 * given mode), which is fsynced and renamed over the target, then the
 * directory is fsynced. A crash at any moment leaves the old file or the
 * new one, never a mix. The work runs on libuv's thread pool. */
#ifndef SC_AFILE_H
#define SC_AFILE_H

#include <stddef.h>
#include <uv.h>

/* status: 0, or a negative errno with err naming the step that failed. */
typedef void (*sc_afile_cb)(int status, const char *err, void *ud);

/* Takes ownership of buf (malloc'd) when it returns 0; on a negative
 * return nothing was started, the callback will not be called and buf is
 * still the caller's. */
int sc_afile_write(uv_loop_t *loop, const char *path, char *buf, size_t len,
                   int mode, sc_afile_cb cb, void *ud);

/* fdatasync(fd) on the thread pool. The work runs on a dup of fd, so the
 * caller may close fd at once; the callback gets 0 or a negative errno
 * with err "fdatasync: reason". Returns 0, or a negative errno (nothing
 * started, no callback). */
int sc_afile_sync(uv_loop_t *loop, int fd, sc_afile_cb cb, void *ud);

#endif
