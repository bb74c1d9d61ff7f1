/*
 * codec_enc.c: Lua values -> the pdlua wire format (docs/wire.md); the
 * encoder behind pdi_codec_encode (codec.h) and pd.codec.encode.
 *
 * Recursive over the Lua value (the sender's own data), bounded by
 * max_depth, with an identity table (value -> id) so shared tables,
 * functions and userdata travel once and cycles close; shared upvalues are
 * found with lua_upvalueid and written as joins.  Library values (anything
 * reachable as package.loaded[m] or package.loaded[m][k]) travel by name.
 * A lone scalar takes a fast path that writes the same bytes.  An error
 * names where the bad value sits ("upvalue 2 'co' of function at x.lua:14").
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "binding.h"
#include "codec_impl.h"
#include "pd/pdi.h"

#define REG_NAMES "pdlua.codec.names"   /* value -> "module\0field" */
#define REG_NAMES_N "pdlua.codec.names_n"

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

/* Stack: [] -> [names] (codec_impl.h) */
void pdi_codec_names_push(lua_State *L, int force) {
  PDI_STACK(L);
  lua_Integer n = loaded_count(L);
  if (!force) {
    (void)lua_getfield(L, LUA_REGISTRYINDEX, REG_NAMES_N);
    int same = lua_tointeger(L, -1) == n && lua_isnumber(L, -1);
    lua_pop(L, 1);
    if (same && lua_getfield(L, LUA_REGISTRYINDEX, REG_NAMES) == LUA_TTABLE) {
      PDI_STACK_CHECK(L, 1);
      return;
    }
    if (same) lua_pop(L, 1);
  }
  names_build(L);                                         /* [names] */
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_NAMES);
  lua_pushinteger(L, n);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_NAMES_N);
  PDI_STACK_CHECK(L, 1);
}

/* ---- scalar fast path ------------------------------------------------------------
 * A nil, boolean, number or string that is the whole message (every task
 * argument and result of a map of numbers) is written here and read in
 * codec_dec.c, byte for byte as the general coder writes it; anything
 * else, or any message that is not exactly one such scalar, goes the
 * general way.  Why: the general entry sets up a reference table and a
 * frame stack for every message (about 1 us), which dominated a map of
 * 10^5 numbers.  Moved here from lua/map.c so every caller shares it;
 * spec/map_spec.lua holds its bytes to the general coder's
 * (opts.no_scalar_path). */

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
      uint64_t z = pdi_codec_zigzag(v);
      q[1] = T_INT;
      while (z > 127) { q[k++] = (unsigned char)(z | 128); z >>= 7; }
      q[k++] = (unsigned char)z;
    } else {
      double d = (double)lua_tonumber(L, idx);
      uint64_t u;
      memcpy(&u, &d, 8);
      q[1] = T_FLOAT;
      pdi_le64_put(q + 2, u);        /* one 8-byte store on a little-endian host */
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
      u = pdi_codec_zigzag(v);
      t[1] = T_INT;
      do { t[n++] = (unsigned char)((u & 127) | (u > 127 ? 128 : 0)); u >>= 7; } while (u);
    } else {
      double d = (double)lua_tonumber(L, idx);
      memcpy(&u, &d, 8);
      t[1] = T_FLOAT;
      pdi_le64_put(t + n, u);
      n += 8;
    }
    break;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    t[1] = T_STR;
    u = len;
    do { t[n++] = (unsigned char)((u & 127) | (u > 127 ? 128 : 0)); u >>= 7; } while (u);
    if (pd_buf_append(b, t, n) || pd_buf_append(b, s, len)) pdi_codec_error(L, "pd.codec: out of memory");
    return 1;
  }
  default: return 0;
  }
  if (b->cap - b->len >= sizeof t) {               /* the common case: room */
    memcpy(b->data + b->len, t, n);
    b->len += n;
  } else if (pd_buf_append(b, t, n)) pdi_codec_error(L, "pd.codec: out of memory");
  return 1;
}


int pdi_codec_encode_scalar(lua_State *L, int idx, pd_buf *b) { return enc_scalar(L, idx, b); }

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

static void enc_nomem(enc *E) { pdi_codec_error(E->L, "pd.codec: out of memory"); }

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
    pdi_codec_names_push(L, force);
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
  const int le = pdi_codec_host_le();
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
    pdi_codec_push_fp(L);
    lua_replace(L, E->fp);
  }
  lua_Integer fid = enc_newid(E, idx);
  enc_byte(E, T_FUNC);
  enc_bytes(E, lua_tostring(L, E->fp), 8);
  size_t at = E->b->len;
  enc_room(E, 4);
  E->b->len += 4;
  lua_pushvalue(L, idx);
  int rc = pdc_dump(L, pdi_codec_dump_writer, E->b, E->strip);
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

static void enc_userdata(enc *E, int idx) {
  lua_State *L = E->L;
  if (enc_ref(E, idx)) return;
  if (enc_name(E, idx, 0)) return;
  const char *tname;
  pdi_codec_ext *x = pdi_codec_ext_of(L, idx, &tname);
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
      enc_uvarint(E, pdi_codec_zigzag(u));
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

/* The general encoder (codec_impl.h).  Stack: unchanged. */
void pdi_codec_encode_run(lua_State *L, int idx, pd_buf *out, const pdi_codec_opts *o, int used) {
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

/* Stack: unchanged (codec.h). */
int pdi_codec_encode(lua_State *L, int idx, pd_buf *out, const pdi_codec_opts *o) {
  PDI_STACK(L);
  if (!(o && o->no_scalar_path) && enc_scalar(L, idx, out)) return 0;
  pdi_codec_encode_run(L, idx, out, o, 0);
  PDI_STACK_CHECK(L, 0);
  return 0;
}
