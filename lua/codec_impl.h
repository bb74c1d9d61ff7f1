/*
 * codec_impl.h: what the codec's three files share, and nothing else sees
 * (codec.h is the contract for the rest of pdlua).
 *
 *   codec_enc.c  Lua value -> message (pdi_codec_encode, the scalar fast
 *                path, the library-name table)
 *   codec_dec.c  message -> Lua value (pdi_codec_decode, its scalar path)
 *   codec.c      per-state pieces both sides use (options, errors, the
 *                extension registry, the VM fingerprint) and the Lua face,
 *                pd.core.codec
 *
 * The tags of docs/wire.md and the hot little helpers both coders use are
 * here as static inline, so the split costs no call on the per-value path;
 * the functions declared below run at most once per message or per
 * function, userdata or library name, never per element.
 */
#ifndef PDLUA_CODEC_IMPL_H
#define PDLUA_CODEC_IMPL_H

#include <stdint.h>
#include <string.h>

#include "codec.h"

/* ---- tags (docs/wire.md) -------------------------------------------------- */
enum {
  T_NIL = 0x00,
  T_FALSE = 0x01,
  T_TRUE = 0x02,
  T_INT = 0x03,      /* zigzag uvarint */
  T_FLOAT = 0x04,    /* f64 LE */
  T_STR = 0x05,      /* uvarint len, bytes */
  T_TABLE = 0x06,    /* u32 narr, narr values, u32 nhash, nhash (k, v) */
  T_TABLE_MT = 0x07, /* as T_TABLE, then the metatable (a value) */
  T_FARR = 0x08,     /* u32 n, n f64 LE, u32 nhash, nhash (k, v) */
  T_IARR = 0x09,     /* u32 n, n i64 LE, u32 nhash, nhash (k, v) */
  T_REF = 0x0a,      /* uvarint id */
  T_FUNC = 0x0b,     /* fp[8], u32 len, bytecode, u8 nups, nups upvalues */
  T_UPJOIN = 0x0c,   /* uvarint fid, u8 n (upvalue position only) */
  T_ENV = 0x0d,      /* the global table */
  T_NAME = 0x0e,     /* uvarint len, module, uvarint len, field */
  T_EXT = 0x0f,      /* u8 ext id, u32 len, payload */
  T_LAST = T_EXT
};

/* ---- hot helpers ----------------------------------------------------------- */

/* 1 on a little-endian host: raw blocks of f64/i64 are then one memcpy. */
static inline int pdi_codec_host_le(void) {
  const uint16_t one = 1;
  return *(const unsigned char *)&one == 1;
}

/* Integers travel zigzagged (small magnitudes, either sign, stay short). */
static inline uint64_t pdi_codec_zigzag(uint64_t v) {
  return (v << 1) ^ (uint64_t)-(int64_t)(v >> 63);
}

static inline uint64_t pdi_codec_unzigzag(uint64_t u) {
  return (u >> 1) ^ (uint64_t)-(int64_t)(u & 1);
}

/* lua_dump writer into a pd_buf (the fingerprint and every function). */
static inline int pdi_codec_dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  return pd_buf_append((pd_buf *)ud, p, n) ? 1 : 0;
}

/* ---- shared per-state pieces (codec.c) ------------------------------------- */

/* One entry of the extension registry (registry[REG_EXT], by name and id). */
typedef struct pdi_codec_ext {
  uint8_t id;
  pdi_codec_ext_encode_fn enc;
  pdi_codec_ext_decode_fn dec;
} pdi_codec_ext;

/* Raise a codec error: the message as given, with no position prefix (the
 * place is in the text).  Never returns. */
int pdi_codec_error(lua_State *L, const char *fmt, ...);

/* Push the 8-byte fingerprint of this VM (cached in the registry).
 * Stack: [] -> [fp] */
void pdi_codec_push_fp(lua_State *L);

/* The extension entry for the userdata at idx, or NULL; *tname gets its
 * metatable's __name (interned in the registry) when it has one.
 * Stack: unchanged. */
pdi_codec_ext *pdi_codec_ext_of(lua_State *L, int idx, const char **tname);

/* The extension entry registered under id, or NULL (kept alive by the
 * registry).  Stack: unchanged. */
pdi_codec_ext *pdi_codec_ext_by_id(lua_State *L, int id);

/* ---- the encoder's inner entry (codec_enc.c) ------------------------------- */

/* The general encoder (no scalar fast path); used (a stack index or 0)
 * collects the module names that NAME tags refer to (for code transport).
 * Stack: unchanged. */
void pdi_codec_encode_run(lua_State *L, int idx, pd_buf *out, const pdi_codec_opts *o, int used);

/* Push the library-name table (value -> "module\0field"), rebuilding it
 * when package.loaded changed size or when force is set.
 * Stack: [] -> [names] */
void pdi_codec_names_push(lua_State *L, int force);

#endif
