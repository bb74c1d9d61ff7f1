/*
 * pool.c: the coordinator side of pd.map: the "pd.Pool" userdata over the
 * scheduler (core/sched.c, pd_pool_* in pd.h), which starts the workers,
 * hands them batches and keeps every task's result or error.  This file
 * only binds it: the scheduler has no Lua in it.
 *
 * - A pool is a userdata made closed before the pd_pool exists; close(),
 *   __gc and __close kill and reap every worker (idempotent), and any
 *   method but closed() on a closed pool raises.
 * - Jobs are named by ids (pool:submit's result), not by pointers; an id
 *   that was released raises "no such job".
 * - A failed task reads as an error object (push_task): {message,
 *   traceback, task, node, pid, kind} with the metatable pd.map set by
 *   core.map.set_error_mt (stdlib/pd/error.lua's pd.Error).
 * - The pump runs in the calling thread: pool:pump waits, and between
 *   waits a count hook (pump_hook) keeps the workers fed while the script
 *   runs its own code.
 */
#include "taskvalue.h"

#include "pd/pd.h"

#include <string.h>

typedef struct lpool { pd_pool *p; } lpool;

static lpool *check_pool(lua_State *L) {
  lpool *lp = (lpool *)luaL_checkudata(L, 1, POOL_MT);
  if (!lp->p) luaL_error(L, "attempt to use a closed pool");
  return lp;
}

pd_pool *pdi_pool_check(lua_State *L, int idx) {
  lpool *lp = (lpool *)luaL_checkudata(L, idx, POOL_MT);
  if (!lp->p) luaL_error(L, "attempt to use a closed pool");
  return lp->p;
}

/* core.map.pool{workers=, memory= (bytes), argv={...}, gpus=} -> pool.
 * gpus > 0: each worker bound to one of devices 0..gpus-1 (pd_pool_opts).
 * Userdata first (closed), pool second.  Stack: [opts] -> [pool] */
static int m_pool(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  PDI_STACK(L);
  lpool *lp = (lpool *)lua_newuserdatauv(L, sizeof *lp, 0);
  lp->p = NULL;
  luaL_setmetatable(L, POOL_MT);
  lua_getfield(L, 1, "workers");
  int workers = (int)luaL_optinteger(L, -1, 1);
  lua_getfield(L, 1, "memory");
  double mem = luaL_optnumber(L, -1, 0);
  lua_getfield(L, 1, "argv");
  luaL_checktype(L, -1, LUA_TTABLE);
  int n = (int)lua_rawlen(L, -1);
  luaL_argcheck(L, n >= 1 && n < 16, 1, "argv: 1 to 15 words");
  char *argv[16];
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, -1, i + 1);
    argv[i] = (char *)luaL_checkstring(L, -1);     /* kept alive by argv table */
    lua_pop(L, 1);
  }
  argv[n] = NULL;
  /* workers may be 0 when a cluster lends every slot (pdlua run --cpus 0) */
  lua_getfield(L, 1, "gpus");
  int gpus = (int)luaL_optinteger(L, -1, 0);
  luaL_argcheck(L, gpus >= 0 && gpus <= 64, 1, "gpus: 0 to 64");
  pd_pool_opts o = {workers >= 0 ? workers : 1, (unsigned long long)(mem > 0 ? mem : 0), argv,
                    gpus};
  lp->p = pd_pool_new(&o);
  if (!lp->p) return luaL_error(L, "not enough memory");
  lua_pop(L, 4);                                   /* [opts, pool] */
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* pool:close() / __gc / __close: kill and reap every worker, free every
 * job; the pool is closed after (idempotent).  Stack: [pool] -> [] */
static int p_gc(lua_State *L) {
  lpool *lp = (lpool *)luaL_checkudata(L, 1, POOL_MT);
  pd_pool_free(lp->p);
  lp->p = NULL;
  return 0;
}

static pd_job *check_job(lua_State *L, lpool *lp, int idx) {
  pd_job *j = pd_pool_job(lp->p, (uint32_t)luaL_checkinteger(L, idx));
  if (!j) luaL_error(L, "no such job %d (released?)", (int)lua_tointeger(L, idx));
  return j;
}

static int optint(lua_State *L, int t, const char *k, int d) {
  lua_getfield(L, t, k);
  int v = (int)luaL_optinteger(L, -1, d);
  lua_pop(L, 1);
  return v;
}

typedef struct encjob { pd_job *j; lua_Integer at; } encjob;

/* Protected: encode list[1..n] into the job.  [ej, list, n] -> [] */
static int encode_args(lua_State *L) {
  encjob *ej = (encjob *)lua_touserdata(L, 1);
  lua_Integer n = lua_tointeger(L, 3);
  PDI_ASSERT(lua_gettop(L) == 3);
  pd_buf *b = pd_job_argbuf(ej->j);
  if (pd_buf_reserve(b, (size_t)n * 10 + 16)) return luaL_error(L, "not enough memory");
  for (lua_Integer i = 1; i <= n; i++) {
    ej->at = i;
    lua_rawgeti(L, 2, i);
    pdi_map_enc_value(L, -1, b);
    pd_job_argend(ej->j);
    lua_settop(L, 3);                              /* [ej, list, n] */
  }
  return 0;
}

/* pool:submit(fnblob, list, opts) -> id.  Encodes every element of list
 * (1..n, n = opts.n or #list) now: an unsendable value is an error here,
 * before any work starts.  Stack: unchanged but for the result. */
static int p_submit(lua_State *L) {
  lpool *lp = check_pool(L);
  PDI_STACK(L);
  size_t fnlen;
  const char *fn = luaL_checklstring(L, 2, &fnlen);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TTABLE);
  lua_getfield(L, 4, "n");
  lua_Integer n = lua_isnil(L, -1) ? (lua_Integer)lua_rawlen(L, 3) : luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  luaL_argcheck(L, n >= 0 && n < (lua_Integer)UINT32_MAX / 2, 3, "too many tasks");
  pd_job_opts o;
  memset(&o, 0, sizeof o);
  o.chunk = optint(L, 4, "chunk", 0);
  o.cpus = optint(L, 4, "cpus", 0);
  o.retries = optint(L, 4, "retries", 2);
  if (o.retries > 100) o.retries = 100;            /* counted in a byte per task */
  lua_getfield(L, 4, "timeout");
  o.timeout = luaL_optnumber(L, -1, 0);
  lua_getfield(L, 4, "seed");
  o.seed = (uint64_t)(lua_Integer)luaL_optnumber(L, -1, 0);
  lua_getfield(L, 4, "collect");
  o.stop_on_error = !lua_toboolean(L, -1);
  lua_getfield(L, 4, "unpack");
  o.unpack = lua_toboolean(L, -1);
  lua_getfield(L, 4, "gang");                      /* pd.tasks across nodes */
  o.gang = lua_toboolean(L, -1);
  lua_pop(L, 5);
  pd_job *j = pd_job_new(lp->p, fn, fnlen, (uint32_t)n, &o);
  if (!j) return luaL_error(L, "not enough memory");
  /* Encoding may raise (an unsendable element, out of memory): do it under
   * a protected call so that the job is not leaked, then raise ourselves.
   * No message handler: the coder runs no Lua code, and its bare message
   * is part of ours. */
  encjob ej = {j, 0};
  lua_pushcfunction(L, encode_args);
  lua_pushlightuserdata(L, &ej);
  lua_pushvalue(L, 3);
  lua_Integer nn = n;
  lua_pushinteger(L, nn);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    pd_pool_submit(lp->p, j);
    pd_pool_release(lp->p, j);
    return luaL_error(L, "pd.map: element %d of the list cannot be sent to a worker: %s",
                      (int)ej.at, lua_tostring(L, -1));
  }
  pd_pool_submit(lp->p, j);
  lua_pushinteger(L, (lua_Integer)pd_job_id(j));
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* pool:pump([seconds]) -> tasks finished (0 when the time ran out).
 * seconds < 0 or nil: until something finishes. */
static int p_pump(lua_State *L) {
  lpool *lp = check_pool(L);
  int rc = pd_pool_pump(lp->p, luaL_optnumber(L, 2, -1));
  if (rc < 0) return luaL_error(L, "cannot start a worker process: %s", strerror(-rc));
  lua_pushinteger(L, rc);
  return 1;
}

static const char *const status_names[] = {"queued", "running", "done", "failed", "cancelled"};

/* pool:status(id) -> "queued" | "running" | "done" | "failed" | "cancelled" */
static int p_status(lua_State *L) {
  lpool *lp = check_pool(L);
  lua_pushstring(L, status_names[pd_job_status(check_job(L, lp, 2))]);
  return 1;
}

/* pool:progress(id) -> done, total, failed */
static int p_progress(lua_State *L) {
  lpool *lp = check_pool(L);
  uint32_t d, t, f;
  pd_job_progress(check_job(L, lp, 2), &d, &t, &f);
  lua_pushinteger(L, d);
  lua_pushinteger(L, t);
  lua_pushinteger(L, f);
  return 3;
}

/* Push task i's value: its result, an error object, or nil (not final).
 * Returns the task's state.  Stack: [] -> [v] */
static int push_task(lua_State *L, pd_job *j, uint32_t i) {
  PDI_STACK(L);
  const char *p = NULL;
  size_t n = 0;
  int pid = 0;
  int st = pd_job_task(j, i, &p, &n, &pid);
  if (st == PD_T_DONE) {
    pdi_map_decode(L, p, n);
    return st;
  }
  if (st != PD_T_ERROR && st != PD_T_FAILED) {
    lua_pushnil(L);
    return st;
  }
  if (st == PD_T_ERROR) pdi_map_decode(L, p, n);   /* [{message, traceback}] */
  else {
    lua_newtable(L);
    lua_pushlstring(L, p, n);
    lua_setfield(L, -2, "message");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "traceback");
  }
  if (!lua_istable(L, -1)) luaL_error(L, "malformed error from a worker");
  lua_pushinteger(L, (lua_Integer)i + 1);
  lua_setfield(L, -2, "task");
  if (pid < 0) lua_pushfstring(L, "remote slot %d", -pid);   /* cluster: see sched.c */
  else lua_pushfstring(L, "local:%d", pid);
  lua_setfield(L, -2, "node");
  lua_pushinteger(L, pid);
  lua_setfield(L, -2, "pid");
  lua_pushstring(L, st == PD_T_ERROR ? "error" : "failed");
  lua_setfield(L, -2, "kind");
  lua_getfield(L, LUA_REGISTRYINDEX, ERROR_MT_KEY);
  lua_setmetatable(L, -2);
  PDI_STACK_CHECK(L, 1);
  return st;
}

/* pool:results(id) -> { v1, ..., n = total }: error objects in the slots of
 * failed tasks, nil in those that never ran. */
static int p_results(lua_State *L) {
  lpool *lp = check_pool(L);
  pd_job *j = check_job(L, lp, 2);
  uint32_t total;
  pd_job_progress(j, NULL, &total, NULL);
  lua_createtable(L, (int)total, 1);
  for (uint32_t i = 0; i < total; i++) {
    push_task(L, j, i);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_pushinteger(L, total);
  lua_setfield(L, -2, "n");
  return 1;
}

/* pool:task(id, i) -> v, state, pid */
static int p_task(lua_State *L) {
  lpool *lp = check_pool(L);
  pd_job *j = check_job(L, lp, 2);
  lua_Integer i = luaL_checkinteger(L, 3);
  uint32_t total;
  pd_job_progress(j, NULL, &total, NULL);
  luaL_argcheck(L, i >= 1 && i <= total, 3, "no such task");
  int st = push_task(L, j, (uint32_t)(i - 1));
  int pid = 0;
  pd_job_task(j, (uint32_t)(i - 1), NULL, NULL, &pid);
  lua_pushinteger(L, st);
  lua_pushinteger(L, pid);
  return 3;
}

/* pool:collect(id, t, k) -> k': decode into t[i] the results of the tasks
 * that finished (done, not failed) k+1 .. k' in completion order, k' being
 * all finished so far.  The synchronous pd.map collects as the results come
 * in, while the workers run the next batches.  Stack: [...] -> [..., k'] */
static int p_collect(lua_State *L) {
  lpool *lp = check_pool(L);
  pd_job *j = check_job(L, lp, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  uint32_t k = (uint32_t)luaL_checkinteger(L, 4);
  PDI_STACK(L);
  pd_job_view v;
  pd_job_view_get(j, &v);                          /* nothing below changes the job */
  for (; k < v.ndone; k++) {
    uint32_t i = v.order[k];
    if (v.st[i] != PD_T_DONE) continue;
    const char *p = v.res + v.roff[i];
    pdi_map_decode(L, p, v.rlen[i]);
    lua_rawseti(L, 3, (lua_Integer)i + 1);
  }
  lua_pushinteger(L, k);
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* Push task i of job j as (i + 1, value), or nothing when i is UINT32_MAX
 * (no such task).  Returns the number of values pushed (2 or 0).
 * Stack: [] -> [i, v] or [] */
static int push_found(lua_State *L, pd_job *j, uint32_t i) {
  if (i == UINT32_MAX) return 0;
  lua_pushinteger(L, (lua_Integer)i + 1);
  push_task(L, j, i);
  return 2;
}

/* pool:completed(id, k) -> i, v for the k-th task to finish, or nothing.
 * Stack: [pool, id, k] -> [i, v] or [] */
static int p_completed(lua_State *L) {
  lpool *lp = check_pool(L);
  pd_job *j = check_job(L, lp, 2);
  return push_found(L, j, pd_job_completed(j, (uint32_t)(luaL_checkinteger(L, 3) - 1)));
}

/* pool:first_failure(id) -> i, error object of the failed task with the
 * lowest index, or nothing.  Stack: [pool, id] -> [i, e] or [] */
static int p_first_failure(lua_State *L) {
  lpool *lp = check_pool(L);
  pd_job *j = check_job(L, lp, 2);
  return push_found(L, j, pd_job_first_failure(j));
}

/* pool:cancel(id): see pd_pool_cancel.  Stack: [pool, id] -> [] */
static int p_cancel(lua_State *L) {
  lpool *lp = check_pool(L);
  pd_pool_cancel(lp->p, check_job(L, lp, 2));
  return 0;
}

/* pool:release(id): forget the job (unknown ids are ignored). */
static int p_release(lua_State *L) {
  lpool *lp = check_pool(L);
  pd_job *j = pd_pool_job(lp->p, (uint32_t)luaL_checkinteger(L, 2));
  if (j) pd_pool_release(lp->p, j);
  return 0;
}

/* pool:resize(n): at most n workers from now on. */
static int p_resize(lua_State *L) {
  lpool *lp = check_pool(L);
  pd_pool_resize(lp->p, (int)luaL_checkinteger(L, 2));
  return 0;
}

/* pool:busy() -> number of workers holding tasks now */
static int p_busy(lua_State *L) {
  lpool *lp = check_pool(L);
  lua_pushinteger(L, pd_pool_busy(lp->p));
  return 1;
}

/* pool:pids() -> { pid, ... } of the workers running now */
static int p_pids(lua_State *L) {
  lpool *lp = check_pool(L);
  int pids[1024];
  int n = pd_pool_pids(lp->p, pids, 1024);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushinteger(L, pids[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* pool:stats() -> {spawned=, lost=, frames_out=, frames_in=, tasks_done=, task_seconds=}
 * (task_seconds: the workers' time in tasks, by their own clocks) */
static int p_stats(lua_State *L) {
  lpool *lp = check_pool(L);
  pd_pool_stats s;
  pd_pool_stats_get(lp->p, &s);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)s.spawned); lua_setfield(L, -2, "spawned");
  lua_pushinteger(L, (lua_Integer)s.lost); lua_setfield(L, -2, "lost");
  lua_pushinteger(L, (lua_Integer)s.frames_out); lua_setfield(L, -2, "frames_out");
  lua_pushinteger(L, (lua_Integer)s.frames_in); lua_setfield(L, -2, "frames_in");
  lua_pushinteger(L, (lua_Integer)s.tasks_done); lua_setfield(L, -2, "tasks_done");
  lua_pushnumber(L, s.task_seconds); lua_setfield(L, -2, "task_seconds");
  return 1;
}

/* pool:closed() -> true after close (or pd.shutdown) */
static int p_closed(lua_State *L) {
  lpool *lp = (lpool *)luaL_checkudata(L, 1, POOL_MT);
  lua_pushboolean(L, lp->p == NULL);
  return 1;
}

/* ==== background progress ===================================================
 * The scheduler runs in the coordinator's thread.  While the script runs
 * its own Lua code after pd.map_async, a count hook pumps the pools now and
 * then (every PUMP_EVERY VM instructions, without waiting), so that workers
 * get new batches; it removes itself when no job has work left.  It is only
 * installed when no other hook is (a debugger's wins), and does not run in
 * LuaJIT's compiled code or while a C function blocks. */
#define PUMP_EVERY 100000

static void pump_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  PDI_STACK(L);
  int pending = 0;
  lua_getfield(L, LUA_REGISTRYINDEX, "pd.map.pools");   /* [pools] */
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {                      /* [pools, k, pool] */
      lpool *lp = (lpool *)luaL_testudata(L, -1, POOL_MT);
      if (lp && lp->p && pd_pool_pending(lp->p)) {
        pd_pool_pump(lp->p, 0);                    /* errors: seen at the next wait */
        pending |= pd_pool_pending(lp->p);
      }
      lua_pop(L, 1);                               /* [pools, k] */
    }
  }
  lua_pop(L, 1);                                   /* [] */
  PDI_STACK_CHECK(L, 0);
  if (!pending) lua_sethook(L, NULL, 0, 0);
}

/* core.map.autopump(pools): install the hook (see above) on this thread,
 * pumping the pools in table `pools`.  Stack: [pools] -> [] */
static int m_autopump(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "pd.map.pools");
  lua_Hook h = lua_gethook(L);
  if (h == NULL || h == pump_hook) lua_sethook(L, pump_hook, LUA_MASKCOUNT, PUMP_EVERY);
  return 0;
}

static const luaL_Reg pool_methods[] = {
  {"submit", p_submit}, {"pump", p_pump}, {"status", p_status},
  {"progress", p_progress}, {"results", p_results}, {"task", p_task},
  {"completed", p_completed}, {"collect", p_collect}, {"first_failure", p_first_failure},
  {"cancel", p_cancel}, {"release", p_release}, {"resize", p_resize},
  {"pids", p_pids}, {"busy", p_busy}, {"stats", p_stats}, {"close", p_gc}, {"closed", p_closed},
  {NULL, NULL},
};
static const luaL_Reg pool_funcs[] = {
  {"pool", m_pool}, {"autopump", m_autopump},
  {NULL, NULL},
};

void pdi_map_open_pool(lua_State *L) {
  PDI_STACK(L);
  pdi_newclass(L, POOL_MT, pool_methods, NULL, p_gc); /* [m, mt] */
  lua_pop(L, 1);                                   /* [m] */
  luaL_setfuncs(L, pool_funcs, 0);
  PDI_STACK_CHECK(L, 0);
}
