/*
 * codec.c: the codec's per-state pieces and its Lua face.  The encoder is
 * codec_enc.c, the decoder codec_dec.c; what the three share is
 * codec_impl.h, and codec.h is the contract for the rest of pdlua.
 *
 * Here: the options' defaults; the one way a codec error is raised; the
 * extension registry (registry[REG_EXT]: type name -> entry and id ->
 * entry, per lua_State, so several states in one process each have their
 * own); the VM fingerprint every function carries (cached in the registry);
 * and the native module "pd.core.codec" behind pd.codec (encode, decode,
 * fingerprint, version), whose encode builds into a pd_buf owned by a
 * userdata so that a raised error frees it.  The specs' and the bench's
 * hooks (a test extension type, timers) are not here: spec/c/
 * codec_testhooks.c, built only into the test tree.
 */
#include "codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "binding.h"
#include "codec_impl.h"

#define REG_EXT "pdlua.codec.ext"       /* tname -> ext, id -> ext */
#define REG_FP "pdlua.codec.fp"         /* 8-byte fingerprint */
#define MT_BUF "pd.codec.buf"

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

/* ---- the Lua side: pd.core.codec ------------------------------------------------- */

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
