/*
 * fuzz_array.c: libFuzzer harness for the pd.Array wire form (lua/array.c,
 * pdi_array_decode: the payload of codec extension 1).
 *
 * Property: any input either decodes to an array whose encoding is the
 * input byte for byte (the form is canonical), or is refused with a message
 * and nothing pushed; never a crash, an over-read or an allocation the input
 * does not justify (ASan/UBSan and -rss_limit_mb watch that).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stack: [ptr, n] -> [a] or [false] */
static int decode_p(lua_State *L) {
  const char *p = (const char *)lua_touserdata(L, 1);
  size_t n = (size_t)lua_tointeger(L, 2);
  int top = lua_gettop(L);
  if (pdi_array_decode(L, p, n) != NULL) {
    if (lua_gettop(L) != top) abort();          /* refused: nothing pushed */
    lua_pushboolean(L, 0);
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = luaL_newstate();
  if (!L) return 0;
  luaL_openlibs(L);
  luaL_requiref(L, "pd.core.array", luaopen_pd_core_array, 0);
  lua_pop(L, 1);
  lua_pushcfunction(L, decode_p);
  lua_pushlightuserdata(L, (void *)data);
  lua_pushinteger(L, (lua_Integer)size);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    /* only running out of memory may raise */
    if (!strstr(lua_tostring(L, -1) ? lua_tostring(L, -1) : "", "not enough memory")) abort();
  } else if (lua_toboolean(L, -1)) {
    pdi_array *a = pdi_array_check(L, -1);
    size_t n = pdi_array_encoded_size(a);
    if (n != size) abort();
    char *buf = malloc(n ? n : 1);
    if (!buf) abort();
    pdi_array_encode(a, buf);
    if (memcmp(buf, data, n) != 0) abort();
    free(buf);
  }
  lua_close(L);
  return 0;
}
