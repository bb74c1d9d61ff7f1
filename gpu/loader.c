/* loader.c: find the CUDA driver and NVRTC at run time (see pdgpu.h). */
#define _GNU_SOURCE
#include "pdgpu.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the driver ------------------------------------------------------------ */

typedef int CUresult;
typedef int CUdevice;

/* The driver entry points we use, resolved once.  API version 1. */
static struct {
  void *lib;
  CUresult (*init)(unsigned);
  CUresult (*device_count)(int *);
  CUresult (*device_get)(CUdevice *, int);
  CUresult (*device_name)(char *, int, CUdevice);
  CUresult (*device_mem)(size_t *, CUdevice);           /* cuDeviceTotalMem_v2 */
  CUresult (*device_attr)(int *, int, CUdevice);
  CUresult (*error_string)(CUresult, const char **);
} cu;

enum { ATTR_SMS = 16, ATTR_CC_MAJOR = 75, ATTR_CC_MINOR = 76 };

static pthread_once_t cu_once = PTHREAD_ONCE_INIT;
static int ndev;
static char cu_reason[512];

static const char *cu_err(CUresult rc) {
  const char *s = NULL;
  if (cu.error_string && cu.error_string(rc, &s) == 0 && s) return s;
  return "unknown error";
}

#define SYM(field, name)                                                        \
  do {                                                                          \
    *(void **)&cu.field = dlsym(cu.lib, name);                                  \
    if (!cu.field) {                                                            \
      snprintf(cu_reason, sizeof cu_reason,                                     \
               "not available: the CUDA driver %s lacks %s", path, name);       \
      return;                                                                   \
    }                                                                           \
  } while (0)

static void cu_probe(void) {
  const char *path = getenv("PDLUA_CUDA_DRIVER");
  if (!path || !*path) path = "libcuda.so.1";
  cu.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!cu.lib) {
    snprintf(cu_reason, sizeof cu_reason, "not available: no CUDA driver (%s)", dlerror());
    return;
  }
  SYM(init, "cuInit");
  SYM(device_count, "cuDeviceGetCount");
  SYM(device_get, "cuDeviceGet");
  SYM(device_name, "cuDeviceGetName");
  SYM(device_mem, "cuDeviceTotalMem_v2");
  SYM(device_attr, "cuDeviceGetAttribute");
  SYM(error_string, "cuGetErrorString");
  CUresult rc = cu.init(0);
  if (rc != 0) {
    snprintf(cu_reason, sizeof cu_reason,
             "not available: the CUDA driver is present but cuInit failed: %s (error %d)",
             cu_err(rc), rc);
    return;
  }
  int n = 0;
  rc = cu.device_count(&n);
  if (rc != 0 || n <= 0) {
    snprintf(cu_reason, sizeof cu_reason, "not available: the CUDA driver sees no device%s%s",
             rc ? ": " : "", rc ? cu_err(rc) : "");
    return;
  }
  ndev = n;
}

int pdgpu_probe(char *why, size_t n) {
  pthread_once(&cu_once, cu_probe);
  if (ndev == 0 && why && n) snprintf(why, n, "%s", cu_reason);
  return ndev;
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
