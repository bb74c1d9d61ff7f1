/*
 * array.h: pd.array, pd.random and pd.linalg seen from C (lua/array.c,
 * lua/random.c).  Internal to pdlua (pdi_ names); the Lua face is
 * docs/arrays.md.
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
#define PDI_RANDOM_MT "pd.Random"

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

/* Bytes per element, and the user-facing name ("f64", ...). */
size_t pdi_dtype_size(int dtype);
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

/* ---- random streams (lua/random.c) -------------------------------------
 * Philox4x64-10 (Salmon et al., SC'11), counter-based: the key is the
 * seed, the counter is (block, stream, 0, 0).  Distinct (seed, stream)
 * pairs give streams that do not overlap for 2^64 blocks of 4 words, and
 * stream s of seed k is the same on every machine and every run. */
typedef struct pdi_rng {
  uint64_t key[2];       /* seed, 0 */
  uint64_t ctr[4];       /* block, stream, 0, 0 */
  uint64_t buf[8];       /* output of the last two blocks (ctr[0]-2, ctr[0]-1) */
  int pos;               /* next unused word of buf; 8 = empty */
} pdi_rng;

/* Set r to stream `stream` of seed `seed`, at its start. */
void pdi_rng_init(pdi_rng *r, uint64_t seed, uint64_t stream);
/* The stream a task sees: pd.rng() inside task task_index (1-based) of a
 * job with seed `seed`.  Same as pdi_rng_init(r, seed, task_index). */
void pdi_rng_for_task(pdi_rng *r, uint64_t seed, uint64_t task_index);
/* Next 64 random bits; a uniform double in [0, 1) with 53 random bits; a
 * standard normal (ziggurat, 256 layers). */
uint64_t pdi_rng_u64(pdi_rng *r);
double pdi_rng_uniform(pdi_rng *r);
double pdi_rng_normal(pdi_rng *r);
/* Uniform integer in [0, range) without bias (Lemire); range > 0. */
uint64_t pdi_rng_below(pdi_rng *r, uint64_t range);

/* Push a new generator (metatable "pd.Random") set to (seed, stream).
 * Stack: [] -> [g] */
pdi_rng *pdi_rng_push(lua_State *L, uint64_t seed, uint64_t stream);

/* Openers.  luaopen_pd_core_array returns the table behind pd.array,
 * pd.linalg, pd.math and pd.random (fields array, zeros, ..., linalg, math,
 * random).  pdi_open_random adds the random table to the table on top.
 * Stack: [] -> [t];  [t] -> [t] */
int luaopen_pd_core_array(lua_State *L);
void pdi_open_random(lua_State *L);

/* lua/optim.c: pdi_open_optim adds the optimisers' kernels (cma_eigen,
 * cma_ask, cma_rank, cma_tell, ...) as field "optim" of the table on top.
 * Stack: [t] -> [t] */
void pdi_open_optim(lua_State *L);

#endif
