/*
 * codec_lua.c: the native module "pd.core.codec" behind pd.codec (encode,
 * decode, fingerprint, version).  encode builds into a pd_buf owned by a
 * userdata, so that a raised error frees it.  The codec itself is
 * codec_enc.c and codec_dec.c (contract: codec.h).
 */
#include "codec.h"

#include <string.h>

#include "binding.h"
#include "codec_impl.h"

#define MT_BUF "pd.codec.buf"

/* A pd_buf owned by a userdata, so a raised error frees it (by __gc).
 * pd_buf_free leaves an empty buffer: a second call is harmless.
 * Stack: [b] -> [] */
static int buf_close(lua_State *L) {
  pd_buf_free((pd_buf *)luaL_checkudata(L, 1, MT_BUF));
  return 0;
}

/* Read encode/decode options from the table at idx (absent fields keep
 * the defaults). */
static void opts_from(lua_State *L, int idx, pdi_codec_opts *o) {
  pdi_codec_opts_default(o);
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  if (lua_getfield(L, idx, "bytecode") != LUA_TNIL) o->allow_bytecode = lua_toboolean(L, -1);
  if (lua_getfield(L, idx, "require") != LUA_TNIL) o->require_modules = lua_toboolean(L, -1);
  if (lua_getfield(L, idx, "strip") != LUA_TNIL) o->strip = lua_toboolean(L, -1);
  if (lua_getfield(L, idx, "max_depth") != LUA_TNIL) o->max_depth = (int)luaL_checkinteger(L, -1);
  if (lua_getfield(L, idx, "max_size") != LUA_TNIL) o->max_size = (size_t)luaL_checkinteger(L, -1);
  lua_pop(L, 5);
  if (o->max_depth < 1 || o->max_depth > 100000) luaL_argerror(L, idx, "max_depth out of range");
}

/* encode(v [, opts]) -> string.  opts.strip; opts.modules, a table, gets
 * modules[m] = true for each module m the message names.
 * Stack: [v, opts] -> [s] */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  pdi_codec_opts o;
  opts_from(L, 2, &o);
  PDI_STACK(L);
  pd_buf *b = (pd_buf *)lua_newuserdatauv(L, sizeof(pd_buf), 0);   /* [.., b] */
  pd_buf_init(b);
  luaL_setmetatable(L, MT_BUF);
  int used = 0, hasopts = lua_istable(L, 2);
  if (hasopts && lua_getfield(L, 2, "modules") == LUA_TTABLE)     /* [.., b, modules] */
    used = lua_gettop(L);
  pdi_codec_encode_run(L, 1, b, &o, used);
  lua_pushlstring(L, b->data, b->len);                      /* [.., b, (modules,) s] */
  pd_buf_free(b);
  PDI_STACK_CHECK(L, 2 + hasopts);
  return 1;
}

/* decode(s [, opts]) -> v.  Stack: [s, opts] -> [v] */
static int l_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  pdi_codec_opts o;
  opts_from(L, 2, &o);
  PDI_STACK(L);
  pdi_codec_decode(L, s, n, &o);                            /* [.., v] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* fingerprint() -> 16 hex digits.  Stack: [] -> [s] */
static int l_fingerprint(lua_State *L) {
  PDI_STACK(L);
  char hex[17];
  pdi_codec_fingerprint(L, hex);
  lua_pushstring(L, hex);
  PDI_STACK_CHECK(L, 1);
  return 1;
}

static const luaL_Reg codec_funcs[] = {
  {"encode", l_encode},
  {"decode", l_decode},
  {"fingerprint", l_fingerprint},
  {NULL, NULL},
};

/* Stack: [] -> [codec] */
int luaopen_pd_core_codec(lua_State *L) {
  PDI_STACK(L);
  pdi_newclass(L, MT_BUF, NULL, NULL, buf_close);               /* [mt] */
  lua_pop(L, 1);                                                /* [] */
  luaL_newlib(L, codec_funcs);                                  /* [codec] */
  lua_pushinteger(L, PDI_CODEC_VERSION);
  lua_setfield(L, -2, "version");
  PDI_STACK_CHECK(L, 1);
  return 1;
}
