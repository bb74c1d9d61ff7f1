/* array_test.c: the C side of pd.array and pd.random (lua/array.h,
 * lua/random.h), as pd.map and the codec use it: task streams, the Philox
 * known answer, arrays made and walked from C, the wire form. */
#include "array.h"
#include "pd_test.h"
#include "random.h"

#include <math.h>
#include <string.h>

static lua_State *state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "pd.core.array", luaopen_pd_core_array, 0);
  lua_pop(L, 1);
  return L;
}

/* Random123's kat_vectors: philox4x64-10, counter 0, key 0. */
static void test_philox_known_answer(void) {
  pdi_rng r;
  pdi_rng_init(&r, 0, 0);
  PD_CHECK(pdi_rng_u64(&r) == UINT64_C(0x16554d9eca36314c));
  PD_CHECK(pdi_rng_u64(&r) == UINT64_C(0xdb20fe9d672d0fdc));
  PD_CHECK(pdi_rng_u64(&r) == UINT64_C(0xd7e772cee186176b));
  PD_CHECK(pdi_rng_u64(&r) == UINT64_C(0x7e68b68aec7ba23b));
}

/* A task's stream depends on (seed, task index) only, and distinct tasks
 * get distinct streams. */
static void test_task_streams(void) {
  pdi_rng a, b, c;
  pdi_rng_for_task(&a, 99, 3);
  pdi_rng_init(&b, 99, 3);
  pdi_rng_for_task(&c, 99, 4);
  int same = 1, differ = 0;
  for (int i = 0; i < 100; i++) {
    uint64_t x = pdi_rng_u64(&a), y = pdi_rng_u64(&b), z = pdi_rng_u64(&c);
    same &= x == y;
    differ += x != z;
  }
  PD_CHECK(same);
  PD_CHECK(differ == 100);
}

/* Normals straight from C (no generator pushed first: the ziggurat tables
 * are set up by pdi_rng_init). */
static void test_normal_from_c(void) {
  pdi_rng r;
  pdi_rng_for_task(&r, 1, 1);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; i++) {
    double z = pdi_rng_normal(&r);
    s += z;
    s2 += z * z;
  }
  PD_CHECK(fabs(s / n) < 5 / sqrt(n));
  PD_CHECK(fabs(s2 / n - 1) < 5 * sqrt(2.0 / n));
  for (int i = 0; i < 1000; i++) {
    uint64_t k = pdi_rng_below(&r, 6);
    PD_CHECK(k < 6);
    double u = pdi_rng_uniform(&r);
    PD_CHECK(u >= 0 && u < 1);
  }
}

/* Rows of a 2-D array from C, as pd.map hands them to tasks. */
static void test_rows_from_c(void) {
  lua_State *L = state();
  int64_t dims[2] = {3, 4};
  pdi_array *a = pdi_array_new(L, PDI_F64, 2, dims);          /* [a] */
  for (int64_t k = 0; k < a->n; k++) ((double *)a->data)[k] = (double)k;
  PD_CHECK(pdi_array_contiguous(a) && a->strides[0] == 4 && a->strides[1] == 1);
  for (int64_t i = 0; i < a->dims[0]; i++) {
    pdi_array_push_item(L, 1, i);                               /* [a, row] */
    pdi_array *row = pdi_array_check(L, -1);
    PD_CHECK(!row->owner && row->ndim == 1 && row->dims[0] == 4);
    PD_CHECK(row->data == a->data + i * a->strides[0] * (int64_t)pdi_dtype_size(a->dtype));
    PD_CHECK(((double *)row->data)[3] == (double)(i * 4 + 3));
    lua_pop(L, 1);                                              /* [a] */
  }
  PD_CHECK(pdi_array_test(L, 1) == a);
  lua_pushinteger(L, 1);
  PD_CHECK(pdi_array_test(L, -1) == NULL);
  lua_close(L);
}

/* The wire form written and read from C; the payload is canonical. */
static void test_wire_from_c(void) {
  lua_State *L = state();
  int64_t n = 300;
  pdi_array *a = pdi_array_new(L, PDI_I32, 1, &n);
  for (int i = 0; i < 300; i++) ((int32_t *)a->data)[i] = i * i - 7;
  size_t len = pdi_array_encoded_size(a);
  PD_CHECK(len == 2 + 2 + 300 * 4);                 /* 300 is two LEB128 bytes */
  char *buf = malloc(len);
  pdi_array_encode(a, buf);
  PD_CHECK(buf[0] == PDI_I32 && buf[1] == 1);
  PD_CHECK(pdi_array_decode(L, buf, len) == NULL);
  pdi_array *b = pdi_array_check(L, -1);
  PD_CHECK(b->n == 300 && b->dtype == PDI_I32 && memcmp(a->data, b->data, 1200) == 0);
  int top = lua_gettop(L);
  PD_CHECK(pdi_array_decode(L, buf, len - 1) != NULL);
  PD_CHECK(lua_gettop(L) == top);                   /* refused: nothing pushed */
  free(buf);
  lua_close(L);
}

PD_TESTS = {
  {"philox known answer", test_philox_known_answer},
  {"task streams", test_task_streams},
  {"normal from C", test_normal_from_c},
  {"rows from C", test_rows_from_c},
  {"wire from C", test_wire_from_c},
  {NULL, NULL},
};
