/*
 * pd_test.h: the smallest C test harness (in the manner of nng's nuts.h).
 * A test file defines `PD_TESTS = { {"name", fn}, ..., {NULL, NULL} };`
 * and includes this header once; main runs every test, reports each as
 * ok/FAIL, and exits non-zero if any check failed.
 */
#ifndef PD_TEST_H
#define PD_TEST_H

#include <stdio.h>
#include <stdlib.h>

typedef struct pd_test {
  const char *name;
  void (*fn)(void);
} pd_test;

static int pd_test_failures;

#define PD_CHECK(cond)                                                    \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,    \
              #cond);                                                     \
      pd_test_failures++;                                                 \
    }                                                                     \
  } while (0)

#define PD_TESTS                                                          \
  static const pd_test pd_test_table[];                                   \
  int main(void) {                                                        \
    int failed = 0, n = 0;                                                \
    for (const pd_test *t = pd_test_table; t->name; t++, n++) {           \
      int before = pd_test_failures;                                      \
      t->fn();                                                            \
      int bad = pd_test_failures != before;                               \
      failed += bad;                                                      \
      printf("%s %d - %s\n", bad ? "not ok" : "ok", n + 1, t->name);      \
    }                                                                     \
    printf("%d passed, %d failed\n", n - failed, failed);                 \
    return failed ? 1 : 0;                                                \
  }                                                                       \
  static const pd_test pd_test_table[]

#endif
