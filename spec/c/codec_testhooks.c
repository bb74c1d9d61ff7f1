/*
 * codec_testhooks.c: what the codec's specs and its bench need from C and
 * pdlua itself must not carry.  Built only into the test tree, as
 * build/spec/codec_testhooks.so (spec/CMakeLists.txt), and into the codec
 * fuzzer; never into the pdlua binary or lib/pd/core.so.  It calls the
 * codec's internal names (codec_impl.h), which the pdlua executable exports
 * to the C modules it loads, so the specs load it inside build/pdlua:
 *
 *   local hooks = package.loadlib(build .. "/spec/codec_testhooks.so",
 *                                 "luaopen_codec_testhooks")()
 *
 * Opening it (once per lua_State) registers the test block type
 * "pd.codec.Block" as extension PDI_CODEC_EXT_TESTBLOCK (codec.h); after
 * that, blocks travel like any extension userdata.  The table it returns:
 *   block(n | list)         a block of n values (i + 0.5) or of the list's
 *   name_of(v)              the library name the encoder gives v, "m.k"
 *   light()                 a light userdata (for the refusal specs)
 *   encode_time(v, reps)    seconds per pdi_codec_encode into a reused buffer
 *   memcpy(nbytes, reps)    seconds per memcpy of nbytes (the bench floor)
 */
#include "codec_testhooks.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "codec_impl.h"
#include "pd/pdi.h"

#define MT_BLOCK "pd.codec.Block"
#define MT_BUF "pd.codec.testbuf"

/* name_of(v) -> "m.k" or "m"; nothing when v has no library name.
 * Stack: [v] -> [s] */
static int l_name_of(lua_State *L) {
  luaL_checkany(L, 1);
  pdi_codec_names_push(L, 1);                     /* [v, names] */
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) != LUA_TSTRING) return 0;
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  size_t ml = strlen(s);
  lua_pushlstring(L, s, ml);
  if (ml + 1 < n) {
    lua_pushliteral(L, ".");
    lua_pushlstring(L, s + ml + 1, n - ml - 1);
    lua_concat(L, 3);
  }
  return 1;
}


/* -- the test block type "pd.codec.Block" (ext 127): n doubles ------------------
 * The codec's own extension, older than pd.Array: proves the extension
 * slot (registry, identity, hostile payloads under the fuzzer) apart from
 * any real type, and gives the bench a raw numeric block against memcpy.
 * Payload (docs/wire.md): u32 n, n f64 LE. */

typedef struct block {
  size_t n;
  double v[];
} block;

static block *block_new(lua_State *L, size_t n) {
  if (n > (SIZE_MAX - sizeof(block)) / sizeof(double)) pdi_codec_error(L, "pd.codec: block too large");
  block *b = (block *)lua_newuserdatauv(L, sizeof(block) + n * sizeof(double), 0);
  b->n = n;
  luaL_setmetatable(L, MT_BLOCK);
  return b;
}

static int block_encode(lua_State *L, int idx, pd_buf *out) {
  block *b = (block *)lua_touserdata(L, idx);
  if (b->n > UINT32_MAX || pd_buf_reserve(out, 4 + b->n * 8))
    return pdi_codec_error(L, "pd.codec: block too large");
  pdi_le32_put(out->data + out->len, (uint32_t)b->n);
  if (pdi_codec_host_le()) {
    memcpy(out->data + out->len + 4, b->v, b->n * 8);
  } else {
    for (size_t i = 0; i < b->n; i++) {
      uint64_t u;
      memcpy(&u, &b->v[i], 8);
      pdi_le64_put(out->data + out->len + 4 + 8 * i, u);
    }
  }
  out->len += 4 + b->n * 8;
  return 0;
}

static void block_decode(lua_State *L, const char *p, size_t n) {
  if (n < 4) pdi_codec_error(L, "pd.codec: malformed block payload (truncated)");
  uint32_t c = pdi_le32_get(p);
  if ((size_t)c * 8 != n - 4) pdi_codec_error(L, "pd.codec: malformed block payload (length)");
  block *b = block_new(L, c);
  if (pdi_codec_host_le()) {
    memcpy(b->v, p + 4, (size_t)c * 8);
  } else {
    for (size_t i = 0; i < c; i++) {
      uint64_t u = pdi_le64_get(p + 4 + 8 * i);
      memcpy(&b->v[i], &u, 8);
    }
  }
}

/* block(n | list) -> block of n zeros or of the list's numbers.
 * Stack: [x] -> [block] */
static int l_block(lua_State *L) {
  if (lua_istable(L, 1)) {
    size_t n = (size_t)lua_rawlen(L, 1);
    block *b = block_new(L, n);
    for (size_t i = 0; i < n; i++) {
      (void)lua_rawgeti(L, 1, (lua_Integer)i + 1);
      b->v[i] = (double)lua_tonumber(L, -1);
      lua_pop(L, 1);
    }
    return 1;
  }
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= ((lua_Integer)1 << 32), 1, "size out of range");
  block *b = block_new(L, (size_t)n);
  for (size_t i = 0; i < (size_t)n; i++) b->v[i] = (double)i + 0.5;
  return 1;
}

/* block[i] -> number (1-based) or nil.  Stack: [b, i] -> [v] */
static int block_index(lua_State *L) {
  block *b = (block *)luaL_checkudata(L, 1, MT_BLOCK);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 1 || (size_t)i > b->n) return 0;
  lua_pushnumber(L, (lua_Number)b->v[i - 1]);
  return 1;
}

/* #block.  Stack: [b] -> [n] */
static int block_len(lua_State *L) {
  block *b = (block *)luaL_checkudata(L, 1, MT_BLOCK);
  lua_pushinteger(L, (lua_Integer)b->n);
  return 1;
}

/* memcpy(nbytes, reps) -> seconds per copy of nbytes (the bench floor).
 * Stack: [n, reps] -> [s] */
static int l_memcpy(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1), reps = luaL_optinteger(L, 2, 10);
  luaL_argcheck(L, n > 0 && n <= ((lua_Integer)1 << 32), 1, "size out of range");
  luaL_argcheck(L, reps > 0, 2, "reps must be positive");
  char *a = malloc((size_t)n), *b = malloc((size_t)n);
  if (!a || !b) { free(a); free(b); return pdi_codec_error(L, "pd.codec: out of memory"); }
  memset(a, 1, (size_t)n);
  memset(b, 0, (size_t)n);
  double t0 = pd_now();
  for (lua_Integer r = 0; r < reps; r++) {
    memcpy(b, a, (size_t)n);
    a[r % n] = b[(r * 7) % n];   /* keep the copies observable */
  }
  double dt = (pd_now() - t0) / (double)reps;
  free(a);
  free(b);
  lua_pushnumber(L, dt);
  return 1;
}

/* A pd_buf owned by a userdata (encode_time's), freed by __gc even when an
 * encode raises; pd_buf_free leaves it empty, so twice is harmless.
 * Stack: [b] -> [] */
static int buf_close(lua_State *L) {
  pd_buf_free((pd_buf *)luaL_checkudata(L, 1, MT_BUF));
  return 0;
}

/* encode_time(v, reps) -> seconds per pdi_codec_encode of v into one
 * reused pd_buf: the C API's cost, without making a Lua string (bench).
 * Stack: [v, reps] -> [s] */
static int l_encode_time(lua_State *L) {
  luaL_checkany(L, 1);
  lua_Integer reps = luaL_checkinteger(L, 2);
  luaL_argcheck(L, reps > 0, 2, "reps must be positive");
  pd_buf *b = (pd_buf *)lua_newuserdatauv(L, sizeof(pd_buf), 0);
  pd_buf_init(b);
  luaL_setmetatable(L, MT_BUF);
  pdi_codec_encode(L, 1, b, NULL);        /* warm: the buffer has its size */
  double t0 = pd_now();
  for (lua_Integer r = 0; r < reps; r++) {
    b->len = 0;
    pdi_codec_encode(L, 1, b, NULL);
  }
  lua_pushnumber(L, (pd_now() - t0) / (double)reps);
  return 1;
}

/* light() -> a light userdata (for the refusal specs).  Stack: [] -> [p] */
static int l_light(lua_State *L) {
  lua_pushlightuserdata(L, (void *)L);
  return 1;
}

static const luaL_Reg hooks[] = {
  {"block", l_block},
  {"name_of", l_name_of},
  {"light", l_light},
  {"encode_time", l_encode_time},
  {"memcpy", l_memcpy},
  {NULL, NULL},
};

static const luaL_Reg block_meta[] = {
  {"__index", block_index},
  {"__len", block_len},
  {NULL, NULL},
};

/* Stack: [] -> [hooks] */
int luaopen_codec_testhooks(lua_State *L) {
  PDI_STACK(L);
  /* a block holds nothing to release: no close, so no finalizer */
  pdi_newclass(L, MT_BLOCK, NULL, block_meta, NULL);            /* [mt] */
  pdi_newclass(L, MT_BUF, NULL, NULL, buf_close);               /* [mt, mt2] */
  lua_pop(L, 2);                                                /* [] */
  pdi_codec_register_ext(L, MT_BLOCK, PDI_CODEC_EXT_TESTBLOCK, block_encode, block_decode);
  luaL_newlib(L, hooks);                                        /* [hooks] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}
