/* stub_cuda.c: a fake libcuda.so.1 for tests of the "driver present but
 * unusable" path: cuInit answers CUDA_ERROR_NO_DEVICE (100). */
int cuInit(unsigned flags);
int cuDeviceGetCount(int *n);
int cuDeviceGet(int *d, int i);
int cuDeviceGetName(char *s, int n, int d);
int cuDeviceTotalMem_v2(unsigned long *m, int d);
int cuDeviceGetAttribute(int *v, int a, int d);
int cuGetErrorString(int rc, const char **s);

int cuInit(unsigned flags) { (void)flags; return 100; }
int cuDeviceGetCount(int *n) { *n = 0; return 100; }
int cuDeviceGet(int *d, int i) { (void)d; (void)i; return 100; }
int cuDeviceGetName(char *s, int n, int d) { (void)s; (void)n; (void)d; return 100; }
int cuDeviceTotalMem_v2(unsigned long *m, int d) { (void)m; (void)d; return 100; }
int cuDeviceGetAttribute(int *v, int a, int d) { (void)v; (void)a; (void)d; return 100; }
int cuGetErrorString(int rc, const char **s) {
  *s = rc == 100 ? "no CUDA-capable device is detected" : "unknown error";
  return 0;
}
