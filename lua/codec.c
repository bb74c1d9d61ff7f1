/*
 * codec.c: Lua values <-> the pdlua wire format (docs/wire.md), and the
 * native part "pd.core.codec" behind pd.codec.
 *
 * Encoder: recursive over the Lua value (the sender's own data), bounded by
 * max_depth, with an identity table (value -> id) so shared tables,
 * functions and userdata travel once and cycles close; shared upvalues are
 * found with lua_upvalueid and written as joins.  Library values (anything
 * reachable as package.loaded[m] or package.loaded[m][k]) travel by name.
 *
 * Decoder: never recursive.  An explicit frame stack (a userdata, so a
 * raised error frees it) holds the containers under construction; every
 * length is checked against the bytes that remain before anything is
 * allocated; depth and size are bounded; bytecode is refused unless the
 * caller says the peer is trusted, and then only with this VM's fingerprint.
 */
#include "codec.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "pd/pdi.h"

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

#define REG_NAMES "pdlua.codec.names"   /* value -> "module\0field" */
#define REG_NAMES_N "pdlua.codec.names_n"
#define REG_EXT "pdlua.codec.ext"       /* tname -> ext, id -> ext */
#define REG_FP "pdlua.codec.fp"         /* 8-byte fingerprint */
#define MT_BUF "pd.codec.buf"
#define MT_BLOCK "pd.codec.Block"

typedef struct ext_entry {
  uint8_t id;
  pdi_codec_ext_encode_fn enc;
  pdi_codec_ext_decode_fn dec;
} ext_entry;

void pdi_codec_opts_default(pdi_codec_opts *o) {
  memset(o, 0, sizeof *o);
  o->allow_bytecode = 1;
  o->require_modules = 1;
  o->max_depth = PDI_CODEC_MAX_DEPTH;
  o->max_size = PDI_CODEC_MAX_SIZE;
}

/* Raise a codec error: the message as given, with no position prefix (the
 * place is in the text).  Never returns. */
static int codec_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

/* ---- byte helpers ---------------------------------------------------------- */

static int host_is_le(void) {
  const uint16_t one = 1;
  return *(const unsigned char *)&one == 1;
}

int pdi_codec_put_uvarint(pd_buf *out, uint64_t v) {
  unsigned char b[10];
  int n = 0;
  do {
    b[n] = (unsigned char)(v & 0x7f);
    v >>= 7;
    if (v) b[n] |= 0x80;
    n++;
  } while (v);
  return pd_buf_append(out, b, (size_t)n);
}

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

/* ---- fingerprint ------------------------------------------------------------ */

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  return pd_buf_append((pd_buf *)ud, p, n) ? 1 : 0;
}

/* Push the 8-byte fingerprint of this VM (cached in the registry).
 * Stack: [] -> [fp] */
static void push_fp(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, REG_FP) == LUA_TSTRING) return;
  lua_pop(L, 1);
  pd_buf b;
  pd_buf_init(&b);
  if (luaL_loadstring(L, "return") != LUA_OK) lua_error(L);   /* [f] */
  int rc = pdc_dump(L, dump_writer, &b, 1);
  lua_pop(L, 1);                                                /* [] */
  size_t hl = PDLUA_LUAJIT ? 5 : 31;    /* LuaJIT: ESC L J ver flags; 5.4: full header */
  if (rc || b.len < hl) {
    pd_buf_free(&b);
    codec_error(L, "pd.codec: cannot dump a function to fingerprint the VM");
  }
  if (PDLUA_LUAJIT) b.data[4] &= ~0x02;  /* the strip flag is not a format */
  b.len = hl;
  const char *vm = PDLUA_VM_NAME;
  unsigned char sizes[2] = {(unsigned char)sizeof(void *), (unsigned char)host_is_le()};
  if (pd_buf_append(&b, vm, strlen(vm)) || pd_buf_append(&b, sizes, 2)) {
    pd_buf_free(&b);
    codec_error(L, "pd.codec: out of memory");
  }
  unsigned char h[32];
  pd_sha256(b.data, b.len, h);
  pd_buf_free(&b);
  lua_pushlstring(L, (const char *)h, 8);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_FP);                   /* [fp] */
}

void pdi_codec_fingerprint(lua_State *L, char hex[17]) {
  push_fp(L);
  const unsigned char *h = (const unsigned char *)lua_tostring(L, -1);
  for (int i = 0; i < 8; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
  lua_pop(L, 1);
}

/* ---- library names ------------------------------------------------------------
 * The name table maps a value to "module\0field" (field may be empty) for
 * every table in package.loaded and every function, table or userdata field
 * of those tables, except that fields of _G count only when they are C
 * functions (a user's global data is data, not library).  It is cached in
 * the registry and rebuilt when package.loaded changes size or when a C
 * function is not found. */

static void names_add(lua_State *L, int names, int vidx, const char *m, size_t ml,
                      const char *k, size_t kl) {
  lua_pushvalue(L, vidx);
  if (lua_rawget(L, names) != LUA_TNIL) {   /* first wins; modules go first */
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, vidx);
  luaL_Buffer B;
  luaL_buffinit(L, &B);
  luaL_addlstring(&B, m, ml);
  luaL_addchar(&B, '\0');
  luaL_addlstring(&B, k, kl);
  luaL_pushresult(&B);
  lua_rawset(L, names);
}

/* Count package.loaded entries (the cache key).  Stack: unchanged. */
static lua_Integer loaded_count(lua_State *L) {
  lua_Integer n = 0;
  (void)lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);   /* [loaded] */
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) { n++; lua_pop(L, 1); }
  }
  lua_pop(L, 1);
  return n;
}

/* Build the name table afresh.  Stack: [] -> [names] */
static void names_build(lua_State *L) {
  luaL_checkstack(L, 12, "pd.codec");
  lua_newtable(L);
  int names = lua_gettop(L);
  (void)lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);   /* [names, loaded] */
  int loaded = lua_gettop(L);
  lua_pushglobaltable(L);                                 /* [names, loaded, G] */
  int G = lua_gettop(L);
  /* Pass 0: modules themselves; 1: the C functions of _G; 2: the fields of
   * the other modules.  A value with several names gets the first, so the
   * choice must not depend on package.loaded's iteration order: a global
   * (LuaJIT's `unpack`) is named as one even when a compat module on the
   * sending side also set `table.unpack`, which the receiver may lack. */
  for (int pass = 0; pass < 3 && lua_istable(L, loaded); pass++) {
    lua_pushnil(L);
    while (lua_next(L, loaded)) {                         /* [.., m, mod] */
      int mod = lua_gettop(L), t = lua_type(L, mod);
      if (lua_type(L, mod - 1) != LUA_TSTRING) { lua_pop(L, 1); continue; }
      size_t ml;
      const char *m = lua_tolstring(L, mod - 1, &ml);
      int isG = lua_rawequal(L, mod, G);
      if (pass == 0) {               /* modules themselves (G travels as ENV) */
        if (!isG && (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA))
          names_add(L, names, mod, m, ml, "", 0);
      } else if (t == LUA_TTABLE && isG == (pass == 1)) {  /* their fields */
        lua_pushnil(L);
        while (lua_next(L, mod)) {                        /* [.., m, mod, k, v] */
          int vt = lua_type(L, -1);
          if (lua_type(L, -2) == LUA_TSTRING && !lua_rawequal(L, -1, G) &&
              (isG ? lua_iscfunction(L, -1)
                   : (vt == LUA_TFUNCTION || vt == LUA_TTABLE || vt == LUA_TUSERDATA))) {
            size_t kl;
            const char *k = lua_tolstring(L, -2, &kl);
            names_add(L, names, lua_gettop(L), m, ml, k, kl);
          }
          lua_pop(L, 1);
        }
      }
      lua_pop(L, 1);                                      /* [.., m] */
    }
  }
  lua_pop(L, 2);                                          /* [names] */
}

/* Push the cached name table, rebuilding it when package.loaded changed
 * size or when force is set.  Stack: [] -> [names] */
static void names_push(lua_State *L, int force) {
  lua_Integer n = loaded_count(L);
  if (!force) {
    (void)lua_getfield(L, LUA_REGISTRYINDEX, REG_NAMES_N);
    int same = lua_tointeger(L, -1) == n && lua_isnumber(L, -1);
    lua_pop(L, 1);
    if (same && lua_getfield(L, LUA_REGISTRYINDEX, REG_NAMES) == LUA_TTABLE) return;
    if (same) lua_pop(L, 1);
  }
  names_build(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_NAMES);
  lua_pushinteger(L, n);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_NAMES_N);
}

/* ---- scalar fast path ------------------------------------------------------------
 * A nil, boolean, number or string that is the whole message (every task
 * argument and result of a map of numbers) is written and read here, byte
 * for byte as the general coder below writes it; anything else, or any
 * message that is not exactly one such scalar, goes the general way.  Why:
 * the general entry sets up a reference table and a frame stack for every
 * message (about 1 us), which dominated a map of 10^5 numbers.  Moved here
 * from lua/map.c so every caller shares it; spec/map_spec.lua holds its
 * bytes to the general coder's (opts.no_scalar_path). */

/* Append the message for the scalar at idx; 1 if done, 0 if not a scalar.
 * Stack: unchanged. */
static int enc_scalar(lua_State *L, int idx, pd_buf *b) {
  int isint = pdc_isinteger(L, idx);
  int ty = isint ? LUA_TNUMBER : lua_type(L, idx);
  if (ty == LUA_TNUMBER && b->cap - b->len >= 12) {   /* numbers, in place */
    unsigned char *q = (unsigned char *)b->data + b->len;
    q[0] = PDI_CODEC_VERSION;
    size_t k = 2;
    if (isint) {
      uint64_t v = (uint64_t)lua_tointeger(L, idx);
      uint64_t z = (v << 1) ^ (uint64_t)-(int64_t)(v >> 63);    /* zigzag */
      q[1] = T_INT;
      while (z > 127) { q[k++] = (unsigned char)(z | 128); z >>= 7; }
      q[k++] = (unsigned char)z;
    } else {
      double d = (double)lua_tonumber(L, idx);
      q[1] = T_FLOAT;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
      memcpy(q + 2, &d, 8);
#else
      uint64_t u;
      memcpy(&u, &d, 8);
      for (int i = 0; i < 8; i++) q[2 + i] = (unsigned char)(u >> (8 * i));
#endif
      k = 10;
    }
    b->len += k;
    return 1;
  }
  unsigned char t[2 + 10 + 8];
  size_t n = 2;
  t[0] = PDI_CODEC_VERSION;
  uint64_t u;
  switch (ty) {
  case LUA_TNIL: t[1] = T_NIL; break;
  case LUA_TBOOLEAN: t[1] = lua_toboolean(L, idx) ? T_TRUE : T_FALSE; break;
  case LUA_TNUMBER:
    if (pdc_isinteger(L, idx)) {
      uint64_t v = (uint64_t)lua_tointeger(L, idx);
      u = (v << 1) ^ (uint64_t)-(int64_t)(v >> 63);         /* zigzag */
      t[1] = T_INT;
      do { t[n++] = (unsigned char)((u & 127) | (u > 127 ? 128 : 0)); u >>= 7; } while (u);
    } else {
      double d = (double)lua_tonumber(L, idx);
      memcpy(&u, &d, 8);
      t[1] = T_FLOAT;
      for (int i = 0; i < 8; i++) t[n++] = (unsigned char)(u >> (8 * i));
    }
    break;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    t[1] = T_STR;
    u = len;
    do { t[n++] = (unsigned char)((u & 127) | (u > 127 ? 128 : 0)); u >>= 7; } while (u);
    if (pd_buf_append(b, t, n) || pd_buf_append(b, s, len)) codec_error(L, "pd.codec: out of memory");
    return 1;
  }
  default: return 0;
  }
  if (b->cap - b->len >= sizeof t) {               /* the common case: room */
    memcpy(b->data + b->len, t, n);
    b->len += n;
  } else if (pd_buf_append(b, t, n)) codec_error(L, "pd.codec: out of memory");
  return 1;
}

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
    lua_pushinteger(L, (lua_Integer)(int64_t)((u >> 1) ^ (uint64_t)-(int64_t)(u & 1)));
    return 1;
  }
  case T_FLOAT: {
    if (n != 10) return 0;
    double d;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&d, q, 8);
#else
    u = 0;
    for (int i = 0; i < 8; i++) u |= (uint64_t)q[i] << (8 * i);
    memcpy(&d, &u, 8);
#endif
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

int pdi_codec_encode_scalar(lua_State *L, int idx, pd_buf *b) { return enc_scalar(L, idx, b); }
int pdi_codec_decode_scalar(lua_State *L, const char *p, size_t n) { return dec_scalar(L, p, n); }

/* ---- encoder -------------------------------------------------------------------- */

enum { SEG_INT, SEG_KEY, SEG_UPV, SEG_META, SEG_KEYOF };

typedef struct seg {
  int kind;
  int idx;          /* SEG_KEY/SEG_KEYOF: stack index of the key; SEG_UPV: function */
  lua_Integer n;    /* SEG_INT: the index; SEG_UPV: the upvalue number */
} seg;

#define SEGS_ON_STACK 256

typedef struct enc {
  lua_State *L;
  pd_buf *b;
  int strip, max_depth, depth;
  int seen;       /* stack: value -> id */
  int upv;        /* stack: upvalue id (light userdata) -> fid * 256 + n */
  int names;      /* stack: name table, 0 until needed */
  int G;          /* stack: the global table */
  int fp;         /* stack: fingerprint string */
  int used;       /* stack: set of module names written as NAME, or 0 */
  lua_Integer nextid;
  int nseg;
  seg *segs;      /* max_depth + 2 entries, a userdata on the stack */
} enc;

static void enc_nomem(enc *E) { codec_error(E->L, "pd.codec: out of memory"); }

static inline char *enc_room(enc *E, size_t n) {
  if (n > E->b->cap - E->b->len && pd_buf_reserve(E->b, n)) enc_nomem(E);
  return E->b->data + E->b->len;
}

static inline void enc_byte(enc *E, int c) {
  char *p = enc_room(E, 1);
  *p = (char)c;
  E->b->len++;
}

static void enc_bytes(enc *E, const void *p, size_t n) {
  if (pd_buf_append(E->b, p, n)) enc_nomem(E);
}

static inline void enc_uvarint(enc *E, uint64_t v) {
  unsigned char *p = (unsigned char *)enc_room(E, 10);
  size_t n = 0;
  while (v >= 0x80) { p[n++] = (unsigned char)(v | 0x80); v >>= 7; }
  p[n++] = (unsigned char)v;
  E->b->len += n;
}

static inline void enc_f64(enc *E, double d) {
  uint64_t u;
  memcpy(&u, &d, 8);
  pdi_le64_put(enc_room(E, 8), u);
  E->b->len += 8;
}

static void enc_lstr(enc *E, const char *s, size_t n) {
  enc_uvarint(E, n);
  enc_bytes(E, s, n);
}

/* Append "where" the current value sits to the Lua buffer B. */
static void enc_where(enc *E, luaL_Buffer *B) {
  lua_State *L = E->L;
  int base = 0;   /* last SEG_UPV index + 1 */
  for (int i = E->nseg - 1; i >= 0; i--)
    if (E->segs[i].kind == SEG_UPV) { base = i; break; }
  char tmp[512];
  tmp[0] = 0;
  size_t tl = 0;
  int start = 0;
  if (E->nseg > 0 && E->segs[base].kind == SEG_UPV) start = base + 1;
  for (int i = start; i < E->nseg && tl < sizeof tmp - 80; i++) {
    seg *s = &E->segs[i];
    int w = 0;
    if (s->kind == SEG_INT) {
      w = snprintf(tmp + tl, sizeof tmp - tl, "[%lld]", (long long)s->n);
    } else if (s->kind == SEG_META) {
      w = snprintf(tmp + tl, sizeof tmp - tl, "<metatable>");
    } else if (s->kind == SEG_KEYOF) {
      w = snprintf(tmp + tl, sizeof tmp - tl, "[<key>]");
    } else if (s->kind == SEG_KEY) {
      int t = lua_type(L, s->idx);
      if (t == LUA_TSTRING) {
        size_t kl;
        const char *k = lua_tolstring(L, s->idx, &kl);
        int ident = kl > 0 && kl < 64 && !(k[0] >= '0' && k[0] <= '9');
        for (size_t j = 0; ident && j < kl; j++)
          ident = (k[j] == '_' || (k[j] >= 'a' && k[j] <= 'z') || (k[j] >= 'A' && k[j] <= 'Z') ||
                   (k[j] >= '0' && k[j] <= '9'));
        if (ident) w = snprintf(tmp + tl, sizeof tmp - tl, ".%s", k);
        else w = snprintf(tmp + tl, sizeof tmp - tl, "[\"%.40s\"]", k);
      } else if (t == LUA_TNUMBER) {
        if (pdc_isinteger(L, s->idx))
          w = snprintf(tmp + tl, sizeof tmp - tl, "[%lld]", (long long)lua_tointeger(L, s->idx));
        else
          w = snprintf(tmp + tl, sizeof tmp - tl, "[%.14g]", (double)lua_tonumber(L, s->idx));
      } else {
        w = snprintf(tmp + tl, sizeof tmp - tl, "[<%s key>]", luaL_typename(L, s->idx));
      }
    }
    if (w > 0) tl += (size_t)w < sizeof tmp - tl ? (size_t)w : sizeof tmp - tl - 1;
  }
  if (E->nseg > 0 && E->segs[base].kind == SEG_UPV) {
    seg *s = &E->segs[base];
    lua_Debug ar;
    const char *un = lua_getupvalue(L, s->idx, (int)s->n);
    if (un) lua_pop(L, 1);
    else un = "?";
    if (!*un) un = "?";
    lua_pushvalue(L, s->idx);
    lua_getinfo(L, ">S", &ar);
    if (tl) {
      luaL_addstring(B, "field ");
      luaL_addlstring(B, tmp, tl);
      luaL_addstring(B, " of ");
    }
    lua_pushfstring(L, "upvalue %d '%s' of function at %s:%d", (int)s->n, un, ar.short_src,
                    ar.linedefined);
    luaL_addvalue(B);
  } else {
    luaL_addstring(B, "value");
    luaL_addlstring(B, tmp, tl);
  }
}

/* Raise "pd.codec: <where> is <what>". */
static void enc_fail(enc *E, const char *what) {
  lua_State *L = E->L;
  luaL_checkstack(L, 8, "pd.codec");
  luaL_Buffer B;
  luaL_buffinit(L, &B);
  luaL_addstring(&B, "pd.codec: ");
  enc_where(E, &B);
  luaL_addstring(&B, " is ");
  luaL_addstring(&B, what);
  luaL_pushresult(&B);
  lua_error(L);
}

static void enc_value(enc *E, int idx);

static inline void seg_push(enc *E, int kind, int idx, lua_Integer n) {
  seg *s = &E->segs[E->nseg++];
  s->kind = kind;
  s->idx = idx;
  s->n = n;
}

static void enc_enter(enc *E) {
  if (++E->depth > E->max_depth) {
    char what[64];
    snprintf(what, sizeof what, "nested deeper than %d levels", E->max_depth);
    enc_fail(E, what);
  }
  luaL_checkstack(E->L, 10, "pd.codec: nested too deep");
}

/* If the value at idx was seen, write a REF and return 1.  Stack: unchanged. */
static int enc_ref(enc *E, int idx) {
  lua_State *L = E->L;
  if (lua_isnil(L, E->seen)) return 0;   /* nothing numbered yet */
  lua_pushvalue(L, idx);
  if (lua_rawget(L, E->seen) == LUA_TNUMBER) {
    lua_Integer id = lua_tointeger(L, -1);
    lua_pop(L, 1);
    enc_byte(E, T_REF);
    enc_uvarint(E, (uint64_t)id);
    return 1;
  }
  lua_pop(L, 1);
  return 0;
}

/* Give the value at idx the next id.  Returns it.  Stack: unchanged. */
static lua_Integer enc_newid(enc *E, int idx) {
  lua_State *L = E->L;
  lua_Integer id = E->nextid++;
  if (lua_isnil(L, E->seen)) {           /* made on first use: cheap small messages */
    lua_newtable(L);
    lua_replace(L, E->seen);
  }
  lua_pushvalue(L, idx);
  lua_pushinteger(L, id);
  lua_rawset(L, E->seen);
  return id;
}

/* If the value at idx is a library value, write NAME and return 1.
 * Stack: unchanged. */
static int enc_name(enc *E, int idx, int force) {
  lua_State *L = E->L;
  if (!E->names || force) {
    names_push(L, force);
    if (E->names) lua_replace(L, E->names);
    else E->names = lua_gettop(L);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, E->names) != LUA_TSTRING) {
    lua_pop(L, 1);
    return 0;
  }
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  size_t ml = strlen(s);
  enc_byte(E, T_NAME);
  enc_lstr(E, s, ml);
  enc_lstr(E, s + ml + 1, n - ml - 1);
  if (E->used) {
    lua_pushlstring(L, s, ml);
    lua_pushboolean(L, 1);
    lua_rawset(L, E->used);
  }
  lua_pop(L, 1);
  return 1;
}

/* The array part 1..n of the table at idx as a typed block (FARR/IARR).
 * Returns the count written, or 0 (buffer restored) when an element is not
 * of the block's number subtype.  Stack: unchanged. */
static size_t enc_block(enc *E, int idx, size_t n, int isint) {
  lua_State *L = E->L;
  size_t mark = E->b->len;
  enc_byte(E, isint ? T_IARR : T_FARR);
  if (n > UINT32_MAX || n > (SIZE_MAX - 16) / 8) { E->b->len = mark; return 0; }
  char *p = enc_room(E, 4 + 8 * n);
  pdi_le32_put(p, (uint32_t)n);
  p += 4;
  const int le = host_is_le();
  for (size_t i = 1; i <= n; i++, p += 8) {
    int t = lua_rawgeti(L, idx, (lua_Integer)i);
    if (t != LUA_TNUMBER || pdc_isinteger(L, -1) != isint) {
      lua_pop(L, 1);
      E->b->len = mark;
      return 0;
    }
    uint64_t u;
    if (isint) {
      lua_Integer v = lua_tointeger(L, -1);
      memcpy(&u, &v, 8);
    } else {
      double d = (double)lua_tonumber(L, -1);
      memcpy(&u, &d, 8);
    }
    lua_pop(L, 1);
    if (le) memcpy(p, &u, 8);
    else pdi_le64_put(p, u);
  }
  E->b->len += 4 + 8 * n;
  return n;
}

static void enc_table(enc *E, int idx) {
  lua_State *L = E->L;
  if (lua_rawequal(L, idx, E->G)) { enc_byte(E, T_ENV); return; }
  if (enc_ref(E, idx)) return;
  if (enc_name(E, idx, 0)) return;
  enc_enter(E);
  enc_newid(E, idx);
  int hasmt = lua_getmetatable(L, idx);
  if (!hasmt) lua_pushnil(L);
  int mt = lua_gettop(L);
  size_t n = (size_t)lua_rawlen(L, idx), narr = 0;
  if (n > 0 && !hasmt) {
    int t = lua_rawgeti(L, idx, 1);
    int isint = t == LUA_TNUMBER && pdc_isinteger(L, -1);
    lua_pop(L, 1);
    if (t == LUA_TNUMBER && (!isint || n >= 16)) narr = enc_block(E, idx, n, isint);
  }
  if (n > UINT32_MAX) n = UINT32_MAX;
  if (narr == 0) {
    enc_byte(E, hasmt ? T_TABLE_MT : T_TABLE);
    size_t at = E->b->len;
    enc_room(E, 4);
    E->b->len += 4;
    for (size_t i = 1; i <= n; i++) {
      if (lua_rawgeti(L, idx, (lua_Integer)i) == LUA_TNIL) { lua_pop(L, 1); break; }
      seg_push(E, SEG_INT, 0, (lua_Integer)i);
      enc_value(E, lua_gettop(L));
      E->nseg--;
      lua_pop(L, 1);
      narr = i;
    }
    pdi_le32_put(E->b->data + at, (uint32_t)narr);
  }
  size_t at = E->b->len;
  enc_room(E, 4);
  E->b->len += 4;
  uint32_t nhash = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {                       /* [.., k, v] */
    int k = lua_gettop(L) - 1;
    if (lua_type(L, k) == LUA_TNUMBER && pdc_isinteger(L, k)) {
      lua_Integer i = lua_tointeger(L, k);
      if (i >= 1 && (size_t)i <= narr) { lua_pop(L, 1); continue; }
    }
#if PDLUA_LUAJIT
    if (lua_type(L, k) == LUA_TNUMBER) {
      lua_Number d = lua_tonumber(L, k);
      if (d >= 1 && d <= (lua_Number)narr && d == floor(d)) { lua_pop(L, 1); continue; }
    }
#endif
    if (nhash == UINT32_MAX) enc_fail(E, "a table with too many keys");
    seg_push(E, SEG_KEYOF, k, 0);
    enc_value(E, k);
    E->segs[E->nseg - 1].kind = SEG_KEY;
    enc_value(E, k + 1);
    E->nseg--;
    nhash++;
    lua_pop(L, 1);                                 /* [.., k] */
  }
  pdi_le32_put(E->b->data + at, nhash);
  if (hasmt) {
    seg_push(E, SEG_META, 0, 0);
    enc_value(E, mt);
    E->nseg--;
  }
  lua_pop(L, 1);                                   /* mt or nil */
  E->depth--;
}

static void enc_function(enc *E, int idx) {
  lua_State *L = E->L;
  if (enc_ref(E, idx)) return;
  if (lua_iscfunction(L, idx)) {
    if (enc_name(E, idx, 0) || enc_name(E, idx, 1)) return;
    enc_fail(E, "a C function that no module exposes");
  }
  if (enc_name(E, idx, 0)) return;
  enc_enter(E);
  if (lua_isnil(L, E->upv)) {
    lua_newtable(L);
    lua_replace(L, E->upv);
    push_fp(L);
    lua_replace(L, E->fp);
  }
  lua_Integer fid = enc_newid(E, idx);
  enc_byte(E, T_FUNC);
  enc_bytes(E, lua_tostring(L, E->fp), 8);
  size_t at = E->b->len;
  enc_room(E, 4);
  E->b->len += 4;
  lua_pushvalue(L, idx);
  int rc = pdc_dump(L, dump_writer, E->b, E->strip);
  lua_pop(L, 1);
  if (rc) enc_fail(E, "a function that cannot be dumped");
  size_t blen = E->b->len - at - 4;
  if (blen > UINT32_MAX) enc_fail(E, "a function too large to encode");
  pdi_le32_put(E->b->data + at, (uint32_t)blen);
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  int nups = ar.nups;
  enc_byte(E, nups);
  for (int i = 1; i <= nups; i++) {
    if (!lua_getupvalue(L, idx, i)) lua_pushnil(L);   /* [.., v] */
    void *uid = lua_upvalueid(L, idx, i);
    lua_pushlightuserdata(L, uid);
    if (lua_rawget(L, E->upv) == LUA_TNUMBER) {        /* [.., v, where] */
      lua_Integer w = lua_tointeger(L, -1);
      enc_byte(E, T_UPJOIN);
      enc_uvarint(E, (uint64_t)(w >> 8));
      enc_byte(E, (int)(w & 0xff));
      lua_pop(L, 2);
      continue;
    }
    lua_pop(L, 1);
    lua_pushlightuserdata(L, uid);
    lua_pushinteger(L, fid * 256 + i);
    lua_rawset(L, E->upv);
    seg_push(E, SEG_UPV, idx, i);
    enc_value(E, lua_gettop(L));
    E->nseg--;
    lua_pop(L, 1);
  }
  E->depth--;
}

/* The extension entry for the userdata at idx, or NULL; *tname gets its
 * metatable's __name (interned in the registry) when it has one.
 * Stack: unchanged. */
static ext_entry *ext_of(lua_State *L, int idx, const char **tname) {
  ext_entry *x = NULL;
  int top = lua_gettop(L);
  *tname = NULL;
  if (lua_getmetatable(L, idx) &&                                /* [mt] */
      lua_getfield(L, -1, "__name") == LUA_TSTRING) {            /* [mt, name] */
    *tname = lua_tostring(L, -1);
    if (lua_getfield(L, LUA_REGISTRYINDEX, REG_EXT) == LUA_TTABLE && /* [mt, name, ext] */
        lua_getfield(L, -1, *tname) == LUA_TUSERDATA) {          /* [mt, name, ext, x] */
      luaL_getmetatable(L, *tname);                              /* [.., x, regmt] */
      if (lua_rawequal(L, -1, top + 1)) x = (ext_entry *)lua_touserdata(L, -2);
    }
  }
  lua_settop(L, top);
  return x;
}

static void enc_userdata(enc *E, int idx) {
  lua_State *L = E->L;
  if (enc_ref(E, idx)) return;
  if (enc_name(E, idx, 0)) return;
  const char *tname;
  ext_entry *x = ext_of(L, idx, &tname);
  if (!x) {
    char what[160];
    if (tname) snprintf(what, sizeof what, "a userdata of type '%.100s' that has no codec extension", tname);
    else snprintf(what, sizeof what, "a foreign userdata (no codec extension)");
    enc_fail(E, what);
  }
  enc_newid(E, idx);
  enc_byte(E, T_EXT);
  enc_byte(E, x->id);
  size_t at = E->b->len;
  enc_room(E, 4);
  E->b->len += 4;
  x->enc(L, idx, E->b);
  size_t n = E->b->len - at - 4;
  if (n > UINT32_MAX) enc_fail(E, "a userdata too large to encode");
  pdi_le32_put(E->b->data + at, (uint32_t)n);
}

static void enc_value(enc *E, int idx) {
  lua_State *L = E->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: enc_byte(E, T_NIL); break;
  case LUA_TBOOLEAN: enc_byte(E, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); break;
  case LUA_TNUMBER:
    if (pdc_isinteger(L, idx)) {
      uint64_t u = (uint64_t)lua_tointeger(L, idx);
      enc_byte(E, T_INT);
      enc_uvarint(E, (u << 1) ^ (uint64_t)-(int64_t)(u >> 63));
    } else {
      enc_byte(E, T_FLOAT);
      enc_f64(E, (double)lua_tonumber(L, idx));
    }
    break;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    enc_byte(E, T_STR);
    enc_lstr(E, s, n);
    break;
  }
  case LUA_TTABLE: enc_table(E, idx); break;
  case LUA_TFUNCTION: enc_function(E, idx); break;
  case LUA_TUSERDATA: enc_userdata(E, idx); break;
  case LUA_TLIGHTUSERDATA: enc_fail(E, "a light userdata"); break;
  case LUA_TTHREAD: enc_fail(E, "a coroutine"); break;
  default: {
    char what[64];
    snprintf(what, sizeof what, "a %s", luaL_typename(L, idx));
    enc_fail(E, what);
  }
  }
}

/* The encoder; used (a stack index or 0) collects the module names that
 * NAME tags refer to (for code transport).  Stack: unchanged. */
static void encode_run(lua_State *L, int idx, pd_buf *out, const pdi_codec_opts *o, int used) {
  pdi_codec_opts def;
  if (!o) { pdi_codec_opts_default(&def); o = &def; }
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  enc E;
  seg segs_local[SEGS_ON_STACK + 4];
  memset(&E, 0, sizeof E);
  E.L = L;
  E.b = out;
  E.strip = o->strip;
  E.max_depth = o->max_depth > 0 ? o->max_depth : PDI_CODEC_MAX_DEPTH;
  E.nextid = 1;
  E.used = used ? lua_absindex(L, used) : 0;
  luaL_checkstack(L, 16, "pd.codec");
  int t = lua_type(L, idx);
  if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA) {
    /* Path segments live on the C stack up to the default depth. */
    E.segs = E.max_depth <= SEGS_ON_STACK ? segs_local
           : (seg *)lua_newuserdatauv(L, sizeof(seg) * ((size_t)E.max_depth + 4), 0);
    lua_pushnil(L); E.seen = lua_gettop(L);       /* made when first needed */
    lua_pushnil(L); E.upv = lua_gettop(L);
    lua_pushnil(L); E.fp = lua_gettop(L);
    lua_pushglobaltable(L); E.G = lua_gettop(L);
  }
  enc_byte(&E, PDI_CODEC_VERSION);
  enc_value(&E, idx);
  lua_settop(L, top);
}

int pdi_codec_encode(lua_State *L, int idx, pd_buf *out, const pdi_codec_opts *o) {
  if (!(o && o->no_scalar_path) && enc_scalar(L, idx, out)) return 0;
  encode_run(L, idx, out, o, 0);
  return 0;
}

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
  codec_error(D->L, "pd.codec: malformed message: %s at byte %d", why, (int)(D->p - D->start));
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
      codec_error(L, "pd.codec: module '%s' named in the message is not loaded here",
                 lua_tostring(L, -1));
    }
    lua_getglobal(L, "require");
    lua_pushlstring(L, m, ml);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {                 /* [loaded, err] */
      const char *e = lua_tostring(L, -1);
      const char *nl = e ? strchr(e, '\n') : NULL;
      if (nl) e = lua_pushlstring(L, e, (size_t)(nl - e));   /* first line only */
      lua_pushlstring(L, m, ml);
      codec_error(L, "pd.codec: module '%s' named in the message is not available here "
                    "(a C module or one not shipped): %s", lua_tostring(L, -1), e ? e : "?");
    }
  }
  if (kl) {
    if (!lua_istable(L, -1)) {
      lua_pushlstring(L, m, ml);
      codec_error(L, "pd.codec: module '%s' is not a table here", lua_tostring(L, -1));
    }
    lua_pushlstring(L, k, kl);
    (void)lua_rawget(L, -2);                                     /* [loaded, mod, v] */
    lua_remove(L, -2);
  }
  if (lua_isnil(L, -1)) {
    lua_pushlstring(L, m, ml);
    lua_pushlstring(L, k, kl);
    codec_error(L, "pd.codec: library value '%s%s%s' does not exist here", lua_tostring(L, -2),
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
  push_fp(L);
  int same = memcmp(lua_tostring(L, -1), D->p, 8) == 0;
  lua_pop(L, 1);
  if (!same) codec_error(L, "pd.codec: function from a different VM (bytecode fingerprint mismatch; this is %s)", PDLUA_VM_NAME);
  D->p += 8;
  uint32_t len = dec_u32(D);
  dec_need(D, (size_t)len + 1, "truncated function");
  if (luaL_loadbufferx(L, D->p, len, "=(pd.codec)", "b") != LUA_OK) {
    const char *e = lua_tostring(L, -1);
    codec_error(L, "pd.codec: malformed message: bad bytecode (%s) at byte %d", e ? e : "?",
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
  ext_entry *x = NULL;
  int top = lua_gettop(L);
  luaL_checkstack(L, 6, "pd.codec");
  if (lua_getfield(L, LUA_REGISTRYINDEX, REG_EXT) == LUA_TTABLE &&
      lua_rawgeti(L, -1, id) == LUA_TUSERDATA)
    x = (ext_entry *)lua_touserdata(L, -1);   /* kept alive by the registry */
  lua_settop(L, top);
  if (!x) {
    if (id == PDI_CODEC_EXT_ARRAY)
      codec_error(L, "pd.codec: message holds a pd.Array but arrays are not loaded here (ext 1)");
    codec_error(L, "pd.codec: message holds an extension type %d that is not registered here", id);
  }
  x->dec(L, D->p, len);
  if (lua_gettop(L) != top + 1) codec_error(L, "pd.codec: extension %d decoder pushed %d values", id, lua_gettop(L) - top);
  D->p += len;
  dec_newid(D);
}

int pdi_codec_decode(lua_State *L, const char *p, size_t n, const pdi_codec_opts *o) {
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
    codec_error(L, "pd.codec: %s", why);
  }
  if (!o->no_scalar_path && dec_scalar(L, p, n)) return 0;
  if (n < 2) dec_fail(&D, "truncated message");
  if ((unsigned char)*D.p != PDI_CODEC_VERSION) {
    codec_error(L, "pd.codec: malformed message: unknown format version %d at byte 0", (unsigned char)*D.p);
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
      uint64_t v = (u >> 1) ^ (uint64_t)-(int64_t)(u & 1);
      lua_pushinteger(L, (lua_Integer)(int64_t)v);
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

/* ---- the Lua side: pd.core.codec ------------------------------------------------- */

/* A pd_buf owned by a userdata, so a raised error frees it (by __gc). */
static int buf_gc(lua_State *L) {
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
  pd_buf *b = (pd_buf *)lua_newuserdatauv(L, sizeof(pd_buf), 0);
  pd_buf_init(b);
  luaL_setmetatable(L, MT_BUF);
  int used = 0;
  if (lua_istable(L, 2) && lua_getfield(L, 2, "modules") == LUA_TTABLE) used = lua_gettop(L);
  encode_run(L, 1, b, &o, used);
  lua_pushlstring(L, b->data, b->len);
  pd_buf_free(b);
  return 1;
}

/* decode(s [, opts]) -> v.  Stack: [s, opts] -> [v] */
static int l_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  pdi_codec_opts o;
  opts_from(L, 2, &o);
  pdi_codec_decode(L, s, n, &o);
  return 1;
}

/* fingerprint() -> 16 hex digits.  Stack: [] -> [s] */
static int l_fingerprint(lua_State *L) {
  char hex[17];
  pdi_codec_fingerprint(L, hex);
  lua_pushstring(L, hex);
  return 1;
}

/* _name_of(v) -> v's library name "m.k", or nothing (tests).
 * Stack: [v] -> [v, names, "m\0k", "m.k"] */
static int l_name_of(lua_State *L) {
  luaL_checkany(L, 1);
  names_push(L, 1);                     /* [v, names] */
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
 * Older than pd.Array and kept beside it: proves the extension slot and
 * gives the benchmark a raw numeric block.  Payload: u32 n, n f64 LE. */

typedef struct block {
  size_t n;
  double v[];
} block;

static block *block_new(lua_State *L, size_t n) {
  if (n > (SIZE_MAX - sizeof(block)) / sizeof(double)) codec_error(L, "pd.codec: block too large");
  block *b = (block *)lua_newuserdatauv(L, sizeof(block) + n * sizeof(double), 0);
  b->n = n;
  luaL_setmetatable(L, MT_BLOCK);
  return b;
}

static int block_encode(lua_State *L, int idx, pd_buf *out) {
  block *b = (block *)lua_touserdata(L, idx);
  if (b->n > UINT32_MAX || pd_buf_reserve(out, 4 + b->n * 8))
    return codec_error(L, "pd.codec: block too large");
  pdi_le32_put(out->data + out->len, (uint32_t)b->n);
  if (host_is_le()) {
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
  if (n < 4) codec_error(L, "pd.codec: malformed block payload (truncated)");
  uint32_t c = pdi_le32_get(p);
  if ((size_t)c * 8 != n - 4) codec_error(L, "pd.codec: malformed block payload (length)");
  block *b = block_new(L, c);
  if (host_is_le()) {
    memcpy(b->v, p + 4, (size_t)c * 8);
  } else {
    for (size_t i = 0; i < c; i++) {
      uint64_t u = pdi_le64_get(p + 4 + 8 * i);
      memcpy(&b->v[i], &u, 8);
    }
  }
}

/* _block(n | list) -> block of n zeros or of the list's numbers.
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

/* block[i] -> number (1-based) or nil; #block.  Stack: [b, i] -> [v] */
static int block_index(lua_State *L) {
  block *b = (block *)luaL_checkudata(L, 1, MT_BLOCK);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 1 || (size_t)i > b->n) return 0;
  lua_pushnumber(L, (lua_Number)b->v[i - 1]);
  return 1;
}

static int block_len(lua_State *L) {
  block *b = (block *)luaL_checkudata(L, 1, MT_BLOCK);
  lua_pushinteger(L, (lua_Integer)b->n);
  return 1;
}

/* _memcpy(nbytes, reps) -> seconds per copy of nbytes (the bench floor).
 * Stack: [n, reps] -> [s] */
static int l_memcpy(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1), reps = luaL_optinteger(L, 2, 10);
  luaL_argcheck(L, n > 0 && n <= ((lua_Integer)1 << 32), 1, "size out of range");
  luaL_argcheck(L, reps > 0, 2, "reps must be positive");
  char *a = malloc((size_t)n), *b = malloc((size_t)n);
  if (!a || !b) { free(a); free(b); return codec_error(L, "pd.codec: out of memory"); }
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

void pdi_codec_register_ext(lua_State *L, const char *tname, uint8_t ext_id,
                            pdi_codec_ext_encode_fn encf, pdi_codec_ext_decode_fn decf) {
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
    ext_entry *a = byname ? (ext_entry *)lua_touserdata(L, -2) : NULL;
    ext_entry *b = byid ? (ext_entry *)lua_touserdata(L, -1) : NULL;
    if (a && b && a == b) { lua_pop(L, 3); return; }
    codec_error(L, "pd.codec: extension '%s' (id %d) clashes with one already registered", tname, (int)ext_id);
  }
  lua_pop(L, 2);
  ext_entry *x = (ext_entry *)lua_newuserdatauv(L, sizeof(ext_entry), 0);
  x->id = ext_id;
  x->enc = encf;
  x->dec = decf;
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, tname);
  lua_rawseti(L, -2, ext_id);
  lua_pop(L, 1);
}

/* _encode_time(v, reps) -> seconds per pdi_codec_encode of v into one
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

/* _light() -> a light userdata (for the refusal specs).  Stack: [] -> [p] */
static int l_light(lua_State *L) {
  lua_pushlightuserdata(L, (void *)L);
  return 1;
}

static const luaL_Reg codec_funcs[] = {
  {"_light", l_light},
  {"_encode_time", l_encode_time},
  {"encode", l_encode},
  {"decode", l_decode},
  {"fingerprint", l_fingerprint},
  {"_name_of", l_name_of},
  {"_block", l_block},
  {"_memcpy", l_memcpy},
  {NULL, NULL},
};

/* Stack: [] -> [codec] */
int luaopen_pd_core_codec(lua_State *L) {
  if (luaL_newmetatable(L, MT_BUF)) {
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, MT_BLOCK)) {
    lua_pushcfunction(L, block_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, block_len);
    lua_setfield(L, -2, "__len");
  }
  lua_pop(L, 1);
  pdi_codec_register_ext(L, MT_BLOCK, PDI_CODEC_EXT_TESTBLOCK, block_encode, block_decode);
  luaL_newlib(L, codec_funcs);
  lua_pushinteger(L, PDI_CODEC_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
