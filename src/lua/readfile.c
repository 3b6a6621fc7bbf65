/* core.read_file(path, max): a local file read whole, for proxy lists and
 * state files.
 *
 * io.open blocks in open() on a FIFO until a writer comes (a pool hung for
 * good, deaf to the first SIGTERM) and reads a device such as /dev/zero
 * until memory runs out. Here the open cannot block (O_NONBLOCK), only a
 * regular file is read, and never more than max bytes. */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "funcs.h"

static int fail(lua_State *L, const char *msg, int e) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushinteger(L, e);
  return 3;
}

/* -> data | nil, why, errno (0 when the file is not one to read) */
int sc_lua_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Number maxn = luaL_checknumber(L, 2);
  size_t max = maxn < 0 ? 0 : maxn > 1e15 ? (size_t)1e15 : (size_t)maxn;
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return fail(L, strerror(errno), errno);
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return fail(L, strerror(e), e);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return fail(L,
                S_ISDIR(st.st_mode)
                    ? "is a directory"
                    : "not a regular file (a FIFO, socket or device): refused",
                0);
  }
  if ((uint64_t)st.st_size > (uint64_t)max) {
    close(fd);
    lua_pushnil(L);
    lua_pushfstring(L, "larger than %d MiB", (int)(max >> 20));
    lua_pushinteger(L, EFBIG);
    return 3;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t total = 0;
  for (;;) {
    char *p = luaL_prepbuffer(&b);
    ssize_t n = read(fd, p, LUAL_BUFFERSIZE);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      return fail(L, strerror(e), e);
    }
    if (n == 0) break;
    luaL_addsize(&b, (size_t)n);
    total += (size_t)n;
    if (total > max) { /* it grew while we read */
      close(fd);
      lua_pushnil(L);
      lua_pushfstring(L, "larger than %d MiB", (int)(max >> 20));
      lua_pushinteger(L, EFBIG);
      return 3;
    }
  }
  close(fd);
  luaL_pushresult(&b);
  return 1;
}

/* core.lock_file(path) -> fd | nil, why, pid: an exclusive flock on path
 * (created 0600), held until core.unlock_file(fd) or exit. Two processes
 * naming one state_file overwrote each other's learning; the second now
 * learns who holds it (the pid the owner wrote into the lock file). */
int sc_lua_lock_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return fail(L, strerror(errno), errno);
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    char buf[32] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    lua_pushnil(L);
    lua_pushstring(L, e == EWOULDBLOCK ? "locked" : strerror(e));
    lua_pushinteger(L, n > 0 ? atoi(buf) : 0);
    return 3;
  }
  char pid[32];
  int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) < 0) {
    /* the pid is only for the other process's message */
  }
  lua_pushinteger(L, fd);
  return 1;
}

int sc_lua_unlock_file(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  if (fd >= 0) close(fd);
  return 0;
}
