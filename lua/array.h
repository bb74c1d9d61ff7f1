/*
 * array.h: pd.array seen from C.  Internal to pdlua (pdi_ names); the Lua
 * face is docs/arrays.md.  The module is four files:
 *   array.c         the pd.Array type: storage, views, creation, indexing,
 *                   shape and dtype, the wire form (codec extension 1)
 *   array_ops.c     element-wise arithmetic, assignment, pd.math
 *   array_reduce.c  reductions, sorting, take
 *   linalg.c        pd.linalg: OpenBLAS and LAPACKE
 * and array_open.c puts them together as pd.core.array.  The arrows run one
 * way: the kernels and linalg.c use array.c through this header; array.c
 * uses none of them.
 *
 * Memory.  An array is a userdata with metatable "pd.Array".  An array that
 * owns its elements keeps them inside its own userdata (one allocation, seen
 * by the GC, 64-byte aligned).  A view (a:row(i), a:col(j), a:T(), a[i] of a
 * 2-D array, a:reshape) is a small userdata whose user value is the owning
 * array, so the owner lives as long as any view of it: no reference counts,
 * no __gc, and any collection order is safe.
 *
 * Layout.  ndim is 1 or 2.  Element (i, j), 0-based, is at
 *   data + (i * strides[0] + j * strides[1]) * pdi_dtype_size(dtype)
 * with strides counted in elements (may be 0 or any positive value; never
 * negative).  A 1-D array has dims[1] == 1 and strides[1] == 0.  An array
 * is contiguous (pdi_array_contiguous) when its n elements are packed
 * row-major with no gaps: data[0 .. n-1].  Everything an array constructor
 * returns is contiguous; views may not be.
 *
 * Iterating rows from C (what pd.map needs for "one row per task"):
 *   pdi_array *a = pdi_array_check(L, idx);
 *   for (int64_t i = 0; i < a->dims[0]; i++) {
 *     pdi_array_push_item(L, idx, i);   // number (1-D) or row view (2-D)
 *     ...
 *   }
 * or read a->data directly: row i starts at
 *   a->data + i * a->strides[0] * pdi_dtype_size(a->dtype)
 * and is contiguous whenever a->strides[1] == 1.
 */
#ifndef PDLUA_ARRAY_H
#define PDLUA_ARRAY_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"

#define PDI_ARRAY_MT "pd.Array"

/* Element types.  The numbers are part of the wire format (codec ext 1):
 * never renumber. */
typedef enum pdi_dtype {
  PDI_F64 = 0,
  PDI_F32 = 1,
  PDI_I32 = 2,
  PDI_I64 = 3,
  PDI_U8 = 4,
  PDI_NDTYPES
} pdi_dtype;

typedef struct pdi_array {
  char *data;            /* element (0, 0) */
  int64_t dims[2];       /* rows, cols; a 1-D array of n is {n, 1} */
  int64_t strides[2];    /* in elements; a 1-D array has strides[1] == 0 */
  int64_t n;             /* dims[0] * dims[1] */
  int ndim;              /* 1 or 2 */
  int dtype;             /* pdi_dtype */
  int owner;             /* 1: elements live in this userdata; 0: view */
} pdi_array;

/* Bytes per element (inline: the kernels' address arithmetic uses it), and
 * the user-facing name ("f64", ...). */
static inline size_t pdi_dtype_size(int dtype) {
  switch (dtype) {
    case PDI_F64: case PDI_I64: return 8;
    case PDI_U8: return 1;
    default: return 4;
  }
}
const char *pdi_dtype_name(int dtype);
/* The dtype named s, or -1. */
int pdi_dtype_find(const char *s);

/* The array at idx, or raise a Lua argument error.  Stack: unchanged. */
pdi_array *pdi_array_check(lua_State *L, int idx);
/* The array at idx, or NULL when the value is not one.  Stack: unchanged. */
pdi_array *pdi_array_test(lua_State *L, int idx);
/* 1 when the elements are packed row-major with no gaps. */
int pdi_array_contiguous(const pdi_array *a);

/* Push a new contiguous array owning uninitialised storage for
 * dims[0] * (ndim == 2 ? dims[1] : 1) elements; raises on a bad size or out
 * of memory.  Stack: [] -> [a] */
pdi_array *pdi_array_new(lua_State *L, int dtype, int ndim, const int64_t *dims);

/* Push item i (0-based) of the array at idx: a number for a 1-D array, a
 * row view (sharing memory) for a 2-D one.  i must be in range (raises
 * otherwise).  Stack: [] -> [v] */
void pdi_array_push_item(lua_State *L, int idx, int64_t i);

/* Push a contiguous copy of the array at idx (same dtype and shape).
 * Stack: [] -> [copy] */
pdi_array *pdi_array_push_copy(lua_State *L, int idx);

/* ---- wire form (codec extension 1) ------------------------------------
 * The payload of the codec's EXT 1 (codec.h, PDI_CODEC_EXT_ARRAY): a header
 * and then the elements, row-major, raw little-endian (the host order on
 * every machine pdlua supports):
 *   u8      dtype (pdi_dtype: 0 f64, 1 f32, 2 i32, 3 i64, 4 u8)
 *   u8      ndim (1 or 2)
 *   ndim x  uvarint (unsigned LEB128) dimension
 *   then    n * pdi_dtype_size(dtype) bytes of elements
 * A view is sent as its elements (a contiguous copy of what it shows); the
 * receiver gets an owning array.  The codec frames this payload with its
 * own version byte and length. */

/* Bytes the wire form of a takes. */
size_t pdi_array_encoded_size(const pdi_array *a);
/* Write the wire form of a to out, which has pdi_array_encoded_size(a)
 * bytes; one pass over the elements (memcpy when contiguous). */
void pdi_array_encode(const pdi_array *a, char *out);
/* Decode the wire form in p[0..len): on success push a new owning array
 * and return NULL (one copy of the elements, from p into the array); on
 * malformed input (bad version, dtype, ndim, sizes that overflow or do not
 * add up to len) push nothing and return a static message.  Never trusts a
 * length.  Stack: [] -> [a] or [] */
const char *pdi_array_decode(lua_State *L, const char *p, size_t len);

/* The opener (array_open.c; also declared with the others in binding.h).
 * Stack: [] -> [t] */
int luaopen_pd_core_array(lua_State *L);

/* ---- between the module's own files ------------------------------------
 * What array_ops.c, array_reduce.c, linalg.c and array_open.c take from
 * array.c.  The small helpers that sit in per-element loops are inline here,
 * so that they inline into the kernels as they did when all was one file. */

/* Largest element count: keeps n * 8 + header well inside size_t and
 * lua_Integer. */
#define PDI_MAXN ((int64_t)1 << 40)

static inline int pdi_dtype_isfloat(int dtype) { return dtype == PDI_F64 || dtype == PDI_F32; }

/* Address of element (i, j), 0-based. */
static inline char *pdi_array_at(const pdi_array *a, int64_t i, int64_t j) {
  return a->data + (i * a->strides[0] + j * a->strides[1]) * (int64_t)pdi_dtype_size(a->dtype);
}

/* Element at p as a double. */
static inline double pdi_elem_getf(int dtype, const char *p) {
  switch (dtype) {
    case PDI_F64: return *(const double *)p;
    case PDI_F32: return *(const float *)p;
    case PDI_I32: return *(const int32_t *)p;
    case PDI_I64: return (double)*(const int64_t *)p;
    default: return *(const uint8_t *)p;
  }
}

/* New contiguous arrays: 1-D of n, 2-D of r x c, shaped like a.
 * Stack: [] -> [b] */
static inline pdi_array *pdi_array_new1(lua_State *L, int dtype, int64_t n) {
  return pdi_array_new(L, dtype, 1, &n);
}
static inline pdi_array *pdi_array_new2(lua_State *L, int dtype, int64_t r, int64_t c) {
  int64_t d[2] = {r, c};
  return pdi_array_new(L, dtype, 2, d);
}
static inline pdi_array *pdi_array_new_like(lua_State *L, const pdi_array *a, int dtype) {
  return pdi_array_new(L, dtype, a->ndim, a->dims);
}

/* The dtype named by the string at idx, or dflt when idx is none/nil.
 * Raises on an unknown name.  Stack: unchanged. */
int pdi_dtype_opt(lua_State *L, int idx, int dflt);

/* A 1-based index argument at idx checked against 1..n; returns it 0-based.
 * Raises naming `what` ("row", "column", "array").  Stack: unchanged. */
int64_t pdi_array_checkindex(lua_State *L, int idx, int64_t n, const char *what);

/* Push the element at p as a Lua number (float dtypes) or integer.
 * Stack: [] -> [v] */
void pdi_elem_push(lua_State *L, int dtype, const char *p);

/* Convert the Lua number at idx to dtype, storing it at p.  Integer dtypes
 * take integers (or floats with an integral value) in their range; raises
 * a clear error otherwise ("what" names the value in the message).
 * Stack: unchanged. */
void pdi_elem_set(lua_State *L, int idx, int dtype, void *p, const char *what);

/* Copy n elements, converting, from src (dtype ds, stride ss) to dst
 * (dtype dd, stride sd).  Floats to integers truncate toward zero and
 * saturate (NaN becomes 0); integers to integers wrap as C does. */
void pdi_elem_convert(int dd, void *dst, int64_t sd, int ds, const void *src, int64_t ss, int64_t n);

/* Push a contiguous copy of the array at idx converted to dtype.
 * Stack: [] -> [b] */
pdi_array *pdi_array_push_astype(lua_State *L, int idx, int dtype);

/* The array at idx as a contiguous one: itself when it already is, else a
 * copy pushed on the stack and put in its place.  Stack: unchanged. */
pdi_array *pdi_array_contig_at(lua_State *L, int idx);

/* pd.array(t [, dtype]) (array.c); a:scale(s) (array_ops.c): called from
 * the other files with lua_call.  Stack: [t, dtype?] -> [a]; [a, s] -> [a] */
int pdi_array_construct(lua_State *L);
int pdi_array_scale(lua_State *L);

/* The parts of the pd.Array class and of the pd.core.array table, each
 * file's own (NULL-terminated):
 *   array.c         pdi_array_core_methods, pdi_array_core_meta (__len,
 *                   __tostring), pdi_array_funcs (array, zeros, ...)
 *   array_ops.c     pdi_array_ops_methods, pdi_array_ops_meta (__add, ...,
 *                   __newindex); pdi_array_push_math pushes pd.math
 *   array_reduce.c  pdi_array_reduce_methods
 *   linalg.c        pdi_linalg_methods (dot, matmul, add_matmul,
 *                   add_outer); pdi_linalg_push pushes pd.linalg */
extern const luaL_Reg pdi_array_core_methods[], pdi_array_core_meta[], pdi_array_funcs[];
extern const luaL_Reg pdi_array_ops_methods[], pdi_array_ops_meta[];
extern const luaL_Reg pdi_array_reduce_methods[];
extern const luaL_Reg pdi_linalg_methods[];
/* Stack: [] -> [math];  [] -> [linalg] */
void pdi_array_push_math(lua_State *L);
void pdi_linalg_push(lua_State *L);

/* Make the pd.Array metatable (once per state): __index finds the methods
 * of the NULL-terminated lists `methods` (also kept as mt.methods, for
 * extension), the metamethods of `meta` are set, and the codec learns the
 * wire form (extension 1).  Stack: [] -> [] */
void pdi_array_newclass(lua_State *L, const luaL_Reg *const *methods, const luaL_Reg *const *meta);
#endif
