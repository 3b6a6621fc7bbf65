/* LD_PRELOAD shim: logs every name the process asks the local resolver
 * for (getaddrinfo, gethostbyname*), then resolves as usual. The security
 * spec uses it to prove socks5h never asks the local resolver.
 * SCATTER_RESOLVESPY_LOG names the log file. */
#include <dlfcn.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

static void note(const char *fn, const char *name) {
  const char *path = getenv("SCATTER_RESOLVESPY_LOG");
  if (!path || !name) return;
  FILE *f = fopen(path, "a");
  if (!f) return;
  fprintf(f, "%s %s\n", fn, name);
  fclose(f);
}

int getaddrinfo(const char *node, const char *service,
                const struct addrinfo *hints, struct addrinfo **res) {
  static int (*real)(const char *, const char *, const struct addrinfo *,
                     struct addrinfo **);
  if (!real) *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
  note("getaddrinfo", node);
  return real(node, service, hints, res);
}

struct hostent *gethostbyname(const char *name) {
  static struct hostent *(*real)(const char *);
  if (!real) *(void **)&real = dlsym(RTLD_NEXT, "gethostbyname");
  note("gethostbyname", name);
  return real(name);
}
