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
 */
#ifndef PDGPU_H
#define PDGPU_H

#include <stddef.h>

#define PDGPU_API_VERSION 1

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

#endif
