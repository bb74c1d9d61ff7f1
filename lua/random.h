/*
 * random.h: pd.random seen from C (lua/random.c): the streams pd.map and
 * the optimisers' kernels (optim.c) draw from, and the generator type
 * "pd.Random".  Internal to pdlua (pdi_ names); the Lua face is
 * docs/arrays.md ("Random numbers").  Uses pd.array (array.h) for the
 * drawing methods that fill arrays; pd.array does not use it.
 *
 * Philox4x64-10 (Salmon et al., SC'11), counter-based: the key is the
 * seed, the counter is (block, stream, 0, 0).  Distinct (seed, stream)
 * pairs give streams that do not overlap for 2^64 blocks of 4 words, and
 * stream s of seed k is the same on every machine and every run.
 */
#ifndef PDLUA_RANDOM_H
#define PDLUA_RANDOM_H

#include <stdint.h>

#include "compat.h"

#define PDI_RANDOM_MT "pd.Random"

typedef struct pdi_rng {
  uint64_t key[2];       /* seed, 0 */
  uint64_t ctr[4];       /* block, stream, 0, 0 */
  uint64_t buf[8];       /* output of the last two blocks (ctr[0]-2, ctr[0]-1) */
  int pos;               /* next unused word of buf; 8 = empty */
} pdi_rng;

/* Set r to stream `stream` of seed `seed`, at its start. */
void pdi_rng_init(pdi_rng *r, uint64_t seed, uint64_t stream);
/* The stream a task sees: pd.rng() inside task task_index (1-based) of a
 * job with seed `seed`.  Same as pdi_rng_init(r, seed, task_index). */
void pdi_rng_for_task(pdi_rng *r, uint64_t seed, uint64_t task_index);
/* Next 64 random bits; a uniform double in [0, 1) with 53 random bits; a
 * standard normal (ziggurat, 256 layers). */
uint64_t pdi_rng_u64(pdi_rng *r);
double pdi_rng_uniform(pdi_rng *r);
double pdi_rng_normal(pdi_rng *r);
/* Uniform integer in [0, range) without bias (Lemire); range > 0. */
uint64_t pdi_rng_below(pdi_rng *r, uint64_t range);

/* Push a new generator (metatable "pd.Random", made here if this state has
 * none yet) set to (seed, stream).  Stack: [] -> [g] */
pdi_rng *pdi_rng_push(lua_State *L, uint64_t seed, uint64_t stream);

#endif
