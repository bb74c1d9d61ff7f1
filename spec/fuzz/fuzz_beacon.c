/* fuzz_beacon.c: arbitrary datagrams into the beacon decoder and the
 * authentication handshake: an error, never a crash or an over-read. */
#include "pd/pd.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pd_secret k;
  pd_secret_set(&k, "fuzz", 4);
  pd_beacon b;
  pd_beacon_decode(data, size, NULL, 0, &b);
  pd_beacon_decode(data, size, &k, 0, &b);

  /* the same bytes as every message each role may be fed */
  pd_handshake l, d;
  pd_buf out;
  pd_buf_init(&out);
  if (pd_handshake_start(&l, PD_HS_LISTENER, &k, &out) == PD_HS_MORE &&
      pd_handshake_step(&l, data, size, &out) == PD_HS_MORE)
    pd_handshake_step(&l, data, size, &out);
  out.len = 0;
  if (pd_handshake_start(&d, PD_HS_DIALER, &k, &out) == PD_HS_MORE) {
    out.len = 0;
    if (pd_handshake_step(&d, data, size, &out) == PD_HS_MORE)
      pd_handshake_step(&d, data, size, &out);
  }
  pd_buf_free(&out);
  return 0;
}
