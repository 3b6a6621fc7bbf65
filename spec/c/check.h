/* The C tests' harness: CHECK marks the running test failed (and says
 * where) without stopping it; RUN runs one test function and counts it;
 * CHECK_DONE prints "N passed, N failed" and is main's exit status. */
#ifndef SC_SPEC_CHECK_H
#define SC_SPEC_CHECK_H

#include <stdio.h>

static int passed, failed, test_failed;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      test_failed = 1;                                                         \
      fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
    }                                                                          \
  } while (0)

#define RUN(fn)                                                                \
  do {                                                                         \
    test_failed = 0;                                                           \
    fn();                                                                      \
    if (test_failed) {                                                         \
      failed++;                                                                \
      fprintf(stderr, "not ok - %s\n", #fn);                                   \
    } else {                                                                   \
      passed++;                                                                \
      printf("ok - %s\n", #fn);                                                \
    }                                                                          \
  } while (0)

#define CHECK_DONE()                                                           \
  (printf("%d passed, %d failed\n", passed, failed), failed ? 1 : 0)

#endif
