/*
 * codec_dec.c: the pdlua wire format (docs/wire.md) -> Lua values; the
 * decoder behind pdi_codec_decode (codec.h) and pd.codec.decode.
 *
 * Never recursive: an explicit frame stack (on the C stack up to the
 * default depth, else a userdata, so a raised error frees it) holds the
 * containers under construction; every length is checked against the bytes
 * that remain before anything is allocated; depth and size are bounded;
 * bytecode is refused unless the caller says the peer is trusted, and then
 * only with this VM's fingerprint.  The input is hostile: spec/fuzz/
 * fuzz_codec.c runs it under libFuzzer, ASan and UBSan.
 */
#include <stdio.h>
#include <string.h>

#include "binding.h"
#include "codec_impl.h"
#include "pd/pdi.h"

int pdi_codec_get_uvarint(const char **pp, const char *end, uint64_t *v) {
  const unsigned char *p = (const unsigned char *)*pp;
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if ((const char *)p >= end) return -1;
    unsigned char c = *p++;
    if (shift == 63 && (c & 0x7e)) return -1;   /* beyond 64 bits */
    r |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *pp = (const char *)p;
      *v = r;
      return 0;
    }
  }
  return -1;
}

/* ---- scalar fast path ------------------------------------------------------------
 * The reading half of codec_enc.c's scalar path (the why is there). */

/* Push the value of a message that is exactly one scalar; 1 if done, 0 to
 * leave the message (malformed ones included) to the general decoder.
 * Never reads past p + n.  Stack: [] -> [v] or unchanged. */
static int dec_scalar(lua_State *L, const char *p, size_t n) {
  const unsigned char *q = (const unsigned char *)p, *e = q + n;
  if (n < 2 || q[0] != PDI_CODEC_VERSION) return 0;
  uint64_t u;
  int tag = q[1];
  q += 2;
  switch (tag) {
  case T_NIL: if (n != 2) return 0; lua_pushnil(L); return 1;
  case T_FALSE: case T_TRUE: if (n != 2) return 0; lua_pushboolean(L, tag == T_TRUE); return 1;
  case T_INT: {
    /* integers under 2^20 in magnitude (one to three varint bytes), inline */
    if (n == 3 && q[0] < 128) u = q[0];
    else if (n == 4 && (q[0] & 128) && q[1] < 128) u = (q[0] & 127u) | (uint64_t)q[1] << 7;
    else if (n == 5 && (q[0] & 128) && (q[1] & 128) && q[2] < 128)
      u = (q[0] & 127u) | (uint64_t)(q[1] & 127u) << 7 | (uint64_t)q[2] << 14;
    else {
      const char *c = (const char *)q;
      if (pdi_codec_get_uvarint(&c, (const char *)e, &u) || c != (const char *)e) return 0;
    }
    lua_pushinteger(L, (lua_Integer)(int64_t)pdi_codec_unzigzag(u));
    return 1;
  }
  case T_FLOAT: {
    if (n != 10) return 0;
    double d;
    u = pdi_le64_get(q);             /* one 8-byte load on a little-endian host */
    memcpy(&d, &u, 8);
    lua_pushnumber(L, (lua_Number)d);
    return 1;
  }
  case T_STR: {
    const char *c = (const char *)q;
    if (pdi_codec_get_uvarint(&c, (const char *)e, &u) || u != (uint64_t)((const char *)e - c)) return 0;
    lua_pushlstring(L, c, (size_t)u);
    return 1;
  }
  default: return 0;
  }
}

int pdi_codec_decode_scalar(lua_State *L, const char *p, size_t n) { return dec_scalar(L, p, n); }

/* ---- decoder --------------------------------------------------------------------- */

enum { F_ARR, F_HASH, F_META, F_UPV };

typedef struct frame {
  int kind, slot, haskey, hasmeta;
  uint32_t i, n;
} frame;

#define FRAMES_ON_STACK 256

typedef struct dec {
  lua_State *L;
  const char *start, *p, *end;
  const pdi_codec_opts *o;
  int refs;            /* stack: id -> value */
  lua_Integer nref;
  frame *fr;
  int nf, maxf;
} dec;

static void dec_fail(dec *D, const char *why) {
  pdi_codec_error(D->L, "pd.codec: malformed message: %s at byte %d", why, (int)(D->p - D->start));
}

static inline void dec_need(dec *D, size_t n, const char *what) {
  if ((size_t)(D->end - D->p) < n) dec_fail(D, what);
}

static uint64_t dec_uvarint(dec *D) {
  uint64_t v;
  if (pdi_codec_get_uvarint(&D->p, D->end, &v)) dec_fail(D, "bad or truncated varint");
  return v;
}

static uint32_t dec_u32(dec *D) {
  dec_need(D, 4, "truncated length");
  uint32_t v = pdi_le32_get(D->p);
  D->p += 4;
  return v;
}

/* Read a uvarint length n and return a pointer to n bytes.  */
static const char *dec_lstr(dec *D, size_t *n) {
  uint64_t len = dec_uvarint(D);
  if (len > (uint64_t)(D->end - D->p)) dec_fail(D, "string longer than the message");
  const char *s = D->p;
  D->p += len;
  *n = (size_t)len;
  return s;
}

/* Record the value on top as the next id.  Stack: unchanged. */
static void dec_newid(dec *D) {
  if (D->nref == 0) {                    /* made on first use */
    lua_newtable(D->L);
    lua_replace(D->L, D->refs);
  }
  lua_pushvalue(D->L, -1);
  lua_rawseti(D->L, D->refs, ++D->nref);
}

static frame *dec_push_frame(dec *D, int kind, uint32_t n) {
  if (D->nf >= D->maxf) {
    char why[64];
    snprintf(why, sizeof why, "nested deeper than %d levels", D->maxf);
    dec_fail(D, why);
  }
  luaL_checkstack(D->L, 6, "pd.codec: nested too deep");
  frame *f = &D->fr[D->nf++];
  f->kind = kind;
  f->slot = lua_gettop(D->L);
  f->haskey = 0;
  f->hasmeta = 0;
  f->i = 0;
  f->n = n;
  return f;
}

/* Move frame f on after a value was stored; returns 1 when its container
 * is complete (frame popped, container on top), 0 when it wants more. */
static int dec_advance(dec *D, frame *f) {
  for (;;) {
    switch (f->kind) {
    case F_ARR:
      if (f->i < f->n) return 0;
      f->kind = F_HASH;
      f->i = 0;
      f->n = dec_u32(D);
      if (f->n > (size_t)(D->end - D->p) / 2) dec_fail(D, "table claims more keys than the message holds");
      continue;
    case F_HASH:
      if (f->i < f->n) return 0;
      if (f->hasmeta) { f->kind = F_META; f->hasmeta = 0; return 0; }
      break;
    case F_META:
      if (!f->hasmeta) return 0;   /* hasmeta reused: 1 once the metatable is set */
      break;
    case F_UPV:
      if (f->i < f->n) return 0;
      break;
    }
    D->nf--;
    return 1;
  }
}

/* Start a table of the given tag; push it and its frame. */
static int dec_table(dec *D, int tag) {
  lua_State *L = D->L;
  uint32_t n = dec_u32(D);
  size_t left = (size_t)(D->end - D->p);
  int block = tag == T_FARR || tag == T_IARR;
  if (block ? n > left / 8 : n > left) dec_fail(D, "table claims more elements than the message holds");
  lua_createtable(L, (int)(n > INT32_MAX ? INT32_MAX : n), 0);
  dec_newid(D);
  frame *f = dec_push_frame(D, F_ARR, block ? 0 : n);
  f->hasmeta = tag == T_TABLE_MT;
  if (f->hasmeta && !D->o->allow_bytecode) {
    /* A metatable from an untrusted peer could install library functions
     * (os.exit as __gc) that run without the user calling anything. */
    D->p -= 5;
    dec_fail(D, "metatable from a peer not trusted with code");
  }
  if (block) {
    const char *p = D->p;
    for (uint32_t i = 1; i <= n; i++, p += 8) {
      uint64_t u = pdi_le64_get(p);
      if (tag == T_IARR) {
        lua_Integer v;
        memcpy(&v, &u, 8);
        lua_pushinteger(L, v);
      } else {
        double d;
        memcpy(&d, &u, 8);
        lua_pushnumber(L, (lua_Number)d);
      }
      lua_rawseti(L, f->slot, (lua_Integer)i);
    }
    D->p = p;
  }
  return dec_advance(D, f);
}

/* Resolve a NAME (module, field).  Stack: [] -> [v] */
static void dec_name(dec *D) {
  lua_State *L = D->L;
  size_t ml, kl;
  const char *m = dec_lstr(D, &ml);
  const char *k = dec_lstr(D, &kl);
  if (ml == 0 || memchr(m, 0, ml) || memchr(k, 0, kl)) dec_fail(D, "bad library name");
  luaL_checkstack(L, 6, "pd.codec");
  (void)lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);   /* [loaded] */
  lua_pushlstring(L, m, ml);
  if (lua_rawget(L, -2) == LUA_TNIL) {                    /* [loaded, mod] */
    lua_pop(L, 1);
    if (!D->o->require_modules) {
      lua_pushlstring(L, m, ml);
      pdi_codec_error(L, "pd.codec: module '%s' named in the message is not loaded here",
                 lua_tostring(L, -1));
    }
    lua_getglobal(L, "require");
    lua_pushlstring(L, m, ml);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {                 /* [loaded, err] */
      const char *e = lua_tostring(L, -1);
      const char *nl = e ? strchr(e, '\n') : NULL;
      if (nl) e = lua_pushlstring(L, e, (size_t)(nl - e));   /* first line only */
      lua_pushlstring(L, m, ml);
      pdi_codec_error(L, "pd.codec: module '%s' named in the message is not available here "
                    "(a C module or one not shipped): %s", lua_tostring(L, -1), e ? e : "?");
    }
  }
  if (kl) {
    if (!lua_istable(L, -1)) {
      lua_pushlstring(L, m, ml);
      pdi_codec_error(L, "pd.codec: module '%s' is not a table here", lua_tostring(L, -1));
    }
    lua_pushlstring(L, k, kl);
    (void)lua_rawget(L, -2);                                     /* [loaded, mod, v] */
    lua_remove(L, -2);
  }
  if (lua_isnil(L, -1)) {
    lua_pushlstring(L, m, ml);
    lua_pushlstring(L, k, kl);
    pdi_codec_error(L, "pd.codec: library value '%s%s%s' does not exist here", lua_tostring(L, -2),
               kl ? "." : "", lua_tostring(L, -1));
  }
  lua_remove(L, -2);                                       /* [v] */
}

/* Load a function (after the tag).  Stack: [] -> [f] with its frame. */
static int dec_function(dec *D) {
  lua_State *L = D->L;
  if (!D->o->allow_bytecode) {
    D->p--;
    dec_fail(D, "function (bytecode) from a peer not trusted with bytecode");
  }
  dec_need(D, 8, "truncated function");
  pdi_codec_push_fp(L);
  int same = memcmp(lua_tostring(L, -1), D->p, 8) == 0;
  lua_pop(L, 1);
  if (!same) pdi_codec_error(L, "pd.codec: function from a different VM (bytecode fingerprint mismatch; this is %s)", PDLUA_VM_NAME);
  D->p += 8;
  uint32_t len = dec_u32(D);
  dec_need(D, (size_t)len + 1, "truncated function");
  if (luaL_loadbufferx(L, D->p, len, "=(pd.codec)", "b") != LUA_OK) {
    const char *e = lua_tostring(L, -1);
    pdi_codec_error(L, "pd.codec: malformed message: bad bytecode (%s) at byte %d", e ? e : "?",
               (int)(D->p - D->start));
  }
  D->p += len;
  int nups = (unsigned char)*D->p++;
  lua_Debug ar;
  lua_pushvalue(L, -1);
  lua_getinfo(L, ">u", &ar);
  if (ar.nups != nups) dec_fail(D, "function upvalue count does not match its bytecode");
  dec_newid(D);
  frame *f = dec_push_frame(D, F_UPV, (uint32_t)nups);
  return dec_advance(D, f);
}

/* Join upvalue f->i+1 of the function being built to a function's upvalue. */
static void dec_upjoin(dec *D, frame *f) {
  lua_State *L = D->L;
  uint64_t id = dec_uvarint(D);
  dec_need(D, 1, "truncated upvalue join");
  int n = (unsigned char)*D->p++;
  if (id == 0 || id > (uint64_t)D->nref) dec_fail(D, "upvalue join to an unknown function");
  (void)lua_rawgeti(L, D->refs, (lua_Integer)id);
  if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1)) dec_fail(D, "upvalue join to a non-function");
  if (n < 1 || !lua_getupvalue(L, -1, n)) dec_fail(D, "upvalue join to a missing upvalue");
  lua_pop(L, 1);
  lua_upvaluejoin(L, f->slot, (int)f->i + 1, -1, n);
  lua_pop(L, 1);
  f->i++;
}

static void dec_ext(dec *D) {
  lua_State *L = D->L;
  dec_need(D, 1, "truncated extension");
  int id = (unsigned char)*D->p++;
  uint32_t len = dec_u32(D);
  dec_need(D, len, "extension payload longer than the message");
  int top = lua_gettop(L);
  pdi_codec_ext *x = pdi_codec_ext_by_id(L, id);
  if (!x) {
    if (id == PDI_CODEC_EXT_ARRAY)
      pdi_codec_error(L, "pd.codec: message holds a pd.Array but arrays are not loaded here (ext 1)");
    pdi_codec_error(L, "pd.codec: message holds an extension type %d that is not registered here", id);
  }
  x->dec(L, D->p, len);
  if (lua_gettop(L) != top + 1) pdi_codec_error(L, "pd.codec: extension %d decoder pushed %d values", id, lua_gettop(L) - top);
  D->p += len;
  dec_newid(D);
}

/* Stack: [] -> [v] (codec.h). */
int pdi_codec_decode(lua_State *L, const char *p, size_t n, const pdi_codec_opts *o) {
  PDI_STACK(L);
  pdi_codec_opts def;
  if (!o) { pdi_codec_opts_default(&def); o = &def; }
  dec D;
  D.L = L;
  D.start = D.p = p;
  D.end = p + n;
  D.o = o;
  D.nref = 0;
  D.nf = 0;
  D.maxf = o->max_depth > 0 ? o->max_depth : PDI_CODEC_MAX_DEPTH;
  size_t maxsize = o->max_size ? o->max_size : PDI_CODEC_MAX_SIZE;
  if (n > maxsize) {
    char why[96];
    snprintf(why, sizeof why, "message of %zu bytes exceeds the limit of %zu", n, maxsize);
    pdi_codec_error(L, "pd.codec: %s", why);
  }
  if (!o->no_scalar_path && dec_scalar(L, p, n)) {
    PDI_STACK_CHECK(L, 1);
    return 0;
  }
  if (n < 2) dec_fail(&D, "truncated message");
  if ((unsigned char)*D.p != PDI_CODEC_VERSION) {
    pdi_codec_error(L, "pd.codec: malformed message: unknown format version %d at byte 0", (unsigned char)*D.p);
  }
  D.p++;
  luaL_checkstack(L, 8, "pd.codec");
  int base = lua_gettop(L);
  frame fr_local[FRAMES_ON_STACK];
  if (D.maxf <= FRAMES_ON_STACK) {
    D.fr = fr_local;
    lua_pushnil(L);                                                          /* [x] */
  } else {
    D.fr = (frame *)lua_newuserdatauv(L, sizeof(frame) * (size_t)D.maxf, 0); /* [fr] */
  }
  lua_pushnil(L);                                    /* [x, refs]: a table once needed */
  D.refs = lua_gettop(L);
  for (;;) {
    if (D.p >= D.end) dec_fail(&D, "truncated message");
    int tag = (unsigned char)*D.p++;
    int have = 1;   /* a value was pushed and must be stored */
    switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      uint64_t u = dec_uvarint(&D);
      lua_pushinteger(L, (lua_Integer)(int64_t)pdi_codec_unzigzag(u));
      break;
    }
    case T_FLOAT: {
      dec_need(&D, 8, "truncated float");
      uint64_t u = pdi_le64_get(D.p);
      double d;
      memcpy(&d, &u, 8);
      D.p += 8;
      lua_pushnumber(L, (lua_Number)d);
      break;
    }
    case T_STR: {
      size_t sl;
      const char *s = dec_lstr(&D, &sl);
      lua_pushlstring(L, s, sl);
      break;
    }
    case T_TABLE: case T_TABLE_MT: case T_FARR: case T_IARR:
      have = dec_table(&D, tag);
      break;
    case T_REF: {
      uint64_t id = dec_uvarint(&D);
      if (id == 0 || id > (uint64_t)D.nref) dec_fail(&D, "reference to an unknown value");
      (void)lua_rawgeti(L, D.refs, (lua_Integer)id);
      break;
    }
    case T_FUNC: have = dec_function(&D); break;
    case T_UPJOIN: {
      if (D.nf == 0 || D.fr[D.nf - 1].kind != F_UPV) { D.p--; dec_fail(&D, "upvalue join outside a function"); }
      frame *f = &D.fr[D.nf - 1];
      dec_upjoin(&D, f);
      have = dec_advance(&D, f);
      break;
    }
    case T_ENV: lua_pushglobaltable(L); break;
    case T_NAME: dec_name(&D); break;
    case T_EXT: dec_ext(&D); break;
    default: D.p--; dec_fail(&D, "unknown tag");
    }
    /* Store values into their containers; a completed container is itself
     * a value for the frame below. */
    while (have) {
      if (D.nf == 0) {
        if (D.p != D.end) dec_fail(&D, "trailing bytes after the value");
        lua_replace(L, base + 1);                  /* [v, refs] */
        lua_settop(L, base + 1);                   /* [v] */
        PDI_STACK_CHECK(L, 1);
        return 0;
      }
      frame *f = &D.fr[D.nf - 1];
      switch (f->kind) {
      case F_ARR:
        lua_rawseti(L, f->slot, (lua_Integer)++f->i);
        break;
      case F_HASH:
        if (!f->haskey) {
          int kt = lua_type(L, -1);
          if (kt == LUA_TNIL) dec_fail(&D, "nil table key");
          if (kt == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1)) dec_fail(&D, "NaN table key");
          f->haskey = 1;
          have = 0;
          continue;
        }
        lua_rawset(L, f->slot);
        f->haskey = 0;
        f->i++;
        break;
      case F_META:
        if (!lua_istable(L, -1)) dec_fail(&D, "metatable is not a table");
        lua_setmetatable(L, f->slot);
        f->hasmeta = 1;
        break;
      case F_UPV:
        if (!lua_setupvalue(L, f->slot, (int)++f->i)) lua_pop(L, 1);
        break;
      }
      have = dec_advance(&D, f);
    }
  }
}

