/*
 * gpu.c: pd.core.gpu, the thin native side of pd.gpu (stdlib/pd/gpu.lua).
 * Guide: docs/gpu.md.
 *
 *   available() devices() nvrtc() driver() compile(src, arch, opts)
 *   load(dev, image) -> image handle ("pd.GpuImage") | nil, reason
 *   kernel(image, name, signature) -> kernel ("pd.GpuKernel") | nil, reason
 *   kernel:launch(grid, block, args...) -> true | nil, reason
 *   array(dev, a) / empty(dev, dtype, rows [, cols]) -> "pd.GpuArray" | nil, reason
 *   d:tohost([out]) d:upload(a) d:free() d:shape() d:dtype() d:device() #d
 *   sync(dev) -> true | nil, reason;  meminfo(dev) -> free, total
 *
 * The world (no driver, a full device, a kernel that faults) answers nil,
 * reason; misuse (a wrong argument type or count, a freed buffer, a buffer
 * of another device) raises.  Nothing here keeps a "current device": the
 * caller names the device (pd.gpu keeps it per Lua state), and the loader
 * makes its context current on this thread.
 *
 * Lifetimes.  A loaded image is a small malloc'ed record with a reference
 * count held by its "pd.GpuImage" userdata and by each kernel taken from it,
 * so it is unloaded when the last of them is collected, in any order, and
 * no user value is needed (LuaJIT has none).  A device buffer is freed by
 * d:free(), __close or __gc, whichever comes first; afterwards every method
 * but free raises "freed".
 */
#include "binding.h"
#include "array.h"
#include "pdgpu.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IMAGE_MT "pd.GpuImage"
#define KERNEL_MT "pd.GpuKernel"
#define DARRAY_MT "pd.GpuArray"

#define MAXARGS 32               /* kernel parameters; CUDA allows 4 KiB of them */

/* available() -> true | false, reason.  Stack: [] -> [b, reason?] */
static int gpu_available(lua_State *L) {
  char why[512];
  if (pdgpu_probe(why, sizeof why) > 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, why);
  return 2;
}

/* devices() -> { {name=, memory=, cc=, sms=}, ... } [, reason when empty]
 * | nil, reason (a device that does not answer).
 * Stack: [] -> [list], [list, why] or [list, nil, why] */
static int gpu_devices(lua_State *L) {
  PDI_STACK(L);
  char why[512];
  int n = pdgpu_probe(why, sizeof why);
  lua_createtable(L, n, 0);                              /* [list] */
  for (int i = 0; i < n; i++) {
    pdgpu_device d;
    if (pdgpu_device_info(i, &d, why, sizeof why) != 0) {
      lua_pushnil(L);
      lua_pushstring(L, why);                            /* [list, nil, why] */
      PDI_STACK_CHECK(L, 3);
      return 2;
    }
    lua_createtable(L, 0, 5);                            /* [list, dev] */
    lua_pushstring(L, d.name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)d.memory);
    lua_setfield(L, -2, "memory");
    lua_pushfstring(L, "%d.%d", d.cc_major, d.cc_minor);
    lua_setfield(L, -2, "cc");
    lua_pushfstring(L, "%d%d", d.cc_major, d.cc_minor);
    lua_setfield(L, -2, "arch");                         /* "90": for sm_90 */
    lua_pushinteger(L, d.sms);
    lua_setfield(L, -2, "sms");
    lua_pushinteger(L, i);
    lua_setfield(L, -2, "index");
    lua_rawseti(L, -2, i + 1);                           /* [list] */
  }
  if (n == 0) {
    lua_pushstring(L, why);                              /* [list, why] */
    PDI_STACK_CHECK(L, 2);
    return 2;
  }
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* nvrtc() -> "13.0", path | nil, reason */
static int gpu_nvrtc(lua_State *L) {
  char why[512];
  const char *path = NULL;
  int v = pdgpu_nvrtc(&path, why, sizeof why);
  if (!v) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  lua_pushfstring(L, "%d.%d", v / 1000, (v % 1000) / 10);
  lua_pushstring(L, path);
  return 2;
}

/* compile(src, arch, options) -> image, warnings (a string or nil) |
 * nil, log.  options: list of strings.  Stack: [src, arch, opts] ->
 * [image, warnings] or [nil, log], above the n options it keeps there */
static int gpu_compile(lua_State *L) {
  PDI_STACK(L);
  size_t n;
  const char *src = luaL_checklstring(L, 1, &n);
  const char *arch = luaL_checkstring(L, 2);
  int nopts = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    nopts = (int)lua_rawlen(L, 3);
  }
  if (nopts > 256) return luaL_argerror(L, 3, "too many options (256 at most)");
  const char *opts[256];
  luaL_checkstack(L, nopts + 2, "too many options");
  for (int i = 0; i < nopts; i++) {
    lua_rawgeti(L, 3, i + 1);                            /* kept on the stack */
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_argerror(L, 3, lua_pushfstring(L, "option %d is not a string", i + 1));
    opts[i] = lua_tostring(L, -1);
  }
  char *out = NULL, *log = NULL;
  size_t outlen = 0;
  int rc = pdgpu_compile(src, n, "pdlua_kernel.cu", arch, opts, nopts, &out, &outlen, &log);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, log && *log ? log : "compilation failed");
    free(log);
    PDI_STACK_CHECK(L, nopts + 2);
    return 2;
  }
  lua_pushlstring(L, out, outlen);
  if (log && *log) lua_pushstring(L, log);               /* warnings */
  else lua_pushnil(L);
  free(out);
  free(log);
  PDI_STACK_CHECK(L, nopts + 2);
  return 2;
}

/* driver() -> version "13.0" | nil, reason.  Stack: [] -> [v] or [nil, why] */
static int gpu_driver(lua_State *L) {
  char why[512];
  pdgpu_probe(why, sizeof why);
  int v = pdgpu_driver_version();
  if (!v) {
    lua_pushnil(L);
    lua_pushstring(L, why[0] ? why : "the driver did not tell its version");
    return 2;
  }
  lua_pushfstring(L, "%d.%d", v / 1000, (v % 1000) / 10);
  return 1;
}

/* A device ordinal argument (0-based).  Stack: unchanged */
static int check_dev(lua_State *L, int idx) {
  lua_Integer d = luaL_checkinteger(L, idx);
  luaL_argcheck(L, d >= 0 && d < 1 << 16, idx, "device index out of range");
  return (int)d;
}

/* Push nil and why; returns 2 for `return fail(...)`. */
static int fail(lua_State *L, const char *why) {
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

/* ---- images (loaded modules) ------------------------------------------------ */

typedef struct image {
  pdgpu_module *m;
  int dev;
  int refs;                      /* the userdata and each kernel */
} image;

static void image_unref(image *im) {
  if (im && --im->refs == 0) {
    pdgpu_module_unload(im->dev, im->m);
    free(im);
  }
}

typedef struct { image *im; } image_ud;

/* load(dev, image) -> handle | nil, reason.  image: PTX text or CUBIN
 * bytes (a Lua string always ends in a NUL, as PTX must).  Userdata first
 * (empty), record second, module third.  Stack: [dev, s] -> [h] or [nil, why] */
static int gpu_load(lua_State *L) {
  PDI_STACK(L);
  int dev = check_dev(L, 1);
  size_t len;
  const char *img = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, len > 0, 2, "empty image");
  image_ud *u = (image_ud *)lua_newuserdatauv(L, sizeof *u, 0);     /* [dev, s, h] */
  u->im = NULL;
  luaL_setmetatable(L, IMAGE_MT);
  image *im = (image *)malloc(sizeof *im);
  if (!im) return luaL_error(L, "out of memory");
  char why[4096];
  if (pdgpu_module_load(dev, img, &im->m, why, sizeof why) != 0) {
    free(im);
    PDI_STACK_CHECK(L, 1);                                 /* [dev, s, h]: fail adds 2 */
    return fail(L, why);
  }
  im->dev = dev;
  im->refs = 1;
  u->im = im;
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* __gc of an image handle: drops its reference.  Stack: +0 */
static int image_gc(lua_State *L) {
  image_ud *u = (image_ud *)luaL_checkudata(L, 1, IMAGE_MT);
  image_unref(u->im);
  u->im = NULL;
  return 0;
}

/* ---- kernel signatures -------------------------------------------------------- */

/* Argument kinds.  A pointer kind is a device buffer whose dtype must be
 * `dtype` (-1: any, for void*). */
typedef struct argtype {
  const char *spell;             /* C spelling, without const and spaces around */
  char scalar;                   /* 'd' double, 'f' float, 'i' int32, 'u' uint32,
                                    'l' int64, 'L' uint64, 'c' int8, 'b' uint8, 0: pointer */
  int size;
  int dtype;                     /* pointers: element dtype, -1 any */
} argtype;

static const argtype argtypes[] = {
  {"double", 'd', 8, 0}, {"float", 'f', 4, 0},
  {"int", 'i', 4, 0}, {"int32_t", 'i', 4, 0},
  {"unsigned", 'u', 4, 0}, {"unsigned int", 'u', 4, 0}, {"uint32_t", 'u', 4, 0},
  {"long long", 'l', 8, 0}, {"long", 'l', 8, 0}, {"int64_t", 'l', 8, 0},
  {"unsigned long long", 'L', 8, 0}, {"unsigned long", 'L', 8, 0}, {"uint64_t", 'L', 8, 0},
  {"size_t", 'L', 8, 0},
  {"char", 'c', 1, 0}, {"int8_t", 'c', 1, 0},
  {"unsigned char", 'b', 1, 0}, {"uint8_t", 'b', 1, 0},
  {"double*", 0, 8, PDI_F64}, {"float*", 0, 8, PDI_F32},
  {"int*", 0, 8, PDI_I32}, {"int32_t*", 0, 8, PDI_I32},
  {"long long*", 0, 8, PDI_I64}, {"int64_t*", 0, 8, PDI_I64}, {"long*", 0, 8, PDI_I64},
  {"unsigned char*", 0, 8, PDI_U8}, {"uint8_t*", 0, 8, PDI_U8},
  {"void*", 0, 8, -1},
};

/* Normalise one declared type: drop "const"/"__restrict" words and a
 * parameter name, glue the '*' ("const double * x" -> "double*").  Returns
 * the table entry, or NULL. */
static const argtype *parse_type(const char *s, size_t len) {
  char words[8][32];
  int nw = 0, star = 0, after = 0;       /* words after the '*': a name at most */
  size_t i = 0;
  while (i < len) {
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) i++;
    if (i < len && s[i] == '*') {
      if (++star > 1 || after) return NULL;
      i++;
      continue;
    }
    size_t b = i;
    while (i < len && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '*') i++;
    if (i == b) continue;
    if (i - b >= 32 || nw == 8) return NULL;
    if (i - b == 5 && !memcmp(s + b, "const", 5)) continue;
    if (i - b == 10 && !memcmp(s + b, "__restrict", 10)) continue;
    if (star && ++after > 1) return NULL;
    if (star) continue;                    /* the parameter's name */
    memcpy(words[nw], s + b, i - b);
    words[nw++][i - b] = '\0';
  }
  if (nw == 0) return NULL;
  /* without a '*', a last word may be the name: try with and without it */
  for (int drop = 0; drop <= (star ? 0 : 1) && nw - drop > 0; drop++) {
    char t[300] = "";
    for (int w = 0; w < nw - drop; w++) {
      if (w) strcat(t, " ");
      strcat(t, words[w]);
    }
    if (star) strcat(t, "*");
    for (size_t k = 0; k < sizeof argtypes / sizeof *argtypes; k++)
      if (!strcmp(argtypes[k].spell, t)) return &argtypes[k];
  }
  return NULL;
}

/* ---- kernels ------------------------------------------------------------------- */

typedef struct kernel {
  image *im;                     /* NULL: not made yet */
  pdgpu_func *f;
  int nargs;
  unsigned shared;               /* default dynamic shared memory, bytes */
  const argtype *t[MAXARGS];
  char name[128];
} kernel;

/* Read signature (string "double*, int" or list {"double*", "int"}) at idx
 * into k.  Raises on an unknown type.  Stack: unchanged */
static void read_signature(lua_State *L, int idx, kernel *k) {
  PDI_STACK(L);
  k->nargs = 0;
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    const char *e = s + len, *p = s;
    if (len >= 2 && s[0] == '(' && s[len - 1] == ')') { p++; e--; }
    int blank = 1;
    for (const char *q = p; q < e; q++) blank &= (*q == ' ' || *q == '\t');
    if (blank || (e - p == 4 && !memcmp(p, "void", 4))) {         /* "" or "void" */
      PDI_STACK_CHECK(L, 0);
      return;
    }
    while (p <= e) {
      const char *c = memchr(p, ',', (size_t)(e - p));
      if (!c) c = e;
      if (k->nargs == MAXARGS) luaL_error(L, "bad signature: too many arguments (32 at most)");
      const argtype *t = parse_type(p, (size_t)(c - p));
      if (!t) {
        const char *word = lua_pushlstring(L, p, (size_t)(c - p));
        luaL_error(L, "bad signature: unknown argument type '%s' (argument %d)", word,
                   k->nargs + 1);
      }
      k->t[k->nargs++] = t;
      p = c + 1;
    }
    PDI_STACK_CHECK(L, 0);
    return;
  }
  luaL_argcheck(L, lua_type(L, idx) == LUA_TTABLE, idx,
                "signature expected (\"double*, int\" or a list of types)");
  int n = (int)lua_rawlen(L, idx);
  if (n > MAXARGS) luaL_error(L, "bad signature: too many arguments (32 at most)");
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);                                 /* [t_i] */
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    const argtype *t = s ? parse_type(s, len) : NULL;
    if (!t)
      luaL_error(L, "bad signature: unknown argument type '%s' (argument %d)",
                 s ? s : luaL_typename(L, -1), i);
    k->t[k->nargs++] = t;
    lua_pop(L, 1);                                          /* [] */
  }
  PDI_STACK_CHECK(L, 0);
}

/* Render k's signature ("double*, int") into buf. */
static const char *sig_text(const kernel *k, char *buf, size_t n) {
  size_t l = 0;
  buf[0] = '\0';
  for (int i = 0; i < k->nargs && l < n; i++)
    l += (size_t)snprintf(buf + l, n - l, "%s%s", i ? ", " : "", k->t[i]->spell);
  return buf;
}

/* kernel(handle, name, signature [, shared]) -> kernel | nil, reason.
 * When the driver tells parameter sizes (cuFuncGetParamInfo, 12.4+), a
 * signature that does not match the compiled kernel raises.
 * Stack: [h, name, sig, shared?] -> [k] or [nil, why] */
static int gpu_kernel(lua_State *L) {
  PDI_STACK(L);
  image_ud *u = (image_ud *)luaL_checkudata(L, 1, IMAGE_MT);
  size_t nl;
  const char *name = luaL_checklstring(L, 2, &nl);
  luaL_argcheck(L, nl > 0 && nl < 128, 2, "kernel name: 1 to 127 characters");
  lua_Integer shared = luaL_optinteger(L, 4, 0);
  luaL_argcheck(L, shared >= 0 && shared <= 1 << 30, 4, "shared memory out of range");
  kernel *k = (kernel *)lua_newuserdatauv(L, sizeof *k, 0);     /* [h, name, sig, .., k] */
  memset(k, 0, sizeof *k);
  luaL_setmetatable(L, KERNEL_MT);
  read_signature(L, 3, k);
  memcpy(k->name, name, nl + 1);
  k->shared = (unsigned)shared;
  if (!u->im) return luaL_argerror(L, 1, "image unloaded");
  char why[512];
  if (pdgpu_function(u->im->dev, u->im->m, name, &k->f, why, sizeof why) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "kernel '%s': %s", name, why);  /* [.., k, nil, why] */
    PDI_STACK_CHECK(L, 3);
    return 2;
  }
  size_t off, size;
  int known = 1;
  for (int i = 0; i < k->nargs && known; i++) {
    int r = pdgpu_param_info(k->f, (size_t)i, &off, &size);
    if (r < 0) known = 0;
    else if (r == 0)
      return luaL_error(L, "kernel '%s': the signature has %d arguments, the compiled kernel "
                        "takes %d", name, k->nargs, i);
    else if ((int)size != k->t[i]->size)
      return luaL_error(L, "kernel '%s': argument %d is declared %s (%d bytes) but the compiled "
                        "kernel takes %d bytes there", name, i + 1, k->t[i]->spell,
                        k->t[i]->size, (int)size);
  }
  if (known && pdgpu_param_info(k->f, (size_t)k->nargs, &off, &size) == 1) {
    int more = k->nargs + 1;
    while (more < MAXARGS * 4 && pdgpu_param_info(k->f, (size_t)more, &off, &size) == 1) more++;
    return luaL_error(L, "kernel '%s': the signature has %d arguments, the compiled kernel "
                      "takes %d", name, k->nargs, more);
  }
  k->im = u->im;
  k->im->refs++;
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* __gc of a kernel.  Stack: +0 */
static int kernel_gc(lua_State *L) {
  kernel *k = (kernel *)luaL_checkudata(L, 1, KERNEL_MT);
  image_unref(k->im);
  k->im = NULL;
  return 0;
}

/* ---- device arrays ---------------------------------------------------------- */

typedef struct darray {
  pdgpu_ptr p;
  size_t bytes;
  int64_t dims[2];
  int64_t n;
  int ndim, dtype, dev;
  int live;                      /* 0: freed (or never allocated) */
} darray;

static darray *check_live(lua_State *L, int idx) {
  darray *d = (darray *)luaL_checkudata(L, idx, DARRAY_MT);
  if (!d->live) luaL_argerror(L, idx, "pd.gpu array was freed");
  return d;
}

/* Push a closed device array for a shape, then allocate it.  Returns NULL
 * with why filled when the device refuses.  Stack: [] -> [d] */
static darray *push_darray(lua_State *L, int dev, int dtype, int ndim, const int64_t *dims,
                           char *why, size_t wn) {
  PDI_STACK(L);
  darray *d = (darray *)lua_newuserdatauv(L, sizeof *d, 0);     /* [d] */
  memset(d, 0, sizeof *d);
  luaL_setmetatable(L, DARRAY_MT);
  d->ndim = ndim;
  d->dims[0] = dims[0];
  d->dims[1] = ndim == 2 ? dims[1] : 1;
  d->n = d->dims[0] * d->dims[1];
  d->dtype = dtype;
  d->dev = dev;
  d->bytes = (size_t)d->n * pdi_dtype_size(dtype);
  PDI_STACK_CHECK(L, 1);
  if (pdgpu_alloc(dev, d->bytes, &d->p, why, wn) != 0) return NULL;
  d->live = 1;
  return d;
}

/* array(dev, a) -> device copy of the contiguous pd.array a | nil, reason.
 * One cuMemcpyHtoD of a's bytes.  Stack: [dev, a] -> [d] or [nil, why] */
static int gpu_array(lua_State *L) {
  PDI_STACK(L);
  int dev = check_dev(L, 1);
  pdi_array *a = pdi_array_check(L, 2);
  luaL_argcheck(L, pdi_array_contiguous(a), 2, "contiguous array expected (use a:copy())");
  char why[512];
  darray *d = push_darray(L, dev, a->dtype, a->ndim, a->dims, why, sizeof why);
  PDI_STACK_CHECK(L, 1);                                        /* [dev, a, d] */
  if (!d || pdgpu_htod(dev, d->p, a->data, d->bytes, why, sizeof why) != 0) return fail(L, why);
  return 1;
}

/* empty(dev, dtype, rows [, cols]) -> zero-filled device array | nil, reason.
 * Stack: [dev, dtype, r, c?] -> [d] or [nil, why] */
static int gpu_empty(lua_State *L) {
  PDI_STACK(L);
  int dev = check_dev(L, 1);
  int dtype = pdi_dtype_find(luaL_checkstring(L, 2));
  luaL_argcheck(L, dtype >= 0, 2, "dtype: f64, f32, i32, i64 or u8");
  int64_t dims[2] = {(int64_t)luaL_checkinteger(L, 3), 1};
  int ndim = lua_isnoneornil(L, 4) ? 1 : 2;
  if (ndim == 2) dims[1] = (int64_t)luaL_checkinteger(L, 4);
  luaL_argcheck(L, dims[0] >= 0 && dims[0] < ((int64_t)1 << 40), 3, "size out of range");
  luaL_argcheck(L, dims[1] >= 0 && dims[1] < ((int64_t)1 << 40) &&
                   (dims[1] == 0 || dims[0] <= ((int64_t)1 << 40) / dims[1]), 4,
                "size out of range");
  char why[512];
  darray *d = push_darray(L, dev, dtype, ndim, dims, why, sizeof why);
  PDI_STACK_CHECK(L, 1);                                        /* [.., d] */
  if (!d || pdgpu_memset0(dev, d->p, d->bytes, why, sizeof why) != 0) return fail(L, why);
  return 1;
}

/* d:tohost([out]) -> pd.array (new, or out filled) | nil, reason.  out
 * must be a contiguous array of d's dtype and element count.  Waits for
 * the kernels before it.  Stack: [d, out?] -> [a] or [nil, why] */
static int d_tohost(lua_State *L) {
  PDI_STACK(L);
  darray *d = check_live(L, 1);
  pdi_array *a;
  if (lua_isnoneornil(L, 2)) {
    a = pdi_array_new(L, d->dtype, d->ndim, d->dims);            /* [d, .., a] */
  } else {
    a = pdi_array_check(L, 2);
    luaL_argcheck(L, pdi_array_contiguous(a), 2, "contiguous array expected");
    luaL_argcheck(L, a->dtype == d->dtype && a->n == d->n, 2,
                  "array of the same dtype and size expected");
    lua_pushvalue(L, 2);                                         /* [d, out, out] */
  }
  PDI_STACK_CHECK(L, 1);                                         /* a on top; fail adds 2 */
  char why[512];
  if (pdgpu_dtoh(d->dev, a->data, d->p, d->bytes, why, sizeof why) != 0) return fail(L, why);
  return 1;
}

/* d:upload(a) -> d | nil, reason: copy the pd.array a (same dtype and
 * element count, contiguous) into d.  Stack: [d, a] -> [d] or [nil, why] */
static int d_upload(lua_State *L) {
  darray *d = check_live(L, 1);
  pdi_array *a = pdi_array_check(L, 2);
  luaL_argcheck(L, pdi_array_contiguous(a), 2, "contiguous array expected (use a:copy())");
  luaL_argcheck(L, a->dtype == d->dtype && a->n == d->n, 2,
                "array of the same dtype and size expected");
  char why[512];
  if (pdgpu_htod(d->dev, d->p, a->data, d->bytes, why, sizeof why) != 0) return fail(L, why);
  lua_settop(L, 1);
  return 1;
}

/* d:free(), __close, __gc: give the device memory back (idempotent).
 * Stack: +0 */
static int d_free(lua_State *L) {
  darray *d = (darray *)luaL_checkudata(L, 1, DARRAY_MT);
  if (d->live) {
    char why[512];
    d->live = 0;
    pdgpu_free(d->dev, d->p, why, sizeof why);   /* a failure here leaves nothing to do */
  }
  return 0;
}

/* d:shape() -> rows [, cols].  Stack: +1 or +2 */
static int d_shape(lua_State *L) {
  darray *d = check_live(L, 1);
  lua_pushinteger(L, (lua_Integer)d->dims[0]);
  if (d->ndim == 1) return 1;
  lua_pushinteger(L, (lua_Integer)d->dims[1]);
  return 2;
}

/* #d -> element count.  Stack: +1 */
static int d_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_live(L, 1)->n);
  return 1;
}

/* d:dtype() -> "f64" ...;  d:device() -> ordinal;  d:bytes().  Stack: +1 */
static int d_dtype(lua_State *L) {
  lua_pushstring(L, pdi_dtype_name(check_live(L, 1)->dtype));
  return 1;
}
static int d_device(lua_State *L) {
  lua_pushinteger(L, check_live(L, 1)->dev);
  return 1;
}
static int d_bytes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_live(L, 1)->bytes);
  return 1;
}

/* tostring(d).  Stack: +1 */
static int d_tostring(lua_State *L) {
  darray *d = (darray *)luaL_checkudata(L, 1, DARRAY_MT);
  if (!d->live) lua_pushstring(L, "pd.gpu.array(freed)");
  else if (d->ndim == 1)
    lua_pushfstring(L, "pd.gpu.array(%s, %d, device %d)", pdi_dtype_name(d->dtype), (int)d->n,
                    d->dev);
  else
    lua_pushfstring(L, "pd.gpu.array(%s, %dx%d, device %d)", pdi_dtype_name(d->dtype),
                    (int)d->dims[0], (int)d->dims[1], d->dev);
  return 1;
}

/* ---- launches ------------------------------------------------------------------- */

/* A launch dimension: a positive integer or a list of 1 to 3 of them.
 * Stack: unchanged */
static void read_dim(lua_State *L, int idx, const char *what, unsigned out[3]) {
  PDI_STACK(L);
  out[0] = out[1] = out[2] = 1;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer v = lua_tointeger(L, idx);
    if (v < 1 || v > 0x7fffffff || (lua_Number)v != lua_tonumber(L, idx))
      luaL_argerror(L, idx, lua_pushfstring(L, "%s: positive integer expected", what));
    out[0] = (unsigned)v;
    PDI_STACK_CHECK(L, 0);
    return;
  }
  if (lua_type(L, idx) != LUA_TTABLE)
    luaL_argerror(L, idx, lua_pushfstring(L, "%s: number or {x [, y [, z]]} expected", what));
  int n = (int)lua_rawlen(L, idx);
  if (n < 1 || n > 3)
    luaL_argerror(L, idx, lua_pushfstring(L, "%s: {x [, y [, z]]} expected", what));
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, idx, i + 1);
    int isnum;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || v < 1 || v > 0x7fffffff)
      luaL_argerror(L, idx, lua_pushfstring(L, "%s[%d]: positive integer expected", what, i + 1));
    out[i] = (unsigned)v;
  }
  PDI_STACK_CHECK(L, 0);
}

typedef union argval {
  double d;
  float f;
  int32_t i;
  uint32_t u;
  int64_t l;
  uint64_t L;
  int8_t c;
  uint8_t b;
  pdgpu_ptr p;
} argval;

/* An integral number at idx in [lo, hi], or raise naming argument i. */
static int64_t int_arg(lua_State *L, int idx, int i, const kernel *k, double lo, double hi) {
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "kernel '%s': argument %d (%s) must be a number, got %s", k->name, i,
               k->t[i - 1]->spell, luaL_typename(L, idx));
  if (pdc_isinteger(L, idx)) {
    lua_Integer v = lua_tointeger(L, idx);
    if ((double)v < lo || (double)v > hi)
      luaL_error(L, "kernel '%s': argument %d (%s) out of range", k->name, i, k->t[i - 1]->spell);
    return (int64_t)v;
  }
  double v = lua_tonumber(L, idx);
  if (v != floor(v))
    luaL_error(L, "kernel '%s': argument %d (%s) must be an integer, got %f", k->name, i,
               k->t[i - 1]->spell, v);
  if (v < lo || v > hi)        /* hi: 2^63 for the 64-bit kinds, exclusive below */
    luaL_error(L, "kernel '%s': argument %d (%s) out of range", k->name, i, k->t[i - 1]->spell);
  if (v >= 9223372036854775808.0) return (int64_t)(uint64_t)v;
  return (int64_t)v;
}

/* k:launch(grid, block, args...) -> true | nil, reason.  grid and block:
 * a number or {x, y, z}; block may carry shared = bytes (dynamic shared
 * memory; default the kernel's).  Arguments follow the signature: numbers
 * for scalars, pd.gpu arrays of the declared element type on the kernel's
 * device for pointers.  Asynchronous: the kernel's own faults show at
 * pd.gpu.sync() or the next tohost.
 * Stack: [k, grid, block, args...] -> [true] or [nil, why] */
static int k_launch(lua_State *L) {
  PDI_STACK(L);
  kernel *k = (kernel *)luaL_checkudata(L, 1, KERNEL_MT);
  if (!k->im) return luaL_argerror(L, 1, "kernel not loaded");
  unsigned grid[3], block[3];
  read_dim(L, 2, "grid", grid);
  read_dim(L, 3, "block", block);
  unsigned shared = k->shared;
  if (lua_type(L, 3) == LUA_TTABLE) {
    lua_getfield(L, 3, "shared");
    if (!lua_isnil(L, -1)) {
      lua_Integer s = luaL_checkinteger(L, -1);
      if (s < 0 || s > 1 << 30) luaL_argerror(L, 3, "shared memory out of range");
      shared = (unsigned)s;
    }
    lua_pop(L, 1);
  }
  int given = lua_gettop(L) - 3;
  if (given != k->nargs) {
    char sig[512];
    return luaL_error(L, "kernel '%s' takes %d argument%s (%s), got %d", k->name, k->nargs,
                      k->nargs == 1 ? "" : "s", sig_text(k, sig, sizeof sig), given);
  }
  argval vals[MAXARGS];
  void *params[MAXARGS];
  for (int i = 1; i <= k->nargs; i++) {
    int idx = i + 3;
    const argtype *t = k->t[i - 1];
    argval *v = &vals[i - 1];
    params[i - 1] = v;
    switch (t->scalar) {
    case 'd': case 'f': {
      if (lua_type(L, idx) != LUA_TNUMBER)
        return luaL_error(L, "kernel '%s': argument %d (%s) must be a number, got %s", k->name, i,
                          t->spell, luaL_typename(L, idx));
      if (t->scalar == 'd') v->d = (double)lua_tonumber(L, idx);
      else v->f = (float)lua_tonumber(L, idx);
      break;
    }
    case 'i': v->i = (int32_t)int_arg(L, idx, i, k, -2147483648.0, 2147483647.0); break;
    case 'u': v->u = (uint32_t)int_arg(L, idx, i, k, 0, 4294967295.0); break;
    case 'l': v->l = int_arg(L, idx, i, k, -9223372036854775808.0, 9223372036854775807.0); break;
    case 'L': v->L = (uint64_t)int_arg(L, idx, i, k, 0, 9223372036854775807.0); break;
    case 'c': v->c = (int8_t)int_arg(L, idx, i, k, -128, 127); break;
    case 'b': v->b = (uint8_t)int_arg(L, idx, i, k, 0, 255); break;
    default: {
      darray *d = (darray *)luaL_testudata(L, idx, DARRAY_MT);
      if (!d)
        return luaL_error(L, "kernel '%s': argument %d (%s) must be a pd.gpu array, got %s",
                          k->name, i, t->spell,
                          pdi_array_test(L, idx) ? "a host pd.array (copy it with pd.gpu.array)"
                                                 : luaL_typename(L, idx));
      if (!d->live)
        return luaL_error(L, "kernel '%s': argument %d (%s) was freed", k->name, i, t->spell);
      if (t->dtype >= 0 && d->dtype != t->dtype)
        return luaL_error(L, "kernel '%s': argument %d (%s) must be a pd.gpu array of %s, got %s",
                          k->name, i, t->spell, pdi_dtype_name(t->dtype),
                          pdi_dtype_name(d->dtype));
      if (d->dev != k->im->dev)
        return luaL_error(L, "kernel '%s': argument %d is on device %d, the kernel on device %d",
                          k->name, i, d->dev, k->im->dev);
      v->p = d->p;
    }
    }
  }
  char why[512];
  if (pdgpu_launch(k->im->dev, k->f, grid, block, shared, params, why, sizeof why) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "kernel '%s': %s", k->name, why);
    PDI_STACK_CHECK(L, 2);
    return 2;
  }
  lua_pushboolean(L, 1);
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* k:signature() -> "double*, int";  k:name().  Stack: +1 */
static int k_signature(lua_State *L) {
  kernel *k = (kernel *)luaL_checkudata(L, 1, KERNEL_MT);
  char sig[512];
  lua_pushstring(L, sig_text(k, sig, sizeof sig));
  return 1;
}
static int k_name(lua_State *L) {
  lua_pushstring(L, ((kernel *)luaL_checkudata(L, 1, KERNEL_MT))->name);
  return 1;
}

/* tostring(k).  Stack: +1 */
static int k_tostring(lua_State *L) {
  kernel *k = (kernel *)luaL_checkudata(L, 1, KERNEL_MT);
  char sig[512];
  lua_pushfstring(L, "pd.gpu.kernel(%s(%s), device %d)", k->name, sig_text(k, sig, sizeof sig),
                  k->im ? k->im->dev : -1);
  return 1;
}

/* sync(dev) -> true | nil, reason.  Stack: [dev] -> [true] or [nil, why] */
static int gpu_sync(lua_State *L) {
  char why[512];
  if (pdgpu_sync(check_dev(L, 1), why, sizeof why) != 0) return fail(L, why);
  lua_pushboolean(L, 1);
  return 1;
}

/* meminfo(dev) -> free, total (bytes) | nil, reason.  Stack: +2 */
static int gpu_meminfo(lua_State *L) {
  char why[512];
  size_t fr, tot;
  if (pdgpu_mem_info(check_dev(L, 1), &fr, &tot, why, sizeof why) != 0) return fail(L, why);
  lua_pushinteger(L, (lua_Integer)fr);
  lua_pushinteger(L, (lua_Integer)tot);
  return 2;
}

static const luaL_Reg gpu_funcs[] = {
  {"available", gpu_available},
  {"devices", gpu_devices},
  {"nvrtc", gpu_nvrtc},
  {"driver", gpu_driver},
  {"compile", gpu_compile},
  {"load", gpu_load},
  {"kernel", gpu_kernel},
  {"array", gpu_array},
  {"empty", gpu_empty},
  {"sync", gpu_sync},
  {"meminfo", gpu_meminfo},
  {NULL, NULL},
};

static const luaL_Reg kernel_methods[] = {
  {"launch", k_launch}, {"signature", k_signature}, {"name", k_name}, {NULL, NULL},
};

static const luaL_Reg darray_methods[] = {
  {"tohost", d_tohost}, {"upload", d_upload}, {"free", d_free}, {"shape", d_shape},
  {"dtype", d_dtype}, {"device", d_device}, {"bytes", d_bytes}, {NULL, NULL},
};

/* Stack: [] -> [pd.core.gpu] */
int luaopen_pd_core_gpu(lua_State *L) {
  static const luaL_Reg kernel_meta[] = {{"__tostring", k_tostring}, {NULL, NULL}};
  static const luaL_Reg darray_meta[] = {
    {"__len", d_len}, {"__tostring", d_tostring}, {NULL, NULL},
  };
  PDI_STACK(L);
  pdi_newclass(L, IMAGE_MT, NULL, NULL, image_gc);
  pdi_newclass(L, KERNEL_MT, kernel_methods, kernel_meta, kernel_gc);
  pdi_newclass(L, DARRAY_MT, darray_methods, darray_meta, d_free);
  lua_pop(L, 3);                                          /* [] */
  luaL_newlib(L, gpu_funcs);                              /* [gpu] */
  lua_pushinteger(L, PDGPU_API_VERSION);
  lua_setfield(L, -2, "api_version");
  PDI_STACK_CHECK(L, 1);
  return 1;
}
