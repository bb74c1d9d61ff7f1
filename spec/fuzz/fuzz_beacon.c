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

  pd_auth l, d;
  pd_buf out;
  pd_buf_init(&out);
  if (pd_auth_listener_start(&l, &k, data, size, &out) == 0)
    pd_auth_listener_check(&l, data, size, &out);
  out.len = 0;
  if (pd_auth_dialer_start(&d, &k, &out) == 0) {
    out.len = 0;
    if (pd_auth_dialer_prove(&d, data, size, &out) == 0) pd_auth_dialer_finish(&d, data, size);
  }
  pd_buf_free(&out);
  return 0;
}
