/*
 * pdi.h: small helpers shared by core/ and lua/, written once.  Internal to
 * pdlua (pdi_ names); not part of the public interface in pd.h.
 *
 * - Byte order: every length and index on the wire is a little-endian u32
 *   (docs/wire.md).  pdi_le32_get/put work on any host and any alignment.
 * - Time: pd_now() (pd.h) is monotonic, for deadlines; pdi_unix_now() is the
 *   wall clock, for what crosses machines (beacons carry it).
 * - Wait status: pdi_describe_status says how a child ended, in the words
 *   every message about a lost worker or node uses.
 * - Writing: pdi_write_all writes every byte to a descriptor (file.c).
 */
#ifndef PD_PDI_H
#define PD_PDI_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "pd/pd.h"

/* u32 at p, little-endian.  p needs no alignment. */
static inline uint32_t pdi_le32_get(const void *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

/* Store v at p, little-endian.  p needs no alignment. */
static inline void pdi_le32_put(void *p, uint32_t v) {
  unsigned char *u = (unsigned char *)p;
  u[0] = (unsigned char)v;
  u[1] = (unsigned char)(v >> 8);
  u[2] = (unsigned char)(v >> 16);
  u[3] = (unsigned char)(v >> 24);
}

/* u64 at p / store v at p, little-endian; no alignment needed. */
static inline uint64_t pdi_le64_get(const void *p) {
  return (uint64_t)pdi_le32_get(p) | (uint64_t)pdi_le32_get((const unsigned char *)p + 4) << 32;
}

static inline void pdi_le64_put(void *p, uint64_t v) {
  pdi_le32_put(p, (uint32_t)v);
  pdi_le32_put((unsigned char *)p + 4, (uint32_t)(v >> 32));
}

/* Append v to b, little-endian.  0, or -ENOMEM with b unchanged. */
static inline int pdi_le32_append(pd_buf *b, uint32_t v) {
  unsigned char x[4];
  pdi_le32_put(x, v);
  return pd_buf_append(b, x, 4);
}

/* Append v to b as a little-endian u64.  0, or -ENOMEM with b unchanged. */
static inline int pdi_le64_append(pd_buf *b, uint64_t v) {
  unsigned char x[8];
  pdi_le64_put(x, v);
  return pd_buf_append(b, x, 8);
}

/* Wall-clock seconds since the epoch (float), for values that cross
 * machines; deadlines use pd_now(). */
static inline double pdi_unix_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* How a child ended, from its wait status (st < 0: it was not ours to reap,
 * "vanished"): "killed by signal 9", "exited with status 3", "stopped".
 * Writes at most n bytes into buf (NUL included) and returns buf. */
const char *pdi_describe_status(int st, char *buf, size_t n);

/* Write all n bytes at p to fd: short writes and EINTR are retried, and on a
 * non-blocking descriptor EAGAIN waits (up to a second at a time) until it
 * takes more.  0, or -errno of the write that failed (file.c). */
int pdi_write_all(int fd, const void *p, size_t n);

/* fsync fd, then close it (closed either way).  0, or -errno of the first
 * step that failed (file.c). */
int pdi_sync_close(int fd);

#endif
