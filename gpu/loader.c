/* loader.c: find the CUDA driver and NVRTC at run time (see pdgpu.h). */
#define _GNU_SOURCE
#include "pdgpu.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the driver ------------------------------------------------------------ */

/* The driver's types as the ABI has them (cuda.h is not included: pdlua
 * builds without the toolkit).  CUdeviceptr is 64 bits on every platform
 * pdlua supports; the handles are opaque pointers. */
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;

/* The driver entry points we use, resolved once by their versioned names
 * (cuda.h #defines cuMemAlloc to cuMemAlloc_v2 and so on; the bare
 * names are the CUDA 2.x ABIs with 32-bit sizes).  `opt` entries may be
 * missing (older drivers). */
static struct {
  void *lib;
  CUresult (*init)(unsigned);
  CUresult (*driver_version)(int *);
  CUresult (*device_count)(int *);
  CUresult (*device_get)(CUdevice *, int);
  CUresult (*device_name)(char *, int, CUdevice);
  CUresult (*device_mem)(size_t *, CUdevice);                 /* cuDeviceTotalMem_v2 */
  CUresult (*device_attr)(int *, int, CUdevice);
  CUresult (*error_string)(CUresult, const char **);
  CUresult (*error_name)(CUresult, const char **);
  CUresult (*ctx_retain)(CUcontext *, CUdevice);              /* cuDevicePrimaryCtxRetain */
  CUresult (*ctx_set_current)(CUcontext);
  CUresult (*ctx_sync)(void);                                 /* cuCtxSynchronize */
  CUresult (*mem_info)(size_t *, size_t *);                   /* cuMemGetInfo_v2 */
  CUresult (*module_load)(CUmodule *, const void *, unsigned, int *, void **);  /* ...DataEx */
  CUresult (*module_unload)(CUmodule);
  CUresult (*module_function)(CUfunction *, CUmodule, const char *);
  CUresult (*mem_alloc)(CUdeviceptr *, size_t);               /* cuMemAlloc_v2 */
  CUresult (*mem_free)(CUdeviceptr);                          /* cuMemFree_v2 */
  CUresult (*memset_d8)(CUdeviceptr, unsigned char, size_t);  /* cuMemsetD8_v2 */
  CUresult (*htod)(CUdeviceptr, const void *, size_t);        /* cuMemcpyHtoD_v2 */
  CUresult (*dtoh)(void *, CUdeviceptr, size_t);              /* cuMemcpyDtoH_v2 */
  CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                     unsigned, CUstream, void **, void **);   /* cuLaunchKernel */
  CUresult (*param_info)(CUfunction, size_t, size_t *, size_t *);  /* opt: 12.4+ */
} cu;

static const struct {
  size_t off;
  const char *name;
  int opt;
} cu_syms[] = {
#define E(field, name, opt) {offsetof(__typeof__(cu), field), name, opt}
  E(init, "cuInit", 0),
  E(driver_version, "cuDriverGetVersion", 0),
  E(device_count, "cuDeviceGetCount", 0),
  E(device_get, "cuDeviceGet", 0),
  E(device_name, "cuDeviceGetName", 0),
  E(device_mem, "cuDeviceTotalMem_v2", 0),
  E(device_attr, "cuDeviceGetAttribute", 0),
  E(error_string, "cuGetErrorString", 0),
  E(error_name, "cuGetErrorName", 0),
  E(ctx_retain, "cuDevicePrimaryCtxRetain", 0),
  E(ctx_set_current, "cuCtxSetCurrent", 0),
  E(ctx_sync, "cuCtxSynchronize", 0),
  E(mem_info, "cuMemGetInfo_v2", 0),
  E(module_load, "cuModuleLoadDataEx", 0),
  E(module_unload, "cuModuleUnload", 0),
  E(module_function, "cuModuleGetFunction", 0),
  E(mem_alloc, "cuMemAlloc_v2", 0),
  E(mem_free, "cuMemFree_v2", 0),
  E(memset_d8, "cuMemsetD8_v2", 0),
  E(htod, "cuMemcpyHtoD_v2", 0),
  E(dtoh, "cuMemcpyDtoH_v2", 0),
  E(launch, "cuLaunchKernel", 0),
  E(param_info, "cuFuncGetParamInfo", 1),
#undef E
};

enum { ATTR_SMS = 16, ATTR_CC_MAJOR = 75, ATTR_CC_MINOR = 76 };
enum { JIT_ERROR_LOG_BUFFER = 5, JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6 };
enum { ERR_INVALID_VALUE = 1 };

#define MAXDEV 64                  /* devices one process may use */

static pthread_once_t cu_once = PTHREAD_ONCE_INIT;
static int ndev, drv_version;
static char cu_reason[512];

/* Primary contexts, retained on first use and kept until the process ends
 * (the driver frees them then; releasing earlier would free every module
 * and buffer of that device under the Lua objects that hold them). */
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static CUcontext ctxs[MAXDEV];
static _Thread_local int cur_dev = -1;       /* whose context is current here */

/* "<call>: <driver's text> (<CUDA_ERROR_NAME>)" into why[n]; returns -1. */
static int cu_fail(const char *call, CUresult rc, char *why, size_t n) {
  const char *s = NULL, *name = NULL;
  if (!cu.error_string || cu.error_string(rc, &s) != 0 || !s) s = "unknown error";
  if (!cu.error_name || cu.error_name(rc, &name) != 0 || !name) name = NULL;
  if (why && n) {
    if (name) snprintf(why, n, "%s: %s (%s)", call, s, name);
    else snprintf(why, n, "%s: %s (error %d)", call, s, rc);
  }
  return -1;
}

static const char *cu_err(CUresult rc) {
  const char *s = NULL;
  if (cu.error_string && cu.error_string(rc, &s) == 0 && s) return s;
  return "unknown error";
}

static void cu_probe(void) {
  const char *path = getenv("PDLUA_CUDA_DRIVER");
  if (!path || !*path) path = "libcuda.so.1";
  cu.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!cu.lib) {
    snprintf(cu_reason, sizeof cu_reason, "not available: no CUDA driver (%s)", dlerror());
    return;
  }
  for (size_t i = 0; i < sizeof cu_syms / sizeof *cu_syms; i++) {
    void *p = dlsym(cu.lib, cu_syms[i].name);
    if (!p && !cu_syms[i].opt) {
      snprintf(cu_reason, sizeof cu_reason, "not available: the CUDA driver %s lacks %s", path,
               cu_syms[i].name);
      cu.init = NULL;
      return;
    }
    memcpy((char *)&cu + cu_syms[i].off, &p, sizeof p);
  }
  CUresult rc = cu.init(0);
  if (rc != 0) {
    snprintf(cu_reason, sizeof cu_reason,
             "not available: the CUDA driver is present but cuInit failed: %s (error %d)",
             cu_err(rc), rc);
    return;
  }
  if (cu.driver_version(&drv_version) != 0) drv_version = 0;
  int n = 0;
  rc = cu.device_count(&n);
  if (rc != 0 || n <= 0) {
    snprintf(cu_reason, sizeof cu_reason, "not available: the CUDA driver sees no device%s%s",
             rc ? ": " : "", rc ? cu_err(rc) : "");
    return;
  }
  ndev = n < MAXDEV ? n : MAXDEV;
}

int pdgpu_probe(char *why, size_t n) {
  pthread_once(&cu_once, cu_probe);
  if (ndev == 0 && why && n) snprintf(why, n, "%s", cu_reason);
  return ndev;
}

int pdgpu_driver_version(void) {
  pthread_once(&cu_once, cu_probe);
  return drv_version;
}

int pdgpu_device_info(int i, pdgpu_device *d, char *why, size_t n) {
  if (i < 0 || i >= pdgpu_probe(why, n)) {
    if (ndev && why) snprintf(why, n, "no device %d (there are %d)", i, ndev);
    return -1;
  }
  CUdevice dev;
  CUresult rc = cu.device_get(&dev, i);
  if (rc == 0) rc = cu.device_name(d->name, (int)sizeof d->name, dev);
  if (rc == 0) rc = cu.device_mem(&d->memory, dev);
  if (rc == 0) rc = cu.device_attr(&d->cc_major, ATTR_CC_MAJOR, dev);
  if (rc == 0) rc = cu.device_attr(&d->cc_minor, ATTR_CC_MINOR, dev);
  if (rc == 0) rc = cu.device_attr(&d->sms, ATTR_SMS, dev);
  if (rc != 0) {
    snprintf(why, n, "device %d: %s (error %d)", i, cu_err(rc), rc);
    return -1;
  }
  return 0;
}

/* ---- contexts, modules, memory, launches ----------------------------------- */

int pdgpu_use(int dev, char *why, size_t n) {
  if (cur_dev == dev) return 0;
  int count = pdgpu_probe(why, n);
  if (count == 0) return -1;
  if (dev < 0 || dev >= count) {
    snprintf(why, n, "no device %d (there are %d)", dev, count);
    return -1;
  }
  pthread_mutex_lock(&ctx_lock);
  CUresult rc = 0;
  if (!ctxs[dev]) {
    CUdevice d;
    rc = cu.device_get(&d, dev);
    if (rc == 0) rc = cu.ctx_retain(&ctxs[dev], d);
    if (rc != 0) ctxs[dev] = NULL;
  }
  CUcontext c = ctxs[dev];
  pthread_mutex_unlock(&ctx_lock);
  if (rc != 0) return cu_fail("cuDevicePrimaryCtxRetain", rc, why, n);
  rc = cu.ctx_set_current(c);
  if (rc != 0) return cu_fail("cuCtxSetCurrent", rc, why, n);
  cur_dev = dev;
  return 0;
}

#define USE(dev, why, n)                                                         \
  do {                                                                           \
    if (pdgpu_use((dev), (why), (n)) != 0) return -1;                            \
  } while (0)

int pdgpu_mem_info(int dev, size_t *free_b, size_t *total_b, char *why, size_t n) {
  USE(dev, why, n);
  CUresult rc = cu.mem_info(free_b, total_b);
  return rc ? cu_fail("cuMemGetInfo", rc, why, n) : 0;
}

int pdgpu_module_load(int dev, const void *image, pdgpu_module **m, char *why, size_t n) {
  USE(dev, why, n);
  char log[4096] = "";
  int opts[2] = {JIT_ERROR_LOG_BUFFER, JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *vals[2] = {log, (void *)(uintptr_t)sizeof log};
  CUmodule mod = NULL;
  CUresult rc = cu.module_load(&mod, image, 2, opts, vals);
  if (rc != 0) {
    cu_fail("cuModuleLoadDataEx", rc, why, n);
    log[sizeof log - 1] = '\0';
    size_t l = strlen(why);
    if (*log && l + 2 < n) snprintf(why + l, n - l, "\n%s", log);
    return -1;
  }
  *m = (pdgpu_module *)mod;
  return 0;
}

void pdgpu_module_unload(int dev, pdgpu_module *m) {
  char why[16];
  if (m && pdgpu_use(dev, why, sizeof why) == 0) cu.module_unload((CUmodule)m);
}

int pdgpu_function(int dev, pdgpu_module *m, const char *name, pdgpu_func **f, char *why,
                   size_t n) {
  USE(dev, why, n);
  CUfunction fn = NULL;
  CUresult rc = cu.module_function(&fn, (CUmodule)m, name);
  if (rc != 0) return cu_fail("cuModuleGetFunction", rc, why, n);
  *f = (pdgpu_func *)fn;
  return 0;
}

int pdgpu_param_info(pdgpu_func *f, size_t i, size_t *offset, size_t *size) {
  if (!cu.param_info) return -1;
  CUresult rc = cu.param_info((CUfunction)f, i, offset, size);
  if (rc == 0) return 1;
  return rc == ERR_INVALID_VALUE ? 0 : -1;
}

int pdgpu_alloc(int dev, size_t bytes, pdgpu_ptr *p, char *why, size_t n) {
  USE(dev, why, n);
  CUdeviceptr d = 0;
  CUresult rc = cu.mem_alloc(&d, bytes ? bytes : 1);    /* 0 bytes is an error to CUDA */
  if (rc != 0) return cu_fail("cuMemAlloc", rc, why, n);
  *p = d;
  return 0;
}

int pdgpu_free(int dev, pdgpu_ptr p, char *why, size_t n) {
  USE(dev, why, n);
  CUresult rc = cu.mem_free(p);
  return rc ? cu_fail("cuMemFree", rc, why, n) : 0;
}

int pdgpu_memset0(int dev, pdgpu_ptr p, size_t bytes, char *why, size_t n) {
  USE(dev, why, n);
  CUresult rc = bytes ? cu.memset_d8(p, 0, bytes) : 0;
  return rc ? cu_fail("cuMemsetD8", rc, why, n) : 0;
}

int pdgpu_htod(int dev, pdgpu_ptr dst, const void *src, size_t bytes, char *why, size_t n) {
  USE(dev, why, n);
  CUresult rc = bytes ? cu.htod(dst, src, bytes) : 0;
  return rc ? cu_fail("cuMemcpyHtoD", rc, why, n) : 0;
}

int pdgpu_dtoh(int dev, void *dst, pdgpu_ptr src, size_t bytes, char *why, size_t n) {
  USE(dev, why, n);
  CUresult rc = bytes ? cu.dtoh(dst, src, bytes) : 0;
  return rc ? cu_fail("cuMemcpyDtoH", rc, why, n) : 0;
}

int pdgpu_launch(int dev, pdgpu_func *f, const unsigned grid[3], const unsigned block[3],
                 unsigned shared, void **params, char *why, size_t n) {
  USE(dev, why, n);
  CUresult rc = cu.launch((CUfunction)f, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                          shared, NULL, params, NULL);
  return rc ? cu_fail("cuLaunchKernel", rc, why, n) : 0;
}

int pdgpu_sync(int dev, char *why, size_t n) {
  USE(dev, why, n);
  CUresult rc = cu.ctx_sync();
  return rc ? cu_fail("cuCtxSynchronize", rc, why, n) : 0;
}

/* ---- NVRTC ------------------------------------------------------------------ */

typedef int nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;

static struct {
  void *lib;
  char path[1200];
  nvrtcResult (*version)(int *, int *);
  nvrtcResult (*create)(nvrtcProgram *, const char *, const char *, int, const char *const *,
                        const char *const *);
  nvrtcResult (*compile)(nvrtcProgram, int, const char *const *);
  nvrtcResult (*log_size)(nvrtcProgram, size_t *);
  nvrtcResult (*log)(nvrtcProgram, char *);
  nvrtcResult (*ptx_size)(nvrtcProgram, size_t *);
  nvrtcResult (*ptx)(nvrtcProgram, char *);
  nvrtcResult (*cubin_size)(nvrtcProgram, size_t *);
  nvrtcResult (*cubin)(nvrtcProgram, char *);
  nvrtcResult (*destroy)(nvrtcProgram *);
  const char *(*error_string)(nvrtcResult);
} rtc;

static pthread_once_t rtc_once = PTHREAD_ONCE_INIT;
static int rtc_version;
static char rtc_reason[512];

static int rtc_try(const char *path) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) return 0;
  rtc.lib = h;
  snprintf(rtc.path, sizeof rtc.path, "%s", path);
  return 1;
}

static void rtc_probe(void) {
  const char *env = getenv("PDLUA_NVRTC");
  if (env && *env) {
    if (!rtc_try(env)) {
      snprintf(rtc_reason, sizeof rtc_reason, "not available: PDLUA_NVRTC=%.200s: %.250s", env, dlerror());
      return;
    }
  } else {
    const char *dirs[] = {getenv("CUDA_HOME"), getenv("CUDA_PATH"), "/usr/local/cuda", ""};
    char p[1100];
    for (size_t d = 0; d < sizeof dirs / sizeof *dirs && !rtc.lib; d++) {
      if (!dirs[d]) continue;
      const char *sep = *dirs[d] ? "/lib64/" : "";
      for (int v = 13; v >= 11 && !rtc.lib; v--) {
        snprintf(p, sizeof p, "%s%slibnvrtc.so.%d", dirs[d], sep, v);
        rtc_try(p);
      }
      if (!rtc.lib) {
        snprintf(p, sizeof p, "%s%slibnvrtc.so", dirs[d], sep);
        rtc_try(p);
      }
    }
    if (!rtc.lib) {
      snprintf(rtc_reason, sizeof rtc_reason,
               "not available: NVRTC not found (looked for libnvrtc.so.13..11 in $CUDA_HOME, "
               "$CUDA_PATH, /usr/local/cuda and the loader's path)");
      return;
    }
  }
#define RSYM(field, name)                                                            \
  *(void **)&rtc.field = dlsym(rtc.lib, name);                                       \
  if (!rtc.field) {                                                                  \
    snprintf(rtc_reason, sizeof rtc_reason, "not available: %.400s lacks %.60s", rtc.path, name); \
    return;                                                                          \
  }
  RSYM(version, "nvrtcVersion");
  RSYM(create, "nvrtcCreateProgram");
  RSYM(compile, "nvrtcCompileProgram");
  RSYM(log_size, "nvrtcGetProgramLogSize");
  RSYM(log, "nvrtcGetProgramLog");
  RSYM(ptx_size, "nvrtcGetPTXSize");
  RSYM(ptx, "nvrtcGetPTX");
  RSYM(cubin_size, "nvrtcGetCUBINSize");
  RSYM(cubin, "nvrtcGetCUBIN");
  RSYM(destroy, "nvrtcDestroyProgram");
  RSYM(error_string, "nvrtcGetErrorString");
#undef RSYM
  int major = 0, minor = 0;
  if (rtc.version(&major, &minor) != 0) {
    snprintf(rtc_reason, sizeof rtc_reason, "not available: nvrtcVersion failed in %.400s", rtc.path);
    return;
  }
  rtc_version = major * 1000 + minor * 10;
}

int pdgpu_nvrtc(const char **path, char *why, size_t n) {
  pthread_once(&rtc_once, rtc_probe);
  if (!rtc_version && why && n) snprintf(why, n, "%s", rtc_reason);
  if (path) *path = rtc_version ? rtc.path : NULL;
  return rtc_version;
}

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

int pdgpu_compile(const char *src, size_t srclen, const char *name, const char *arch,
                  const char *const *opts, int nopts, char **out, size_t *outlen, char **log) {
  char why[512];
  *out = NULL;
  *outlen = 0;
  *log = NULL;
  if (!pdgpu_nvrtc(NULL, why, sizeof why)) {
    *log = dupstr(why);
    return -1;
  }
  int cubin = strncmp(arch, "sm_", 3) == 0;
  if (!cubin && strncmp(arch, "compute_", 8) != 0) {
    char m[256];
    snprintf(m, sizeof m, "bad arch '%s': want compute_XY (PTX) or sm_XY (CUBIN)", arch);
    *log = dupstr(m);
    return -1;
  }
  /* NVRTC wants a NUL-terminated source */
  char *text = malloc(srclen + 1);
  const char **argv = malloc(sizeof(char *) * (size_t)(nopts + 1));
  char archopt[64];
  if (!text || !argv) {
    free(text);
    free(argv);
    *log = dupstr("out of memory");
    return -1;
  }
  memcpy(text, src, srclen);
  text[srclen] = '\0';
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  argv[0] = archopt;
  for (int i = 0; i < nopts; i++) argv[i + 1] = opts[i];

  nvrtcProgram prog = NULL;
  int rc = -1;
  nvrtcResult r = rtc.create(&prog, text, name ? name : "kernel.cu", 0, NULL, NULL);
  if (r != 0) {
    *log = dupstr(rtc.error_string(r));
    goto done;
  }
  nvrtcResult cr = rtc.compile(prog, nopts + 1, argv);
  size_t ls = 0;
  if (rtc.log_size(prog, &ls) == 0 && ls > 1) {
    *log = malloc(ls);
    if (*log && rtc.log(prog, *log) != 0) (*log)[0] = '\0';
  }
  if (cr != 0) {
    if (!*log || !**log) {
      free(*log);
      *log = dupstr(rtc.error_string(cr));
    }
    goto done;
  }
  size_t sz = 0;
  if ((cubin ? rtc.cubin_size(prog, &sz) : rtc.ptx_size(prog, &sz)) != 0 || sz == 0) goto done;
  *out = malloc(sz);
  if (!*out) goto done;
  if ((cubin ? rtc.cubin(prog, *out) : rtc.ptx(prog, *out)) != 0) {
    free(*out);
    *out = NULL;
    goto done;
  }
  *outlen = cubin ? sz : strlen(*out);    /* PTX size counts its NUL */
  rc = 0;
done:
  if (prog) rtc.destroy(&prog);
  free(text);
  free(argv);
  return rc;
}
