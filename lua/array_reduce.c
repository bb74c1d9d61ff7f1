/*
 * array_reduce.c: pd.array's reductions: a:sum(), mean, var, std, min, max,
 * argmin, argmax, norm (of the whole array, and sum and mean along an
 * axis), and the order-based methods a:sort(), a:argsort(), a:take(idx).
 *
 * Speed: the float reductions run over contiguous data with several
 * accumulators (sums: 8, extremes: 4), which the compiler vectorises
 * without reassociation flags and which is also more accurate than one
 * running sum; a view is copied to a contiguous array first.
 *
 * Arrays, dtypes and conversions are array.c's (array.h); the methods here
 * are added to pd.Array by array_open.c.
 */
#include "array.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"

/* ======================================================================
 * reductions
 * ====================================================================== */

/* Sum of n contiguous doubles with 8 accumulators: vectorisable without
 * reassociation flags, and more accurate than one running sum. */
static double sum_f64(const double *x, int64_t n) {
  double s[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) s[k] += x[i + k];
  double t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; i++) t += x[i];
  return t;
}
static double sumsq_f64(const double *x, int64_t n) {
  double s[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) s[k] += x[i + k] * x[i + k];
  double t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; i++) t += x[i] * x[i];
  return t;
}
static double sum_f32(const float *x, int64_t n, int sq) {
  double s[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) s[k] += sq ? (double)x[i + k] * x[i + k] : (double)x[i + k];
  double t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; i++) t += sq ? (double)x[i] * x[i] : (double)x[i];
  return t;
}

/* a:sum([axis]) -> number (integer for integer arrays, wrapping); with
 * axis 1 (down the rows: one sum per column) or 2 (along each row: one
 * per row) of a 2-D array, an f64 array.  Stack: [a, axis?] -> [s] */
static int reduce_axis(lua_State *L, int mean);
static int arr_sum(lua_State *L) {
  if (!lua_isnoneornil(L, 2)) return reduce_axis(L, 0);
  pdi_array *a = pdi_array_contig_at(L, 1);
  switch (a->dtype) {
    case PDI_F64: lua_pushnumber(L, sum_f64((const double *)a->data, a->n)); break;
    case PDI_F32: lua_pushnumber(L, sum_f32((const float *)a->data, a->n, 0)); break;
    default: {
      uint64_t s = 0;
      if (a->dtype == PDI_I64) { const int64_t *x = (const int64_t *)a->data; for (int64_t i = 0; i < a->n; i++) s += (uint64_t)x[i]; }
      else if (a->dtype == PDI_I32) { const int32_t *x = (const int32_t *)a->data; for (int64_t i = 0; i < a->n; i++) s += (uint64_t)(int64_t)x[i]; }
      else { const uint8_t *x = (const uint8_t *)a->data; for (int64_t i = 0; i < a->n; i++) s += x[i]; }
      lua_pushinteger(L, (lua_Integer)(int64_t)s);
    }
  }
  return 1;
}

/* a:mean([axis]) -> number (NaN for an empty array), or per axis as sum.
 * Stack: [a, axis?] -> [m] */
static int arr_mean(lua_State *L) {
  if (!lua_isnoneornil(L, 2)) return reduce_axis(L, 1);
  pdi_array *a = pdi_array_contig_at(L, 1);
  double s;
  if (a->dtype == PDI_F64) s = sum_f64((const double *)a->data, a->n);
  else if (a->dtype == PDI_F32) s = sum_f32((const float *)a->data, a->n, 0);
  else {
    s = 0;
    for (int64_t i = 0; i < a->n; i++) s += pdi_elem_getf(a->dtype, a->data + i * (int64_t)pdi_dtype_size(a->dtype));
  }
  lua_pushnumber(L, a->n ? s / (double)a->n : NAN);
  return 1;
}

static int reduce_axis(lua_State *L, int mean) {
  pdi_array *a = pdi_array_check(L, 1);
  lua_Integer axis = luaL_checkinteger(L, 2);
  luaL_argcheck(L, a->ndim == 2, 1, "axis needs a 2-D array");
  luaL_argcheck(L, axis == 1 || axis == 2, 2, "axis must be 1 (down rows) or 2 (along rows)");
  lua_settop(L, 1);
  PDI_STACK(L);
  if (a->dtype != PDI_F64) { pdi_array_push_astype(L, 1, PDI_F64); lua_replace(L, 1); }
  a = pdi_array_check(L, 1);
  int64_t R = a->dims[0], C = a->dims[1];
  if (axis == 1) {
    pdi_array *z = pdi_array_new1(L, PDI_F64, C);
    double *s = (double *)z->data;
    memset(s, 0, (size_t)C * sizeof(double));
    for (int64_t i = 0; i < R; i++) {
      const double *row = (const double *)pdi_array_at(a, i, 0);
      if (a->strides[1] == 1) for (int64_t j = 0; j < C; j++) s[j] += row[j];
      else for (int64_t j = 0; j < C; j++) s[j] += row[j * a->strides[1]];
    }
    if (mean) for (int64_t j = 0; j < C; j++) s[j] = R ? s[j] / (double)R : NAN;
  } else {
    pdi_array *z = pdi_array_new1(L, PDI_F64, R);
    double *s = (double *)z->data;
    for (int64_t i = 0; i < R; i++) {
      const double *row = (const double *)pdi_array_at(a, i, 0);
      double t = 0;
      if (a->strides[1] == 1) t = sum_f64(row, C);
      else for (int64_t j = 0; j < C; j++) t += row[j * a->strides[1]];
      s[i] = mean ? (C ? t / (double)C : NAN) : t;
    }
  }
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* a:var([ddof]) -> variance of all elements, sum((x - mean)^2) / (n - ddof)
 * (ddof 0 by default, as numpy; 1 for the unbiased sample variance); two
 * passes, so no cancellation.  a:std([ddof]) -> its square root.  NaN when
 * n <= ddof.  Stack: [a, ddof?] -> [v] */
static double variance(lua_State *L, lua_Integer ddof) {
  PDI_STACK(L);
  pdi_array *a = pdi_array_check(L, 1);
  if (a->dtype != PDI_F64) { pdi_array_push_astype(L, 1, PDI_F64); lua_replace(L, 1); }
  a = pdi_array_contig_at(L, 1);
  PDI_STACK_CHECK(L, 0);
  const double *x = (const double *)a->data;
  if (a->n <= ddof) return NAN;
  double m = sum_f64(x, a->n) / (double)a->n;
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= a->n; i += 4)
    for (int k = 0; k < 4; k++) s[k] += (x[i + k] - m) * (x[i + k] - m);
  double t = (s[0] + s[1]) + (s[2] + s[3]);
  for (; i < a->n; i++) t += (x[i] - m) * (x[i] - m);
  return t / (double)(a->n - ddof);
}
/* a:var([ddof]), a:std([ddof]) (root true): see variance.
 * Stack: [a, ddof?] -> [a, ddof?, v] */
static int var_std(lua_State *L, int root) {
  lua_Integer ddof = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, ddof >= 0, 2, "ddof must be 0 or more");
  double v = variance(L, ddof);
  lua_pushnumber(L, root ? sqrt(v) : v);
  return 1;
}
static int arr_var(lua_State *L) { return var_std(L, 0); }
static int arr_std(lua_State *L) { return var_std(L, 1); }

/* Index of the smallest (want_max 0) or largest element of a contiguous
 * array, the first one on ties; NaN elements are skipped unless all are. */
#define ARGEXT(T)                                                          \
  do {                                                                     \
    const T *x = (const T *)a->data;                                       \
    T m = x[0];                                                            \
    for (int64_t i = 1; i < a->n; i++)                                     \
      if (want_max ? (x[i] > m || m != m) : (x[i] < m || m != m)) { m = x[i]; best = i; } \
  } while (0)
static int64_t argext(const pdi_array *a, int want_max) {
  int64_t best = 0;
  switch (a->dtype) {
    case PDI_F64: ARGEXT(double); break;
    case PDI_F32: ARGEXT(float); break;
    case PDI_I32: ARGEXT(int32_t); break;
    case PDI_I64: ARGEXT(int64_t); break;
    default: ARGEXT(uint8_t); break;
  }
  return best;
}

/* Smallest or largest of n > 0 contiguous floats, NaN skipped (NaN when
 * all are): four running extremes, a branch-free loop the compiler turns
 * into min/max instructions.  Starting from +-inf, a NaN never replaces an
 * extreme (every comparison with NaN is false). */
#define FEXT(NAME, T, INF)                                                   \
  static T NAME(const T *x, int64_t n, int want_max) {                       \
    T m0 = want_max ? -INF : INF, m1 = m0, m2 = m0, m3 = m0;                 \
    int64_t i = 0;                                                           \
    if (want_max) {                                                          \
      for (; i + 4 <= n; i += 4) {                                           \
        m0 = x[i] > m0 ? x[i] : m0; m1 = x[i + 1] > m1 ? x[i + 1] : m1;      \
        m2 = x[i + 2] > m2 ? x[i + 2] : m2; m3 = x[i + 3] > m3 ? x[i + 3] : m3; \
      }                                                                      \
      for (; i < n; i++) m0 = x[i] > m0 ? x[i] : m0;                         \
      m0 = m1 > m0 ? m1 : m0; m2 = m3 > m2 ? m3 : m2; m0 = m2 > m0 ? m2 : m0; \
    } else {                                                                 \
      for (; i + 4 <= n; i += 4) {                                           \
        m0 = x[i] < m0 ? x[i] : m0; m1 = x[i + 1] < m1 ? x[i + 1] : m1;      \
        m2 = x[i + 2] < m2 ? x[i + 2] : m2; m3 = x[i + 3] < m3 ? x[i + 3] : m3; \
      }                                                                      \
      for (; i < n; i++) m0 = x[i] < m0 ? x[i] : m0;                         \
      m0 = m1 < m0 ? m1 : m0; m2 = m3 < m2 ? m3 : m2; m0 = m2 < m0 ? m2 : m0; \
    }                                                                        \
    if (m0 == (want_max ? -INF : INF)) {  /* all NaN, or the extreme is inf */ \
      for (i = 0; i < n; i++) if (x[i] == m0) return m0;                     \
      return (T)NAN;                                                         \
    }                                                                        \
    return m0;                                                               \
  }
FEXT(fext_f64, double, (double)INFINITY)
FEXT(fext_f32, float, INFINITY)

static int ext_common(lua_State *L, int want_max, int want_index) {
  pdi_array *a = pdi_array_contig_at(L, 1);
  if (a->n == 0) return luaL_error(L, "%s of an empty array", want_index ? (want_max ? "argmax" : "argmin") : (want_max ? "max" : "min"));
  if (!want_index && a->dtype == PDI_F64) { lua_pushnumber(L, fext_f64((const double *)a->data, a->n, want_max)); return 1; }
  if (!want_index && a->dtype == PDI_F32) { lua_pushnumber(L, fext_f32((const float *)a->data, a->n, want_max)); return 1; }
  int64_t i = argext(a, want_max);
  if (!want_index) { pdi_elem_push(L, a->dtype, a->data + i * (int64_t)pdi_dtype_size(a->dtype)); return 1; }
  /* 1-based flat index; for 2-D also row and column */
  lua_pushinteger(L, (lua_Integer)i + 1);
  if (a->ndim == 1) return 1;
  lua_pushinteger(L, (lua_Integer)(i / a->dims[1]) + 1);
  lua_pushinteger(L, (lua_Integer)(i % a->dims[1]) + 1);
  return 3;
}
/* a:min(), a:max() -> element; a:argmin(), a:argmax() -> 1-based index
 * (2-D: flat index, row, column).  Raise on an empty array.
 * Stack: [a] -> [v...] */
static int arr_min(lua_State *L) { return ext_common(L, 0, 0); }
static int arr_max(lua_State *L) { return ext_common(L, 1, 0); }
static int arr_argmin(lua_State *L) { return ext_common(L, 0, 1); }
static int arr_argmax(lua_State *L) { return ext_common(L, 1, 1); }

/* a:norm() -> Euclidean norm of all elements, guarded against overflow and
 * underflow by a scaled second pass.  Stack: [a] -> [n] */
static int arr_norm(lua_State *L) {
  pdi_array *a = pdi_array_contig_at(L, 1);
  if (a->dtype != PDI_F64 && a->dtype != PDI_F32) {
    pdi_array_push_astype(L, 1, PDI_F64);
    lua_replace(L, 1);
    a = pdi_array_check(L, 1);
  }
  double ss = a->dtype == PDI_F64 ? sumsq_f64((const double *)a->data, a->n)
                                  : sum_f32((const float *)a->data, a->n, 1);
  if (!(ss < DBL_MAX) || ss < 1e-280) {   /* overflowed, or maybe underflowed */
    double m = 0;
    for (int64_t i = 0; i < a->n; i++) {
      double v = fabs(pdi_elem_getf(a->dtype, a->data + i * (int64_t)pdi_dtype_size(a->dtype)));
      if (v > m || v != v) m = v;
    }
    if (m == 0 || !(m < INFINITY)) { lua_pushnumber(L, m); return 1; }
    ss = 0;
    for (int64_t i = 0; i < a->n; i++) {
      double v = pdi_elem_getf(a->dtype, a->data + i * (int64_t)pdi_dtype_size(a->dtype)) / m;
      ss += v * v;
    }
    lua_pushnumber(L, m * sqrt(ss));
    return 1;
  }
  lua_pushnumber(L, sqrt(ss));
  return 1;
}

/* Sorting (1-D): a:sort() -> sorted copy (ascending, NaN last);
 * a:argsort() -> i64 array of 1-based indices that sort a (stable). */
typedef struct { double v; int64_t i; } keyidx;
static int cmp_keyidx(const void *p, const void *q) {
  const keyidx *a = (const keyidx *)p, *b = (const keyidx *)q;
  int an = a->v != a->v, bn = b->v != b->v;
  if (an != bn) return an - bn;
  if (!an && a->v != b->v) return a->v < b->v ? -1 : 1;
  return (a->i > b->i) - (a->i < b->i);
}
/* Stack: [a] -> [a, tmp] ; returns the sorted key/index pairs in tmp */
static keyidx *sorted_pairs(lua_State *L, pdi_array **ap) {
  PDI_STACK(L);
  pdi_array *a = pdi_array_check(L, 1);
  luaL_argcheck(L, a->ndim == 1, 1, "sorting needs a 1-D array");
  keyidx *k = (keyidx *)lua_newuserdatauv(L, sizeof(keyidx) * (size_t)(a->n ? a->n : 1), 0);
  for (int64_t i = 0; i < a->n; i++) { k[i].v = pdi_elem_getf(a->dtype, pdi_array_at(a, i, 0)); k[i].i = i; }
  qsort(k, (size_t)a->n, sizeof *k, cmp_keyidx);
  *ap = a;
  PDI_STACK_CHECK(L, 1);
  return k;
}
/* a:argsort(), a:sort(): see "Sorting" above.  Stack: [a] -> [a, tmp, b]
 * (tmp: sorted_pairs' scratch userdata, collected with the call) */
static int arr_argsort(lua_State *L) {
  pdi_array *a;
  keyidx *k = sorted_pairs(L, &a);
  pdi_array *z = pdi_array_new1(L, PDI_I64, a->n);
  for (int64_t i = 0; i < a->n; i++) ((int64_t *)z->data)[i] = k[i].i + 1;
  return 1;
}
static int arr_sort(lua_State *L) {
  pdi_array *a;
  keyidx *k = sorted_pairs(L, &a);
  pdi_array *z = pdi_array_new1(L, a->dtype, a->n);
  size_t es = pdi_dtype_size(a->dtype);
  for (int64_t i = 0; i < a->n; i++) memcpy(z->data + i * (int64_t)es, pdi_array_at(a, k[i].i, 0), es);
  return 1;
}

/* a:take(idx) -> new array of the elements (1-D) or rows (2-D) named by
 * idx, a list or integer array of 1-based indices.  Stack: [a, idx] -> [b] */
static int arr_take(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  pdi_array *ix = pdi_array_test(L, 2);
  if (!ix) luaL_checktype(L, 2, LUA_TTABLE);
  if (ix && pdi_dtype_isfloat(ix->dtype)) luaL_argerror(L, 2, "indices must be an integer array or a list");
  int64_t m = ix ? ix->n : (int64_t)lua_rawlen(L, 2);
  pdi_array *z = a->ndim == 1 ? pdi_array_new1(L, a->dtype, m) : pdi_array_new2(L, a->dtype, m, a->dims[1]);
  size_t es = pdi_dtype_size(a->dtype);
  for (int64_t k = 0; k < m; k++) {
    int64_t i;
    if (ix) i = (int64_t)pdi_elem_getf(ix->dtype, ix->data + (k * ix->strides[0]) * (int64_t)pdi_dtype_size(ix->dtype));
    else {
      lua_rawgeti(L, 2, (lua_Integer)k + 1);
      int isint;
      i = (int64_t)lua_tointegerx(L, -1, &isint);
      lua_pop(L, 1);
      if (!isint) return luaL_error(L, "take: index [%d] is not an integer", (int)k + 1);
    }
    if (i < 1 || i > a->dims[0]) return luaL_error(L, "take: index %d out of range 1..%d", (int)i, (int)a->dims[0]);
    if (a->ndim == 1) memcpy(z->data + k * (int64_t)es, pdi_array_at(a, i - 1, 0), es);
    else pdi_elem_convert(a->dtype, z->data + k * a->dims[1] * (int64_t)es, 1, a->dtype, pdi_array_at(a, i - 1, 0),
                 a->strides[1], a->dims[1]);
  }
  return 1;
}


/* ======================================================================
 * the class's part
 * ====================================================================== */

const luaL_Reg pdi_array_reduce_methods[] = {
  {"sum", arr_sum}, {"mean", arr_mean}, {"min", arr_min}, {"max", arr_max},
  {"argmin", arr_argmin}, {"argmax", arr_argmax}, {"norm", arr_norm},
  {"var", arr_var}, {"std", arr_std},
  {"sort", arr_sort}, {"argsort", arr_argsort}, {"take", arr_take},
  {NULL, NULL},
};
