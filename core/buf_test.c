/* buf_test.c: pd_buf and pd_sha256. */
#include "pd/pd.h"
#include "pd_test.h"

#include <string.h>

static void test_append_grows(void) {
  pd_buf b;
  pd_buf_init(&b);
  for (int i = 0; i < 1000; i++) PD_CHECK(pd_buf_append(&b, "abcd", 4) == 0);
  PD_CHECK(b.len == 4000);
  PD_CHECK(memcmp(b.data + 3996, "abcd", 4) == 0);
  pd_buf_free(&b);
  PD_CHECK(b.data == NULL && b.len == 0);
}

static void test_steal(void) {
  pd_buf b;
  pd_buf_init(&b);
  PD_CHECK(pd_buf_append(&b, "xyz", 3) == 0);
  size_t n = 0;
  char *p = pd_buf_steal(&b, &n);
  PD_CHECK(n == 3 && memcmp(p, "xyz", 3) == 0);
  PD_CHECK(b.data == NULL);
  free(p);
}

static void test_reserve_overflow(void) {
  pd_buf b;
  pd_buf_init(&b);
  PD_CHECK(pd_buf_reserve(&b, SIZE_MAX) != 0);
  PD_CHECK(b.data == NULL);
}

static void test_sha256(void) {
  char hex[65];
  pd_sha256_hex("abc", 3, hex);   /* FIPS 180-2 test vector */
  PD_CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
}

PD_TESTS = {
  {"append grows", test_append_grows},
  {"steal", test_steal},
  {"reserve overflow", test_reserve_overflow},
  {"sha256", test_sha256},
  {NULL, NULL},
};
