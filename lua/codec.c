/*
 * codec.c: the codec's per-state pieces.  The encoder is codec_enc.c, the
 * decoder codec_dec.c, the Lua face (pd.core.codec) codec_lua.c; what they
 * share is codec_impl.h, and codec.h is the contract for the rest of pdlua.
 *
 * Here: the options' defaults; the one way a codec error is raised; the
 * extension registry (registry[REG_EXT]: type name -> entry and id ->
 * entry, per lua_State, so several states in one process each have their
 * own); and the VM fingerprint every function carries (cached in the
 * registry).  The specs' and the bench's hooks (a test extension type,
 * timers) are not here: spec/c/codec_testhooks.c, built only into the test
 * tree.
 */
#include "codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "binding.h"
#include "codec_impl.h"

#define REG_EXT "pdlua.codec.ext"       /* tname -> ext, id -> ext */
#define REG_FP "pdlua.codec.fp"         /* 8-byte fingerprint */

void pdi_codec_opts_default(pdi_codec_opts *o) {
  memset(o, 0, sizeof *o);
  o->allow_bytecode = 1;
  o->require_modules = 1;
  o->max_depth = PDI_CODEC_MAX_DEPTH;
  o->max_size = PDI_CODEC_MAX_SIZE;
}

/* Contracts of the pdi_codec_ names not in codec.h: codec_impl.h. */

int pdi_codec_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

/* ---- fingerprint ------------------------------------------------------------
 * SHA-256 of the VM's bytecode header (strip flag cleared), its name, the
 * pointer size and the byte order; the first 8 bytes travel. */

/* Stack: [] -> [fp] */
void pdi_codec_push_fp(lua_State *L) {
  PDI_STACK(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, REG_FP) == LUA_TSTRING) {   /* [fp] */
    PDI_STACK_CHECK(L, 1);
    return;
  }
  lua_pop(L, 1);
  pd_buf b;
  pd_buf_init(&b);
  if (luaL_loadstring(L, "return") != LUA_OK) lua_error(L);   /* [f] */
  int rc = pdc_dump(L, pdi_codec_dump_writer, &b, 1);
  lua_pop(L, 1);                                                /* [] */
  size_t hl = PDLUA_LUAJIT ? 5 : 31;    /* LuaJIT: ESC L J ver flags; 5.4: full header */
  if (rc || b.len < hl) {
    pd_buf_free(&b);
    pdi_codec_error(L, "pd.codec: cannot dump a function to fingerprint the VM");
  }
  if (PDLUA_LUAJIT) b.data[4] &= ~0x02;  /* the strip flag is not a format */
  b.len = hl;
  const char *vm = PDLUA_VM_NAME;
  unsigned char sizes[2] = {(unsigned char)sizeof(void *), (unsigned char)pdi_codec_host_le()};
  if (pd_buf_append(&b, vm, strlen(vm)) || pd_buf_append(&b, sizes, 2)) {
    pd_buf_free(&b);
    pdi_codec_error(L, "pd.codec: out of memory");
  }
  unsigned char h[32];
  pd_sha256(b.data, b.len, h);
  pd_buf_free(&b);
  lua_pushlstring(L, (const char *)h, 8);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_FP);                   /* [fp] */
  PDI_STACK_CHECK(L, 1);
}

void pdi_codec_fingerprint(lua_State *L, char hex[17]) {
  PDI_STACK(L);
  pdi_codec_push_fp(L);                                         /* [fp] */
  const unsigned char *h = (const unsigned char *)lua_tostring(L, -1);
  for (int i = 0; i < 8; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
  lua_pop(L, 1);                                                /* [] */
  PDI_STACK_CHECK(L, 0);
}

/* ---- extension registry ---------------------------------------------------------
 * registry[REG_EXT][tname] and registry[REG_EXT][id] are the same entry (a
 * full userdata, so a pointer to it stays valid while the state lives). */

void pdi_codec_register_ext(lua_State *L, const char *tname, uint8_t ext_id,
                            pdi_codec_ext_encode_fn encf, pdi_codec_ext_decode_fn decf) {
  PDI_STACK(L);
  luaL_checkstack(L, 6, "pd.codec");
  if (lua_getfield(L, LUA_REGISTRYINDEX, REG_EXT) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_EXT);
  }                                                        /* [ext] */
  int byname = lua_getfield(L, -1, tname) == LUA_TUSERDATA;
  int byid = lua_rawgeti(L, -2, ext_id) == LUA_TUSERDATA;  /* [ext, x1, x2] */
  if (byname || byid) {
    pdi_codec_ext *a = byname ? (pdi_codec_ext *)lua_touserdata(L, -2) : NULL;
    pdi_codec_ext *b = byid ? (pdi_codec_ext *)lua_touserdata(L, -1) : NULL;
    if (a && b && a == b) {                                /* the same pair again */
      lua_pop(L, 3);
      PDI_STACK_CHECK(L, 0);
      return;
    }
    pdi_codec_error(L, "pd.codec: extension '%s' (id %d) clashes with one already registered", tname, (int)ext_id);
  }
  lua_pop(L, 2);
  pdi_codec_ext *x = (pdi_codec_ext *)lua_newuserdatauv(L, sizeof(pdi_codec_ext), 0);
  x->id = ext_id;
  x->enc = encf;
  x->dec = decf;
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, tname);
  lua_rawseti(L, -2, ext_id);                              /* [ext] */
  lua_pop(L, 1);
  PDI_STACK_CHECK(L, 0);
}

/* Stack: unchanged. */
pdi_codec_ext *pdi_codec_ext_of(lua_State *L, int idx, const char **tname) {
  pdi_codec_ext *x = NULL;
  int top = lua_gettop(L);
  *tname = NULL;
  if (lua_getmetatable(L, idx) &&                                /* [mt] */
      lua_getfield(L, -1, "__name") == LUA_TSTRING) {            /* [mt, name] */
    *tname = lua_tostring(L, -1);
    if (lua_getfield(L, LUA_REGISTRYINDEX, REG_EXT) == LUA_TTABLE && /* [mt, name, ext] */
        lua_getfield(L, -1, *tname) == LUA_TUSERDATA) {          /* [mt, name, ext, x] */
      luaL_getmetatable(L, *tname);                              /* [.., x, regmt] */
      if (lua_rawequal(L, -1, top + 1)) x = (pdi_codec_ext *)lua_touserdata(L, -2);
    }
  }
  lua_settop(L, top);
  return x;
}

/* Stack: unchanged. */
pdi_codec_ext *pdi_codec_ext_by_id(lua_State *L, int id) {
  pdi_codec_ext *x = NULL;
  int top = lua_gettop(L);
  luaL_checkstack(L, 6, "pd.codec");
  if (lua_getfield(L, LUA_REGISTRYINDEX, REG_EXT) == LUA_TTABLE &&
      lua_rawgeti(L, -1, id) == LUA_TUSERDATA)
    x = (pdi_codec_ext *)lua_touserdata(L, -1);   /* kept alive by the registry */
  lua_settop(L, top);
  return x;
}
