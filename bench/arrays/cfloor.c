/*
 * cfloor.c: the floor that bench/arrays/bench.lua compares pd.array with.
 *
 * Plain C loops compiled with the project's own flags (what a C programmer
 * would write), and OpenBLAS / LAPACKE called directly.  Each line printed
 * is "name seconds" (best of the repetitions) or "name value" for rates.
 * The element-wise cases that make a new array malloc and free it each
 * time, as `a + b` in Lua must; the in-place ones write into existing
 * memory.  Usage: bench_arrays_c [n] [which]   (which: "elem", "blas",
 * "all"; default n = 10^7, all).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <lapacke.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static volatile double sink;

#define BEST(name, reps, body)                         \
  do {                                                 \
    double best_ = 1e30;                               \
    for (int r_ = 0; r_ < (reps); r_++) {              \
      double t0_ = now();                              \
      body;                                            \
      double t_ = now() - t0_;                         \
      if (t_ < best_) best_ = t_;                      \
    }                                                  \
    printf("%s %.6f\n", name, best_);                  \
    fflush(stdout);                                    \
  } while (0)

static void elementwise(long n) {
  double *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
  for (long i = 0; i < n; i++) { x[i] = 1.0 + (double)(i % 1000) * 1e-3; y[i] = 2.0 - (double)(i % 7) * 0.1; }
  const int R = 5;
  BEST("add", R, {
    double *z = malloc((size_t)n * sizeof *z);
    for (long i = 0; i < n; i++) z[i] = x[i] + y[i];
    sink = z[n / 2];
    free(z);
  });
  BEST("mul_scalar", R, {
    double *z = malloc((size_t)n * sizeof *z);
    for (long i = 0; i < n; i++) z[i] = x[i] * 2.5;
    sink = z[n / 3];
    free(z);
  });
  BEST("exp", R, {
    double *z = malloc((size_t)n * sizeof *z);
    for (long i = 0; i < n; i++) z[i] = exp(x[i]);
    sink = z[n / 3];
    free(z);
  });
  BEST("add_inplace", R, {
    for (long i = 0; i < n; i++) y[i] += x[i];
    sink = y[n / 2];
  });
  BEST("sum", R, {
    double s = 0;
    for (long i = 0; i < n; i++) s += x[i];
    sink = s;
  });
  BEST("max", R, {
    double m = x[0];
    for (long i = 1; i < n; i++) if (x[i] > m) m = x[i];
    sink = m;
  });
  BEST("norm", R, {
    double s = 0;
    for (long i = 0; i < n; i++) s += x[i] * x[i];
    sink = sqrt(s);
  });
  BEST("dot", R, { sink = cblas_ddot((int)n, x, 1, y, 1); });
  free(x);
  free(y);
}

static void blas(void) {
  int n = 1000;
  double *a = malloc(sizeof(double) * n * n), *b = malloc(sizeof(double) * n * n),
         *c = malloc(sizeof(double) * n * n);
  for (long i = 0; i < (long)n * n; i++) { a[i] = sin((double)i); b[i] = cos((double)i); }
  double t = 1e30;
  for (int r = 0; r < 5; r++) {
    double t0 = now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
    double dt = now() - t0;
    if (dt < t) t = dt;
  }
  printf("matmul1000 %.6f\n", t);
  printf("matmul1000_gflops %.3f\n", 2.0 * n * n * n / t * 1e-9);
  fflush(stdout);
  int sizes[2] = {100, 1000};
  for (int k = 0; k < 2; k++) {
    int m = sizes[k];
    double *s = malloc(sizeof(double) * m * m), *w = malloc(sizeof(double) * m * m), *ev = malloc(sizeof(double) * m);
    for (int i = 0; i < m; i++)
      for (int j = 0; j <= i; j++) s[i * m + j] = s[j * m + i] = sin((double)(i * m + j)) + (i == j ? m : 0);
    int reps = m == 100 ? 20 : 3;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
      double t0 = now();
      memcpy(w, s, sizeof(double) * m * m);      /* dsyevd overwrites its input */
      if (LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', m, w, m, ev) != 0) { fprintf(stderr, "dsyevd failed\n"); exit(1); }
      double dt = now() - t0;
      if (dt < best) best = dt;
    }
    printf("eigh%d %.6f\n", m, best);
    fflush(stdout);
    free(s); free(w); free(ev);
  }
  free(a); free(b); free(c);
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 10000000L;
  const char *which = argc > 2 ? argv[2] : "all";
  if (!strcmp(which, "all") || !strcmp(which, "elem")) elementwise(n);
  if (!strcmp(which, "all") || !strcmp(which, "blas")) blas();
  return 0;
}
