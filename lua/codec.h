/*
 * codec.h: the pdlua codec, Lua values <-> bytes (wire format: docs/wire.md).
 *
 * Everything that crosses a process or a machine (map arguments and results,
 * functions, tube messages, optimiser populations) goes through these calls.
 * Internal to pdlua (pdi_ prefix), usable from any C part that holds a
 * lua_State; nothing here goes through Lua tables on the hot path.
 *
 * Errors: both calls RAISE a Lua error (a string starting "pd.codec: ") on
 * a value that cannot travel or on a malformed message.  Call them under a
 * protected call (lua_pcall) when the caller must survive, as every entry
 * into Lua should anyway.
 *
 * Where: the encoder is codec_enc.c, the decoder codec_dec.c, the options,
 * the extension registry, the fingerprint and pd.core.codec are codec.c;
 * what those three share (tags, hot helpers) is codec_impl.h.
 *
 * Stability: the signatures below are fixed (the map scheduler builds on
 * them).  New options are added at the END of pdi_codec_opts; callers that
 * zero the struct (or start from pdi_codec_opts_default) keep working.
 */
#ifndef PDLUA_CODEC_H
#define PDLUA_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "pd/pd.h"

/* First byte of every message; a decoder refuses any other. */
#define PDI_CODEC_VERSION 1

/* Default limits (docs/wire.md, "Limits"). */
#define PDI_CODEC_MAX_DEPTH 200                    /* nested tables/functions */
#define PDI_CODEC_MAX_SIZE ((size_t)1 << 31)       /* bytes in one message */

/* Extension ids for native userdata (EXT tag).  1 is numeric arrays
 * ("pd.Array"); 127 is the codec's own test block type ("pd.codec.Block"),
 * registered only by the test tree's spec/c/codec_testhooks.c, never by
 * pdlua itself.  2..126 are free for pdlua's own types; 128..255 are
 * reserved. */
#define PDI_CODEC_EXT_ARRAY 1
#define PDI_CODEC_EXT_TESTBLOCK 127

typedef struct pdi_codec_opts {
  /* Decode: accept functions as bytecode.  Only for an authenticated peer;
   * the VM fingerprint in each function is checked as well.  When 0 a
   * message carrying a function is refused (data and named values still
   * decode).  Encode: ignored (functions are always written as bytecode). */
  int allow_bytecode;
  /* Decode: resolve a library value (NAME tag) whose module is not yet in
   * package.loaded by calling require(module).  When 0 such a name fails. */
  int require_modules;
  /* Encode: strip debug info from dumped functions (smaller, but remote
   * tracebacks lose lines).  Default 0. */
  int strip;
  /* Nesting limit, both ways (0 = PDI_CODEC_MAX_DEPTH). */
  int max_depth;
  /* Decode: refuse messages longer than this (0 = PDI_CODEC_MAX_SIZE). */
  size_t max_size;
  /* Both ways: skip the lone-scalar fast path (a nil, boolean, number or
   * string that is the whole message: ~1 us less per call than the general
   * coder, the same bytes).  Only the spec that compares the two sets it. */
  int no_scalar_path;
} pdi_codec_opts;

/* Defaults for a trusted local peer: bytecode allowed, modules required,
 * no stripping, default limits.  Untrusted input: set allow_bytecode and
 * require_modules to 0. */
void pdi_codec_opts_default(pdi_codec_opts *o);

/* Encode the value at stack index idx as one complete message (version
 * byte, then the value) appended to out.  o may be NULL (defaults).
 * Returns 0.  On an unencodable value raises "pd.codec: <where> is <what>"
 * (e.g. "pd.codec: upvalue 2 'co' of function at sim.lua:14 is a
 * coroutine"); out then holds a partial append the caller must discard by
 * restoring out->len.  Out of memory raises too.  The caller owns out.
 * Stack: unchanged (temporaries are popped; on error Lua unwinds). */
int pdi_codec_encode(lua_State *L, int idx, pd_buf *out, const pdi_codec_opts *o);

/* Decode one message of n bytes at p and push its value.  o may be NULL
 * (defaults: pdi_codec_opts_default, which TRUSTS the peer with bytecode:
 * pass options with allow_bytecode = 0 for anything not authenticated).  Returns 0.  A malformed, truncated,
 * over-limit or untrusted-bytecode message raises
 * "pd.codec: malformed message: <why> at byte N" (or a refusal naming the
 * reason); the decoder never recurses on wire data and never allocates more
 * than the message's length justifies.  p is only read during the call.
 * Stack: [] -> [v] (on error: nothing pushed, Lua unwinds). */
int pdi_codec_decode(lua_State *L, const char *p, size_t n, const pdi_codec_opts *o);

/* The scalar fast path alone, for callers with many one-scalar messages (a
 * map of numbers): pdi_codec_encode_scalar appends the message for the nil,
 * boolean, number or string at idx and returns 1, or returns 0 with out
 * untouched for any other value; pdi_codec_decode_scalar pushes the value
 * of a message that is exactly one such scalar and returns 1, or returns 0
 * with nothing pushed (leave the message to pdi_codec_decode).  The bytes
 * are the general coder's.  Raise only when out of memory.
 * Stack: unchanged / [] -> [v] or unchanged. */
int pdi_codec_encode_scalar(lua_State *L, int idx, pd_buf *out);
int pdi_codec_decode_scalar(lua_State *L, const char *p, size_t n);

/* ---- VM fingerprint ---------------------------------------------------------
 * 8 bytes naming this VM's bytecode format (VM name and version, dump header
 * sans strip flag, sizes), as 16 hex digits + NUL in hex[17].  Two peers may
 * exchange bytecode only when these are equal.  Every encoded function
 * carries it; the decoder refuses a function with another one. */
void pdi_codec_fingerprint(lua_State *L, char hex[17]);

/* ---- extension types (native userdata) -------------------------------------
 * A userdata whose metatable is registry[tname] (luaL_newmetatable) travels
 * as EXT(ext_id, payload).  encode appends the payload for the userdata at
 * stack index idx to out (raise on error; return 0); decode pushes a new
 * value from the payload (p, n), raising on a malformed payload (it must
 * check every length itself: the payload is hostile input).  Payload bytes
 * have no alignment guarantee: read them with memcpy.
 *
 * Registration is per lua_State (stored in the registry), idempotent for the
 * same (tname, ext_id), and an error for an id or name already taken by
 * another.  Register in the type's luaopen_ function, after
 * luaL_newmetatable.  Numeric arrays use PDI_CODEC_EXT_ARRAY with the payload
 * of docs/wire.md ("EXT 1: numeric arrays"): u8 dtype, u8 ndim, ndim x
 * uvarint dims, then the elements as little-endian raw bytes.
 * Stack: unchanged. */
typedef int (*pdi_codec_ext_encode_fn)(lua_State *L, int idx, pd_buf *out);
typedef void (*pdi_codec_ext_decode_fn)(lua_State *L, const char *p, size_t n);
void pdi_codec_register_ext(lua_State *L, const char *tname, uint8_t ext_id,
                            pdi_codec_ext_encode_fn encf, pdi_codec_ext_decode_fn decf);

/* Wire helpers for extension payloads and other framing (docs/wire.md):
 * unsigned LEB128.  put: appends (returns 0 or -ENOMEM).  get: reads at
 * *p < end, advances *p, returns 0, or -1 on truncation/overflow. */
int pdi_codec_put_uvarint(pd_buf *out, uint64_t v);
int pdi_codec_get_uvarint(const char **p, const char *end, uint64_t *v);

/* ---- code transport -----------------------------------------------------------
 * Bundles (the job script and its local pure-Lua modules, shipped as source,
 * named by SHA-256, sent once per receiver) are built on top of these calls
 * in stdlib/pd/codec.lua: pd.codec.bundle, pd.codec.sender (one per
 * receiver: remembers which hashes it sent), pd.codec.receiver (checks each
 * source against its hash, caches it, installs the job's modules in
 * package.preload with text-mode load, then decodes the value); see
 * docs/reference.md "## pd.codec" and docs/wire.md "Code transport".
 * A C caller that holds a receiving lua_State can call those Lua functions,
 * or decode bundle messages itself in the same order: modules first, value
 * second, because a NAME tag is resolved through package.loaded and then
 * require() (when require_modules is set) at decode time.
 * The Lua-level encode(v, {modules = t}) also reports which modules the
 * message names (t[name] = true); the sender uses it to refuse local C
 * modules at once. */

/* Opener of the native part "pd.core.codec".  Stack: [] -> [codec] */
int luaopen_pd_core_codec(lua_State *L);

#endif
