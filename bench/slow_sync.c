/* A slow disk for the frontier bench: LD_PRELOAD'ed, every fdatasync and
 * fsync of the process takes SLOW_SYNC_MS (default 10) ms longer, as on a
 * busy or rotating device. bench/README.md ("frontier") says how it is
 * used. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void delay(void) {
  const char *s = getenv("SLOW_SYNC_MS");
  long ms = s ? atol(s) : 10;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  delay();
  return real(fd);
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  delay();
  return real(fd);
}
