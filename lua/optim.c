/*
 * optim.c: the native kernels of pd.optim (stdlib/pd/optim/), the native
 * module pd.core.optim (reached from Lua through pd.optim.la.kernels).
 * Internal: the Lua modules are the contract.  Uses pd.array (array.h) and
 * pd.random's streams (random.h); neither uses it.
 *
 * Why these exist.  An optimiser's own cost per evaluation is the goal of
 * bench/optim (under 10 us at 10 and 40 dimensions, where pycma spends about
 * 80).  Written as array method calls, a CMA-ES generation made some twenty
 * arrays and a few hundred small tables and crossed into C once per row; a
 * point's coordinates went through four Lua lists.  Here each step of a
 * generation is one call on preallocated f64 arrays:
 *   cma_eigen   C = B D^2 B^T (Householder + QL, tred2/tql2) and the
 *               sampling transform
 *   cma_ask     Y = Z (B D)^T (one gemm), X = box(m + sigma Y), the points
 *   cma_rank    the ranking of the values (stable: ties by sample index)
 *   cma_tell    mean, paths, covariance (one gemm for rank one, rank mu and
 *               the active weights), step size, the coordinate-wise
 *               termination tests
 * and pso_move (PSO's move), ga_offspring (a GA island's next generation:
 * ranking, tournaments and variation, on the population as one array),
 * rows and maxstd.  The formulas are those of
 * the Lua modules' headers (pycma 4.4.0, SPSO-2011, Deb's operators); Lua
 * keeps the histories, the remaining termination criteria and restarts.
 *
 * Memory.  The state is f64 arrays owned by the Lua side (checkpoints pack
 * them); lists are read with lua_rawgeti.  Each kernel is a C closure whose
 * upvalue 1 holds its scratch memory (a userdata grown when a call needs
 * more), so a generation allocates nothing but the tables it returns, and
 * an error raised half-way leaks nothing.
 */
#include "array.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "blas.h"
#include "random.h"

/* ======================================================================
 * helpers
 * ====================================================================== */

/* The elements of the contiguous f64 array at idx, which must be r x c
 * (c == 0: any shape with r elements).  Stack: unchanged. */
static double *f64at(lua_State *L, int idx, int64_t r, int64_t c) {
  pdi_array *a = pdi_array_check(L, idx);
  if (a->dtype != PDI_F64 || !pdi_array_contiguous(a))
    luaL_argerror(L, idx, "needs a contiguous f64 array");
  if (c > 0 ? (a->ndim != 2 || a->dims[0] != r || a->dims[1] != c) : a->n != r)
    luaL_argerror(L, idx, lua_pushfstring(L, "needs %d x %d elements", (int)r, (int)(c > 0 ? c : 1)));
  return (double *)a->data;
}

/* Read the first n numbers of the list at idx into v.  Stack: unchanged. */
static void getlist(lua_State *L, int idx, int n, double *v) {
  luaL_checktype(L, idx, LUA_TTABLE);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, idx, i + 1);                       /* [.., v_i] */
    int ok;
    v[i] = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_argerror(L, idx, lua_pushfstring(L, "element %d is not a number", i + 1));
    lua_pop(L, 1);                                    /* [..] */
  }
}

/* Write v[0..n-1] as elements 1..n of the list at idx.  Stack: unchanged. */
static void setlist(lua_State *L, int idx, int n, const double *v) {
  for (int i = 0; i < n; i++) {
    lua_pushnumber(L, v[i]);                          /* [.., v_i] */
    lua_rawseti(L, idx, i + 1);                       /* [..] */
  }
}

/* Scratch memory of at least `bytes` for the running kernel: the userdata
 * in upvalue 1 of the C closure, replaced by a larger one when too small.
 * Valid until the kernel returns (kernels call no Lua code).
 * Stack: unchanged. */
static void *workspace(lua_State *L, size_t bytes) {
  void *p = lua_touserdata(L, lua_upvalueindex(1));
  if (!p || lua_rawlen(L, lua_upvalueindex(1)) < bytes) {
    p = lua_newuserdatauv(L, bytes ? bytes : 1, 0);   /* [.., u] */
    lua_replace(L, lua_upvalueindex(1));              /* [..] */
  }
  return p;
}

/* Scratch memory for k doubles (workspace).  Stack: unchanged. */
static double *scratch(lua_State *L, size_t k) {
  return (double *)workspace(L, k * sizeof(double));
}

/* ======================================================================
 * CMA-ES
 * ====================================================================== */

/* The symmetric eigenproblem for CMA-ES's covariance, in two classic
 * steps (Householder's reduction to tridiagonal form, then the implicit QL
 * method with Wilkinson shifts; Golub & Van Loan, "Matrix Computations",
 * 8.3 and 8.3.5; Bowdler, Martin, Reinsch and Wilkinson's tred2 and tql2).
 * Why not LAPACK: at the sizes CMA-ES decomposes, dsyevd (OpenBLAS's
 * bundled reference LAPACK) is the slower: these two take about half its
 * time at n = 40 and n = 10 (69 and 4.6 us against 139 and 10, warm
 * caches, with the AVX2 clones below), with the same
 * accuracy (residuals of a few ulps of the largest eigenvalue), and the
 * eigenvectors come out as rows, which is how the sampling wants them.
 *
 * tred2: V (n x n, row-major) holds the symmetric matrix on entry and the
 * orthogonal Q of A = Q T Q^T on return; d gets T's diagonal, e[i] =
 * T[i-1][i] (e[0] = 0); gv is n doubles of scratch.  Stack: none. */
/* x86-64: the two loops that take most of a decomposition (the rank-2
 * update and the QL rotations) also built for AVX2, chosen at run time.
 * Same arithmetic, element by element (no FMA, no reassociation), so the
 * same bits as the SSE2 build. */
#if defined(__x86_64__) && defined(__ELF__) && !defined(PDLUA_NO_CLONES) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8) || (defined(__clang__) && __clang_major__ >= 14))
#define PDI_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PDI_CLONES
#endif

PDI_CLONES
static void tred2(int64_t n, double *V, double *d, double *e, double *restrict gv) {
#define v(i, j) V[(i) * n + (j)]
  for (int64_t j = 0; j < n; j++) d[j] = v(n - 1, j);
  for (int64_t i = n - 1; i > 0; i--) {
    double scale = 0, h = 0;
    for (int64_t k = 0; k < i; k++) scale += fabs(d[k]);
    if (scale == 0) {
      e[i] = d[i - 1];
      for (int64_t j = 0; j < i; j++) {
        d[j] = v(i - 1, j);
        v(i, j) = 0;
        v(j, i) = 0;
      }
    } else {
      /* the Householder vector of row i, scaled against underflow */
      for (int64_t k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      double f = d[i - 1], g = sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (int64_t j = 0; j < i; j++) e[j] = 0;
      /* e = A u (lower triangle), then the rank-2 update of A */
      for (int64_t j = 0; j < i; j++) {
        f = d[j];
        v(j, i) = f;
        g = e[j] + v(j, j) * f;
        for (int64_t k = j + 1; k <= i - 1; k++) {
          g += v(k, j) * d[k];
          e[k] += v(k, j) * f;
        }
        e[j] = g;
      }
      f = 0;
      for (int64_t j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      double hh = f / (h + h);
      for (int64_t j = 0; j < i; j++) e[j] -= hh * d[j];
      /* A -= u e^T + e u^T on the lower triangle, row by row (contiguous) */
      for (int64_t k = 0; k < i; k++) {
        double *restrict vk = V + k * n;
        const double ek = e[k], dk = d[k];
        for (int64_t j = 0; j <= k; j++) vk[j] -= d[j] * ek + e[j] * dk;
      }
      for (int64_t j = 0; j < i; j++) {
        d[j] = v(i - 1, j);
        v(i, j) = 0;
      }
    }
    d[i] = h;
  }
  /* accumulate the transformations into Q: for each i, the leading
   * (i+1) x (i+1) block B -= (u / h) (B^T u)^T, u its column i + 1; B^T u
   * summed row by row into gv (contiguous, in the same order as a column
   * walk would) */
  for (int64_t i = 0; i < n - 1; i++) {
    v(n - 1, i) = v(i, i);
    v(i, i) = 1;
    double h = d[i + 1];
    if (h != 0) {
      for (int64_t k = 0; k <= i; k++) d[k] = v(k, i + 1) / h;
      for (int64_t j = 0; j <= i; j++) gv[j] = 0;
      for (int64_t k = 0; k <= i; k++) {
        const double *restrict vk = V + k * n;
        const double uk = vk[i + 1];
        for (int64_t j = 0; j <= i; j++) gv[j] += uk * vk[j];
      }
      for (int64_t k = 0; k <= i; k++) {
        double *restrict vk = V + k * n;
        const double dk = d[k];
        for (int64_t j = 0; j <= i; j++) vk[j] -= gv[j] * dk;
      }
    }
    for (int64_t k = 0; k <= i; k++) v(k, i + 1) = 0;
  }
  for (int64_t j = 0; j < n; j++) {
    d[j] = v(n - 1, j);
    v(n - 1, j) = 0;
  }
  v(n - 1, n - 1) = 1;
  e[0] = 0;
#undef v
}

/* tql2: the eigenvalues and eigenvectors of the tridiagonal (d, e) of
 * tred2, by QL iterations with implicit shifts.  W (n x n) holds Q^T on
 * entry (rows: tred2's basis) and the eigenvectors as rows on return, d
 * the eigenvalues, ascending (rows of W sorted with them).  Returns 0, or
 * -1 when an eigenvalue takes more than 60 iterations (never seen; the
 * caller falls back to LAPACK).  The rotations touch two rows of W each:
 * contiguous, so the compiler vectorises them.  Stack: none. */
PDI_CLONES
static int tql2(int64_t n, double *W, double *d, double *e) {
  for (int64_t i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  double f = 0, tst1 = 0;
  const double eps = 0x1p-52;
  for (int64_t l = 0; l < n; l++) {
    /* the first negligible subdiagonal element at or after l */
    tst1 = fmax(tst1, fabs(d[l]) + fabs(e[l]));
    int64_t m = l;
    while (m < n - 1 && fabs(e[m]) > eps * tst1) m++;
    if (m > l) {
      int iter = 0;
      do {
        if (++iter > 60) return -1;
        /* the shift, from the leading 2 x 2 block */
        double g = d[l], p = (d[l + 1] - g) / (2 * e[l]);
        double r = sqrt(p * p + 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        double dl1 = d[l + 1], h = g - d[l];
        for (int64_t i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        /* the implicit QL sweep from m up to l */
        p = d[m];
        double c = 1, c2 = 1, c3 = 1, el1 = e[l + 1], s = 0, s2 = 0;
        for (int64_t i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = sqrt(p * p + e[i] * e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          double *restrict wi = W + i * n, *restrict wj = W + (i + 1) * n;
          for (int64_t k = 0; k < n; k++) {
            double a = wi[k], b = wj[k];
            wj[k] = s * a + c * b;
            wi[k] = c * a - s * b;
          }
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (fabs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0;
  }
  /* ascending, as LAPACK gives them (selection sort: n swaps of rows) */
  for (int64_t i = 0; i < n - 1; i++) {
    int64_t k = i;
    for (int64_t j = i + 1; j < n; j++)
      if (d[j] < d[k]) k = j;
    if (k != i) {
      double t = d[k];
      d[k] = d[i];
      d[i] = t;
      double *restrict wi = W + i * n, *restrict wk = W + k * n;
      for (int64_t j = 0; j < n; j++) {
        t = wi[j];
        wi[j] = wk[j];
        wk[j] = t;
      }
    }
  }
  return 0;
}

/* optim.cma_eigen(C, Bt, BDt, D [, lapack]) -> dmin, dmax: the
 * eigendecomposition behind the sampling, into preallocated f64 arrays (C,
 * Bt, BDt n x n, D of n).  C (covariance) is first made exactly symmetric
 * (its mean with its transpose, as pycma does before decomposing).  Bt gets
 * the eigenvectors as rows, eigenvalues ascending; D their square roots (a
 * non-positive eigenvalue is taken as 1e-300); BDt = (B diag(D))^T, row k =
 * D_k times eigenvector k.  C^(-1/2) = B diag(1/D) B^T is never formed:
 * cma_tell applies it as Bt^T (D^-1 (Bt y)).  Returns the smallest and
 * largest D.  The decomposition is tred2 + tql2 above, or LAPACK's dsyevd
 * when `lapack` is true or tql2 does not converge; raises when LAPACK does
 * not converge either.  The workspace is the kernel's own (workspace()),
 * kept between calls.
 * Stack: [C, Bt, BDt, D, lapack?] -> [dmin, dmax] */
static int cma_eigen(lua_State *L) {
  pdi_array *ca = pdi_array_check(L, 1);
  int64_t n = ca->dims[0];
  double *C = f64at(L, 1, n, n), *Bt = f64at(L, 2, n, n), *BDt = f64at(L, 3, n, n);
  double *D = f64at(L, 4, n, 0);
  int lapack = lua_toboolean(L, 5);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = i + 1; j < n; j++) {
      double s = (C[i * n + j] + C[j * n + i]) / 2;
      C[i * n + j] = C[j * n + i] = s;
    }
  /* LAPACK's minimum workspace for jobz = 'V': 1 + 6n + 2n^2 doubles and
   * 3 + 5n integers; tred2 needs n^2 + 2n */
  size_t lwork = (size_t)(1 + 6 * n + 2 * n * n), liwork = (size_t)(3 + 5 * n);
  size_t need = lwork * sizeof(double) + liwork * sizeof(lapack_int);
  double *work = (double *)workspace(L, need);
  lapack_int *iwork = (lapack_int *)(work + lwork);
  int done = 0;
  if (!lapack) {
    double *V = work, *e = work + n * n, *gv = work + n * n + n;
    memcpy(V, C, (size_t)(n * n) * sizeof(double));
    tred2(n, V, D, e, gv);
    for (int64_t i = 0; i < n; i++)            /* Bt = Q^T */
      for (int64_t j = 0; j < n; j++) Bt[j * n + i] = V[i * n + j];
    done = tql2(n, Bt, D, e) == 0;
  }
  if (!done) {
    const pdi_blas *b = pdi_blas_need(L, "pd.optim cma_eigen");
    memcpy(Bt, C, (size_t)(n * n) * sizeof(double));
    /* Row-major C read column-major is the same symmetric matrix; column k
     * of the column-major result (eigenvector k) is row k of Bt. */
    lapack_int info = b->LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)n, Bt, (lapack_int)n, D,
                                             work, (lapack_int)lwork, iwork, (lapack_int)liwork);
    if (info != 0) return luaL_error(L, "cma_eigen: LAPACK dsyevd failed (info %d)", (int)info);
  }
  for (int64_t k = 0; k < n; k++) {
    double d = sqrt(D[k] > 0 ? D[k] : 1e-300);
    D[k] = d;
    for (int64_t i = 0; i < n; i++) BDt[k * n + i] = d * Bt[k * n + i];
  }
  double dmin = HUGE_VAL, dmax = -HUGE_VAL;
  for (int64_t k = 0; k < n; k++) {
    if (D[k] < dmin) dmin = D[k];
    if (D[k] > dmax) dmax = D[k];
  }
  lua_pushnumber(L, dmin);
  lua_pushnumber(L, dmax);
  return 2;
}

/* pycma's BoundTransform for one coordinate with both bounds finite: the
 * identity on [lb + al, ub - au], quadratic in the margins, reflected and
 * periodic outside (cmaes.lua's box, which the specs test), with the
 * margins al = min((ub - lb)/2, (1 + |lb|)/20), au likewise. */
static double box1(double x, double lb, double ub, double al, double au) {
  if (x < lb - 2 * al - (ub - lb) / 2 || x > ub + 2 * au + (ub - lb) / 2) {
    double r = 2 * (ub - lb + al + au);
    double s = lb - 2 * al - (ub - lb) / 2;
    x = x - r * floor((x - s) / r);
  }
  if (x > ub + au) x = x - 2 * (x - ub - au);
  if (x < lb - al) x = x + 2 * (lb - al - x);
  if (x < lb + al) {
    double t = x - (lb - al);
    x = lb + t * t / 4 / al;
  } else if (x > ub - au) {
    double t = x - (ub + au);
    x = ub - t * t / 4 / au;
  }
  return x;
}

/* optim.cma_ask(Z, BDt, Y, X, mean, sigma, sv [, box]) -> points: one
 * generation's samples.  Z (lambda x n standard normals), BDt (n x n), Y
 * and X (lambda x n, overwritten), mean and sv (n): Y = Z BDt, so row k is
 * y_k = B D z_k (one gemm); X row k is the genotype mean + sigma sv .* y_k
 * (sv: pycma's coordinate-wise scaling sigma_vec) mapped by pycma's box
 * transformation into [lo, hi], the rows 1 and 2 of the array box
 * (-inf/inf for none), which is the identity on [ilo, ihi] (rows 3, 4);
 * rows 5 and 6 hold the margins al, au of box1 (6 x n in all).
 * Without box, X = the genotypes.  Returns the rows of X as a new list of
 * lists (the caller's to keep).
 * Stack: [Z, BDt, Y, X, mean, sigma, sv, box?] -> [points] */
static int cma_ask(lua_State *L) {
  pdi_array *za = pdi_array_check(L, 1);
  int64_t lam = za->dims[0], n = za->dims[1];
  double *Z = f64at(L, 1, lam, n), *BDt = f64at(L, 2, n, n), *Y = f64at(L, 3, lam, n);
  double *X = f64at(L, 4, lam, n), *m = f64at(L, 5, n, 0);
  double sigma = luaL_checknumber(L, 6);
  double *sv = f64at(L, 7, n, 0);
  int bounded = !lua_isnoneornil(L, 8);
  const double *lo = NULL, *hi = NULL, *il = NULL, *iu = NULL, *al = NULL, *au = NULL;
  if (bounded) {
    lo = f64at(L, 8, 6, n);
    hi = lo + n, il = lo + 2 * n, iu = lo + 3 * n, al = lo + 4 * n, au = lo + 5 * n;
  }
  const pdi_blas *b = pdi_blas_need(L, "pd.optim cma_ask");
  lua_settop(L, 8);
  PDI_STACK(L);
  if (lam > 0)
    b->cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)lam, (int)n, (int)n, 1.0, Z, (int)n,
                   BDt, (int)n, 0.0, Y, (int)n);
  for (int64_t k = 0; k < lam; k++) {
    const double *y = Y + k * n;
    double *x = X + k * n;
    for (int64_t i = 0; i < n; i++) {
      double g = m[i] + sigma * sv[i] * y[i];
      if (!bounded || (g >= il[i] && g <= iu[i])) x[i] = g;       /* the identity part */
      else if (lo[i] > -HUGE_VAL && hi[i] < HUGE_VAL) x[i] = box1(g, lo[i], hi[i], al[i], au[i]);
      else if (lo[i] > -HUGE_VAL && g < lo[i]) x[i] = lo[i] + (lo[i] - g);   /* a lone bound */
      else if (hi[i] < HUGE_VAL && g > hi[i]) x[i] = hi[i] - (g - hi[i]);
      else x[i] = g;
    }
  }
  lua_createtable(L, (int)lam, 0);                    /* [.., points] */
  for (int64_t k = 0; k < lam; k++) {
    lua_createtable(L, (int)n, 0);                    /* [.., points, x] */
    setlist(L, lua_gettop(L), (int)n, X + k * n);
    lua_rawseti(L, -2, (int)k + 1);                   /* [.., points] */
  }
  PDI_STACK_CHECK(L, 1);
  return 1;
}

typedef struct { double v; int k; } ranked;

static int cmp_ranked(const void *pa, const void *pb) {
  const ranked *a = (const ranked *)pa, *b = (const ranked *)pb;
  if (a->v != b->v) return a->v < b->v ? -1 : 1;
  return (a->k > b->k) - (a->k < b->k);
}

/* optim.cma_rank(F) -> order, sorted: the indices 1..#F of the values F (a
 * list of numbers, no NaN) from best (smallest) to worst, ties in sample
 * order, and the values in that order.  Stack: [F] -> [order, sorted] */
static int cma_rank(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int lam = (int)lua_rawlen(L, 1);
  ranked *r = (ranked *)workspace(L, (size_t)lam * sizeof(ranked));
  for (int k = 0; k < lam; k++) {
    lua_rawgeti(L, 1, k + 1);                         /* [F, v] */
    r[k].v = luaL_checknumber(L, -1);
    r[k].k = k + 1;
    lua_pop(L, 1);                                    /* [F] */
  }
  qsort(r, (size_t)lam, sizeof *r, cmp_ranked);
  lua_settop(L, 1);
  PDI_STACK(L);
  lua_createtable(L, lam, 0);                         /* [F, order] */
  lua_createtable(L, lam, 0);                         /* [F, order, sorted] */
  for (int k = 0; k < lam; k++) {
    lua_pushinteger(L, r[k].k);
    lua_rawseti(L, -3, k + 1);
    lua_pushnumber(L, r[k].v);
    lua_rawseti(L, -2, k + 1);
  }
  PDI_STACK_CHECK(L, 2);
  return 2;
}

/* A number field of the table at idx, or raise.  Stack: unchanged. */
static double numfield(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);                            /* [.., v] */
  int ok;
  double v = lua_tonumberx(L, -1, &ok);
  if (!ok) luaL_error(L, "cma_tell: field %s is not a number", k);
  lua_pop(L, 1);                                      /* [..] */
  return v;
}

/* The f64 array field k of the table at idx, r x c (c == 0: r elements),
 * or NULL when the field is nil and optional.  The table keeps the array
 * alive.  Stack: unchanged. */
static double *arrfield(lua_State *L, int idx, const char *k, int64_t r, int64_t c, int optional) {
  lua_getfield(L, idx, k);                            /* [.., a] */
  double *p = NULL;
  if (!(optional && lua_isnil(L, -1))) {
    if (!pdi_array_test(L, -1)) luaL_error(L, "cma_tell: field %s is not an array", k);
    p = f64at(L, lua_gettop(L), r, c);
  }
  lua_pop(L, 1);                                      /* [..] */
  return p;
}

/* optim.cma_tell(es, Y, order)
 *   -> ps2, moved, tolx, tolfacupx, noeffectcoord, noeffectaxis
 * The O(n^2) and O(n) part of a CMA-ES update (pycma's (mu_W, lambda)-aCMA
 * rule), on the fields of the strategy table es (stdlib/pd/optim/cmaes.lua):
 * f64 arrays C (n x n, updated), Bt (eigenvectors as rows), and of n
 * elements D, sv (pycma's sigma_vec), mean, ps, pc, dC (receives diag(C)),
 * maxstd (or nil), stds0, xref (the tolxstagnation reference); the list
 * weights (lambda, by rank); numbers mu, sigma, sigma0, cs, cc, mueff, c1,
 * cmu, damps, chiN, countiter (counting this one), tolx, tolfacupx,
 * xstag_delta.  Y: the lambda x n steps y_k = (g_k - m) / (sigma sv) in
 * sample order; order: the sample index of each rank (cma_rank).
 *   m     <- m + sigma sv .* y_w,      y_w = sum_{r <= mu} w_r y_r:lambda
 *   ps    <- (1 - cs) ps + sqrt(cs (2 - cs) mueff) C^(-1/2) y_w
 *   pc    <- (1 - cc) pc + hsig sqrt(cc (2 - cc) mueff) y_w
 *   C     <- (1 - c1a - cmu sum w) C + c1 pc pc^T + cmu sum_r w_r' y_r y_r^T
 *   sigma <- sigma exp(clip((cs / damps) (|ps| / chiN - 1), -1, 1))
 * with w_r' = w_r n / (|C^(-1/2) y_r| + 1e-9)^2 for the negative weights
 * (pycma's sampler.update), c1a = c1 (1 - (1 - hsig) cc (2 - cc)), and hsig
 * the stall flag |ps|^2 / (1 - (1 - cs)^(2 g)) / n - 1 < 1 + 4 / (n + 1).
 * Then the coordinate-wise standard deviations s_k = sigma sv_k sqrt(C_kk)
 * are held at most maxstd_k by scaling sv_k (pycma's _stds_into_limits, a
 * slack of exp(1e-4) in the first two iterations), and es.sigma and
 * es.top_std (the largest s_k) are set.  xref takes the mean when they are
 * further apart than xstag_delta (moved: true).  The flags are pycma's
 * tests on the new state: all s_k and |sigma sv_k pc_k| below tolx; some
 * s_k above sigma0 stds0_k tolfacupx; some m_k + 0.2 s_k == m_k; and
 * m + 0.1 sigma D_i sv .* b_i == m for the eigenvector b_i, i = countiter
 * mod n (0-based).
 * Stack: [es, Y, order] -> [ps2, moved, tolx, tolfacupx, noeffectcoord, noeffectaxis] */
static int cma_tell(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  pdi_array *ya = pdi_array_check(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  PDI_STACK(L);
  int64_t lam = ya->dims[0], n = ya->dims[1];
  double *Y = f64at(L, 2, lam, n);
  double *C = arrfield(L, 1, "C", n, n, 0), *Bt = arrfield(L, 1, "Bt", n, n, 0);
  double *D = arrfield(L, 1, "D", n, 0, 0), *sv = arrfield(L, 1, "sv", n, 0, 0);
  double *m = arrfield(L, 1, "mean", n, 0, 0), *ps = arrfield(L, 1, "ps", n, 0, 0);
  double *pc = arrfield(L, 1, "pc", n, 0, 0), *dC = arrfield(L, 1, "dC", n, 0, 0);
  double *s0 = arrfield(L, 1, "stds0", n, 0, 0), *xr = arrfield(L, 1, "xref", n, 0, 0);
  double *mx = arrfield(L, 1, "maxstd", n, 0, 1);
  int mu = (int)numfield(L, 1, "mu");
  if (mu < 1 || mu > lam) return luaL_error(L, "cma_tell: mu out of range");
  double sigma = numfield(L, 1, "sigma"), sigma0 = numfield(L, 1, "sigma0");
  double cs = numfield(L, 1, "cs"), cc = numfield(L, 1, "cc"), mueff = numfield(L, 1, "mueff");
  double c1 = numfield(L, 1, "c1"), cmu = numfield(L, 1, "cmu"), damps = numfield(L, 1, "damps");
  double chiN = numfield(L, 1, "chiN"), iter = numfield(L, 1, "countiter");
  double tolx = numfield(L, 1, "tolx"), tolfacupx = numfield(L, 1, "tolfacupx");
  double xdelta = numfield(L, 1, "xstag_delta");
  const pdi_blas *b = pdi_blas_need(L, "pd.optim cma_tell");
  /* Ys and W have one row more than the population: pc and c1 pc, so that
   * one gemm does rank one and rank mu (pycma's sampler.update does the
   * same with the vectors [pc] + pop) */
  size_t ln = (size_t)(lam * n), l1 = ln + (size_t)n;
  double *w = scratch(L, (size_t)lam + 3 * (size_t)n + 2 * l1 + ln);
  double *yw = w + lam, *t = yw + n, *zw = t + n, *Ys = zw + n, *W = Ys + l1, *Zn = W + l1;
  lua_getfield(L, 1, "weights");                      /* [es, Y, order, weights] */
  if (!lua_istable(L, -1)) return luaL_error(L, "cma_tell: field weights is not a list");
  getlist(L, lua_gettop(L), (int)lam, w);
  lua_pop(L, 1);                                      /* [es, Y, order] */
  for (int64_t r = 0; r < lam; r++) {                 /* the steps in rank order */
    lua_rawgeti(L, 3, (int)r + 1);                    /* [es, Y, order, k] */
    lua_Integer k = lua_tointeger(L, -1);
    lua_pop(L, 1);                                    /* [es, Y, order] */
    if (k < 1 || k > lam) return luaL_argerror(L, 3, "sample index out of range");
    memcpy(Ys + r * n, Y + (k - 1) * n, (size_t)n * sizeof(double));
  }

  /* mean */
  for (int64_t i = 0; i < n; i++) yw[i] = 0.0;
  for (int r = 0; r < mu; r++)
    for (int64_t i = 0; i < n; i++) yw[i] += w[r] * Ys[r * n + i];
  for (int64_t i = 0; i < n; i++) m[i] += sigma * sv[i] * yw[i];
  /* step-size path: zw = C^(-1/2) y_w = Bt^T (D^-1 Bt y_w) */
  b->cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)n, 1.0, Bt, (int)n, yw, 1, 0.0, t, 1);
  for (int64_t k = 0; k < n; k++) t[k] /= D[k];
  b->cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)n, 1.0, Bt, (int)n, t, 1, 0.0, zw, 1);
  double a = sqrt(cs * (2 - cs) * mueff), ps2 = 0.0;
  for (int64_t i = 0; i < n; i++) {
    ps[i] = (1 - cs) * ps[i] + a * zw[i];
    ps2 += ps[i] * ps[i];
  }
  int hsig = ps2 / (1 - pow(1 - cs, 2 * iter)) / (double)n - 1 < 1 + 4.0 / ((double)n + 1);
  /* covariance path */
  double bc = hsig * sqrt(cc * (2 - cc) * mueff);
  for (int64_t i = 0; i < n; i++) pc[i] = (1 - cc) * pc[i] + bc * yw[i];
  /* covariance: decay, rank mu with the active weights (their lengths
   * |C^(-1/2) y_r| = |D^-1 Bt y_r| from one gemm), rank one */
  double c1a = c1 * (1 - (1 - hsig) * cc * (2 - cc)), wsum = 0.0;
  int64_t first_neg = lam;
  for (int64_t r = 0; r < lam; r++) {
    wsum += w[r];
    if (w[r] < 0 && first_neg == lam) first_neg = r;
  }
  int64_t nneg = lam - first_neg;                     /* weights fall with the rank */
  if (nneg > 0)
    b->cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nneg, (int)n, (int)n, 1.0,
                   Ys + first_neg * n, (int)n, Bt, (int)n, 0.0, Zn, (int)n);
  for (int64_t r = 0; r < lam; r++) {
    double wr = w[r];
    const double *y = Ys + r * n;
    if (wr < 0) {
      const double *z = Zn + (r - first_neg) * n;
      double s2 = 0.0;
      for (int64_t k = 0; k < n; k++) s2 += (z[k] / D[k]) * (z[k] / D[k]);
      double nz = sqrt(s2) + 1e-9;
      wr *= (double)n / (nz * nz);
    }
    for (int64_t i = 0; i < n; i++) W[r * n + i] = cmu * wr * y[i];
  }
  for (int64_t i = 0; i < n; i++) {
    Ys[lam * n + i] = pc[i];
    W[lam * n + i] = c1 * pc[i];
  }
  b->cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)n, (int)lam + 1, 1.0, Ys, (int)n,
                 W, (int)n, 1 - c1a - cmu * wsum, C, (int)n);
  for (int64_t i = 0; i < n; i++) dC[i] = C[i * n + i];

  /* step size (CSA), the log-step clipped to +-1 as pycma does */
  double ls = (cs / damps) * (sqrt(ps2) / chiN - 1);
  if (ls > 1) ls = 1; else if (ls < -1) ls = -1;
  sigma *= exp(ls);
  /* standard deviations into [0, maxstd]; termination flags */
  double slack = iter <= 2 ? exp(1e-4) : 1, top = 0.0;
  int ftolx = 1, fup = 0, fcoord = 0, faxis = 1;
  for (int64_t k = 0; k < n; k++) {
    double sd = sigma * sv[k] * sqrt(dC[k]);
    if (mx && sd > mx[k] * slack) {
      sv[k] *= mx[k] / sd;
      sd = sigma * sv[k] * sqrt(dC[k]);
    }
    if (sd > top) top = sd;
    if (sd >= tolx || fabs(sigma * sv[k] * pc[k]) >= tolx) ftolx = 0;
    if (sd > sigma0 * s0[k] * tolfacupx) fup = 1;
    volatile double moved = m[k] + 0.2 * sd;          /* no excess precision */
    if (moved == m[k]) fcoord = 1;
  }
  int64_t ax = (int64_t)fmod(iter, (double)n);
  for (int64_t k = 0; k < n; k++) {
    volatile double moved = m[k] + 0.1 * sigma * D[ax] * sv[k] * Bt[ax * n + k];
    if (moved != m[k]) { faxis = 0; break; }
  }
  /* the mean's movement, for tolxstagnation */
  double d2 = 0.0;
  for (int64_t i = 0; i < n; i++) d2 += (xr[i] - m[i]) * (xr[i] - m[i]);
  int xmoved = sqrt(d2) > xdelta;
  if (xmoved) memcpy(xr, m, (size_t)n * sizeof(double));

  lua_pushnumber(L, sigma);
  lua_setfield(L, 1, "sigma");
  lua_pushnumber(L, top);
  lua_setfield(L, 1, "top_std");
  lua_pushnumber(L, ps2);
  lua_pushboolean(L, xmoved);
  lua_pushboolean(L, ftolx);
  lua_pushboolean(L, fup);
  lua_pushboolean(L, fcoord);
  lua_pushboolean(L, faxis);
  PDI_STACK_CHECK(L, 6);
  return 6;
}

/* ======================================================================
 * PSO and GA
 * ====================================================================== */

/* The generator (pd.random) at idx.  Stack: unchanged. */
static pdi_rng *rngat(lua_State *L, int idx) {
  return (pdi_rng *)luaL_checkudata(L, idx, PDI_RANDOM_MT);
}

/* optim.pso_move(g, X, V, P, s, l, B, c, w): SPSO-2011's move of particle
 * s (1-based row of the S x n arrays X, V, P: positions, velocities,
 * personal bests), whose best informant is l (l == s: none better than
 * itself).  Centre G = x + c (p + p_l - 2x) / 3, or x + c (p - x) / 2 when
 * l == s; x' = G + r d / |d| with d n normals from g and r = |G - x| u,
 * u uniform from g (drawn after d, as pso.lua did one by one); then
 * v <- w v + x' - x, x <- x + v, and a coordinate outside [lo, hi] (rows
 * 1 and 2 of the 2 x n array B) is set on the bound with v <- -0.5 v.
 * Stack: [g, X, V, P, s, l, B, c, w] -> [] */
static int pso_move(lua_State *L) {
  pdi_rng *r = rngat(L, 1);
  pdi_array *xa = pdi_array_check(L, 2);
  int64_t S = xa->dims[0], n = xa->dims[1];
  double *X = f64at(L, 2, S, n), *V = f64at(L, 3, S, n), *P = f64at(L, 4, S, n);
  lua_Integer s = luaL_checkinteger(L, 5), l = luaL_checkinteger(L, 6);
  luaL_argcheck(L, s >= 1 && s <= S, 5, "particle out of range");
  luaL_argcheck(L, l >= 1 && l <= S, 6, "informant out of range");
  double *B = f64at(L, 7, 2, n);
  double c = luaL_checknumber(L, 8), w = luaL_checknumber(L, 9);
  double *G = scratch(L, (size_t)(2 * n)), *d = G + n;
  double *x = X + (s - 1) * n, *v = V + (s - 1) * n, *p = P + (s - 1) * n, *pl = P + (l - 1) * n;
  if (l == s) for (int64_t i = 0; i < n; i++) G[i] = x[i] + c * (p[i] - x[i]) / 2;
  else for (int64_t i = 0; i < n; i++) G[i] = x[i] + c * (p[i] + pl[i] - 2 * x[i]) / 3;
  double rad = 0.0, dn = 0.0;
  for (int64_t i = 0; i < n; i++) rad += (G[i] - x[i]) * (G[i] - x[i]);
  rad = sqrt(rad);
  for (int64_t i = 0; i < n; i++) { d[i] = pdi_rng_normal(r); dn += d[i] * d[i]; }
  dn = sqrt(dn);
  double rr = rad * pdi_rng_uniform(r) / (dn > 0 ? dn : 1);
  const double *lo = B, *hi = B + n;
  for (int64_t i = 0; i < n; i++) {
    double xp = G[i] + rr * d[i];
    v[i] = w * v[i] + xp - x[i];
    x[i] = x[i] + v[i];
    if (x[i] < lo[i]) { x[i] = lo[i]; v[i] = -0.5 * v[i]; }
    else if (x[i] > hi[i]) { x[i] = hi[i]; v[i] = -0.5 * v[i]; }
  }
  return 0;
}

/* Bounded SBX (Deb & Agrawal 1995) on genes a, b in place, as ga.lua's
 * sbx did it: per gene, with probability 1/2 and when the parents differ
 * by more than 1e-14, the two children of spread factor beta_q for one
 * uniform r, clipped to [xl, xu], swapped with probability 1/2. */
static void sbx(pdi_rng *r, int64_t n, double *a, double *b, const double *slo, const double *shi,
                double eta) {
  for (int64_t i = 0; i < n; i++) {
    if (pdi_rng_uniform(r) <= 0.5) {
      double x1 = a[i], x2 = b[i];
      if (fabs(x1 - x2) > 1e-14) {
        if (x1 > x2) { double t = x1; x1 = x2; x2 = t; }
        double xl = slo[i], xu = shi[i];
        double u = pdi_rng_uniform(r);
        double beta = 1 + 2 * (x1 - xl) / (x2 - x1);
        double alpha = 2 - pow(beta, -(eta + 1));
        double bq = u <= 1 / alpha ? pow(u * alpha, 1 / (eta + 1)) : pow(1 / (2 - u * alpha), 1 / (eta + 1));
        double c1 = 0.5 * (x1 + x2 - bq * (x2 - x1));
        beta = 1 + 2 * (xu - x2) / (x2 - x1);
        alpha = 2 - pow(beta, -(eta + 1));
        bq = u <= 1 / alpha ? pow(u * alpha, 1 / (eta + 1)) : pow(1 / (2 - u * alpha), 1 / (eta + 1));
        double c2 = 0.5 * (x1 + x2 + bq * (x2 - x1));
        c1 = fmin(fmax(c1, xl), xu);
        c2 = fmin(fmax(c2, xl), xu);
        if (pdi_rng_uniform(r) <= 0.5) { a[i] = c2; b[i] = c1; }
        else { a[i] = c1; b[i] = c2; }
      }
    }
  }
}

/* Bounded polynomial mutation (Deb & Goyal 1996) of x in place: each gene
 * with probability pm. */
static void mutate(pdi_rng *r, int64_t n, double *x, const double *slo, const double *shi, double eta,
                   double pm) {
  double mp = 1 / (eta + 1);
  for (int64_t i = 0; i < n; i++) {
    if (pdi_rng_uniform(r) <= pm) {
      double xl = slo[i], xu = shi[i];
      double d1 = (x[i] - xl) / (xu - xl), d2 = (xu - x[i]) / (xu - xl);
      double u = pdi_rng_uniform(r), dq;
      if (u < 0.5) dq = pow(2 * u + (1 - 2 * u) * pow(1 - d1, eta + 1), mp) - 1;
      else dq = 1 - pow(2 * (1 - u) + 2 * (u - 0.5) * pow(1 - d2, eta + 1), mp);
      x[i] = fmin(fmax(x[i] + dq * (xu - xl), xl), xu);
    }
  }
}

/* One individual of a population being sorted: its value and its row. */
typedef struct {
  double f;
  int64_t row;
} ga_rank;

/* Ascending value, ties by row: a total order, so the sort is the same
 * whatever qsort does with equal keys. */
static int ga_rank_cmp(const void *p, const void *q) {
  const ga_rank *a = p, *b = q;
  if (a->f < b->f) return -1;
  if (a->f > b->f) return 1;
  return (a->row > b->row) - (a->row < b->row);
}

/* Binary tournament among the m individuals of rank[]: two uniform draws
 * of a rank, the lower value wins, the first drawn on a tie.  Returns the
 * winner's row. */
static int64_t ga_tournament(pdi_rng *r, const ga_rank *rank, int64_t m) {
  const ga_rank *a = &rank[pdi_rng_below(r, (uint64_t)m)];
  const ga_rank *b = &rank[pdi_rng_below(r, (uint64_t)m)];
  return b->f < a->f ? b->row : a->row;
}

/* optim.ga_offspring(g, X, F, N, elites, B, eta_c, pc, eta_m, pm)
 *   -> Y, Fe, out
 * One island's next generation.  X is the island's m x n population (an
 * f64 array, a row per individual) and F the list of their m values.  With
 * the individuals ranked by value (ties by row), Y (N x n) starts with
 * the best e = min(elites, m) of them, whose values are Fe (a list of e),
 * and goes on with N - e children made in pairs: each parent by a binary
 * tournament (ga_tournament), then with probability pc (one uniform from
 * g) bounded SBX of index eta_c, polynomial mutation of index eta_m and
 * per-gene probability pm of the first child and then of the second, each
 * clipped to the box; when one child is left to make, the pair's second is
 * dropped.  out holds the children again, as new lists, for the caller
 * to hand out.  B is a 4 x n array: the operators' scale (rows 1, 2: xl,
 * xu) and the box (rows 3, 4: lo, hi; infinite allowed).
 * Stack: [g, X, F, N, elites, B, eta_c, pc, eta_m, pm] -> [Y, Fe, out] */
static int ga_offspring(lua_State *L) {
  pdi_rng *r = rngat(L, 1);
  pdi_array *xa = pdi_array_check(L, 2);
  luaL_argcheck(L, xa->ndim == 2, 2, "needs a 2-D array");
  int64_t m = xa->dims[0], n = xa->dims[1];
  double *X = f64at(L, 2, m, n);
  luaL_argcheck(L, m >= 1 && lua_rawlen(L, 3) == (size_t)m, 3, "needs a value per row of X");
  lua_Integer N = luaL_checkinteger(L, 4), elites = luaL_checkinteger(L, 5);
  luaL_argcheck(L, N >= 1 && N <= INT_MAX, 4, "needs a positive size");
  double *B = f64at(L, 6, 4, n);
  double eta_c = luaL_checknumber(L, 7), pc = luaL_checknumber(L, 8);
  double eta_m = luaL_checknumber(L, 9), pm = luaL_checknumber(L, 10);
  lua_settop(L, 10);
  PDI_STACK(L);
  int64_t e = elites < 0 ? 0 : elites > m ? m : elites;
  if (e > N) e = N;
  /* workspace: the values, the ranks and two children */
  double *F = scratch(L, (size_t)(m + 2 * n) + (size_t)m * sizeof(ga_rank) / sizeof(double) + 1);
  double *a = F + m, *b = a + n;
  ga_rank *rank = (ga_rank *)(b + n);
  getlist(L, 3, (int)m, F);
  for (int64_t k = 0; k < m; k++) { rank[k].f = F[k]; rank[k].row = k; }
  qsort(rank, (size_t)m, sizeof *rank, ga_rank_cmp);
  int64_t dims[2] = { N, n };
  double *Y = (double *)pdi_array_new(L, PDI_F64, 2, dims)->data;   /* [.., Y] */
  lua_createtable(L, (int)e, 0);                                    /* [.., Y, Fe] */
  for (int64_t k = 0; k < e; k++) {
    memcpy(Y + k * n, X + rank[k].row * n, (size_t)n * sizeof(double));
    lua_pushnumber(L, rank[k].f);
    lua_rawseti(L, -2, (lua_Integer)(k + 1));
  }
  lua_createtable(L, (int)(N - e), 0);                              /* [.., Y, Fe, out] */
  int out = lua_gettop(L);
  const double *slo = B, *shi = B + n, *lo = B + 2 * n, *hi = B + 3 * n;
  for (int64_t made = e; made < N;) {
    int64_t pa = ga_tournament(r, rank, m), pb = ga_tournament(r, rank, m);
    memcpy(a, X + pa * n, (size_t)n * sizeof(double));
    memcpy(b, X + pb * n, (size_t)n * sizeof(double));
    if (pdi_rng_uniform(r) <= pc) sbx(r, n, a, b, slo, shi, eta_c);
    mutate(r, n, a, slo, shi, eta_m, pm);
    mutate(r, n, b, slo, shi, eta_m, pm);
    for (int64_t i = 0; i < n; i++) {
      if (a[i] < lo[i]) a[i] = lo[i]; else if (a[i] > hi[i]) a[i] = hi[i];
      if (b[i] < lo[i]) b[i] = lo[i]; else if (b[i] > hi[i]) b[i] = hi[i];
    }
    for (int c = 0; c < 2 && made < N; c++, made++) {
      const double *child = c == 0 ? a : b;
      memcpy(Y + made * n, child, (size_t)n * sizeof(double));
      lua_createtable(L, (int)n, 0);                                /* [.., out, x] */
      setlist(L, out + 1, (int)n, child);
      lua_rawseti(L, out, (lua_Integer)(made - e + 1));             /* [.., out] */
    }
  }
  PDI_STACK_CHECK(L, 3);
  return 3;                                                         /* [.., Y, Fe, out] */
}

/* ======================================================================
 * shared
 * ====================================================================== */

/* optim.rows(A, ids) -> list: rows ids[1], ids[2], ... of the 2-D f64
 * array A as new lists.  Stack: [A, ids] -> [list] */
static int rows(lua_State *L) {
  pdi_array *a = pdi_array_check(L, 1);
  luaL_argcheck(L, a->ndim == 2, 1, "needs a 2-D array");
  int64_t m = a->dims[0], n = a->dims[1];
  double *A = f64at(L, 1, m, n);
  luaL_checktype(L, 2, LUA_TTABLE);
  PDI_STACK(L);
  int k = (int)lua_rawlen(L, 2);
  lua_createtable(L, k, 0);                           /* [A, ids, list] */
  for (int j = 1; j <= k; j++) {
    lua_rawgeti(L, 2, j);                             /* [A, ids, list, i] */
    lua_Integer i = lua_tointeger(L, -1);
    lua_pop(L, 1);                                    /* [A, ids, list] */
    if (i < 1 || i > m) return luaL_argerror(L, 2, "row index out of range");
    lua_createtable(L, (int)n, 0);                    /* [A, ids, list, row] */
    setlist(L, lua_gettop(L), (int)n, A + (i - 1) * n);
    lua_rawseti(L, -2, j);                            /* [A, ids, list] */
  }
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* optim.maxstd(P) -> s: the largest standard deviation of a coordinate
 * over the points of P (population variance, s2/m - (s1/m)^2), its square
 * root; 0 for no points.  P is an m x n f64 array, a list of points (each
 * a list of n numbers), or a list of blocks (f64 arrays with n columns,
 * their rows the points, summed in order: the GA's islands).
 * Stack: [P] -> [s] */
static int maxstd(lua_State *L) {
  double best = 0.0;
  pdi_array *a = pdi_array_test(L, 1);
  if (a) {
    int64_t m = a->dims[0], n = a->ndim == 2 ? a->dims[1] : 1;
    double *A = f64at(L, 1, m, a->ndim == 2 ? n : 0);
    for (int64_t i = 0; i < n && m > 0; i++) {
      double s1 = 0.0, s2 = 0.0;
      for (int64_t k = 0; k < m; k++) { double v = A[k * n + i]; s1 += v; s2 += v * v; }
      double var = s2 / (double)m - (s1 / (double)m) * (s1 / (double)m);
      if (var > best) best = var;
    }
    lua_pushnumber(L, sqrt(best));
    return 1;
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  int k = (int)lua_rawlen(L, 1);
  if (k == 0) { lua_pushnumber(L, 0.0); return 1; }
  lua_rawgeti(L, 1, 1);                               /* [P, p1] */
  pdi_array *b1 = pdi_array_test(L, 2);
  int64_t n = b1 ? (b1->ndim == 2 ? b1->dims[1] : 0) : (int64_t)lua_rawlen(L, 2);
  lua_settop(L, 1);
  double *s1 = scratch(L, (size_t)(3 * n)), *s2 = s1 + n, *v = s2 + n;
  for (int64_t i = 0; i < n; i++) s1[i] = s2[i] = 0.0;
  int64_t m = 0;
  for (int j = 1; j <= k; j++) {
    lua_rawgeti(L, 1, j);                             /* [P, pj] */
    if (b1) {
      pdi_array *bj = pdi_array_check(L, 2);
      luaL_argcheck(L, bj->ndim == 2 && bj->dims[1] == n, 1, "blocks need the same number of columns");
      const double *R = f64at(L, 2, bj->dims[0], n);
      for (int64_t r = 0; r < bj->dims[0]; r++, m++)
        for (int64_t i = 0; i < n; i++) { double x = R[r * n + i]; s1[i] += x; s2[i] += x * x; }
    } else {
      getlist(L, 2, (int)n, v);
      for (int64_t i = 0; i < n; i++) { s1[i] += v[i]; s2[i] += v[i] * v[i]; }
      m++;
    }
    lua_pop(L, 1);                                    /* [P] */
  }
  for (int64_t i = 0; i < n && m > 0; i++) {
    double var = s2[i] / (double)m - (s1[i] / (double)m) * (s1[i] / (double)m);
    if (var > best) best = var;
  }
  lua_pushnumber(L, sqrt(best));
  return 1;
}

/* ======================================================================
 * opening
 * ====================================================================== */

static const luaL_Reg optim_funcs[] = {
  {"cma_eigen", cma_eigen}, {"cma_ask", cma_ask}, {"cma_rank", cma_rank}, {"cma_tell", cma_tell},
  {"pso_move", pso_move}, {"ga_offspring", ga_offspring}, {"rows", rows}, {"maxstd", maxstd},
  {NULL, NULL},
};

/* pd.core.optim: the kernels, each a C closure with no workspace yet.
 * pd.core.array is opened first: the kernels make and read arrays.
 * Stack: [] -> [optim] */
int luaopen_pd_core_optim(lua_State *L) {
  PDI_STACK(L);
  luaL_requiref(L, "pd.core.array", luaopen_pd_core_array, 0);  /* [array] */
  lua_pop(L, 1);                                      /* [] */
  luaL_newlibtable(L, optim_funcs);                   /* [optim] */
  for (const luaL_Reg *r = optim_funcs; r->name; r++) {
    lua_pushnil(L);                                   /* [optim, nil]: no workspace yet */
    lua_pushcclosure(L, r->func, 1);                  /* [optim, f] */
    lua_setfield(L, -2, r->name);                     /* [optim] */
  }
  PDI_STACK_CHECK(L, 1);
  return 1;
}
