/*
 * stub_cuda.c: a fake libcuda.so.1 for the specs, built into the test tree
 * only (build/spec/stubcuda/, spec/CMakeLists.txt).  Loaded with
 * PDLUA_CUDA_DRIVER=<build>/spec/stubcuda/libcuda.so.1; no part of pdlua
 * proper.  It exports only the driver calls gpu/loader.c resolves, under
 * the same (versioned) names.
 *
 * Environment:
 *   PDLUA_STUB_DEVICES=N  N fake devices ("pdlua stub device K", cc 9.0,
 *                         4 SMs, 1 GiB).  Unset or 0: cuInit answers
 *                         CUDA_ERROR_NO_DEVICE, the "driver present but
 *                         unusable" path.
 *   PDLUA_STUB_LOG=FILE   append one line per alloc, free, module load and
 *                         launch (parameters as the bytes received, in hex),
 *                         so a spec can check what pdlua marshalled.
 *   PDLUA_STUB_FAIL=WHAT  fail one kind of call: "alloc" (out of memory),
 *                         "load" (invalid PTX, with a JIT log), "launch"
 *                         (cuLaunchKernel refuses), "kernel" (the kernel
 *                         "faults": the next synchronising call answers
 *                         CUDA_ERROR_LAUNCH_FAILED).
 *
 * Device memory is host memory (malloc); a device address is the host
 * address.  Every copy and every pointer a kernel receives is checked
 * against the live allocations of the current device.  Modules must be
 * PTX text: the stub reads each .entry's parameter list (so parameter
 * sizes come from what NVRTC actually compiled, and cuFuncGetParamInfo
 * answers from them).  A launch runs a host twin of the kernel when the
 * stub knows its name (one thread per global 1-D index):
 *   twice(double *x, int n)                          x[i] *= 2
 *   rastrigin(const double *X, double *F, int pop, int dim)
 *   pdlua_types(double *out, float, double, int, unsigned, long long,
 *               unsigned long long)                  out[0..5] = the values
 *   empty()                                          nothing
 * and otherwise only records the launch.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum {
  OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3, INVALID_CONTEXT = 201,
  NO_DEVICE = 100, INVALID_DEVICE = 101, NO_BINARY_FOR_GPU = 209, INVALID_PTX = 218,
  INVALID_HANDLE = 400, NOT_FOUND = 500, ILLEGAL_ADDRESS = 700, LAUNCH_OUT_OF_RESOURCES = 701,
  LAUNCH_FAILED = 719
};

#define API __attribute__((visibility("default")))

/* ---- state ------------------------------------------------------------------ */

#define MAXP 32                   /* parameters per kernel */

typedef struct entry {
  char name[128];
  int np;
  size_t off[MAXP], size[MAXP];
} entry;

typedef struct module {
  int dev;
  int n;
  entry *e;
} module;

typedef struct alloc {
  char *p;
  size_t n;
  int dev;
  struct alloc *next;
} alloc;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int ndev = -1;             /* -1: cuInit not called */
static alloc *allocs;
static int ctx_tokens[64];        /* a primary context is &ctx_tokens[dev] */
static _Thread_local int cur = -1;
static CUresult sticky;           /* a kernel's fault, reported by the next sync */

static int failing(const char *what) {
  const char *f = getenv("PDLUA_STUB_FAIL");
  return f && strcmp(f, what) == 0;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
  const char *path = getenv("PDLUA_STUB_LOG");
  if (!path || !*path) return;
  FILE *f = fopen(path, "a");
  if (!f) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fclose(f);
}

/* The allocation of the current device holding [p, p+n), or NULL. */
static alloc *find(CUdeviceptr p, size_t n) {
  for (alloc *a = allocs; a; a = a->next) {
    uintptr_t lo = (uintptr_t)a->p;
    if (a->dev == cur && p >= lo && p + n <= lo + a->n && p + n >= p) return a;
  }
  return NULL;
}

/* ---- the probe ---------------------------------------------------------------- */

API CUresult cuInit(unsigned flags) {
  (void)flags;
  const char *s = getenv("PDLUA_STUB_DEVICES");
  int n = s ? atoi(s) : 0;
  if (n <= 0) return NO_DEVICE;
  ndev = n > 64 ? 64 : n;
  return OK;
}

API CUresult cuDriverGetVersion(int *v) {
  *v = 13000;
  return OK;
}

API CUresult cuDeviceGetCount(int *n) {
  *n = ndev > 0 ? ndev : 0;
  return ndev < 0 ? NOT_INITIALIZED : OK;
}

API CUresult cuDeviceGet(int *d, int i) {
  if (ndev < 0) return NOT_INITIALIZED;
  if (i < 0 || i >= ndev) return INVALID_DEVICE;
  *d = i;
  return OK;
}

API CUresult cuDeviceGetName(char *s, int n, int d) {
  if (d < 0 || d >= ndev) return INVALID_DEVICE;
  snprintf(s, (size_t)n, "pdlua stub device %d", d);
  return OK;
}

API CUresult cuDeviceTotalMem_v2(size_t *m, int d) {
  if (d < 0 || d >= ndev) return INVALID_DEVICE;
  *m = (size_t)1 << 30;
  return OK;
}

API CUresult cuDeviceGetAttribute(int *v, int a, int d) {
  if (d < 0 || d >= ndev) return INVALID_DEVICE;
  switch (a) {
  case 16: *v = 4; return OK;          /* multiprocessors */
  case 75: *v = 9; return OK;          /* cc major */
  case 76: *v = 0; return OK;          /* cc minor */
  default: return INVALID_VALUE;
  }
}

static const struct { CUresult rc; const char *name, *text; } errs[] = {
  {INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
  {OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
  {NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
  {NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
  {INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
  {INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
  {NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
  {INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
  {INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
  {NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
  {ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
  {LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
  {LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
};

API CUresult cuGetErrorString(CUresult rc, const char **s) {
  for (size_t i = 0; i < sizeof errs / sizeof *errs; i++)
    if (errs[i].rc == rc) { *s = errs[i].text; return OK; }
  *s = NULL;
  return INVALID_VALUE;
}

API CUresult cuGetErrorName(CUresult rc, const char **s) {
  for (size_t i = 0; i < sizeof errs / sizeof *errs; i++)
    if (errs[i].rc == rc) { *s = errs[i].name; return OK; }
  *s = NULL;
  return INVALID_VALUE;
}

/* NVRTC looks for the driver already in the process (cuInit, then
 * cuGetExportTable) and, finding one that initialised, asks it for private
 * tables; without this entry point it crashes.  None here. */
API CUresult cuGetExportTable(const void **table, const void *id) {
  (void)id;
  *table = NULL;
  return 801;                                         /* CUDA_ERROR_NOT_SUPPORTED */
}

/* ---- contexts --------------------------------------------------------------------- */

API CUresult cuDevicePrimaryCtxRetain(void **ctx, int d) {
  if (d < 0 || d >= ndev) return INVALID_DEVICE;
  *ctx = &ctx_tokens[d];
  return OK;
}

API CUresult cuCtxSetCurrent(void *ctx) {
  if (!ctx) { cur = -1; return OK; }
  int d = (int)((int *)ctx - ctx_tokens);
  if (d < 0 || d >= ndev) return INVALID_CONTEXT;
  cur = d;
  return OK;
}

static CUresult take_sticky(void) {
  pthread_mutex_lock(&lock);
  CUresult rc = sticky;
  pthread_mutex_unlock(&lock);
  return rc;
}

API CUresult cuCtxSynchronize(void) {
  if (cur < 0) return INVALID_CONTEXT;
  return take_sticky();
}

API CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b) {
  if (cur < 0) return INVALID_CONTEXT;
  size_t used = 0;
  pthread_mutex_lock(&lock);
  for (alloc *a = allocs; a; a = a->next) if (a->dev == cur) used += a->n;
  pthread_mutex_unlock(&lock);
  *total_b = (size_t)1 << 30;
  *free_b = used < *total_b ? *total_b - used : 0;
  return OK;
}

/* ---- memory ------------------------------------------------------------------------ */

API CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
  if (cur < 0) return INVALID_CONTEXT;
  if (n == 0) return INVALID_VALUE;
  if (failing("alloc") || n > ((size_t)1 << 30)) return OUT_OF_MEMORY;
  alloc *a = malloc(sizeof *a);
  char *m = malloc(n);
  if (!a || !m) { free(a); free(m); return OUT_OF_MEMORY; }
  memset(m, 0xA5, n);                               /* not zero: catches a missing upload */
  a->p = m; a->n = n; a->dev = cur;
  pthread_mutex_lock(&lock);
  a->next = allocs;
  allocs = a;
  pthread_mutex_unlock(&lock);
  *p = (CUdeviceptr)(uintptr_t)m;
  logf_("alloc dev=%d bytes=%zu", cur, n);
  return OK;
}

API CUresult cuMemFree_v2(CUdeviceptr p) {
  if (cur < 0) return INVALID_CONTEXT;
  pthread_mutex_lock(&lock);
  for (alloc **pa = &allocs; *pa; pa = &(*pa)->next) {
    alloc *a = *pa;
    if ((uintptr_t)a->p == p && a->dev == cur) {
      *pa = a->next;
      pthread_mutex_unlock(&lock);
      logf_("free dev=%d bytes=%zu", a->dev, a->n);
      free(a->p);
      free(a);
      return OK;
    }
  }
  pthread_mutex_unlock(&lock);
  return INVALID_VALUE;
}

API CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) {
  if (cur < 0) return INVALID_CONTEXT;
  pthread_mutex_lock(&lock);
  alloc *a = find(p, n);
  pthread_mutex_unlock(&lock);
  if (!a) return INVALID_VALUE;
  memset((void *)(uintptr_t)p, v, n);
  return OK;
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
  if (cur < 0) return INVALID_CONTEXT;
  pthread_mutex_lock(&lock);
  alloc *a = find(dst, n);
  pthread_mutex_unlock(&lock);
  if (!a) return INVALID_VALUE;
  memcpy((void *)(uintptr_t)dst, src, n);
  return OK;
}

API CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
  if (cur < 0) return INVALID_CONTEXT;
  CUresult rc = take_sticky();                      /* synchronising: earlier faults show */
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  alloc *a = find(src, n);
  pthread_mutex_unlock(&lock);
  if (!a) return INVALID_VALUE;
  memcpy(dst, (const void *)(uintptr_t)src, n);
  return OK;
}

/* ---- modules: PTX text, parameters read from each .entry ----------------------------- */

/* Bytes of a PTX parameter type: .u64 .s64 .f64 .b64 -> 8, ... .u8 -> 1;
 * ".align A .b8 name[N]" (a struct) -> N. */
static size_t ptx_param_size(const char *decl, const char *end) {
  const char *t = strstr(decl, ".param");
  if (!t || t >= end) return 0;
  t += 6;
  const char *br = memchr(t, '[', (size_t)(end - t));
  if (br) return (size_t)strtoul(br + 1, NULL, 10);
  const char *ty = strchr(t, '.');
  if (ty && strncmp(ty, ".ptr", 4) == 0) return 8;
  if (!ty || ty >= end) return 0;
  return (size_t)strtoul(ty + 2, NULL, 10) / 8;
}

static CUresult parse_ptx(const char *ptx, module *m) {
  const char *p = ptx;
  while ((p = strstr(p, ".entry")) != NULL) {
    p += 6;
    while (*p == ' ' || *p == '\t') p++;
    const char *ne = p;
    while (*ne && *ne != '(' && *ne != ' ' && *ne != '\n' && *ne != '\t' && *ne != '{') ne++;
    entry *e = realloc(m->e, (size_t)(m->n + 1) * sizeof *e);
    if (!e) return OUT_OF_MEMORY;
    m->e = e;
    e = &m->e[m->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%.*s", (int)(ne - p), p);
    const char *open = ne;
    while (*open == ' ' || *open == '\n' || *open == '\t') open++;
    if (*open != '(') continue;                     /* no parameters */
    const char *close = strchr(open, ')');
    if (!close) return INVALID_PTX;
    size_t off = 0;
    for (const char *d = open + 1; d < close;) {
      const char *comma = memchr(d, ',', (size_t)(close - d));
      const char *de = comma ? comma : close;
      size_t sz = ptx_param_size(d, de);
      if (sz == 0) break;
      if (e->np == MAXP) return INVALID_PTX;
      size_t al = sz >= 8 ? 8 : sz;
      off = (off + al - 1) / al * al;
      e->off[e->np] = off;
      e->size[e->np++] = sz;
      off += sz;
      d = de + 1;
    }
    p = close;
  }
  return OK;
}

API CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned nopt, int *opts,
                                void **vals) {
  if (cur < 0) return INVALID_CONTEXT;
  char *log = NULL;
  size_t logn = 0;
  for (unsigned i = 0; i < nopt; i++) {
    if (opts[i] == 5) log = vals[i];
    if (opts[i] == 6) logn = (size_t)(uintptr_t)vals[i];
  }
  const char *s = image;
  if (memcmp(s, "\x7f" "ELF", 4) == 0) {
    if (log && logn) snprintf(log, logn, "pdlua stub driver: CUBIN images are not run here, only PTX");
    return NO_BINARY_FOR_GPU;
  }
  if (failing("load") || !strstr(s, ".version")) {
    if (log && logn) snprintf(log, logn, "ptxas fatal   : stub: unexpected input (PDLUA_STUB_FAIL=load "
                                         "or not PTX)");
    return INVALID_PTX;
  }
  module *m = calloc(1, sizeof *m);
  if (!m) return OUT_OF_MEMORY;
  m->dev = cur;
  CUresult rc = parse_ptx(s, m);
  if (rc) { free(m->e); free(m); return rc; }
  logf_("load dev=%d entries=%d", cur, m->n);
  *mod = m;
  return OK;
}

API CUresult cuModuleUnload(void *mod) {
  module *m = mod;
  if (!m) return INVALID_HANDLE;
  logf_("unload dev=%d", m->dev);
  free(m->e);
  free(m);
  return OK;
}

/* A function is a pointer into its module's entry table: it dies with it. */
API CUresult cuModuleGetFunction(void **f, void *mod, const char *name) {
  module *m = mod;
  if (!m) return INVALID_HANDLE;
  for (int k = 0; k < m->n; k++)
    if (strcmp(m->e[k].name, name) == 0) { *f = &m->e[k]; return OK; }
  return NOT_FOUND;
}

API CUresult cuFuncGetParamInfo(void *f, size_t i, size_t *off, size_t *size) {
  entry *e = f;
  if (!e) return INVALID_HANDLE;
  if (i >= (size_t)e->np) return INVALID_VALUE;
  if (off) *off = e->off[i];
  if (size) *size = e->size[i];
  return OK;
}

/* ---- launches ------------------------------------------------------------------------ */

static double par_f64(void **pp, int k) { double v; memcpy(&v, pp[k], 8); return v; }
static float par_f32(void **pp, int k) { float v; memcpy(&v, pp[k], 4); return v; }
static int32_t par_i32(void **pp, int k) { int32_t v; memcpy(&v, pp[k], 4); return v; }
static int64_t par_i64(void **pp, int k) { int64_t v; memcpy(&v, pp[k], 8); return v; }

/* A device pointer parameter: must lie in an allocation of this device
 * holding at least `bytes` from it. */
static void *par_ptr(void **pp, int k, size_t bytes, CUresult *bad) {
  CUdeviceptr p;
  memcpy(&p, pp[k], 8);
  pthread_mutex_lock(&lock);
  alloc *a = find(p, bytes);
  pthread_mutex_unlock(&lock);
  if (!a) *bad = ILLEGAL_ADDRESS;
  return a ? (void *)(uintptr_t)p : NULL;
}

API CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                            unsigned by, unsigned bz, unsigned shared, void *stream,
                            void **params, void **extra) {
  (void)stream;
  (void)extra;
  entry *e = f;
  if (cur < 0) return INVALID_CONTEXT;
  if (!e) return INVALID_HANDLE;
  if (!gx || !gy || !gz || !bx || !by || !bz) return INVALID_VALUE;
  if ((unsigned long long)bx * by * bz > 1024 || shared > 48 * 1024) return INVALID_VALUE;
  if (e->np && !params) return INVALID_VALUE;
  if (failing("launch")) return LAUNCH_OUT_OF_RESOURCES;

  char hex[2048];
  size_t h = 0;
  hex[0] = '\0';
  for (int k = 0; k < e->np && h + 2 * e->size[k] + 2 < sizeof hex; k++) {
    if (k) hex[h++] = ',';
    for (size_t b = 0; b < e->size[k]; b++)
      h += (size_t)snprintf(hex + h, sizeof hex - h, "%02x", ((unsigned char *)params[k])[b]);
  }
  logf_("launch %s dev=%d grid=%u,%u,%u block=%u,%u,%u shared=%u params=%s", e->name, cur, gx,
        gy, gz, bx, by, bz, shared, hex);

  CUresult bad = OK;
  unsigned long long threads = (unsigned long long)gx * bx;   /* the 1-D global index */
  if (strcmp(e->name, "twice") == 0 && e->np == 2) {
    int n = par_i32(params, 1);
    double *x = par_ptr(params, 0, (size_t)(n > 0 ? n : 0) * 8, &bad);
    for (unsigned long long i = 0; x && i < threads && i < (unsigned long long)(n > 0 ? n : 0); i++)
      x[i] *= 2.0;
  } else if (strcmp(e->name, "rastrigin") == 0 && e->np == 4) {
    int pop = par_i32(params, 2), dim = par_i32(params, 3);
    size_t np = (size_t)(pop > 0 ? pop : 0), nd = (size_t)(dim > 0 ? dim : 0);
    const double *X = par_ptr(params, 0, np * nd * 8, &bad);
    double *F = par_ptr(params, 1, np * 8, &bad);
    for (unsigned long long i = 0; X && F && i < threads && i < np; i++) {
      double s = 10.0 * (double)nd;
      for (size_t j = 0; j < nd; j++) {
        double x = X[i * nd + j];
        s += x * x - 10.0 * cos(2.0 * M_PI * x);
      }
      F[i] = s;
    }
  } else if (strcmp(e->name, "pdlua_types") == 0 && e->np == 7) {
    double *out = par_ptr(params, 0, 6 * 8, &bad);
    if (out && threads > 0) {
      out[0] = par_f32(params, 1);
      out[1] = par_f64(params, 2);
      out[2] = par_i32(params, 3);
      out[3] = (double)(uint32_t)par_i32(params, 4);
      out[4] = (double)par_i64(params, 5);
      out[5] = (double)(uint64_t)par_i64(params, 6);
    }
  }
  if (failing("kernel")) bad = LAUNCH_FAILED;
  if (bad) {                                     /* a fault: seen at the next sync */
    pthread_mutex_lock(&lock);
    if (!sticky) sticky = bad;
    pthread_mutex_unlock(&lock);
  }
  return OK;
}
