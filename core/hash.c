/* hash.c: SHA-256 from mbedtls (never our own). */
#include "pd/pd.h"

#include <mbedtls/sha256.h>
#include <time.h>

void pd_sha256(const void *p, size_t n, unsigned char out[32]) {
  /* mbedtls 2.28: the _ret variant reports errors; with a valid context and
   * in-memory input it cannot fail. */
  mbedtls_sha256_ret((const unsigned char *)p, n, out, 0);
}

void pd_sha256_hex(const void *p, size_t n, char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  unsigned char h[32];
  pd_sha256(p, n, h);
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[h[i] >> 4];
    hex[2 * i + 1] = digits[h[i] & 15];
  }
  hex[64] = '\0';
}

double pd_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
