/*
 * fuzz_codec.c: libFuzzer harness for the codec's decoder (lua/codec_dec.c;
 * the test block's payload decoder, ext 127, from spec/c/codec_testhooks.c).
 *
 * Each input is decoded in a fresh Lua state as a message from an untrusted
 * peer (no bytecode, no require, 1 MiB limit).  The property: decoding
 * either succeeds or raises an error that starts with "pd.codec:" (or Lua's
 * own "not enough memory"); it never crashes, hangs or grows without bound
 * (ASan/UBSan and libFuzzer's -rss_limit_mb and -timeout watch that).  A
 * value that decodes must encode again, and that encoding must decode.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "codec_testhooks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const pdi_codec_opts *untrusted(void) {
  static pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  o.allow_bytecode = 0;
  o.require_modules = 0;
  o.max_size = (size_t)1 << 20;
  return &o;
}

/* Stack: [ptr, n] -> [v] */
static int decode_p(lua_State *L) {
  const char *p = (const char *)lua_touserdata(L, 1);
  size_t n = (size_t)lua_tointeger(L, 2);
  pdi_codec_decode(L, p, n, untrusted());
  return 1;
}

/* Stack: [v] -> [s] */
static int encode_p(lua_State *L) {
  pd_buf b;
  pd_buf_init(&b);
  pdi_codec_encode(L, 1, &b, NULL);  /* cannot raise for decoded data: see below */
  lua_pushlstring(L, b.data, b.len);
  pd_buf_free(&b);
  return 1;
}

static void check_error(lua_State *L) {
  const char *e = lua_tostring(L, -1);
  if (!e || (strncmp(e, "pd.codec:", 9) != 0 && strstr(e, "not enough memory") == NULL))
    abort();   /* an error that is not the codec's own: a bug */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = luaL_newstate();
  if (!L) return 0;
  luaL_openlibs(L);
  luaL_requiref(L, "pd.core.codec", luaopen_pd_core_codec, 0);
  lua_pop(L, 1);
  lua_pushcfunction(L, luaopen_codec_testhooks);   /* the test block, ext 127 */
  lua_call(L, 0, 0);
  lua_pushcfunction(L, decode_p);
  lua_pushlightuserdata(L, (void *)data);
  lua_pushinteger(L, (lua_Integer)size);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    check_error(L);
  } else {
    /* Round trip what decoded.  Untrusted input cannot carry functions or
     * metatables, so everything that decoded is encodable; an encoder
     * error here is a bug (encode_p leaks its buffer only then, and we
     * abort anyway). */
    lua_pushcfunction(L, encode_p);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) abort();
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    lua_pushcfunction(L, decode_p);
    lua_pushlightuserdata(L, (void *)s);
    lua_pushinteger(L, (lua_Integer)n);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) abort();
  }
  lua_close(L);
  return 0;
}
