#include "afile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct afile {
  uv_work_t req;
  char *path, *buf;
  size_t len;
  int mode, status;
  unsigned seq;
  char err[512];
  sc_afile_cb cb;
  void *ud;
} afile;

static unsigned next_seq; /* loop thread only */

static int fail_at(afile *f, const char *step, const char *path, int e) {
  f->status = -e;
  /* a long path is cut: the message stays a message */
  if (snprintf(f->err, sizeof(f->err), "%s %s: %s", step, path,
               strerror(e)) >= (int)sizeof(f->err))
    memcpy(f->err + sizeof(f->err) - 4, "...", 4);
  return -1;
}

static int fail(afile *f, const char *step, int e) {
  return fail_at(f, step, f->path, e);
}

/* Temp files of writers killed mid-write ("<base>.<pid>-<n>.tmp" whose pid
 * is gone) would otherwise pile up beside the state file. */
static void sweep_stale(const char *dir, const char *base) {
  DIR *d = opendir(dir);
  if (!d) return;
  size_t bl = strlen(base);
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *n = e->d_name;
    if (strncmp(n, base, bl) != 0 || n[bl] != '.') continue;
    char *end;
    long pid = strtol(n + bl + 1, &end, 10);
    if (end == n + bl + 1 || *end != '-' || pid <= 0) continue;
    char *end2;
    strtoul(end + 1, &end2, 10);
    if (end2 == end + 1 || strcmp(end2, ".tmp") != 0) continue;
    if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
      continue;
    char p[4096];
    if (snprintf(p, sizeof(p), "%s/%s", dir, n) < (int)sizeof(p)) unlink(p);
  }
  closedir(d);
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void work(uv_work_t *req) {
  afile *f = req->data;
  char dir[4096], tmp[4200];
  const char *slash = strrchr(f->path, '/');
  const char *base = slash ? slash + 1 : f->path;
  if (!slash) {
    strcpy(dir, ".");
  } else if (slash == f->path) {
    strcpy(dir, "/");
  } else {
    size_t dl = (size_t)(slash - f->path);
    if (dl >= sizeof(dir)) {
      fail(f, "path too long:", ENAMETOOLONG);
      return;
    }
    memcpy(dir, f->path, dl);
    dir[dl] = '\0';
  }
  if (*base == '\0') {
    fail(f, "not a file name:", EISDIR);
    return;
  }
  snprintf(tmp, sizeof(tmp), "%s.%ld-%u.tmp", f->path, (long)getpid(), f->seq);
  sweep_stale(dir, base);

  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                f->mode);
  if (fd < 0) {
    /* the temp file is what could not be made: name it, not the target */
    fail_at(f, "create temp file", tmp, errno);
    return;
  }
  /* the umask may have taken bits away, never added them: set it exactly */
  if (fchmod(fd, (mode_t)f->mode) < 0 || write_all(fd, f->buf, f->len) < 0 ||
      fsync(fd) < 0) {
    fail_at(f, "write temp file", tmp, errno);
    close(fd);
    unlink(tmp);
    return;
  }
  if (close(fd) < 0) {
    fail_at(f, "close temp file", tmp, errno);
    unlink(tmp);
    return;
  }
  if (rename(tmp, f->path) < 0) {
    fail(f, "rename to", errno);
    unlink(tmp);
    return;
  }
  /* the rename itself is durable only once the directory is */
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    fail(f, "open directory of", errno);
    return;
  }
  if (fsync(dfd) < 0 && errno != EINVAL) fail(f, "fsync directory of", errno);
  close(dfd);
}

static void after(uv_work_t *req, int status) {
  afile *f = req->data;
  if (status < 0 && f->status == 0) {
    f->status = status;
    snprintf(f->err, sizeof(f->err), "write %s: %s", f->path,
             uv_strerror(status));
  }
  f->cb(f->status, f->status < 0 ? f->err : NULL, f->ud);
  free(f->path);
  free(f->buf);
  free(f);
}

int sc_afile_write(uv_loop_t *loop, const char *path, char *buf, size_t len,
                   int mode, sc_afile_cb cb, void *ud) {
  afile *f = calloc(1, sizeof(*f));
  if (!f) return UV_ENOMEM;
  f->path = strdup(path);
  if (!f->path) {
    free(f);
    return UV_ENOMEM;
  }
  f->buf = buf;
  f->len = len;
  f->mode = mode;
  f->seq = next_seq++;
  f->cb = cb;
  f->ud = ud;
  f->req.data = f;
  int rc = uv_queue_work(loop, &f->req, work, after);
  if (rc < 0) {
    free(f->path);
    free(f);
  }
  return rc;
}

typedef struct async {
  uv_fs_t req;
  int fd;
  sc_afile_cb cb;
  void *ud;
} async;

static void synced(uv_fs_t *req) {
  async *a = req->data;
  int status = (int)req->result;
  char err[128];
  if (status < 0)
    snprintf(err, sizeof(err), "fdatasync: %s", uv_strerror(status));
  uv_fs_req_cleanup(req);
  close(a->fd);
  a->cb(status < 0 ? status : 0, status < 0 ? err : NULL, a->ud);
  free(a);
}

int sc_afile_sync(uv_loop_t *loop, int fd, sc_afile_cb cb, void *ud) {
  async *a = calloc(1, sizeof(*a));
  if (!a) return UV_ENOMEM;
  a->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (a->fd < 0) {
    int e = errno;
    free(a);
    return -e;
  }
  a->cb = cb;
  a->ud = ud;
  a->req.data = a;
  int rc = uv_fs_fdatasync(loop, &a->req, a->fd, synced);
  if (rc < 0) {
    close(a->fd);
    free(a);
  }
  return rc;
}
