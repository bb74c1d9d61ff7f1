/*
 * pd.h: the public C interface of pdlua's runtime (core/, no Lua in it).
 *
 * Naming: pd_ is public and written down here once; pdi_ is internal to a
 * layer; everything else is static.  Functions return 0 on success and a
 * negative errno-style code on failure unless their comment says otherwise.
 * Ownership of any pointer that crosses a call is stated in its comment.
 */
#ifndef PD_PD_H
#define PD_PD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PD_VERSION_MAJOR 0
#define PD_VERSION_MINOR 1

/* ---- growable byte buffer ------------------------------------------------
 * A pd_buf owns its bytes.  pd_buf_init makes an empty one that allocates
 * nothing; pd_buf_free releases the bytes and leaves it empty again.  The
 * reserve and append calls return 0, or -ENOMEM with the buffer unchanged. */
typedef struct pd_buf {
  char *data;
  size_t len;
  size_t cap;
} pd_buf;

void pd_buf_init(pd_buf *b);
void pd_buf_free(pd_buf *b);
int pd_buf_reserve(pd_buf *b, size_t extra);     /* room for len+extra bytes */
int pd_buf_append(pd_buf *b, const void *p, size_t n);
/* Hand the bytes to the caller (who frees them with free()); b is left empty. */
char *pd_buf_steal(pd_buf *b, size_t *len);

/* ---- hashing --------------------------------------------------------------
 * SHA-256 of n bytes into out[32] (mbedtls underneath).  pd_sha256_hex writes
 * 64 lowercase hex digits and a NUL into hex[65]. */
void pd_sha256(const void *p, size_t n, unsigned char out[32]);
void pd_sha256_hex(const void *p, size_t n, char hex[65]);

/* ---- time ----------------------------------------------------------------- */
double pd_now(void);        /* monotonic seconds */

#ifdef __cplusplus
}
#endif
#endif /* PD_PD_H */
