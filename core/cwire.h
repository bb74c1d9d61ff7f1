/*
 * cwire.h: the link protocol between a coordinator (cluster.c) and a node
 * (node.c), internal to core/.  Frames are pd_conn frames (u32 length,
 * type byte, payload) over a link; docs/operations.md ("Wire") tells the
 * story, and this list is their one full description:
 *
 *   c->n 'O' name                     open hello (no secret; loopback nodes)
 *   both 'A' handshake message        HELLO, CHALL, PROOF, VERDICT (pd.h's pd_handshake)
 *   both 'E' text                     refusal or error; the sender closes
 *   c->n 'W' u32 want, u32 ping_ms    I am a coordinator wanting this many slots,
 *                                     pinging this often (the node's silence limit)
 *   c->n 'P'                          ping; the node answers with 'G'
 *   c->n 'I'                          info query; answered with 'G'
 *   c->n 'C' u32 cpus, u32 gpus       change what the node lends (~0u: keep)
 *   n->c 'G' u32 granted, cpus, gpus, busy, workers, sessions, then name
 *   n->c 'S' u32 slot                 a worker process is yours
 *   both 'X' u32 slot                 that slot is closed (worker gone / given back)
 *   both 'F' u32 slot, frame          a worker frame (type byte first) for a slot
 *
 * Nothing but 'O', 'A' and 'E' is accepted before the handshake ends, and
 * frames are capped at PDI_PREAUTH_MAX bytes until then: no code is read
 * from a peer that has not proved the secret.
 */
#ifndef PD_CWIRE_H
#define PD_CWIRE_H

#include <stdint.h>
#include <string.h>

#include "pd/pd.h"
#include "pd/pdi.h"

#define PDI_PREAUTH_MAX 4096

/* Queue one frame: type, then a u32, then n bytes. */
static inline void pdi_put_u32frame(pd_conn *c, int type, uint32_t v, const void *p, size_t n) {
  size_t m = pd_conn_begin(c, type);
  pdi_le32_append(&c->out, v);
  if (n) pd_buf_append(&c->out, p, n);
  pd_conn_end(c, m);
}

#endif
