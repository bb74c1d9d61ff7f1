/*
 * taskvalue.h: what the rooms of pd.core.map share, and nothing else sees.
 *
 *   map.c        the module (luaopen_pd_core_map): assembles the others
 *   taskvalue.c  values across the socketpair (encode, decode,
 *             codec_encode, table), and the tables the Lua side hands
 *             over (set_error_mt, set_pd)
 *   pool.c    the coordinator side: the "pd.Pool" userdata over the
 *             scheduler (core/sched.c), its error objects, the pump hook
 *   worker.c  the worker process's loop: job loading and its blob cache,
 *             task batches run in Lua, results written back, memory cap
 *   probe.c   the machine and its processes: cpus, memory, rss, alive,
 *             isatty, getpid
 *
 * Each room adds its functions to the module table (pdi_map_open_*); the
 * value coders are static inline here because the worker's task loop and
 * the pool's collect call them once per task.
 */
#ifndef PDLUA_TASKVALUE_H
#define PDLUA_TASKVALUE_H

#include "binding.h"
#include "codec.h"

#define POOL_MT "pd.Pool"
/* Registry keys of the tables the Lua side hands over (taskvalue.c's setters):
 * the error objects' metatable (pool.c) and the table whose `shared` field
 * a task sees (worker.c). */
#define ERROR_MT_KEY "pd.Error"
#define PD_KEY "pd.map.pd"

/* ==== values ================================================================
 * Every argument, result, error and function crosses the socketpair as one
 * codec message (lua/codec.h).  The workers are this process's own children
 * running the same VM: a trusted peer, so functions travel as bytecode and
 * modules are resolved with require. */

/* Encode the value at idx into b, or raise.  Scalars alone in a message (a
 * map of numbers) take the codec's own lone-scalar path (lua/codec.c,
 * "scalar fast path"): the general coder's set-up costs about 1 us per
 * message.  Stack: unchanged. */
static inline void pdi_map_enc_value(lua_State *L, int idx, pd_buf *b) {
  if (pdi_codec_encode_scalar(L, idx, b)) return;
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  pdi_codec_encode(L, idx, b, &o);
}

/* Decode n bytes at p onto the stack, or raise.  [] -> [v] */
static inline void pdi_map_decode(lua_State *L, const char *p, size_t n) {
  if (n <= PDI_CODEC_MAX_SIZE && pdi_codec_decode_scalar(L, p, n)) return;
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  pdi_codec_decode(L, p, n, &o);
}

/* core.map.encode(v) -> string (taskvalue.c); the worker calls it under
 * lua_pcall for a result that is not a lone scalar.  [v] -> [v, s] */
int pdi_map_encode(lua_State *L);

#endif
