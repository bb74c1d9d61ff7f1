/*
 * random.c: pd.random (native module pd.core.random), generators of
 * metatable "pd.Random".  The contract for C is random.h; the drawing
 * methods fill pd.arrays through array.h (one way: pd.array does not use
 * this file).
 *
 * The bits come from Philox4x64-10 (Salmon, Moraes, Dror, Shaw: "Parallel
 * random numbers: as easy as 1, 2, 3", SC'11), a counter-based generator:
 * block b of stream s under seed k is philox(key = (k, 0), counter =
 * (b, s, 0, 0)).  So a stream is fixed by (seed, stream) alone, streams
 * never overlap, and a task's stream (pd.rng(): seed of the job, stream =
 * task index) costs nothing to set up.  Normals use the 256-layer ziggurat
 * (Marsaglia and Tsang 2000); integers use Lemire's unbiased multiply.
 */
#include "random.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "array.h"
#include "binding.h"

/* ---- Philox4x64-10 --------------------------------------------------- */

#define PHILOX_M0 UINT64_C(0xD2E7470EE14C6C93)
#define PHILOX_M1 UINT64_C(0xCA5A826395121157)
#define PHILOX_W0 UINT64_C(0x9E3779B97F4A7C15)
#define PHILOX_W1 UINT64_C(0xBB67AE8584CAA73B)

static inline uint64_t mulhilo(uint64_t a, uint64_t b, uint64_t *hi) {
  __uint128_t p = (__uint128_t)a * b;
  *hi = (uint64_t)(p >> 64);
  return (uint64_t)p;
}

/* Philox4x64-10 of blocks ctr and ctr + (1, 0, 0, 0) into out[0..3] and
 * out[4..7]: two independent dependency chains interleaved so that the
 * multiplier is kept busy (about 1.6 times the throughput of one). */
static void philox2(const uint64_t ctr[4], const uint64_t key[2], uint64_t out[8]) {
  uint64_t a0 = ctr[0], a1 = ctr[1], a2 = ctr[2], a3 = ctr[3];
  uint64_t b0 = ctr[0] + 1, b1 = ctr[1], b2 = ctr[2], b3 = ctr[3];
  uint64_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    uint64_t ha0, ha1, hb0, hb1;
    uint64_t la0 = mulhilo(PHILOX_M0, a0, &ha0);
    uint64_t lb0 = mulhilo(PHILOX_M0, b0, &hb0);
    uint64_t la1 = mulhilo(PHILOX_M1, a2, &ha1);
    uint64_t lb1 = mulhilo(PHILOX_M1, b2, &hb1);
    a0 = ha1 ^ a1 ^ k0; a1 = la1; a2 = ha0 ^ a3 ^ k1; a3 = la0;
    b0 = hb1 ^ b1 ^ k0; b1 = lb1; b2 = hb0 ^ b3 ^ k1; b3 = lb0;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = a0; out[1] = a1; out[2] = a2; out[3] = a3;
  out[4] = b0; out[5] = b1; out[6] = b2; out[7] = b3;
}

static void zig_once_setup(void);

void pdi_rng_init(pdi_rng *r, uint64_t seed, uint64_t stream) {
  zig_once_setup();                                   /* normals need the tables */
  r->key[0] = seed;
  r->key[1] = 0;
  r->ctr[0] = 0;
  r->ctr[1] = stream;
  r->ctr[2] = 0;
  r->ctr[3] = 0;
  r->pos = 8;
}

void pdi_rng_for_task(pdi_rng *r, uint64_t seed, uint64_t task_index) {
  pdi_rng_init(r, seed, task_index);
}

/* The buffer holds blocks ctr[0] - 2 and ctr[0] - 1; pos 8 = empty. */
static inline uint64_t next_u64(pdi_rng *r) {
  if (r->pos == 8) {
    philox2(r->ctr, r->key, r->buf);
    r->ctr[0] += 2;
    r->pos = 0;
  }
  return r->buf[r->pos++];
}

uint64_t pdi_rng_u64(pdi_rng *r) { return next_u64(r); }

static inline double next_uniform(pdi_rng *r) {
  return (double)(next_u64(r) >> 11) * 0x1.0p-53;
}

double pdi_rng_uniform(pdi_rng *r) { return next_uniform(r); }

uint64_t pdi_rng_below(pdi_rng *r, uint64_t range) {
  __uint128_t m = (__uint128_t)next_u64(r) * range;
  uint64_t lo = (uint64_t)m;
  if (lo < range) {
    uint64_t t = (0 - range) % range;
    while (lo < t) {
      m = (__uint128_t)next_u64(r) * range;
      lo = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

/* ---- ziggurat (256 layers, 52-bit magnitudes) ------------------------ */

/* The tables are constants computed once per process (no Lua state):
 * Marsaglia and Tsang's zigset with r = 3.6541528853610088 and layer area
 * v = 4.92867323399e-3. */
#define ZIG_R 3.6541528853610088
#define ZIG_V 4.92867323399e-3
static uint64_t zig_k[256];
static double zig_w[256], zig_f[256];
static pthread_once_t zig_once = PTHREAD_ONCE_INIT;

static void zig_setup(void) {
  const double m = 0x1.0p52;
  double dn = ZIG_R, tn = dn;
  double q = ZIG_V / exp(-0.5 * dn * dn);
  zig_k[0] = (uint64_t)((dn / q) * m);
  zig_k[1] = 0;
  zig_w[0] = q / m;
  zig_w[255] = dn / m;
  zig_f[0] = 1.0;
  zig_f[255] = exp(-0.5 * dn * dn);
  for (int i = 254; i >= 1; i--) {
    dn = sqrt(-2.0 * log(ZIG_V / dn + exp(-0.5 * dn * dn)));
    zig_k[i + 1] = (uint64_t)((dn / tn) * m);
    tn = dn;
    zig_f[i] = exp(-0.5 * dn * dn);
    zig_w[i] = dn / m;
  }
}

/* The rare paths (the tail and the wedges, about 1% of draws) live out of
 * line so that the common path stays small and inlined into fill loops. */
static double __attribute__((noinline)) normal_slow(pdi_rng *r, int i, int neg, double x) {
  if (i == 0) {                                       /* the tail beyond r */
    double xx, yy;
    do {
      xx = -log1p(-next_uniform(r)) / ZIG_R;
      yy = -log1p(-next_uniform(r));
    } while (yy + yy <= xx * xx);
    return neg ? -(ZIG_R + xx) : ZIG_R + xx;
  }
  if (zig_f[i] + next_uniform(r) * (zig_f[i - 1] - zig_f[i]) < exp(-0.5 * x * x))
    return neg ? -x : x;
  return NAN;                                         /* rejected: draw again */
}

static inline double next_normal(pdi_rng *r) {
  for (;;) {
    uint64_t u = next_u64(r);
    int i = (int)(u & 0xff);
    int neg = (int)((u >> 8) & 1);
    uint64_t mag = u >> 12;                           /* 52 bits */
    double x = (double)mag * zig_w[i];
    if (mag < zig_k[i]) return neg ? -x : x;          /* inside: ~99% */
    x = normal_slow(r, i, neg, x);
    if (x == x) return x;
  }
}

double pdi_rng_normal(pdi_rng *r) { return next_normal(r); }

static void zig_once_setup(void) { pthread_once(&zig_once, zig_setup); }

/* ---- Lua side -------------------------------------------------------- */

static void rng_newclass(lua_State *L);

pdi_rng *pdi_rng_push(lua_State *L, uint64_t seed, uint64_t stream) {
  pdi_rng *r = (pdi_rng *)lua_newuserdatauv(L, sizeof(pdi_rng), 0); /* [g] */
  pdi_rng_init(r, seed, stream);
  rng_newclass(L);                                    /* [g, mt] */
  lua_setmetatable(L, -2);                            /* [g] */
  return r;
}

static pdi_rng *checkrng(lua_State *L) { return (pdi_rng *)luaL_checkudata(L, 1, PDI_RANDOM_MT); }

/* Seeds and stream numbers are integers; negative ones are taken as their
 * two's complement. */
static uint64_t checkseed(lua_State *L, int idx) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint) luaL_argerror(L, idx, "integer expected");
  return (uint64_t)v;
}

/* pd.random.new([seed [, stream]]) -> generator; seed and stream default to
 * 0 (the same numbers every run: pass a seed).  pd.random.stream(seed,
 * index) is the same with both given: what pd.rng() is in task index of a
 * job seeded with seed.  Stack: [seed?, stream?] -> [g] */
static int l_new(lua_State *L) {
  uint64_t seed = lua_isnoneornil(L, 1) ? 0 : checkseed(L, 1);
  uint64_t stream = lua_isnoneornil(L, 2) ? 0 : checkseed(L, 2);
  pdi_rng_push(L, seed, stream);
  return 1;
}
static int l_stream(lua_State *L) {
  pdi_rng_push(L, checkseed(L, 1), checkseed(L, 2));
  return 1;
}

/* Where the drawing methods put many values: an array passed at idx (filled
 * in place), or a new f64/i64 array of shape (n [, m]) read from idx, or
 * NULL for a single value.  Stack: [] -> [] or [a] */
static pdi_array *target(lua_State *L, int idx, int dtype, const char *usage) {
  if (lua_isnoneornil(L, idx)) return NULL;
  pdi_array *a = pdi_array_test(L, idx);
  if (a) {
    if (a->dtype != dtype && !(dtype == PDI_F64 && a->dtype == PDI_F32))
      luaL_argerror(L, idx, lua_pushfstring(L, "array of dtype %s cannot take these values", pdi_dtype_name(a->dtype)));
    lua_pushvalue(L, idx);
    return a;
  }
  if (lua_type(L, idx) != LUA_TNUMBER) luaL_argerror(L, idx, usage);
  lua_Integer n = luaL_checkinteger(L, idx);
  luaL_argcheck(L, n >= 0, idx, "negative size");
  int64_t dims[2] = {n, 1};
  int ndim = 1;
  if (!lua_isnoneornil(L, idx + 1)) {
    lua_Integer m = luaL_checkinteger(L, idx + 1);
    luaL_argcheck(L, m >= 0, idx + 1, "negative size");
    dims[1] = m;
    ndim = 2;
  }
  return pdi_array_new(L, dtype, ndim, dims);
}

/* Store v as element k (row-major) of a, any strides. */
static inline char *elem(pdi_array *a, int64_t k) {
  int64_t i = a->ndim == 2 ? k / a->dims[1] : k, j = a->ndim == 2 ? k % a->dims[1] : 0;
  return a->data + (i * a->strides[0] + j * a->strides[1]) * (int64_t)pdi_dtype_size(a->dtype);
}

/* Fill a with lo + (hi - lo) * u (uniform) or mu + sigma * z (normal). */
static void fill_float(pdi_rng *r, pdi_array *a, int normal, double p, double q) {
  if (a->dtype == PDI_F64 && pdi_array_contiguous(a)) {
    double *x = (double *)a->data;
    if (normal) for (int64_t k = 0; k < a->n; k++) x[k] = p + q * next_normal(r);
    else for (int64_t k = 0; k < a->n; k++) x[k] = p + (q - p) * next_uniform(r);
    return;
  }
  for (int64_t k = 0; k < a->n; k++) {
    double v = normal ? p + q * pdi_rng_normal(r) : p + (q - p) * pdi_rng_uniform(r);
    if (a->dtype == PDI_F64) *(double *)elem(a, k) = v;
    else *(float *)elem(a, k) = (float)v;
  }
}

/* g:uniform() -> u in [0, 1);  g:uniform(lo, hi) -> lo + (hi - lo) u;
 * g:uniform(lo, hi, n [, m]) -> new f64 array;  g:uniform(lo, hi, a) -> a
 * filled in place (f64 or f32).  Stack: [g, ...] -> [v] */
static int g_uniform(lua_State *L) {
  pdi_rng *r = checkrng(L);
  if (lua_gettop(L) == 1) { lua_pushnumber(L, pdi_rng_uniform(r)); return 1; }
  double lo = luaL_checknumber(L, 2), hi = luaL_checknumber(L, 3);
  pdi_array *a = target(L, 4, PDI_F64, "uniform wants (), (lo, hi), (lo, hi, n [, m]) or (lo, hi, array)");
  if (!a) { lua_pushnumber(L, lo + (hi - lo) * pdi_rng_uniform(r)); return 1; }
  fill_float(r, a, 0, lo, hi);
  return 1;
}

/* g:normal() -> standard normal;  g:normal(mu, sigma) -> mu + sigma z;
 * g:normal(mu, sigma, n [, m]) -> new f64 array;  g:normal(mu, sigma, a)
 * -> a filled in place.  Stack: [g, ...] -> [v] */
static int g_normal(lua_State *L) {
  pdi_rng *r = checkrng(L);
  if (lua_gettop(L) == 1) { lua_pushnumber(L, pdi_rng_normal(r)); return 1; }
  double mu = luaL_checknumber(L, 2), sigma = luaL_checknumber(L, 3);
  luaL_argcheck(L, sigma >= 0, 3, "the standard deviation must be >= 0");
  pdi_array *a = target(L, 4, PDI_F64, "normal wants (), (mu, sigma), (mu, sigma, n [, m]) or (mu, sigma, array)");
  if (!a) { lua_pushnumber(L, mu + sigma * pdi_rng_normal(r)); return 1; }
  fill_float(r, a, 1, mu, sigma);
  return 1;
}

/* g:integers(lo, hi) -> integer in [lo, hi], both included, unbiased;
 * g:integers(lo, hi, n [, m]) -> new i64 array.  Stack: [g, lo, hi, ...] -> [v] */
static int g_integers(lua_State *L) {
  pdi_rng *r = checkrng(L);
  lua_Integer lo = luaL_checkinteger(L, 2), hi = luaL_checkinteger(L, 3);
  luaL_argcheck(L, lo <= hi, 3, "empty interval (hi < lo)");
  uint64_t span = (uint64_t)hi - (uint64_t)lo + 1;    /* 0 means all 2^64 values */
  pdi_array *a = target(L, 4, PDI_I64, "integers wants (lo, hi), (lo, hi, n [, m]) or (lo, hi, array)");
#define DRAW() ((int64_t)((uint64_t)lo + (span ? pdi_rng_below(r, span) : next_u64(r))))
  if (!a) { lua_pushinteger(L, (lua_Integer)DRAW()); return 1; }
  for (int64_t k = 0; k < a->n; k++) *(int64_t *)elem(a, k) = DRAW();
#undef DRAW
  return 1;
}

/* g:permutation(n) -> i64 array holding 1..n in random order (Fisher-Yates).
 * Stack: [g, n] -> [p] */
static int g_permutation(lua_State *L) {
  pdi_rng *r = checkrng(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "negative size");
  int64_t d = n;
  pdi_array *a = pdi_array_new(L, PDI_I64, 1, &d);
  int64_t *x = (int64_t *)a->data;
  for (int64_t i = 0; i < n; i++) x[i] = i + 1;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)pdi_rng_below(r, (uint64_t)i + 1);
    int64_t t = x[i]; x[i] = x[j]; x[j] = t;
  }
  return 1;
}

/* g:bits() -> the next 64 raw bits as an integer (two's complement; under
 * LuaJIT a float, so exact only below 2^53).  Stack: [g] -> [i] */
static int g_bits(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)pdi_rng_u64(checkrng(L)));
  return 1;
}

/* g:state() -> {seed, stream, block, pos}: the next word is word pos
 * (0..3) of block `block`; enough to rebuild the generator exactly
 * (checkpoints).  pd.random.from_state(t) rebuilds it.
 * Stack: [g] -> [t] */
static int g_state(lua_State *L) {
  pdi_rng *r = checkrng(L);
  /* the next word is word pos of block `block` */
  uint64_t block = r->pos == 8 ? r->ctr[0] : r->ctr[0] - 2 + (uint64_t)(r->pos / 4);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)r->key[0]); lua_setfield(L, -2, "seed");
  lua_pushinteger(L, (lua_Integer)r->ctr[1]); lua_setfield(L, -2, "stream");
  lua_pushinteger(L, (lua_Integer)block); lua_setfield(L, -2, "block");
  lua_pushinteger(L, r->pos == 8 ? 0 : r->pos % 4); lua_setfield(L, -2, "pos");
  return 1;
}
static int l_from_state(lua_State *L) {
  PDI_STACK(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "seed");
  lua_getfield(L, 1, "stream");
  lua_getfield(L, 1, "block");
  lua_getfield(L, 1, "pos");                          /* [t, seed, stream, block, pos] */
  lua_Integer pos = luaL_checkinteger(L, 5);
  luaL_argcheck(L, pos >= 0 && pos <= 3, 1, "bad generator state");
  pdi_rng *r = pdi_rng_push(L, checkseed(L, 2), checkseed(L, 3));
  r->ctr[0] = checkseed(L, 4);
  philox2(r->ctr, r->key, r->buf);
  r->ctr[0] += 2;
  r->pos = (int)pos;
  PDI_STACK_CHECK(L, 5);                              /* [t, seed, stream, block, pos, g] */
  return 1;
}

/* tostring(g).  Stack: [g] -> [s] */
static int g_tostring(lua_State *L) {
  pdi_rng *r = checkrng(L);
  char s[96];
  snprintf(s, sizeof s, "pd.Random(seed %lld, stream %lld)", (long long)r->key[0], (long long)r->ctr[1]);
  lua_pushstring(L, s);
  return 1;
}

static const luaL_Reg g_methods[] = {
  {"uniform", g_uniform}, {"normal", g_normal}, {"integers", g_integers},
  {"permutation", g_permutation}, {"state", g_state}, {"bits", g_bits},
  {NULL, NULL},
};

static const luaL_Reg g_meta[] = {
  {"__tostring", g_tostring},
  {NULL, NULL},
};

/* The pd.Random metatable, made on first use in a state (a generator holds
 * no resource: no close function).  Stack: [] -> [mt] */
static void rng_newclass(lua_State *L) {
  pdi_newclass(L, PDI_RANDOM_MT, g_methods, g_meta, NULL);
}

static const luaL_Reg random_funcs[] = {
  {"new", l_new}, {"stream", l_stream}, {"from_state", l_from_state},
  {NULL, NULL},
};

/* pd.core.random: the table behind pd.random.  pd.core.array is opened
 * first: the drawing methods make arrays, which need its class.
 * Stack: [] -> [random] */
int luaopen_pd_core_random(lua_State *L) {
  PDI_STACK(L);
  luaL_requiref(L, "pd.core.array", luaopen_pd_core_array, 0);  /* [array] */
  lua_pop(L, 1);                                      /* [] */
  rng_newclass(L);                                    /* [mt] */
  lua_pop(L, 1);                                      /* [] */
  luaL_newlib(L, random_funcs);                       /* [random] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}
