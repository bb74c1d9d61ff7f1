/*
 * linalg.c: pd.linalg, the binding of OpenBLAS and LAPACKE: a:dot(b),
 * a:matmul(b), c:add_matmul(a, b), a:add_outer(x, y) (methods of pd.Array)
 * and pd.linalg's eigh, cholesky, solve, inv, det, outer, threads, config,
 * available.
 *
 * Views go to BLAS as (trans, leading dimension) without copying when BLAS
 * can read them as they are (blas_view); LAPACK works on a fresh f64 copy.
 * The libraries are not linked: blas.c dlopens them on the first call that
 * needs them (through pdi_blas_need, which raises a clear error when they
 * are missing), so a process that never does linear algebra never pays for
 * loading them.
 *
 * Arrays, dtypes and conversions are array.c's (array.h); the methods here
 * are added to pd.Array by array_open.c, which also makes pd.linalg of
 * pdi_linalg_push's table.
 */
#include "array.h"

#include <string.h>

#include "blas.h"       /* OpenBLAS / LAPACKE, dlopened on first use */
#include "binding.h"

/* ======================================================================
 * linear algebra (OpenBLAS, LAPACKE)
 * ====================================================================== */

/* How BLAS reads a 2-D operand: (trans, ld) without a copy when one of the
 * strides is 1; otherwise the operand is replaced by a contiguous copy. */
typedef struct blasmat { enum CBLAS_TRANSPOSE t; int ld; const char *data; } blasmat;

static blasmat blas_view(lua_State *L, int idx) {
  pdi_array *a = pdi_array_check(L, idx);
  int64_t r = a->dims[0], c = a->dims[1];
  blasmat m;
  if ((a->strides[1] == 1 || c == 1) && a->strides[0] >= (c > 1 ? c : 1)) {
    m.t = CblasNoTrans; m.ld = (int)a->strides[0];
  } else if ((a->strides[0] == 1 || r == 1) && a->strides[1] >= (r > 1 ? r : 1)) {
    m.t = CblasTrans; m.ld = (int)a->strides[1];
  } else if (r == 1 || c == 1 || a->n == 0) {
    a = pdi_array_contig_at(L, idx);
    m.t = CblasNoTrans; m.ld = (int)(c > 1 ? c : 1);
  } else {
    a = pdi_array_contig_at(L, idx);
    m.t = CblasNoTrans; m.ld = (int)c;
  }
  if (r == 1 && m.t == CblasNoTrans && m.ld < c) m.ld = (int)(c > 1 ? c : 1);
  m.data = a->data;
  return m;
}

static int vec_inc(const pdi_array *a) { return a->dims[0] <= 1 ? 1 : (int)a->strides[0]; }

static void check_float_pair(lua_State *L, const pdi_array *a, const pdi_array *b, const char *what) {
  if (a->dtype != b->dtype)
    luaL_error(L, "dtype mismatch in %s: %s and %s (convert one with :astype)", what,
               pdi_dtype_name(a->dtype), pdi_dtype_name(b->dtype));
  if (!pdi_dtype_isfloat(a->dtype)) luaL_error(L, "%s needs f64 or f32 arrays (got %s)", what, pdi_dtype_name(a->dtype));
}

/* Integer dot products (no BLAS for those). */
static int int_dot(lua_State *L, const pdi_array *a, const pdi_array *b) {
  uint64_t s = 0;
  for (int64_t i = 0; i < a->n; i++)
    s += (uint64_t)(int64_t)pdi_elem_getf(a->dtype, pdi_array_at(a, i, 0)) * (uint64_t)(int64_t)pdi_elem_getf(b->dtype, pdi_array_at(b, i, 0));
  lua_pushinteger(L, (lua_Integer)(int64_t)s);
  return 1;
}

static int arr_matmul(lua_State *L);

/* a:dot(b) -> inner product of two 1-D arrays of the same length (a number;
 * BLAS ddot/sdot, any strides); for 2-D operands, a:matmul(b).
 * Stack: [a, b] -> [s] */
static int arr_dot(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1), *b = pdi_array_check(L, 2);
  if (a->ndim == 2 || b->ndim == 2) return arr_matmul(L);
  if (a->dtype != b->dtype)
    return luaL_error(L, "dtype mismatch in dot: %s and %s (convert one with :astype)",
                      pdi_dtype_name(a->dtype), pdi_dtype_name(b->dtype));
  if (a->n != b->n) return luaL_error(L, "shape mismatch in dot: (%d) and (%d)", (int)a->n, (int)b->n);
  if (!pdi_dtype_isfloat(a->dtype)) return int_dot(L, a, b);
  if (a->dtype == PDI_F64)
    lua_pushnumber(L, pdi_blas_need(L, "pd.linalg.dot")->cblas_ddot((int)a->n, (const double *)a->data, vec_inc(a), (const double *)b->data, vec_inc(b)));
  else
    lua_pushnumber(L, pdi_blas_need(L, "pd.linalg.dot")->cblas_dsdot((int)a->n, (const float *)a->data, vec_inc(a), (const float *)b->data, vec_inc(b)));
  return 1;
}

/* C = alpha * op(A) op(B) + beta * C through gemm; C contiguous-rows
 * (strides[1] == 1).  Shapes already checked. */
static void gemm(lua_State *L, int ia, int ib, pdi_array *c, double alpha, double beta) {
  pdi_array *a = pdi_array_check(L, ia);
  int64_t m = a->dims[0], k = a->dims[1], n = pdi_array_check(L, ib)->dims[1];
  if (m == 0 || n == 0) return;
  blasmat A = blas_view(L, ia), B = blas_view(L, ib);
  int ldc = (int)(c->strides[0] > 0 ? c->strides[0] : 1);
  if (ldc < n) ldc = (int)n;
  if (c->dtype == PDI_F64)
    pdi_blas_need(L, "pd.linalg.matmul")->cblas_dgemm(CblasRowMajor, A.t, B.t, (int)m, (int)n, (int)k, alpha, (const double *)A.data, A.ld,
                (const double *)B.data, B.ld, beta, (double *)c->data, ldc);
  else
    pdi_blas_need(L, "pd.linalg.matmul")->cblas_sgemm(CblasRowMajor, A.t, B.t, (int)m, (int)n, (int)k, (float)alpha, (const float *)A.data,
                A.ld, (const float *)B.data, B.ld, (float)beta, (float *)c->data, ldc);
}

/* a:matmul(b) -> matrix product: (m x k)(k x n) -> m x n (gemm),
 * (m x k)(k) -> m (gemv), (k)(k x n) -> n, (k)(k) -> number.  f64 or f32;
 * views are passed to BLAS without copying where it can read them.
 * Stack: [a, b] -> [c] */
static int arr_matmul(lua_State *L) {
  lua_settop(L, 2);
  PDI_STACK(L);
  pdi_array *a = pdi_array_check(L, 1), *b = pdi_array_check(L, 2);
  check_float_pair(L, a, b, "matmul");
  if (a->ndim == 1 && b->ndim == 1) return arr_dot(L);
  int64_t k1 = a->ndim == 2 ? a->dims[1] : a->dims[0];
  int64_t k2 = b->dims[0];
  if (k1 != k2) {
    return luaL_error(L, "shape mismatch in matmul: (%dx%d) and (%dx%d)", (int)(a->ndim == 2 ? a->dims[0] : 1),
                      (int)k1, (int)k2, (int)(b->ndim == 2 ? b->dims[1] : 1));
  }
  int dtype = a->dtype;
  if (a->ndim == 2 && b->ndim == 2) {
    pdi_array *c = pdi_array_new2(L, dtype, a->dims[0], b->dims[1]); /* [a, b, c] */
    if (k1 == 0) memset(c->data, 0, (size_t)c->n * pdi_dtype_size(dtype));
    else gemm(L, 1, 2, c, 1.0, 0.0);
    lua_settop(L, 3);
    return 1;
  }
  /* matrix-vector: y = M x, with M = a (a 2-D) or b^T (a 1-D) */
  int mi = a->ndim == 2 ? 1 : 2, vi = a->ndim == 2 ? 2 : 1;
  pdi_array *v = pdi_array_check(L, vi);
  pdi_array *M = pdi_array_check(L, mi);
  int64_t outn = a->ndim == 2 ? a->dims[0] : b->dims[1];
  pdi_array *y = pdi_array_new1(L, dtype, outn);                   /* [a, b, y] */
  if (outn == 0) return 1;
  if (k1 == 0) { memset(y->data, 0, (size_t)y->n * pdi_dtype_size(dtype)); return 1; }
  blasmat A = blas_view(L, mi);
  M = pdi_array_check(L, mi);
  v = pdi_array_check(L, vi);
  enum CBLAS_TRANSPOSE t = A.t;
  if (mi == 2) t = t == CblasNoTrans ? CblasTrans : CblasNoTrans;   /* x^T B = (B^T x)^T */
  /* gemv wants the stored matrix's rows/cols */
  int rows = (int)(A.t == CblasNoTrans ? M->dims[0] : M->dims[1]);
  int cols = (int)(A.t == CblasNoTrans ? M->dims[1] : M->dims[0]);
  if (dtype == PDI_F64)
    pdi_blas_need(L, "pd.linalg.matmul")->cblas_dgemv(CblasRowMajor, t, rows, cols, 1.0, (const double *)A.data, A.ld,
                (const double *)v->data, vec_inc(v), 0.0, (double *)y->data, 1);
  else
    pdi_blas_need(L, "pd.linalg.matmul")->cblas_sgemv(CblasRowMajor, t, rows, cols, 1.0f, (const float *)A.data, A.ld,
                (const float *)v->data, vec_inc(v), 0.0f, (float *)y->data, 1);
  PDI_STACK_CHECK(L, 1);                              /* [a, b, y] */
  lua_settop(L, 3);
  return 1;
}

/* c:add_matmul(a, b [, alpha [, beta]]) -> c, c = beta*c + alpha*(a b)
 * in place (gemm; alpha 1, beta 1 by default).  c must have unit column
 * stride (a contiguous array or row slice).  Stack: [c, a, b, ...] -> [c] */
static int arr_add_matmul(lua_State *L) {
  pdi_array *c = pdi_array_check(L, 1), *a = pdi_array_check(L, 2), *b = pdi_array_check(L, 3);
  double alpha = luaL_optnumber(L, 4, 1.0), beta = luaL_optnumber(L, 5, 1.0);
  check_float_pair(L, a, b, "add_matmul");
  check_float_pair(L, c, a, "add_matmul");
  luaL_argcheck(L, a->ndim == 2 && b->ndim == 2 && c->ndim == 2, 1, "add_matmul needs 2-D arrays");
  if (a->dims[1] != b->dims[0] || c->dims[0] != a->dims[0] || c->dims[1] != b->dims[1])
    return luaL_error(L, "shape mismatch in add_matmul: (%dx%d) += (%dx%d)(%dx%d)", (int)c->dims[0],
                      (int)c->dims[1], (int)a->dims[0], (int)a->dims[1], (int)b->dims[0], (int)b->dims[1]);
  luaL_argcheck(L, c->strides[1] == 1 || c->dims[1] <= 1, 1, "add_matmul needs unit column stride");
  if (a->dims[1] == 0) {
    lua_pushnumber(L, beta);
    lua_pushcfunction(L, pdi_array_scale);
    lua_pushvalue(L, 1);
    lua_pushnumber(L, beta);
    lua_call(L, 2, 0);
  } else {
    gemm(L, 2, 3, c, alpha, beta);
  }
  lua_settop(L, 1);
  return 1;
}

/* a:add_outer(x [, y], alpha) -> a, a += alpha * x y^T in place (BLAS ger;
 * y defaults to x: the rank-one covariance update).  a is 2-D m x n with
 * one unit stride; x has m elements, y n.
 * Stack: [a, x, y?, alpha?] -> [a] */
static int arr_add_outer(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1), *x = pdi_array_check(L, 2);
  int yi = pdi_array_test(L, 3) ? 3 : 2;
  pdi_array *y = pdi_array_check(L, yi);
  double alpha = luaL_optnumber(L, yi == 3 ? 4 : 3, 1.0);
  luaL_argcheck(L, a->ndim == 2, 1, "add_outer needs a 2-D array");
  check_float_pair(L, a, x, "add_outer");
  check_float_pair(L, a, y, "add_outer");
  if (x->ndim != 1 || y->ndim != 1 || x->n != a->dims[0] || y->n != a->dims[1])
    return luaL_error(L, "shape mismatch in add_outer: (%dx%d) += (%d)(%d)^T", (int)a->dims[0],
                      (int)a->dims[1], (int)x->n, (int)y->n);
  if (a->n == 0) { lua_settop(L, 1); return 1; }
  CBLAS_ORDER order;
  int ld;
  if (a->strides[1] == 1 || a->dims[1] == 1) { order = CblasRowMajor; ld = (int)(a->dims[0] == 1 ? (a->dims[1] > 1 ? a->dims[1] : 1) : a->strides[0]); }
  else if (a->strides[0] == 1) { order = CblasColMajor; ld = (int)a->strides[1]; }
  else return luaL_error(L, "add_outer needs an array with a unit stride");
  if (a->dtype == PDI_F64)
    pdi_blas_need(L, "pd.linalg.add_outer")->cblas_dger(order, (int)a->dims[0], (int)a->dims[1], alpha, (const double *)x->data, vec_inc(x),
               (const double *)y->data, vec_inc(y), (double *)a->data, ld);
  else
    pdi_blas_need(L, "pd.linalg.add_outer")->cblas_sger(order, (int)a->dims[0], (int)a->dims[1], (float)alpha, (const float *)x->data, vec_inc(x),
               (const float *)y->data, vec_inc(y), (float *)a->data, ld);
  lua_settop(L, 1);
  return 1;
}

/* pd.linalg.outer(x, y) -> new m x n matrix x y^T (f64 or f32 vectors).
 * Stack: [x, y] -> [m] */
static int l_outer(lua_State *L) {
  PDI_STACK(L);
  pdi_array *x = pdi_array_check(L, 1), *y = pdi_array_check(L, 2);
  check_float_pair(L, x, y, "outer");
  luaL_argcheck(L, x->ndim == 1 && y->ndim == 1, 1, "outer needs 1-D arrays");
  pdi_array *m = pdi_array_new2(L, x->dtype, x->n, y->n);      /* [x, y, m] */
  memset(m->data, 0, (size_t)m->n * pdi_dtype_size(m->dtype));
  lua_pushcfunction(L, arr_add_outer);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_call(L, 3, 1);                                           /* [x, y, m, m] */
  PDI_STACK_CHECK(L, 2);
  return 1;
}

/* The square matrix at idx as a fresh contiguous f64 working copy.
 * Stack: [] -> [w] */
static pdi_array *square_work(lua_State *L, int idx, const char *what) {
  pdi_array *a = pdi_array_check(L, idx);
  if (a->ndim != 2 || a->dims[0] != a->dims[1])
    luaL_error(L, "%s needs a square 2-D array (got %dx%d)", what, (int)a->dims[0],
               (int)(a->ndim == 2 ? a->dims[1] : 1));
  if (!pdi_dtype_isfloat(a->dtype)) luaL_error(L, "%s needs an f64 or f32 array (got %s)", what, pdi_dtype_name(a->dtype));
  return pdi_array_push_astype(L, idx, PDI_F64);
}

/* Transpose an n x n row-major matrix from src into dst, in tiles. */
static void transpose_into(double *dst, const double *src, int64_t n) {
  const int64_t B = 32;
  for (int64_t i0 = 0; i0 < n; i0 += B)
    for (int64_t j0 = 0; j0 < n; j0 += B)
      for (int64_t i = i0; i < i0 + B && i < n; i++)
        for (int64_t j = j0; j < j0 + B && j < n; j++) dst[j * n + i] = src[i * n + j];
}

/* pd.linalg.eigh(a) -> w, V: the eigenvalues of the symmetric matrix a in
 * ascending order (1-D f64) and the orthonormal eigenvectors as the columns
 * of V (V:col(k) belongs to w[k]), so a = V diag(w) V^T.  Reads the upper
 * triangle of a only.  LAPACK dsyevd (divide and conquer); raises if it
 * fails to converge.  Stack: [a] -> [w, V] */
static int l_eigh(lua_State *L) {
  lua_settop(L, 1);
  PDI_STACK(L);
  pdi_array *w = square_work(L, 1, "eigh");                  /* [a, work] */
  int64_t n = w->dims[0];
  pdi_array *vals = pdi_array_new1(L, PDI_F64, n);           /* [a, work, vals] */
  pdi_array *vec = pdi_array_new2(L, PDI_F64, n, n);         /* [a, work, vals, V] */
  if (n == 0) return 2;
  /* The row-major symmetric matrix read column-major is the same matrix,
   * so LAPACK works on it in place with no layout conversion ('L' in
   * column-major is our upper triangle); eigenvector k comes back as
   * column k column-major, i.e. row k of work, and is transposed into V. */
  lapack_int info = pdi_blas_need(L, "pd.linalg.eigh")->LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)n, (double *)w->data,
                                   (lapack_int)n, (double *)vals->data);
  if (info != 0) return luaL_error(L, "eigh: LAPACK dsyevd failed (info %d)", (int)info);
  transpose_into((double *)vec->data, (const double *)w->data, n);
  PDI_STACK_CHECK(L, 3);
  return 2;
}

/* pd.linalg.cholesky(a) -> L, lower triangular with a = L L^T (zeros above
 * the diagonal).  Reads the lower triangle of a.  Raises "not positive
 * definite" when it is not.  Stack: [a] -> [L] */
static int l_cholesky(lua_State *L) {
  lua_settop(L, 1);
  pdi_array *w = square_work(L, 1, "cholesky");              /* [a, work] */
  int64_t n = w->dims[0];
  if (n == 0) return 1;
  /* column-major 'U' on our row-major storage is our lower triangle */
  lapack_int info = pdi_blas_need(L, "pd.linalg.cholesky")->LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', (lapack_int)n, (double *)w->data, (lapack_int)n);
  if (info > 0) return luaL_error(L, "cholesky: matrix is not positive definite (leading minor %d)", (int)info);
  if (info < 0) return luaL_error(L, "cholesky: LAPACK dpotrf failed (info %d)", (int)info);
  double *d = (double *)w->data;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = i + 1; j < n; j++) d[i * n + j] = 0;
  return 1;
}

/* pd.linalg.solve(a, b) -> x with a x = b: b 1-D (x 1-D) or 2-D (one right
 * hand side per column).  LAPACK dgesv (LU with partial pivoting); raises on
 * a singular matrix.  Stack: [a, b] -> [x] */
static int l_solve(lua_State *L) {
  lua_settop(L, 2);
  PDI_STACK(L);
  pdi_array *w = square_work(L, 1, "solve");                 /* [a, b, work] */
  pdi_array *b = pdi_array_check(L, 2);
  int64_t n = w->dims[0];
  if (b->dims[0] != n)
    return luaL_error(L, "shape mismatch in solve: (%dx%d) and %d rows", (int)n, (int)n, (int)b->dims[0]);
  if (!pdi_dtype_isfloat(b->dtype)) return luaL_error(L, "solve needs an f64 or f32 right-hand side");
  pdi_array *x = pdi_array_push_astype(L, 2, PDI_F64);       /* [a, b, work, x] */
  int64_t nrhs = b->ndim == 2 ? b->dims[1] : 1;
  if (n == 0 || nrhs == 0) return 1;
  lapack_int *piv = (lapack_int *)lua_newuserdatauv(L, sizeof(lapack_int) * (size_t)n, 0);
  lapack_int info = pdi_blas_need(L, "pd.linalg.solve")->LAPACKE_dgesv(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)nrhs, (double *)w->data,
                                  (lapack_int)n, piv, (double *)x->data, (lapack_int)nrhs);
  if (info > 0) return luaL_error(L, "solve: matrix is singular (U(%d,%d) is zero)", (int)info, (int)info);
  if (info < 0) return luaL_error(L, "solve: LAPACK dgesv failed (info %d)", (int)info);
  PDI_STACK_CHECK(L, 3);                              /* [a, b, work, x, piv] */
  lua_settop(L, 4);
  return 1;
}

/* pd.linalg.inv(a) -> the inverse of the square matrix a (LU: dgetrf,
 * dgetri); raises on a singular matrix.  Prefer solve(a, b) to inv(a) * b.
 * Stack: [a] -> [inv] */
static int l_inv(lua_State *L) {
  lua_settop(L, 1);
  pdi_array *w = square_work(L, 1, "inv");                   /* [a, work] */
  int64_t n = w->dims[0];
  if (n == 0) return 1;
  lapack_int *piv = (lapack_int *)lua_newuserdatauv(L, sizeof(lapack_int) * (size_t)n, 0);
  lapack_int info = pdi_blas_need(L, "pd.linalg.inv")->LAPACKE_dgetrf(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)n, (double *)w->data,
                                   (lapack_int)n, piv);
  if (info == 0)
    info = pdi_blas_need(L, "pd.linalg.inv")->LAPACKE_dgetri(LAPACK_ROW_MAJOR, (lapack_int)n, (double *)w->data, (lapack_int)n, piv);
  if (info > 0) return luaL_error(L, "inv: matrix is singular (U(%d,%d) is zero)", (int)info, (int)info);
  if (info < 0) return luaL_error(L, "inv: LAPACK failed (info %d)", (int)info);
  lua_settop(L, 2);
  return 1;
}

/* pd.linalg.det(a) -> the determinant of the square matrix a (LU: dgetrf;
 * 0 for a singular matrix).  Stack: [a] -> [d] */
static int l_det(lua_State *L) {
  lua_settop(L, 1);
  PDI_STACK(L);
  pdi_array *w = square_work(L, 1, "det");                   /* [a, work] */
  int64_t n = w->dims[0];
  if (n == 0) { lua_pushnumber(L, 1); return 1; }
  lapack_int *piv = (lapack_int *)lua_newuserdatauv(L, sizeof(lapack_int) * (size_t)n, 0);
  lapack_int info = pdi_blas_need(L, "pd.linalg.det")->LAPACKE_dgetrf(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)n, (double *)w->data,
                                   (lapack_int)n, piv);
  if (info < 0) return luaL_error(L, "det: LAPACK dgetrf failed (info %d)", (int)info);
  double d = 1;
  const double *u = (const double *)w->data;
  for (int64_t i = 0; i < n; i++) {
    d *= u[i * n + i];
    if (piv[i] != (lapack_int)(i + 1)) d = -d;
  }
  lua_pushnumber(L, info > 0 ? 0.0 : d);
  PDI_STACK_CHECK(L, 3);                              /* [a, work, piv, d] */
  return 1;
}

/* pd.linalg.threads([n]) -> the number of threads OpenBLAS uses (before
 * the change, when n is given: then it uses n).  In a worker process of a
 * cluster one thread is usually right; OPENBLAS_NUM_THREADS sets the
 * start value.  pd.linalg.config() -> OpenBLAS's build string.
 * Stack: [n?] -> [old] */
static int l_threads(lua_State *L) {
  int old = pdi_blas_need(L, "pd.linalg.threads")->openblas_get_num_threads();
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "threads must be 1..1024");
    pdi_blas_need(L, "pd.linalg.threads")->openblas_set_num_threads((int)n);
  }
  lua_pushinteger(L, old);
  return 1;
}
static int l_config(lua_State *L) {
  lua_pushstring(L, pdi_blas_need(L, "pd.linalg.config")->openblas_get_config());
  return 1;
}

/* pd.linalg.available() -> true, or false and the reason (naming the
 * library) when OpenBLAS / LAPACKE cannot be loaded.  Loads them if they
 * are not loaded yet (blas.h).  Stack: [] -> [ok, why?] */
static int l_available(lua_State *L) {
  const char *why = NULL;
  if (pdi_blas_get(&why)) { lua_pushboolean(L, 1); return 1; }
  lua_pushboolean(L, 0);
  lua_pushstring(L, why);
  return 2;
}


/* ======================================================================
 * the class's part and pd.linalg
 * ====================================================================== */

const luaL_Reg pdi_linalg_methods[] = {
  {"dot", arr_dot}, {"matmul", arr_matmul}, {"add_matmul", arr_add_matmul},
  {"add_outer", arr_add_outer},
  {NULL, NULL},
};

static const luaL_Reg linalg_funcs[] = {
  {"eigh", l_eigh}, {"cholesky", l_cholesky}, {"solve", l_solve},
  {"inv", l_inv}, {"det", l_det}, {"outer", l_outer},
  {"threads", l_threads}, {"config", l_config}, {"available", l_available},
  {"matmul", arr_matmul}, {"dot", arr_dot},
  {NULL, NULL},
};

/* Stack: [] -> [linalg] */
void pdi_linalg_push(lua_State *L) {
  luaL_newlib(L, linalg_funcs);                       /* [linalg] */
}
