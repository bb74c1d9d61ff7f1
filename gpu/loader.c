/* loader.c: find the CUDA driver at run time (see pdgpu.h). */
#define _GNU_SOURCE
#include "pdgpu.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

typedef int (*cu_init_fn)(unsigned);
typedef int (*cu_count_fn)(int *);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int ndev;
static char reason[256];

static void probe(void) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(reason, sizeof reason, "not available: no CUDA driver (libcuda.so.1: %s)", dlerror());
    return;
  }
  cu_init_fn cu_init = (cu_init_fn)dlsym(h, "cuInit");
  cu_count_fn cu_count = (cu_count_fn)dlsym(h, "cuDeviceGetCount");
  if (!cu_init || !cu_count) {
    snprintf(reason, sizeof reason, "not available: libcuda.so.1 lacks cuInit/cuDeviceGetCount");
    return;
  }
  int rc = cu_init(0);
  if (rc != 0) {
    snprintf(reason, sizeof reason, "not available: cuInit failed with CUDA error %d", rc);
    return;
  }
  int n = 0;
  rc = cu_count(&n);
  if (rc != 0 || n <= 0) {
    snprintf(reason, sizeof reason, "not available: the driver sees no device (error %d)", rc);
    return;
  }
  ndev = n;
}

int pdgpu_probe(char *why, size_t n) {
  pthread_once(&once, probe);
  if (ndev == 0 && why && n) snprintf(why, n, "%s", reason);
  return ndev;
}
