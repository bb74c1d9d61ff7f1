/*
 * pdgpu.h: the contract between the GPU loader (gpu/) and its users.
 *
 * Nothing links against CUDA.  The driver (libcuda.so.1, never the
 * toolkit's libcuda.so stub) and NVRTC (libnvrtc.so.N) are dlopen'ed on
 * first use and their entry points resolved by name (the _v2 names where
 * the driver API versions them).  Anything missing is an ordinary answer:
 * a call returns 0/NULL and writes "not available: <reason>" into the
 * caller's buffer.  No function here touches Lua.
 *
 * Where things are searched (first hit wins):
 *   driver: $PDLUA_CUDA_DRIVER, else libcuda.so.1 through the dynamic loader
 *   NVRTC:  $PDLUA_NVRTC, else libnvrtc.so.{13..11} and libnvrtc.so in
 *           $CUDA_HOME/lib64, $CUDA_PATH/lib64, /usr/local/cuda/lib64,
 *           then through the dynamic loader
 *
 * Driver entry points are resolved by their versioned names, as cuda.h
 * maps them (cuMemAlloc_v2, cuMemcpyHtoD_v2, cuDeviceTotalMem_v2, ...):
 * the bare names are older ABIs with 32-bit sizes.  Contexts are the
 * devices' primary contexts (cuDevicePrimaryCtxRetain), never cuCtxCreate,
 * whose signature changed in CUDA 13.  cuFuncGetParamInfo (12.4+) is
 * optional.
 *
 * Threads.  Every call taking `dev` makes that device's primary context
 * current on the calling thread first (retained once per process, kept
 * until exit).  Calls on one device from several threads are the driver's
 * business; pdlua calls from one thread per Lua state.
 */
#ifndef PDGPU_H
#define PDGPU_H

#include <stddef.h>

/* 2: contexts, modules, memory, launches (pdgpu_use ... pdgpu_sync). */
#define PDGPU_API_VERSION 2

typedef struct pdgpu_device {
  char name[256];
  size_t memory;          /* bytes */
  int cc_major, cc_minor; /* compute capability */
  int sms;                /* multiprocessors */
} pdgpu_device;

/* Probe the driver.  Returns the number of usable devices (>= 1), or 0 and
 * writes a one-line reason into why[n].  The probe runs once per process. */
int pdgpu_probe(char *why, size_t n);

/* Describe device i (0-based, < pdgpu_probe()).  Returns 0 or -1 with why. */
int pdgpu_device_info(int i, pdgpu_device *d, char *why, size_t n);

/* Probe NVRTC.  Returns its version as major*1000+minor*10 (13000 for 13.0),
 * or 0 with a reason.  *path (if not NULL) receives the library found. */
int pdgpu_nvrtc(const char **path, char *why, size_t n);

/* Compile CUDA C++ source with NVRTC for `arch`: "compute_XY" gives PTX,
 * "sm_XY" gives a CUBIN.  opts are extra NVRTC options (nopts of them).
 * On success returns 0 and *out (malloc'ed, caller frees) holds *outlen
 * bytes of PTX (NUL-terminated text) or CUBIN.  On failure returns -1 and
 * *log (malloc'ed, caller frees, may be NULL) holds the compiler's log or
 * the reason NVRTC is missing. */
int pdgpu_compile(const char *src, size_t srclen, const char *name, const char *arch,
                  const char *const *opts, int nopts, char **out, size_t *outlen, char **log);

/* ---- version 2: running kernels ------------------------------------------
 * Each returns 0, or -1 with "<cuCall>: <driver's text> (CUDA_ERROR_...)"
 * (or the probe's "not available: ..." reason) in why[n]. */

typedef unsigned long long pdgpu_ptr;     /* a device address (CUdeviceptr) */
typedef struct pdgpu_module pdgpu_module; /* a CUmodule */
typedef struct pdgpu_func pdgpu_func;     /* a CUfunction; lives as long as its module */

/* The driver's version, major*1000+minor*10 (13000), or 0 when unknown. */
int pdgpu_driver_version(void);

/* Make device dev (0-based) current on this thread. */
int pdgpu_use(int dev, char *why, size_t n);

/* Free and total bytes of device dev. */
int pdgpu_mem_info(int dev, size_t *free_b, size_t *total_b, char *why, size_t n);

/* Load a PTX (NUL-terminated text) or CUBIN image on device dev
 * (cuModuleLoadDataEx).  On failure why holds the driver's JIT error log
 * after the first line, as much as fits. */
int pdgpu_module_load(int dev, const void *image, pdgpu_module **m, char *why, size_t n);
/* Unload m (its functions die with it).  NULL is allowed. */
void pdgpu_module_unload(int dev, pdgpu_module *m);
/* The kernel `name` (its unmangled, extern "C" name) of module m. */
int pdgpu_function(int dev, pdgpu_module *m, const char *name, pdgpu_func **f, char *why,
                   size_t n);
/* Kernel parameter i's offset and size as the image declares them: 1, or 0
 * when f has no parameter i, or -1 when the driver cannot tell (older than
 * 12.4: no cuFuncGetParamInfo). */
int pdgpu_param_info(pdgpu_func *f, size_t i, size_t *offset, size_t *size);

/* Device memory.  alloc of 0 bytes allocates 1 (CUDA refuses 0).  The
 * copies are synchronous with respect to the host (legacy default stream):
 * dtoh returns when the bytes are in dst, after every earlier launch. */
int pdgpu_alloc(int dev, size_t bytes, pdgpu_ptr *p, char *why, size_t n);
int pdgpu_free(int dev, pdgpu_ptr p, char *why, size_t n);
int pdgpu_memset0(int dev, pdgpu_ptr p, size_t bytes, char *why, size_t n);
int pdgpu_htod(int dev, pdgpu_ptr dst, const void *src, size_t bytes, char *why, size_t n);
int pdgpu_dtoh(int dev, void *dst, pdgpu_ptr src, size_t bytes, char *why, size_t n);

/* Launch f on the default stream (cuLaunchKernel): grid and block are
 * {x, y, z}, shared the dynamic shared memory in bytes, params[i] points
 * at parameter i's value (the driver copies them before returning).
 * Asynchronous: errors of the kernel itself show at the next sync or dtoh. */
int pdgpu_launch(int dev, pdgpu_func *f, const unsigned grid[3], const unsigned block[3],
                 unsigned shared, void **params, char *why, size_t n);
/* Wait for everything launched on device dev (cuCtxSynchronize). */
int pdgpu_sync(int dev, char *why, size_t n);

#endif
