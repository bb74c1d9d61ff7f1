/*
 * array.c: the pd.Array type (metatable "pd.Array"): dtypes and storage,
 * views, the constructors (pd.array, zeros, ones, full, eye, range,
 * linspace), indexing and shape, conversion between dtypes, the wire form
 * (codec extension 1), and the class that the module's other files add
 * their methods to.
 *
 * The contract for C is lua/array.h; for Lua, docs/arrays.md.  The shape of
 * this file:
 *   dtypes and storage      userdata layout, views, element get/set
 *   constructors            pd.array, zeros, ones, full, eye, range, linspace
 *   shape and indexing      a[i], get/set, row/col/T/slice/reshape, copy
 *   wire form               pdi_array_encode / pdi_array_decode
 *   the class               the metatable, made from every file's methods
 * The element-wise kernels are array_ops.c, the reductions array_reduce.c,
 * linear algebra linalg.c; this file calls none of them (array_open.c
 * hands their methods to pdi_array_newclass).
 */
#include "array.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "binding.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#  error "pd.array's wire form is the host's bytes: little-endian hosts only"
#endif

/* ======================================================================
 * dtypes and storage
 * ====================================================================== */

/* The names; the sizes are pdi_dtype_size (array.h). */
static const char *const dtype_names[PDI_NDTYPES] = {
  [PDI_F64] = "f64", [PDI_F32] = "f32", [PDI_I32] = "i32", [PDI_I64] = "i64", [PDI_U8] = "u8",
};

const char *pdi_dtype_name(int dtype) { return dtype_names[dtype]; }

int pdi_dtype_find(const char *s) {
  for (int d = 0; d < PDI_NDTYPES; d++)
    if (strcmp(s, pdi_dtype_name(d)) == 0) return d;
  return -1;
}

int pdi_dtype_opt(lua_State *L, int idx, int dflt) {
  if (lua_isnoneornil(L, idx)) return dflt;
  const char *s = luaL_checkstring(L, idx);
  int d = pdi_dtype_find(s);
  if (d < 0) luaL_argerror(L, idx, lua_pushfstring(L, "unknown dtype '%s' (f64, f32, i32, i64, u8)", s));
  return d;
}

pdi_array *pdi_array_test(lua_State *L, int idx) {
  return (pdi_array *)luaL_testudata(L, idx, PDI_ARRAY_MT);
}

pdi_array *pdi_array_check(lua_State *L, int idx) {
  return (pdi_array *)luaL_checkudata(L, idx, PDI_ARRAY_MT);
}

int pdi_array_contiguous(const pdi_array *a) {
  if (a->n <= 1) return 1;
  if (a->ndim == 1) return a->strides[0] == 1;
  return (a->dims[1] == 1 || a->strides[1] == 1) &&
         (a->dims[0] == 1 || a->strides[0] == a->dims[1]);
}

static void set_shape(pdi_array *a, int ndim, const int64_t *dims) {
  a->ndim = ndim;
  a->dims[0] = dims[0];
  a->dims[1] = ndim == 2 ? dims[1] : 1;
  a->strides[0] = ndim == 2 ? a->dims[1] : 1;
  a->strides[1] = ndim == 2 ? 1 : 0;
  a->n = a->dims[0] * a->dims[1];
}

/* Stack: [] -> [a].  Elements are uninitialised. */
pdi_array *pdi_array_new(lua_State *L, int dtype, int ndim, const int64_t *dims) {
  int64_t n = dims[0];
  if (dims[0] < 0 || (ndim == 2 && dims[1] < 0)) luaL_error(L, "array: negative dimension");
  if (ndim == 2) {
    if (dims[1] != 0 && dims[0] > PDI_MAXN / dims[1]) luaL_error(L, "array: too large");
    n *= dims[1];
  }
  if (n > PDI_MAXN) luaL_error(L, "array: too large");
  size_t bytes = sizeof(pdi_array) + 64 + (size_t)n * pdi_dtype_size(dtype);
  pdi_array *a = (pdi_array *)lua_newuserdatauv(L, bytes, 1);     /* [a] */
  uintptr_t p = (uintptr_t)(a + 1);
  a->data = (char *)((p + 63) & ~(uintptr_t)63);
  a->dtype = dtype;
  a->owner = 1;
  set_shape(a, ndim, dims);
  luaL_setmetatable(L, PDI_ARRAY_MT);
  return a;
}

/* Push the array that owns the elements of the array at idx (itself when it
 * is an owner).  Stack: [] -> [owner] */
static void push_owner(lua_State *L, int idx) {
  pdi_array *a = pdi_array_check(L, idx);
  if (a->owner) { lua_pushvalue(L, idx); return; }
#if PDLUA_LUAJIT
  lua_getfenv(L, idx);                                /* [env] */
  lua_rawgeti(L, -1, 1);                              /* [env, owner] */
  lua_remove(L, -2);                                  /* [owner] */
#else
  lua_getiuservalue(L, idx, 1);                       /* [owner] */
#endif
}

/* Push a view of the array at idx: same dtype, the given data pointer,
 * shape and strides; its user value keeps the owner alive.
 * Stack: [] -> [view] */
static pdi_array *push_view(lua_State *L, int idx, char *data, int ndim,
                            const int64_t *dims, const int64_t *strides) {
  PDI_STACK(L);
  idx = lua_absindex(L, idx);
  const pdi_array *a = pdi_array_check(L, idx);
  int dtype = a->dtype;
  pdi_array *v = (pdi_array *)lua_newuserdatauv(L, sizeof(pdi_array), 1); /* [v] */
  v->data = data;
  v->dtype = dtype;
  v->owner = 0;
  v->ndim = ndim;
  v->dims[0] = dims[0];
  v->dims[1] = ndim == 2 ? dims[1] : 1;
  v->strides[0] = strides[0];
  v->strides[1] = ndim == 2 ? strides[1] : 0;
  v->n = v->dims[0] * v->dims[1];
  luaL_setmetatable(L, PDI_ARRAY_MT);
#if PDLUA_LUAJIT
  lua_createtable(L, 1, 0);                           /* [v, env] */
  push_owner(L, idx);                                 /* [v, env, owner] */
  lua_rawseti(L, -2, 1);                              /* [v, env] */
  lua_setfenv(L, -2);                                 /* [v] */
#else
  push_owner(L, idx);                                 /* [v, owner] */
  lua_setiuservalue(L, -2, 1);                        /* [v] */
#endif
  PDI_STACK_CHECK(L, 1);
  return v;
}

void pdi_elem_push(lua_State *L, int dtype, const char *p) {
  switch (dtype) {
    case PDI_F64: lua_pushnumber(L, *(const double *)p); break;
    case PDI_F32: lua_pushnumber(L, *(const float *)p); break;
    case PDI_I32: lua_pushinteger(L, *(const int32_t *)p); break;
    case PDI_I64: lua_pushinteger(L, (lua_Integer) * (const int64_t *)p); break;
    default: lua_pushinteger(L, *(const uint8_t *)p); break;
  }
}

void pdi_elem_set(lua_State *L, int idx, int dtype, void *p, const char *what) {
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "%s: number expected, got %s", what, luaL_typename(L, idx));
  if (pdi_dtype_isfloat(dtype)) {
    lua_Number v = lua_tonumber(L, idx);
    if (dtype == PDI_F64) *(double *)p = v;
    else *(float *)p = (float)v;
    return;
  }
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint)
    luaL_error(L, "%s: %s is not an integer (array dtype %s)", what,
               lua_tostring(L, idx), pdi_dtype_name(dtype));
  switch (dtype) {
    case PDI_I64: *(int64_t *)p = (int64_t)v; return;
    case PDI_I32:
      if (v < INT32_MIN || v > INT32_MAX) break;
      *(int32_t *)p = (int32_t)v; return;
    default:
      if (v < 0 || v > 255) break;
      *(uint8_t *)p = (uint8_t)v; return;
  }
  char num[32];
  snprintf(num, sizeof num, "%lld", (long long)v);
  luaL_error(L, "%s: %s out of range for dtype %s", what, num, pdi_dtype_name(dtype));
}

/* Float to integer dtype value, saturating (NaN -> 0), so conversion never
 * hits undefined behaviour. */
static int64_t f2i(double v, double lo, double hi) {
  if (!(v == v)) return 0;
  if (v <= lo) return (int64_t)lo;
  if (v >= hi) return (int64_t)hi;
  return (int64_t)v;
}

/* Copy n elements, converting, from src (dtype ds, stride ss) to dst
 * (dtype dd, stride sd). */
#define CONV_LOOP(TD, TS, EXPR)                                          \
  do {                                                                   \
    TD *d_ = (TD *)dst; const TS *s_ = (const TS *)src;                  \
    for (int64_t i_ = 0; i_ < n; i_++) { TS v = s_[i_ * ss]; d_[i_ * sd] = (EXPR); } \
  } while (0)
#define CONV_FROM(TS)                                                    \
  switch (dd) {                                                          \
    case PDI_F64: CONV_LOOP(double, TS, (double)v); break;               \
    case PDI_F32: CONV_LOOP(float, TS, (float)v); break;                 \
    case PDI_I32: CONV_LOOP(int32_t, TS, (int32_t)CONV_INT(v, INT32_MIN, INT32_MAX)); break; \
    case PDI_I64: CONV_LOOP(int64_t, TS, (int64_t)CONV_INT(v, -9223372036854775808.0, 9223372036854775807.0)); break; \
    default: CONV_LOOP(uint8_t, TS, (uint8_t)CONV_INT(v, 0, 255)); break; \
  }
void pdi_elem_convert(int dd, void *dst, int64_t sd, int ds, const void *src, int64_t ss, int64_t n) {
  if (dd == ds && sd == 1 && ss == 1) { memcpy(dst, src, (size_t)n * pdi_dtype_size(dd)); return; }
  switch (ds) {
#define CONV_INT(v, lo, hi) f2i((double)(v), (double)(lo), (double)(hi))
    case PDI_F64: CONV_FROM(double); break;
    case PDI_F32: CONV_FROM(float); break;
#undef CONV_INT
    /* integer to integer: wrap as C does (implementation-defined, not UB) */
#define CONV_INT(v, lo, hi) (v)
    case PDI_I32: CONV_FROM(int32_t); break;
    case PDI_I64: CONV_FROM(int64_t); break;
    default: CONV_FROM(uint8_t); break;
#undef CONV_INT
  }
}

/* Copy all of src into dst (same shape; any strides; converting dtype).
 * dst must not overlap src unless they are the same array. */
static void copy_into(pdi_array *dst, const pdi_array *src) {
  if (pdi_array_contiguous(dst) && pdi_array_contiguous(src)) {
    pdi_elem_convert(dst->dtype, dst->data, 1, src->dtype, src->data, 1, src->n);
    return;
  }
  for (int64_t i = 0; i < src->dims[0]; i++)
    pdi_elem_convert(dst->dtype, pdi_array_at(dst, i, 0), dst->strides[1], src->dtype, pdi_array_at(src, i, 0),
            src->strides[1], src->dims[1]);
}

/* Push a contiguous copy of the array at idx converted to dtype.
 * Stack: [] -> [b] */
pdi_array *pdi_array_push_astype(lua_State *L, int idx, int dtype) {
  pdi_array *a = pdi_array_check(L, idx);
  pdi_array *b = pdi_array_new_like(L, a, dtype);
  copy_into(b, a);
  return b;
}

pdi_array *pdi_array_push_copy(lua_State *L, int idx) {
  return pdi_array_push_astype(L, idx, pdi_array_check(L, idx)->dtype);
}

pdi_array *pdi_array_contig_at(lua_State *L, int idx) {
  pdi_array *a = pdi_array_check(L, idx);
  if (pdi_array_contiguous(a)) return a;
  idx = lua_absindex(L, idx);
  a = pdi_array_push_copy(L, idx);                    /* [..., copy] */
  lua_replace(L, idx);
  return a;
}

/* ======================================================================
 * constructors
 * ====================================================================== */

/* Fill dst (contiguous) from the list t at idx, rows of a 2-D array being
 * lists or 1-D arrays.  Raises naming the element that is wrong. */
static void fill_from_table(lua_State *L, int idx, pdi_array *dst) {
  PDI_STACK(L);
  char *p = dst->data;
  size_t es = pdi_dtype_size(dst->dtype);
  char what[64];
  for (int64_t i = 0; i < dst->dims[0]; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);          /* [v] */
    if (dst->ndim == 1) {
      snprintf(what, sizeof what, "pd.array: element [%lld]", (long long)i + 1);
      pdi_elem_set(L, -1, dst->dtype, p, what);
      p += es;
    } else {
      pdi_array *r = pdi_array_test(L, -1);
      if (r) {
        if (r->ndim != 1 || r->dims[0] != dst->dims[1])
          luaL_error(L, "pd.array: row %d is not a 1-D array of %d", (int)i + 1, (int)dst->dims[1]);
        pdi_elem_convert(dst->dtype, p, 1, r->dtype, r->data, r->strides[0], r->dims[0]);
        p += es * (size_t)dst->dims[1];
      } else {
        if (!lua_istable(L, -1)) luaL_error(L, "pd.array: row %d is not a list", (int)i + 1);
        if ((int64_t)lua_rawlen(L, -1) != dst->dims[1])
          luaL_error(L, "pd.array: row %d has %d elements, row 1 has %d", (int)i + 1,
                     (int)lua_rawlen(L, -1), (int)dst->dims[1]);
        for (int64_t j = 0; j < dst->dims[1]; j++) {
          lua_rawgeti(L, -1, (lua_Integer)j + 1);     /* [row, x] */
          snprintf(what, sizeof what, "pd.array: element [%lld][%lld]", (long long)i + 1,
                   (long long)j + 1);
          pdi_elem_set(L, -1, dst->dtype, p, what);
          lua_pop(L, 1);                              /* [row] */
          p += es;
        }
      }
    }
    lua_pop(L, 1);                                    /* [] */
  }
  PDI_STACK_CHECK(L, 0);
}

/* pd.array(t [, dtype]) -> new array from a list, a list of rows (lists or
 * 1-D arrays), or an array (copied).  Stack: [t, dtype?] -> [a] */
int pdi_array_construct(lua_State *L) {
  PDI_STACK(L);
  pdi_array *src = pdi_array_test(L, 1);
  if (src) {
    pdi_array_push_astype(L, 1, pdi_dtype_opt(L, 2, src->dtype));
    return 1;
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  int dtype = pdi_dtype_opt(L, 2, PDI_F64);
  int64_t rows = (int64_t)lua_rawlen(L, 1);
  lua_rawgeti(L, 1, 1);                               /* [t, d, first] */
  int two = lua_istable(L, -1) || pdi_array_test(L, -1) != NULL;
  int64_t cols = 0;
  if (two) {
    pdi_array *r = pdi_array_test(L, -1);
    cols = r ? r->dims[0] : (int64_t)lua_rawlen(L, -1);
  }
  lua_pop(L, 1);
  pdi_array *a = two ? pdi_array_new2(L, dtype, rows, cols) : pdi_array_new1(L, dtype, rows);
  int top = lua_gettop(L);
  fill_from_table(L, 1, a);
  lua_settop(L, top);
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* Read the (n [, m] [, dtype]) shape arguments starting at idx.  Returns
 * ndim; *next is the index after the dims. */
static int shape_args(lua_State *L, int idx, int64_t *dims, int *next) {
  lua_Integer n = luaL_checkinteger(L, idx);
  luaL_argcheck(L, n >= 0, idx, "negative size");
  dims[0] = n;
  if (lua_type(L, idx + 1) == LUA_TNUMBER) {
    lua_Integer m = luaL_checkinteger(L, idx + 1);
    luaL_argcheck(L, m >= 0, idx + 1, "negative size");
    dims[1] = m;
    *next = idx + 2;
    return 2;
  }
  dims[1] = 1;
  *next = idx + 1;
  return 1;
}

/* Fill a contiguous array with the value at idx. */
static void fill_value(lua_State *L, pdi_array *a, int idx) {
  union { double f; float s; int32_t i; int64_t l; uint8_t b; } v;
  pdi_elem_set(L, idx, a->dtype, &v, "fill value");
  size_t es = pdi_dtype_size(a->dtype);
  for (int64_t i = 0; i < a->n; i++) memcpy(a->data + i * (int64_t)es, &v, es);
}

/* pd.zeros(n [, m] [, dtype]) -> zeros.  Stack: [n, m?, d?] -> [a] */
static int l_zeros(lua_State *L) {
  int64_t dims[2];
  int next, ndim = shape_args(L, 1, dims, &next);
  pdi_array *a = pdi_array_new(L, pdi_dtype_opt(L, next, PDI_F64), ndim, dims);
  memset(a->data, 0, (size_t)a->n * pdi_dtype_size(a->dtype));
  return 1;
}

/* pd.ones(n [, m] [, dtype]) -> ones.  Stack: [n, m?, d?] -> [a] */
static int l_ones(lua_State *L) {
  int64_t dims[2];
  int next, ndim = shape_args(L, 1, dims, &next);
  pdi_array *a = pdi_array_new(L, pdi_dtype_opt(L, next, PDI_F64), ndim, dims);
  lua_pushinteger(L, 1);
  fill_value(L, a, -1);
  lua_pop(L, 1);
  return 1;
}

/* pd.full(n, v [, dtype]) or pd.full(n, m, v [, dtype]): every element v.
 * Stack: [n, m?, v, d?] -> [a] */
static int l_full(lua_State *L) {
  int64_t dims[2] = {0, 1};
  int ndim = lua_type(L, 3) == LUA_TNUMBER ? 2 : 1;
  for (int k = 0; k < ndim; k++) {
    lua_Integer n = luaL_checkinteger(L, k + 1);
    luaL_argcheck(L, n >= 0, k + 1, "negative size");
    dims[k] = n;
  }
  luaL_checknumber(L, ndim + 1);
  pdi_array *a = pdi_array_new(L, pdi_dtype_opt(L, ndim + 2, PDI_F64), ndim, dims);
  fill_value(L, a, ndim + 1);
  return 1;
}

/* pd.eye(n [, dtype]) -> n x n identity.  Stack: [n, d?] -> [a] */
static int l_eye(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0, 1, "negative size");
  pdi_array *a = pdi_array_new2(L, pdi_dtype_opt(L, 2, PDI_F64), n, n);
  memset(a->data, 0, (size_t)a->n * pdi_dtype_size(a->dtype));
  lua_pushinteger(L, 1);
  for (int64_t i = 0; i < n; i++) pdi_elem_set(L, -1, a->dtype, pdi_array_at(a, i, i), "eye");
  lua_pop(L, 1);
  return 1;
}

/* pd.range(n) -> 1, 2, ..., n;  pd.range(a, b [, step]) -> a, a+step, ...
 * up to and including b (as Lua's numeric for).  A last string argument
 * names the dtype (default f64).  Stack: [...] -> [a] */
static int l_range(lua_State *L) {
  int top = lua_gettop(L);
  int dtype = PDI_F64;
  if (top > 0 && lua_type(L, top) == LUA_TSTRING) dtype = pdi_dtype_opt(L, top--, PDI_F64);
  double a0 = 1, b0, step = 1;
  if (top <= 1) b0 = luaL_checknumber(L, 1);
  else {
    a0 = luaL_checknumber(L, 1);
    b0 = luaL_checknumber(L, 2);
    if (top >= 3) step = luaL_checknumber(L, 3);
  }
  luaL_argcheck(L, step != 0 && step == step, 3, "step is zero");
  double cnt = floor((b0 - a0) / step + 1e-9) + 1;
  if (!(cnt > 0)) cnt = 0;
  if (cnt > (double)PDI_MAXN) luaL_error(L, "pd.range: too many elements");
  pdi_array *a = pdi_array_new1(L, dtype, (int64_t)cnt);
  for (int64_t i = 0; i < a->n; i++) {
    double v = a0 + (double)i * step;
    pdi_elem_convert(dtype, a->data + i * (int64_t)pdi_dtype_size(dtype), 1, PDI_F64, &v, 1, 1);
  }
  return 1;
}

/* pd.linspace(a, b, n [, dtype]) -> n points from a to b, both included.
 * Stack: [a, b, n, d?] -> [x] */
static int l_linspace(lua_State *L) {
  double a0 = luaL_checknumber(L, 1), b0 = luaL_checknumber(L, 2);
  lua_Integer n = luaL_checkinteger(L, 3);
  luaL_argcheck(L, n >= 0, 3, "negative size");
  int dtype = pdi_dtype_opt(L, 4, PDI_F64);
  pdi_array *a = pdi_array_new1(L, dtype, n);
  for (int64_t i = 0; i < n; i++) {
    double v = n == 1 ? a0 : (i == n - 1 ? b0 : a0 + (b0 - a0) * (double)i / (double)(n - 1));
    pdi_elem_convert(dtype, a->data + i * (int64_t)pdi_dtype_size(dtype), 1, PDI_F64, &v, 1, 1);
  }
  return 1;
}

/* pd.isarray(v) -> boolean.  Stack: [v] -> [b] */
static int l_isarray(lua_State *L) {
  lua_pushboolean(L, pdi_array_test(L, 1) != NULL);
  return 1;
}

/* ======================================================================
 * shape and indexing
 * ====================================================================== */

int64_t pdi_array_checkindex(lua_State *L, int idx, int64_t n, const char *what) {
  int isint;
  lua_Integer i = lua_tointegerx(L, idx, &isint);
  if (!isint) luaL_argerror(L, idx, lua_pushfstring(L, "%s index must be an integer", what));
  if (i < 1 || i > n)
    luaL_argerror(L, idx, lua_pushfstring(L, "%s index %d out of range 1..%d", what, (int)i, (int)n));
  return (int64_t)i - 1;
}

void pdi_array_push_item(lua_State *L, int idx, int64_t i) {
  pdi_array *a = pdi_array_check(L, idx);
  if (i < 0 || i >= a->dims[0]) luaL_error(L, "index %d out of range 1..%d", (int)(i + 1), (int)a->dims[0]);
  if (a->ndim == 1) { pdi_elem_push(L, a->dtype, pdi_array_at(a, i, 0)); return; }
  push_view(L, idx, pdi_array_at(a, i, 0), 1, &a->dims[1], &a->strides[1]);
}

/* a[i]: element i (1-D) or row view i (2-D); a.name: a method.
 * Stack: [a, k] -> [v] */
static int arr_index(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER) {
    int64_t i = pdi_array_checkindex(L, 2, a->dims[0], "array");
    pdi_array_push_item(L, 1, i);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));                 /* [a, k, method|nil] */
  return 1;
}

/* The iterator behind a:ipairs().  Stack: [a, i] -> [i+1, item] or [nil] */
static int ipairs_next(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 0 || i >= a->dims[0]) return 0;
  lua_pushinteger(L, i + 1);
  pdi_array_push_item(L, 1, (int64_t)i);
  return 2;
}

/* a:ipairs() -> iterator, a, 0: for i, v in a:ipairs() do ... end visits
 * the elements (1-D) or row views (2-D) in order.  (Plain ipairs(a) stops
 * with an out-of-range error after the last item, because a[#a + 1] is an
 * error rather than nil.)  Stack: [a] -> [f, a, 0] */
static int arr_ipairs(lua_State *L) {
  pdi_array_check(L, 1);
  lua_pushcfunction(L, ipairs_next);
  lua_pushvalue(L, 1);
  lua_pushinteger(L, 0);
  return 3;
}

/* a:get(i [, j]) -> element.  Stack: [a, i, j?] -> [v] */
static int arr_get(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  int64_t i = pdi_array_checkindex(L, 2, a->dims[0], "row");
  int64_t j = 0;
  if (a->ndim == 2) j = pdi_array_checkindex(L, 3, a->dims[1], "column");
  pdi_elem_push(L, a->dtype, pdi_array_at(a, i, j));
  return 1;
}

/* a:set(i, [j,] v) -> a.  Stack: [a, i, j?, v] -> [a] */
static int arr_set(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  int64_t i = pdi_array_checkindex(L, 2, a->dims[0], "row");
  int64_t j = 0;
  int v = 3;
  if (a->ndim == 2) { j = pdi_array_checkindex(L, 3, a->dims[1], "column"); v = 4; }
  pdi_elem_set(L, v, a->dtype, pdi_array_at(a, i, j), "array element");
  lua_settop(L, 1);
  return 1;
}

/* a:shape() -> n  or  rows, cols.  Stack: [a] -> [n] or [r, c] */
static int arr_shape(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  lua_pushinteger(L, (lua_Integer)a->dims[0]);
  if (a->ndim == 1) return 1;
  lua_pushinteger(L, (lua_Integer)a->dims[1]);
  return 2;
}

/* #a -> rows (2-D) or length (1-D).  Stack: [a, ...] -> [n] */
static int arr_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)pdi_array_check(L, 1)->dims[0]);
  return 1;
}

/* a:size() -> number of elements; a:ndim(); a:dtype(); a:strides();
 * a:iscontiguous(); a:isview().  Stack: [a] -> [v...] */
static int arr_size(lua_State *L) { lua_pushinteger(L, (lua_Integer)pdi_array_check(L, 1)->n); return 1; }
static int arr_ndim(lua_State *L) { lua_pushinteger(L, pdi_array_check(L, 1)->ndim); return 1; }
static int arr_dtype(lua_State *L) { lua_pushstring(L, pdi_dtype_name(pdi_array_check(L, 1)->dtype)); return 1; }
static int arr_strides(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  lua_pushinteger(L, (lua_Integer)a->strides[0]);
  if (a->ndim == 1) return 1;
  lua_pushinteger(L, (lua_Integer)a->strides[1]);
  return 2;
}
static int arr_iscontiguous(lua_State *L) { lua_pushboolean(L, pdi_array_contiguous(pdi_array_check(L, 1))); return 1; }
static int arr_isview(lua_State *L) { lua_pushboolean(L, !pdi_array_check(L, 1)->owner); return 1; }

/* a:ptr() -> light userdata: the address of element 1 (or (1,1)), for the
 * LuaJIT FFI: ffi.cast("double *", a:ptr()).  Valid while a (or any view
 * of its owner) is reachable.  Stack: [a] -> [p] */
static int arr_ptr(lua_State *L) {
  lua_pushlightuserdata(L, pdi_array_check(L, 1)->data);
  return 1;
}

/* a:row(i) -> view of row i (2-D), sharing memory.  Stack: [a, i] -> [v] */
static int arr_row(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  luaL_argcheck(L, a->ndim == 2, 1, "row needs a 2-D array");
  int64_t i = pdi_array_checkindex(L, 2, a->dims[0], "row");
  push_view(L, 1, pdi_array_at(a, i, 0), 1, &a->dims[1], &a->strides[1]);
  return 1;
}

/* a:col(j) -> view of column j (2-D), sharing memory.  Stack: [a, j] -> [v] */
static int arr_col(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  luaL_argcheck(L, a->ndim == 2, 1, "col needs a 2-D array");
  int64_t j = pdi_array_checkindex(L, 2, a->dims[1], "column");
  push_view(L, 1, pdi_array_at(a, 0, j), 1, &a->dims[0], &a->strides[0]);
  return 1;
}

/* a:T() -> transposed view (2-D; a 1-D array is returned as is).
 * Stack: [a] -> [v] */
static int arr_T(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  if (a->ndim == 1) { lua_settop(L, 1); return 1; }
  int64_t d[2] = {a->dims[1], a->dims[0]}, s[2] = {a->strides[1], a->strides[0]};
  push_view(L, 1, a->data, 2, d, s);
  return 1;
}

/* a:slice(i, j) -> view of rows (2-D) or elements (1-D) i..j inclusive;
 * j may be i - 1 for an empty view.  Stack: [a, i, j] -> [v] */
static int arr_slice(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2), j = luaL_optinteger(L, 3, (lua_Integer)a->dims[0]);
  if (i < 1 || j > a->dims[0] || j < i - 1)
    return luaL_error(L, "slice %d..%d out of range 1..%d", (int)i, (int)j, (int)a->dims[0]);
  int64_t d[2] = {j - i + 1, a->dims[1]};
  push_view(L, 1, pdi_array_at(a, i - 1, 0), a->ndim, d, a->strides);
  return 1;
}

/* a:block(i0, i1, j0, j1) -> view of rows i0..i1 and columns j0..j1 of a
 * 2-D array (inclusive; i1 = i0 - 1 or j1 = j0 - 1 for an empty side):
 * the interior of a grid, a halo strip, a sub-matrix.
 * Stack: [a, i0, i1, j0, j1] -> [v] */
static int arr_block(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  luaL_argcheck(L, a->ndim == 2, 1, "block needs a 2-D array");
  lua_Integer i0 = luaL_checkinteger(L, 2), i1 = luaL_checkinteger(L, 3);
  lua_Integer j0 = luaL_checkinteger(L, 4), j1 = luaL_checkinteger(L, 5);
  if (i0 < 1 || i1 > a->dims[0] || i1 < i0 - 1)
    return luaL_error(L, "block rows %d..%d out of range 1..%d", (int)i0, (int)i1, (int)a->dims[0]);
  if (j0 < 1 || j1 > a->dims[1] || j1 < j0 - 1)
    return luaL_error(L, "block columns %d..%d out of range 1..%d", (int)j0, (int)j1, (int)a->dims[1]);
  int64_t d[2] = {i1 - i0 + 1, j1 - j0 + 1};
  push_view(L, 1, pdi_array_at(a, i0 - 1, j0 - 1), 2, d, a->strides);
  return 1;
}

/* a:reshape(n [, m]) -> view with the new shape (a must be contiguous and
 * n * m == #elements).  Stack: [a, n, m?] -> [v] */
static int arr_reshape(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  int64_t dims[2];
  int next, ndim = shape_args(L, 2, dims, &next);
  if (!pdi_array_contiguous(a)) return luaL_error(L, "reshape needs a contiguous array (use :copy())");
  if (dims[0] * dims[1] != a->n)
    return luaL_error(L, "reshape: %d elements cannot take shape %dx%d", (int)a->n, (int)dims[0], (int)dims[1]);
  int64_t st[2] = {ndim == 2 ? dims[1] : 1, ndim == 2 ? 1 : 0};
  push_view(L, 1, a->data, ndim, dims, st);
  return 1;
}

/* a:copy() -> contiguous copy;  a:astype(dtype) -> converted copy (floats
 * to integers truncate toward zero and saturate; NaN becomes 0).
 * Stack: [a, d?] -> [b] */
static int arr_copy(lua_State *L) { pdi_array_push_copy(L, 1); return 1; }
static int arr_astype(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  pdi_array_push_astype(L, 1, pdi_dtype_opt(L, 2, a->dtype));
  return 1;
}

/* a:totable() -> list (1-D) or list of row lists (2-D).  Stack: [a] -> [t] */
static int arr_totable(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  lua_createtable(L, (int)a->dims[0], 0);             /* [t] */
  for (int64_t i = 0; i < a->dims[0]; i++) {
    if (a->ndim == 1) pdi_elem_push(L, a->dtype, pdi_array_at(a, i, 0));
    else {
      lua_createtable(L, (int)a->dims[1], 0);         /* [t, row] */
      for (int64_t j = 0; j < a->dims[1]; j++) {
        pdi_elem_push(L, a->dtype, pdi_array_at(a, i, j));
        lua_rawseti(L, -2, (lua_Integer)j + 1);
      }
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);           /* [t] */
  }
  return 1;
}

static void add_elem(luaL_Buffer *b, const pdi_array *a, int64_t i, int64_t j) {
  char s[40];
  const char *p = pdi_array_at(a, i, j);
  if (pdi_dtype_isfloat(a->dtype)) snprintf(s, sizeof s, "%.6g", pdi_elem_getf(a->dtype, p));
  else if (a->dtype == PDI_I64) snprintf(s, sizeof s, "%lld", (long long)*(const int64_t *)p);
  else snprintf(s, sizeof s, "%.0f", pdi_elem_getf(a->dtype, p));
  luaL_addstring(b, s);
}

/* Row i (2-D) or the whole of a 1-D array, n elements, long rows elided. */
static void add_row(luaL_Buffer *b, const pdi_array *a, int64_t i, int64_t n) {
  luaL_addchar(b, '[');
  for (int64_t j = 0; j < n; j++) {
    if (j) luaL_addstring(b, ", ");
    if (n > 12 && j == 6) { luaL_addstring(b, "..., "); j = n - 6; }
    if (a->ndim == 1) add_elem(b, a, j, 0);
    else add_elem(b, a, i, j);
  }
  luaL_addchar(b, ']');
}

/* tostring(a): "array(f64, 2x3) [[1, 2, 3], [4, 5, 6]]", long dimensions
 * elided.  Stack: [a] -> [s] */
static int arr_tostring(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  luaL_Buffer b;
  char head[96];
  if (a->ndim == 1) snprintf(head, sizeof head, "array(%s, %lld) ", pdi_dtype_name(a->dtype), (long long)a->dims[0]);
  else snprintf(head, sizeof head, "array(%s, %lldx%lld) ", pdi_dtype_name(a->dtype),
                (long long)a->dims[0], (long long)a->dims[1]);
  luaL_buffinit(L, &b);
  luaL_addstring(&b, head);
  if (a->ndim == 1) add_row(&b, a, 0, a->dims[0]);
  else {
    luaL_addchar(&b, '[');
    for (int64_t i = 0; i < a->dims[0]; i++) {
      if (i) luaL_addstring(&b, ", ");
      if (a->dims[0] > 8 && i == 4) { luaL_addstring(&b, "..., "); i = a->dims[0] - 4; }
      add_row(&b, a, i, a->dims[1]);
    }
    luaL_addchar(&b, ']');
  }
  luaL_pushresult(&b);
  return 1;
}

/* ======================================================================
 * wire form
 * ====================================================================== */

/* Unsigned LEB128, as the codec writes its own numbers. */
static size_t uvarint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) { v >>= 7; n++; }
  return n;
}
static char *put_uvarint(char *p, uint64_t v) {
  while (v >= 0x80) { *p++ = (char)(0x80 | (v & 0x7f)); v >>= 7; }
  *p++ = (char)v;
  return p;
}
/* Read one at *p < end; 0, or -1 on truncation, more than 64 bits, or an
 * overlong form (a last byte of 0 after the first): the wire form is
 * canonical, so decoding and encoding again gives the same bytes. */
static int get_uvarint(const char **p, const char *end, uint64_t *v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return -1;
    unsigned char c = (unsigned char)*(*p)++;
    if (shift == 63 && c > 1) return -1;
    r |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      if (c == 0 && shift > 0) return -1;
      *v = r;
      return 0;
    }
  }
  return -1;
}

size_t pdi_array_encoded_size(const pdi_array *a) {
  size_t n = 2 + uvarint_len((uint64_t)a->dims[0]);
  if (a->ndim == 2) n += uvarint_len((uint64_t)a->dims[1]);
  return n + (size_t)a->n * pdi_dtype_size(a->dtype);
}

void pdi_array_encode(const pdi_array *a, char *out) {
  char *p = out;
  *p++ = (char)a->dtype;
  *p++ = (char)a->ndim;
  p = put_uvarint(p, (uint64_t)a->dims[0]);
  if (a->ndim == 2) p = put_uvarint(p, (uint64_t)a->dims[1]);
  size_t es = pdi_dtype_size(a->dtype);
  if (pdi_array_contiguous(a)) { memcpy(p, a->data, (size_t)a->n * es); return; }
  /* out + header need not be aligned for the element type: bytes only */
  for (int64_t i = 0; i < a->dims[0]; i++)
    for (int64_t j = 0; j < a->dims[1]; j++, p += es) memcpy(p, pdi_array_at(a, i, j), es);
}

const char *pdi_array_decode(lua_State *L, const char *p, size_t len) {
  const char *end = p + len;
  if (len < 3) return "array: truncated header";
  int dtype = (unsigned char)p[0], ndim = (unsigned char)p[1];
  if (dtype >= PDI_NDTYPES) return "array: unknown dtype";
  if (ndim != 1 && ndim != 2) return "array: ndim must be 1 or 2";
  p += 2;
  uint64_t d[2] = {0, 1};
  for (int k = 0; k < ndim; k++)
    if (get_uvarint(&p, end, &d[k])) return "array: truncated or overlong dimension";
  if (d[0] > (uint64_t)PDI_MAXN || d[1] > (uint64_t)PDI_MAXN) return "array: dimension too large";
  if (d[1] != 0 && d[0] > (uint64_t)PDI_MAXN / d[1]) return "array: too many elements";
  uint64_t n = d[0] * d[1];
  size_t es = pdi_dtype_size(dtype);
  if ((uint64_t)(end - p) != n * es) return "array: element bytes do not match the shape";
  int64_t dims[2] = {(int64_t)d[0], (int64_t)d[1]};
  pdi_array *a = pdi_array_new(L, dtype, ndim, dims);
  memcpy(a->data, p, (size_t)n * es);
  return NULL;
}

/* pd.array.encode(a) -> string (the wire form); pd.array.decode(s) -> a.
 * For tests and for the codec's Lua side.  Stack: [a] -> [s]; [s] -> [a] */
static int l_encode(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  size_t n = pdi_array_encoded_size(a);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, n);
  pdi_array_encode(a, p);
  luaL_pushresultsize(&b, n);
  return 1;
}
static int l_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *err = pdi_array_decode(L, s, n);
  if (err) return luaL_error(L, "%s", err);
  return 1;
}

/* The codec's extension 1 (codec.h): append a's payload to out, one copy
 * of the elements.  Stack: unchanged. */
static int codec_enc(lua_State *L, int idx, pd_buf *out) {
  pdi_array *a = pdi_array_check(L, idx);
  size_t n = pdi_array_encoded_size(a);
  if (n > UINT32_MAX) return luaL_error(L, "pd.codec: a pd.Array of %d elements is over 4 GiB", (int)a->n);
  if (pd_buf_reserve(out, n)) return luaL_error(L, "pd.codec: out of memory encoding a pd.Array");
  pdi_array_encode(a, out->data + out->len);
  out->len += n;
  return 0;
}
/* Decode a payload (hostile input: every length is checked).
 * Stack: [] -> [a] */
static void codec_dec(lua_State *L, const char *p, size_t n) {
  const char *err = pdi_array_decode(L, p, n);
  if (err) luaL_error(L, "pd.codec: malformed pd.Array payload (%s)", err);
}


/* ======================================================================
 * the class
 * ====================================================================== */

const luaL_Reg pdi_array_core_methods[] = {
  {"get", arr_get}, {"set", arr_set}, {"shape", arr_shape}, {"size", arr_size},
  {"ndim", arr_ndim}, {"dtype", arr_dtype}, {"strides", arr_strides},
  {"iscontiguous", arr_iscontiguous}, {"isview", arr_isview}, {"ptr", arr_ptr},
  {"row", arr_row}, {"col", arr_col}, {"T", arr_T}, {"slice", arr_slice},
  {"block", arr_block},
  {"reshape", arr_reshape}, {"copy", arr_copy}, {"astype", arr_astype},
  {"totable", arr_totable}, {"ipairs", arr_ipairs},
  {NULL, NULL},
};

const luaL_Reg pdi_array_core_meta[] = {
  {"__len", arr_len}, {"__tostring", arr_tostring},
  {NULL, NULL},
};

const luaL_Reg pdi_array_funcs[] = {
  {"array", pdi_array_construct}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full},
  {"eye", l_eye}, {"range", l_range}, {"linspace", l_linspace}, {"isarray", l_isarray},
  {"encode", l_encode}, {"decode", l_decode},
  {NULL, NULL},
};

/* Views and owners hold no resource (the GC frees the userdata), so the
 * class has no close function and so no __gc (pdi_newclass): a finalizer,
 * even an empty one, made small arrays and views 2.5 to 4 times slower to
 * make and collect.  __index is a closure over the methods table
 * (arr_index), set here. */
void pdi_array_newclass(lua_State *L, const luaL_Reg *const *methods, const luaL_Reg *const *meta) {
  PDI_STACK(L);
  if (pdi_newclass(L, PDI_ARRAY_MT, NULL, NULL, NULL)) {  /* [mt] */
    for (; *meta; meta++) luaL_setfuncs(L, *meta, 0);
    lua_newtable(L);                                  /* [mt, methods] */
    for (; *methods; methods++) luaL_setfuncs(L, *methods, 0);
    lua_pushvalue(L, -1);                             /* [mt, methods, methods] */
    lua_setfield(L, -3, "methods");                   /* [mt, methods]: mt.methods, for extension */
    lua_pushcclosure(L, arr_index, 1);                /* [mt, __index] */
    lua_setfield(L, -2, "__index");                   /* [mt] */
  }
  lua_pop(L, 1);                                      /* [] */
  pdi_codec_register_ext(L, PDI_ARRAY_MT, PDI_CODEC_EXT_ARRAY, codec_enc, codec_dec);
  PDI_STACK_CHECK(L, 0);
}
