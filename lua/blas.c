/*
 * blas.c: the lazy loader for OpenBLAS and LAPACKE (contract: blas.h).
 *
 * libopenblas is opened RTLD_GLOBAL before liblapacke so that LAPACKE's
 * LAPACK calls (dgetrf_ ...) resolve to OpenBLAS's, as they did when both
 * were linked into pdlua (on Debian liblapack.so.3 is OpenBLAS's anyway).
 */
#include "blas.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pdi_blas table;                 /* filled once, read-only after */
static const pdi_blas *loaded;         /* &table on success, NULL on failure */
static char why_buf[512];              /* the reason on failure */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static volatile int done;              /* set at the end of load() */

/* Resolve name from lib into *slot; on failure set why_buf and return 0. */
static int sym(void *lib, const char *soname, const char *name, void *slot) {
  void *p = dlsym(lib, name);
  if (!p) {
    snprintf(why_buf, sizeof why_buf, "%s lacks %s", soname, name);
    return 0;
  }
  memcpy(slot, &p, sizeof p);          /* object pointer -> function pointer */
  return 1;
}

/* The library to open: the environment's PDLUA_OPENBLAS / PDLUA_LAPACKE
 * (a soname or a path: another build, or a missing one in the specs), else
 * the build's default. */
static const char *soname(const char *env, const char *dflt) {
  const char *s = getenv(env);
  return s && *s ? s : dflt;
}

static void load(void) {
  const char *obname = soname("PDLUA_OPENBLAS", PDI_OPENBLAS_SONAME);
  const char *lkname = soname("PDLUA_LAPACKE", PDI_LAPACKE_SONAME);
  void *ob = dlopen(obname, RTLD_NOW | RTLD_GLOBAL);
  if (!ob) {
    snprintf(why_buf, sizeof why_buf, "cannot load %s (Debian: libopenblas0): %s", obname, dlerror());
    done = 1;
    return;
  }
  void *lk = dlopen(lkname, RTLD_NOW | RTLD_LOCAL);
  if (!lk) {
    snprintf(why_buf, sizeof why_buf, "cannot load %s (Debian: liblapacke): %s", lkname, dlerror());
    done = 1;
    return;
  }
#define B(f) sym(ob, obname, #f, &table.f)
#define L(f) sym(lk, lkname, #f, &table.f)
  if (B(cblas_ddot) && B(cblas_dsdot) && B(cblas_dgemm) && B(cblas_sgemm) &&
      B(cblas_dgemv) && B(cblas_sgemv) && B(cblas_dger) && B(cblas_sger) &&
      L(LAPACKE_dsyevd) && L(LAPACKE_dsyevd_work) && L(LAPACKE_dpotrf) && L(LAPACKE_dgesv) &&
      L(LAPACKE_dgetrf) && L(LAPACKE_dgetri) &&
      B(openblas_set_num_threads) && B(openblas_get_num_threads) && B(openblas_get_config)) {
    table.api = PDI_BLAS_API;
    loaded = &table;
  }
#undef B
#undef L
  done = 1;
}

const pdi_blas *pdi_blas_get(const char **why) {
  pthread_once(&once, load);
  if (!loaded && why) *why = why_buf;
  return loaded;
}

const pdi_blas *pdi_blas_need(lua_State *L, const char *what) {
  const char *why = NULL;
  const pdi_blas *b = pdi_blas_get(&why);
  if (!b) luaL_error(L, "%s: BLAS/LAPACK not available: %s", what, why);
  return b;
}

int pdi_blas_loaded(void) { return done && loaded != NULL; }
