/* Runs a fuzz target's LLVMFuzzerTestOneInput over files, without libFuzzer:
 * every seed and every input that once crashed (spec/fuzz/regress/) is
 * replayed by ctest in the normal, ASan+UBSan and valgrind runs.
 * Usage: replay DIR_OR_FILE...; prints "N inputs" and exits 0, or dies. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int one(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    return -1;
  }
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      uint8_t *nb = realloc(buf, cap *= 2);
      if (!nb) free(buf);
      buf = nb;
    }
  }
  fclose(f);
  if (!buf) return -1;
  LLVMFuzzerTestOneInput(buf, n);
  free(buf);
  return 0;
}

int main(int argc, char **argv) {
  int count = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) continue; /* no regress/ dir yet is fine */
    if (!S_ISDIR(st.st_mode)) {
      if (one(argv[i])) return 1;
      count++;
      continue;
    }
    DIR *d = opendir(argv[i]);
    if (!d) return 1;
    struct dirent *de;
    while ((de = readdir(d))) {
      if (de->d_name[0] == '.') continue;
      char path[4096];
      snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
      if (one(path)) return 1;
      count++;
    }
    closedir(d);
  }
  printf("%d inputs\n", count);
  return count > 0 ? 0 : 1;
}
