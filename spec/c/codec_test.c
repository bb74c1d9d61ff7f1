/*
 * codec_test.c: the C API of lua/codec.h as other C parts use it: encode in
 * one lua_State, decode in another (a fresh receiver), with pd_buf and the
 * options struct; stack balance; the extension registry; uvarints.
 */
#include <string.h>

#include "codec.h"
#include "pd_test.h"

static lua_State *fresh(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "pd.core.codec", luaopen_pd_core_codec, 0);
  lua_pop(L, 1);
  return L;
}

/* Stack: [ud(pd_buf*), v] -> [] ; encodes v into the buffer */
static int encode_p(lua_State *L) {
  pd_buf *b = (pd_buf *)lua_touserdata(L, 1);
  int top = lua_gettop(L);
  pdi_codec_encode(L, 2, b, NULL);
  return lua_gettop(L) == top ? 0 : luaL_error(L, "stack not balanced");
}

/* Stack: [ud(pd_buf*), ud(opts*)] -> [v] */
static int decode_p(lua_State *L) {
  pd_buf *b = (pd_buf *)lua_touserdata(L, 1);
  const pdi_codec_opts *o = (const pdi_codec_opts *)lua_touserdata(L, 2);
  pdi_codec_decode(L, b->data, b->len, o);
  return 1;
}

/* Run Lua source that leaves one value, encode it into b (0 on success). */
static int encode_src(lua_State *L, const char *src, pd_buf *b) {
  lua_pushcfunction(L, encode_p);
  lua_pushlightuserdata(L, b);
  if (luaL_dostring(L, src) != LUA_OK) return -1;
  return lua_pcall(L, 2, 0, 0);
}

static void test_closure_to_fresh_state(void) {
  lua_State *A = fresh(), *B = fresh();
  pd_buf b;
  pd_buf_init(&b);
  PD_CHECK(encode_src(A,
    "local n = 0\n"
    "local t = {10, 20}\n"
    "t.self = t\n"
    "local function inc(k) n = n + k; return n end\n"
    "local function get() return n, t.self == t, math.floor(2.5) end\n"
    "return {inc = inc, get = get, t = t, t2 = t}", &b) == LUA_OK);
  PD_CHECK(b.len > 10 && b.data[0] == PDI_CODEC_VERSION);
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  int top = lua_gettop(B);
  lua_pushcfunction(B, decode_p);
  lua_pushlightuserdata(B, &b);
  lua_pushlightuserdata(B, &o);
  PD_CHECK(lua_pcall(B, 2, 1, 0) == LUA_OK);
  PD_CHECK(lua_gettop(B) == top + 1);
  lua_setglobal(B, "v");
  PD_CHECK(luaL_dostring(B,
    "v.inc(5); v.inc(2)\n"
    "local n, same, fl = v.get()\n"
    "assert(n == 7 and same and fl == 2, 'state')\n"
    "assert(v.t == v.t2 and v.t.self == v.t and v.t[2] == 20, 'identity')") == LUA_OK);
  pd_buf_free(&b);
  lua_close(A);
  lua_close(B);
}

static void test_untrusted_refuses_bytecode(void) {
  lua_State *A = fresh(), *B = fresh();
  pd_buf b;
  pd_buf_init(&b);
  PD_CHECK(encode_src(A, "local k = 1 return function() return k end", &b) == LUA_OK);
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  o.allow_bytecode = 0;
  lua_pushcfunction(B, decode_p);
  lua_pushlightuserdata(B, &b);
  lua_pushlightuserdata(B, &o);
  PD_CHECK(lua_pcall(B, 2, 1, 0) != LUA_OK);
  const char *e = lua_tostring(B, -1);
  PD_CHECK(e && strstr(e, "not trusted with bytecode") != NULL);
  pd_buf_free(&b);
  lua_close(A);
  lua_close(B);
}

static void test_refusal_leaves_buffer_to_caller(void) {
  lua_State *A = fresh();
  pd_buf b;
  pd_buf_init(&b);
  PD_CHECK(pd_buf_append(&b, "keep", 4) == 0);
  size_t mark = b.len;
  PD_CHECK(encode_src(A, "return {1, 2, coroutine.create(print)}", &b) != LUA_OK);
  const char *e = lua_tostring(A, -1);
  PD_CHECK(e && strcmp(e, "pd.codec: value[3] is a coroutine") == 0);
  b.len = mark;   /* the contract: the caller drops the partial append */
  PD_CHECK(memcmp(b.data, "keep", 4) == 0);
  pd_buf_free(&b);
  lua_close(A);
}

static int enc_none(lua_State *L, int idx, pd_buf *out) { (void)L; (void)idx; (void)out; return 0; }
static void dec_none(lua_State *L, const char *p, size_t n) { (void)p; (void)n; lua_pushnil(L); }

static int register_p(lua_State *L) {
  const char *name = lua_tostring(L, 1);
  pdi_codec_register_ext(L, name, (uint8_t)lua_tointeger(L, 2), enc_none, dec_none);
  return 0;
}

static void test_ext_registry(void) {
  lua_State *L = fresh();
  lua_pushcfunction(L, register_p);
  lua_pushstring(L, "test.A");
  lua_pushinteger(L, 5);
  PD_CHECK(lua_pcall(L, 2, 0, 0) == LUA_OK);
  lua_pushcfunction(L, register_p);    /* the same pair again: fine */
  lua_pushstring(L, "test.A");
  lua_pushinteger(L, 5);
  PD_CHECK(lua_pcall(L, 2, 0, 0) == LUA_OK);
  lua_pushcfunction(L, register_p);    /* id taken by test.A */
  lua_pushstring(L, "test.B");
  lua_pushinteger(L, 5);
  PD_CHECK(lua_pcall(L, 2, 0, 0) != LUA_OK);
  PD_CHECK(strstr(lua_tostring(L, -1), "clashes") != NULL);
  lua_close(L);
}

static void test_uvarint(void) {
  pd_buf b;
  pd_buf_init(&b);
  uint64_t vals[] = {0, 1, 127, 128, 300, UINT32_MAX, UINT64_MAX};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
    PD_CHECK(pdi_codec_put_uvarint(&b, vals[i]) == 0);
  const char *p = b.data, *end = b.data + b.len;
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    uint64_t v = 0;
    PD_CHECK(pdi_codec_get_uvarint(&p, end, &v) == 0 && v == vals[i]);
  }
  PD_CHECK(p == end);
  uint64_t v;
  const char trunc[] = "\x80\x80";
  p = trunc;
  PD_CHECK(pdi_codec_get_uvarint(&p, trunc + 2, &v) == -1);
  const char over[] = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f";
  p = over;
  PD_CHECK(pdi_codec_get_uvarint(&p, over + 10, &v) == -1);
  pd_buf_free(&b);
}

PD_TESTS = {
  {"closure with shared state to a fresh state", test_closure_to_fresh_state},
  {"untrusted decode refuses bytecode", test_untrusted_refuses_bytecode},
  {"a refusal leaves the buffer to its owner", test_refusal_leaves_buffer_to_caller},
  {"extension registry", test_ext_registry},
  {"uvarint helpers", test_uvarint},
  {NULL, NULL},
};
