/* A slow disk for the frontier bench: LD_PRELOAD'ed, every fdatasync and
 * fsync of the process takes SLOW_SYNC_MS (default 10) ms longer, as on a
 * busy or rotating device. bench/README.md ("frontier") says how it is
 * used. A failing disk for spec/queue_spec.lua: with SLOW_SYNC_FAIL=SUFFIX
 * an fdatasync of a file whose path ends in SUFFIX fails with EIO. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void delay(void) {
  const char *s = getenv("SLOW_SYNC_MS");
  long ms = s ? atol(s) : 10;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static int failing(int fd) {
  const char *suffix = getenv("SLOW_SYNC_FAIL");
  if (!suffix) return 0;
  char link[64], path[4096];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof(path) - 1);
  if (n < 0) return 0;
  path[n] = '\0';
  size_t sl = strlen(suffix);
  return (size_t)n >= sl && strcmp(path + n - sl, suffix) == 0;
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  if (failing(fd)) {
    errno = EIO;
    return -1;
  }
  if (getenv("SLOW_SYNC_FAIL")) return real(fd);
  delay();
  return real(fd);
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  delay();
  return real(fd);
}
