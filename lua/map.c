/*
 * map.c: pd.core.map, the native side of pd.map (stdlib/pd/map.lua) and of
 * the worker loop (stdlib/pd/worker.lua).  This file only assembles the
 * module from its rooms, each of which adds its functions:
 *
 *   core.map.pool{workers=, memory=, argv=} -> pool   (a "pd.Pool" userdata)
 *   pool:submit(fnblob, list, opts) -> job id
 *   pool:pump(seconds) -> tasks finished        pool:status(id) -> string
 *   pool:progress(id) -> done, total, failed    pool:results(id) -> table
 *   pool:completed(id, k) -> i, v | nil         pool:first_failure(id)
 *   pool:cancel(id)  pool:release(id)  pool:pids()  pool:stats()  pool:close()
 *                                                        (pool.c)
 *   core.map.worker(loader)        the worker loop; never returns (worker.c)
 *   core.map.task() -> index, seed, serial of the task running here
 *   core.map.machine(), rss, alive, isatty, getpid       (probe.c)
 *   core.map.encode(v), decode(s), codec_encode(v), table(n),
 *   set_error_mt(mt), set_pd(pd)                         (taskvalue.c)
 *
 * The pool is a userdata with __gc and __close: closing the Lua state kills
 * and reaps every worker.  Values cross the socketpair through the value
 * codec (lua/codec.h), one message per argument, result and function.
 */
#include "binding.h"

/* Stack: [] -> [pd.core.map] */
int luaopen_pd_core_map(lua_State *L) {
  PDI_STACK(L);
  lua_createtable(L, 0, 16);                       /* [m] */
  pdi_map_open_values(L);
  pdi_map_open_pool(L);
  pdi_map_open_worker(L);
  pdi_map_open_probe(L);
  PDI_STACK_CHECK(L, 1);
  return 1;
}
