/*
 * blas.h: OpenBLAS and LAPACKE, loaded on first use.
 *
 * pdlua does not link libopenblas or liblapacke: linking them cost every
 * process start (every map worker is a pdlua process) ~3 ms of relocations
 * and ~4 MB of RSS for libraries most workers never call.  Instead the first
 * call that needs BLAS or LAPACK dlopens them and fills one table of
 * function pointers (STYLE habit 9: a small versioned contract that says
 * "not available: reason" instead of failing).  Types come from the -dev
 * headers at build time (cblas.h, lapacke.h); no symbol of theirs is linked.
 *
 * The table is process-wide and filled once (pthread_once); it holds no Lua
 * state, so several states in one process share it.  Never unloaded.
 */
#ifndef PDLUA_BLAS_H
#define PDLUA_BLAS_H

#include <cblas.h>
#include <lapacke.h>

#include "compat.h"

/* Bump when a field is added or changes meaning. */
#define PDI_BLAS_API 1

/* The sonames dlopened (Debian: libopenblas0 -> libopenblas.so.0 through
 * alternatives; liblapacke -> liblapacke.so.3).  Overridable at build time
 * (-DPDI_OPENBLAS_SONAME=...) for another distribution's names, and at
 * run time by the environment variables PDLUA_OPENBLAS and PDLUA_LAPACKE. */
#ifndef PDI_OPENBLAS_SONAME
#  define PDI_OPENBLAS_SONAME "libopenblas.so.0"
#endif
#ifndef PDI_LAPACKE_SONAME
#  define PDI_LAPACKE_SONAME "liblapacke.so.3"
#endif

/* One field per entry point linalg.c and optim.c use, named as the library
 * names it. */
typedef struct pdi_blas {
  int api;                                        /* PDI_BLAS_API */
  __typeof__(cblas_ddot) *cblas_ddot;
  __typeof__(cblas_dsdot) *cblas_dsdot;
  __typeof__(cblas_dgemm) *cblas_dgemm;
  __typeof__(cblas_sgemm) *cblas_sgemm;
  __typeof__(cblas_dgemv) *cblas_dgemv;
  __typeof__(cblas_sgemv) *cblas_sgemv;
  __typeof__(cblas_dger) *cblas_dger;
  __typeof__(cblas_sger) *cblas_sger;
  __typeof__(LAPACKE_dsyevd) *LAPACKE_dsyevd;
  __typeof__(LAPACKE_dsyevd_work) *LAPACKE_dsyevd_work;   /* caller's workspace */
  __typeof__(LAPACKE_dpotrf) *LAPACKE_dpotrf;
  __typeof__(LAPACKE_dgesv) *LAPACKE_dgesv;
  __typeof__(LAPACKE_dgetrf) *LAPACKE_dgetrf;
  __typeof__(LAPACKE_dgetri) *LAPACKE_dgetri;
  void (*openblas_set_num_threads)(int n);        /* OpenBLAS's own controls */
  int (*openblas_get_num_threads)(void);
  char *(*openblas_get_config)(void);
} pdi_blas;

/* The table, loading the libraries on the first call; NULL when they (or
 * one entry point) cannot be loaded, with *why (if why is not NULL) set to
 * a static message naming the library and dlerror's reason.  Thread-safe;
 * every later call returns the same answer without locking. */
const pdi_blas *pdi_blas_get(const char **why);

/* The table, or raise "<what>: BLAS/LAPACK not available: <reason>".
 * Stack: [] -> [] (or raises) */
const pdi_blas *pdi_blas_need(lua_State *L, const char *what);

/* True when the libraries are loaded already (does not load them). */
int pdi_blas_loaded(void);

#endif
