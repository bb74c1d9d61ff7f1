/*
 * map.c: pd.core.map, the native side of pd.map (stdlib/pd/map.lua) and of
 * the worker loop (stdlib/pd/worker.lua).
 *
 *   core.map.pool{workers=, memory=, argv=} -> pool   (a "pd.Pool" userdata)
 *   pool:submit(fnblob, list, opts) -> job id
 *   pool:pump(seconds) -> tasks finished        pool:status(id) -> string
 *   pool:progress(id) -> done, total, failed    pool:results(id) -> table
 *   pool:completed(id, k) -> i, v | nil         pool:first_failure(id)
 *   pool:cancel(id)  pool:release(id)  pool:pids()  pool:stats()  pool:close()
 *   core.map.worker(loader)        the worker loop; never returns
 *   core.map.task() -> index, seed, serial of the task running here
 *
 * The pool is a userdata with __gc and __close: closing the Lua state kills
 * and reaps every worker.  Values cross the socketpair through the value
 * codec (lua/codec.h), one message per argument, result and function.
 */
#define _GNU_SOURCE
#include "binding.h"
#include "pd/pdi.h"
#include "codec.h"

#include "pd/pd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POOL_MT "pd.Pool"
#define ERROR_MT_KEY "pd.Error"      /* registry: the error objects' metatable */
#define CTX_KEY "pd.map.ctx"         /* registry: the worker's task context */

/* ==== values ================================================================
 * Every argument, result, error and function crosses the socketpair as one
 * codec message (lua/codec.h).  The workers are this process's own children
 * running the same VM: a trusted peer, so functions travel as bytecode and
 * modules are resolved with require. */

/* Scalars alone in a message (a map of numbers) take the codec's own
 * lone-scalar path (lua/codec.c, "scalar fast path"): the general coder's
 * set-up costs about 1 us per message. */
static void enc_value(lua_State *L, int idx, pd_buf *b) {
  if (pdi_codec_encode_scalar(L, idx, b)) return;
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  pdi_codec_encode(L, idx, b, &o);
}

/* Decode n bytes at p onto the stack, or raise.  [] -> [v] */
static void decode_or_raise(lua_State *L, const char *p, size_t n) {
  if (n <= PDI_CODEC_MAX_SIZE && pdi_codec_decode_scalar(L, p, n)) return;
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  pdi_codec_decode(L, p, n, &o);
}

/* core.map.codec_encode(v) -> the general coder's bytes, without the
 * lone-scalar path (for the spec that holds that path to them).
 * Stack: [v] -> [s] */
static int m_codec_encode(lua_State *L) {
  pd_buf b;
  pd_buf_init(&b);
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  o.no_scalar_path = 1;
  luaL_checkany(L, 1);
  pdi_codec_encode(L, 1, &b, &o);                  /* scalars only: cannot raise */
  lua_pushlstring(L, b.data, b.len);
  pd_buf_free(&b);
  return 1;
}

/* The state's scratch buffer (a userdata in the registry that owns it, so
 * an encoding that raises leaks nothing).  Stack: unchanged. */
static int scratch_gc(lua_State *L) {
  pd_buf_free((pd_buf *)lua_touserdata(L, 1));
  return 0;
}

static pd_buf *scratch(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "pd.map.scratch");
  pd_buf *b = (pd_buf *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (b) return b;
  b = (pd_buf *)lua_newuserdatauv(L, sizeof *b, 0);
  pd_buf_init(b);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, scratch_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "pd.map.scratch");
  return b;
}

/* core.map.encode(v) -> string; core.map.decode(s) -> v.  [v] -> [s] */
static int m_encode(lua_State *L) {
  luaL_checkany(L, 1);
  pd_buf *b = scratch(L);
  b->len = 0;
  enc_value(L, 1, b);
  lua_pushlstring(L, b->data ? b->data : "", b->len);
  if (b->cap > (1u << 20)) pd_buf_free(b);         /* keep no big buffer */
  return 1;
}

static int m_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  decode_or_raise(L, s, n);
  return 1;
}

/* ==== the running task ======================================================
 * pd.rng() inside a task is pd.random's stream (job seed, task index): the
 * worker records here which task runs; stdlib/pd/map.lua makes the stream. */
/* The task now running in this worker (registry CTX_KEY). */
typedef struct taskctx {
  uint64_t seed;
  uint32_t index;          /* 0-based task index */
  uint64_t serial;         /* changes with every task */
  int in_task;
} taskctx;

static taskctx *get_ctx(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
  taskctx *c = (taskctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return c;
}

/* core.map.task() -> index (1-based), job seed, serial (changes with every
 * task) of the task running in this worker, or nothing outside a task. */
static int m_task(lua_State *L) {
  taskctx *c = get_ctx(L);
  if (!c || !c->in_task) return 0;
  lua_pushinteger(L, (lua_Integer)c->index + 1);
  lua_pushinteger(L, (lua_Integer)c->seed);
  lua_pushinteger(L, (lua_Integer)c->serial);
  return 3;
}

/* ==== the pool (coordinator side) =============================================== */

typedef struct lpool { pd_pool *p; } lpool;

static lpool *check_pool(lua_State *L) {
  lpool *lp = (lpool *)luaL_checkudata(L, 1, POOL_MT);
  if (!lp->p) luaL_error(L, "attempt to use a closed pool");
  return lp;
}

/* core.map.pool{workers=, memory= (bytes), argv={...}, gpus=} -> pool.
 * gpus > 0: each worker bound to one of devices 0..gpus-1 (pd_pool_opts).
 * Userdata first (closed), pool second.  Stack: [opts] -> [pool] */
static int m_pool(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
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
  pd_buf *b = pd_job_argbuf(ej->j);
  if (pd_buf_reserve(b, (size_t)n * 10 + 16)) return luaL_error(L, "not enough memory");
  for (lua_Integer i = 1; i <= n; i++) {
    ej->at = i;
    lua_rawgeti(L, 2, i);
    enc_value(L, -1, b);
    pd_job_argend(ej->j);
    lua_settop(L, 3);
  }
  return 0;
}

/* pool:submit(fnblob, list, opts) -> id.  Encodes every element of list
 * (1..n, n = opts.n or #list) now: an unsendable value is an error here,
 * before any work starts.  Stack: unchanged but for the result. */
static int p_submit(lua_State *L) {
  lpool *lp = check_pool(L);
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
   * a protected call so that the job is not leaked, then raise ourselves. */
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
  const char *p = NULL;
  size_t n = 0;
  int pid = 0;
  int st = pd_job_task(j, i, &p, &n, &pid);
  if (st == PD_T_DONE) {
    decode_or_raise(L, p, n);
    return st;
  }
  if (st != PD_T_ERROR && st != PD_T_FAILED) {
    lua_pushnil(L);
    return st;
  }
  if (st == PD_T_ERROR) decode_or_raise(L, p, n);   /* [{message, traceback}] */
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
  pd_job_view v;
  pd_job_view_get(j, &v);                          /* nothing below changes the job */
  for (; k < v.ndone; k++) {
    uint32_t i = v.order[k];
    if (v.st[i] != PD_T_DONE) continue;
    const char *p = v.res + v.roff[i];
    decode_or_raise(L, p, v.rlen[i]);
    lua_rawseti(L, 3, (lua_Integer)i + 1);
  }
  lua_pushinteger(L, k);
  return 1;
}

/* core.map.table(narr) -> a new table with room for narr array items.
 * Stack: [narr] -> [narr, t] */
static int m_table(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_createtable(L, n > 0 && n < (1 << 30) ? (int)n : 0, 1);
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

/* ==== the worker ====================================================================
 * core.map.worker(loader): fd 3 (PDLUA_WORKER_FD) carries frames.  For each
 * JOB frame, loader(blob) -> f [, shared] is called once; for each TASKS
 * frame every task runs under lua_pcall with a handler that keeps the
 * traceback; results go back in one RESULTS frame per batch, written when
 * no further complete frame is waiting.  Out of memory (the allocator cap
 * below, or RLIMIT_AS) reports the task and exits with status 75, and the
 * coordinator starts another worker. */

typedef struct capalloc {
  lua_Alloc f;
  void *ud;
  size_t used, limit;
} capalloc;

static void *cap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  capalloc *c = (capalloc *)ud;
  size_t old = ptr ? osize : 0;
  if (nsize > old && c->limit && c->used + (nsize - old) > c->limit) return NULL;
  void *r = c->f(c->ud, ptr, osize, nsize);
  if (nsize == 0) c->used -= old < c->used ? old : c->used;
  else if (r) c->used = c->used - (old < c->used ? old : c->used) + nsize;
  return r;
}

/* Message handler: [err] -> [{message=, traceback=}] */
static int task_handler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  lua_createtable(L, 0, 2);
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  luaL_traceback(L, L, NULL, 1);
  lua_setfield(L, -2, "traceback");
  return 1;
}

/* The batch being answered: where its RESULTS frame starts and how many
 * entries it holds so far (for an out-of-memory exit in its middle). */
typedef struct batch {
  size_t mark, countat, entry;   /* frame start, count field, current entry */
  uint32_t done;
} batch;

/* Out of memory in task idx: end the batch's frame after the entries already
 * written, with this task as failed (its partial entry dropped), send it and
 * exit 75 ("reported"): the coordinator reruns the batch's other tasks
 * without penalty and starts a new worker. */
static void oom_exit(pd_conn *c, batch *bt, uint32_t idx, size_t limit) {
  char msg[160];
  int n = snprintf(msg, sizeof msg,
                   "out of memory: task %u went past the worker memory limit of %zu MiB",
                   idx + 1, limit >> 20);
  c->out.len = bt->entry;                          /* drop a half-written entry */
  uint32_t count = bt->done + 1;
  unsigned char st = PD_T_FAILED;
  if (pd_buf_reserve(&c->out, 9 + (size_t)n)) _exit(75);  /* room was there before */
  pdi_le32_append(&c->out, idx);
  pd_buf_append(&c->out, &st, 1);
  pdi_le32_append(&c->out, (uint32_t)n);
  pd_buf_append(&c->out, msg, (size_t)n);
  pdi_le32_put(c->out.data + bt->countat, count);
  pd_conn_end(c, bt->mark);
  pd_conn_flush(c);
  _exit(75);
}

/* The tasks of one TASKS frame, run by run_batch under one protected call
 * until one raises: a protected call per task (a setjmp, and the frame
 * set-up around it) was a fifth of a trivial task's cost in the worker. */
typedef struct batchrun {
  pd_conn *c;
  const char *f;                 /* the frame */
  size_t n, off;                 /* its length; the next task's entry */
  uint32_t e, count, idx;        /* next task, tasks in the frame, task running */
  int unpack;
  taskctx *ctx;
  capalloc *cap;
  batch bt;
} batchrun;

/* Append the result entry of task br->idx: state, then the value on top of
 * the stack (an error object for PD_T_ERROR), which it pops.  A value that
 * cannot be sent back becomes the task's error.  Raises only for memory.
 * Stack: [.., r] -> [..] */
static void put_result(lua_State *L, batchrun *br, int state) {
  pd_conn *c = br->c;
  uint32_t idx = br->idx;
  if (pd_buf_reserve(&c->out, 9 + 24)) oom_exit(c, &br->bt, idx, br->cap->limit);
  char *o = c->out.data + c->out.len;  /* room reserved: u32 idx, u8 state, u32 len */
  pdi_le32_put(o, idx);
  o[4] = (char)state;
  size_t stat = c->out.len + 4, lenat = c->out.len + 5;
  c->out.len += 9;
  size_t before = c->out.len;
  if (state != PD_T_DONE && !lua_istable(L, -1)) {   /* the handler did not run */
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "message");
    lua_remove(L, -2);
  }
  if (pdi_codec_encode_scalar(L, -1, &c->out)) {      /* cannot fail but for memory */
    uint32_t rl = (uint32_t)(c->out.len - before);
    pdi_le32_put(c->out.data + lenat, rl);
    lua_pop(L, 1);
    return;
  }
  lua_pushcfunction(L, m_encode);
  lua_pushvalue(L, -2);
  int es = lua_pcall(L, 1, 1, 0);                  /* [.., r, s|err] */
  if (es == LUA_ERRMEM) oom_exit(c, &br->bt, idx, br->cap->limit);
  if (es != LUA_OK) {
    lua_createtable(L, 0, 2);
    lua_pushfstring(L, "task %d returned a value that cannot be sent back: %s",
                    (int)idx + 1, lua_tostring(L, -2));
    lua_setfield(L, -2, "message");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "traceback");
    lua_pushcfunction(L, m_encode);
    lua_insert(L, -2);
    lua_call(L, 1, 1);                             /* plain strings: cannot fail */
    c->out.data[stat] = PD_T_ERROR;
    lua_remove(L, -2);
  }
  size_t sl;
  const char *sv = lua_tolstring(L, -1, &sl);
  pd_buf_append(&c->out, sv, sl);
  uint32_t rl = (uint32_t)(c->out.len - before);
  pdi_le32_put(c->out.data + lenat, rl);
  lua_pop(L, 2);
}

/* Run tasks br->e .. count-1 of the frame, each called unprotected: the
 * first that raises ends this call (run_tasks records its error and calls
 * again from the next).  Stack: [br, f] -> [br, f] */
static int run_batch(lua_State *L) {
  batchrun *br = (batchrun *)lua_touserdata(L, 1);
  taskctx *ctx = br->ctx;
  pd_conn *c = br->c;
  for (; br->e < br->count; br->e++) {
    if (br->n - br->off < 8) _exit(70);
    uint32_t idx = pdi_le32_get(br->f + br->off), len = pdi_le32_get(br->f + br->off + 4);
    br->off += 8;
    if (br->n - br->off < len) _exit(70);
    br->idx = idx;
    br->bt.entry = c->out.len;
    ctx->index = idx;
    ctx->serial++;
    ctx->in_task = 1;
    lua_pushvalue(L, 2);                           /* [br, f, f] */
    const char *a = br->f + br->off;
    br->off += len;
    decode_or_raise(L, a, len);
    int nargs = 1;
    if (br->unpack && lua_istable(L, -1)) {
      int t = lua_gettop(L);
      int k = (int)lua_rawlen(L, t);
      luaL_checkstack(L, k + 2, "too many arguments to unpack");
      for (int i = 1; i <= k; i++) lua_rawgeti(L, t, i);
      lua_remove(L, t);
      nargs = k;
    }
    lua_call(L, nargs, 1);                         /* [br, f, r] */
    ctx->in_task = 0;
    br->bt.entry = c->out.len;
    put_result(L, br, PD_T_DONE);                  /* [br, f] */
    br->bt.done++;
  }
  return 0;
}

/* Run one TASKS frame.  Stack balanced.  jobs: index of the jobs table. */
static void run_tasks(lua_State *L, pd_conn *c, const char *f, size_t n, int jobs,
                      taskctx *ctx, capalloc *cap) {
  if (n < 9) _exit(70);
  double t0 = pd_now();
  uint32_t job = pdi_le32_get(f + 1), count = pdi_le32_get(f + 5);
  lua_rawgeti(L, jobs, job);                       /* [rec] */
  if (!lua_istable(L, -1)) _exit(70);
  lua_rawgeti(L, -1, 1);                           /* [rec, f] */
  lua_rawgeti(L, -2, 2);                           /* [rec, f, flags] */
  int unpack = (int)lua_tointeger(L, -1) & PD_JOBF_UNPACK;
  lua_rawgeti(L, -3, 3);                           /* [rec, f, flags, seed] */
  ctx->seed = (uint64_t)lua_tointeger(L, -1);
  lua_pop(L, 2);                                   /* [rec, f] */
  lua_rawgeti(L, -2, 4);                           /* [rec, f, shared] */
  lua_getfield(L, LUA_REGISTRYINDEX, "pd.map.pd"); /* [rec, f, shared, pd] */
  if (lua_istable(L, -1)) {
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "shared");
  }
  lua_pop(L, 2);                                   /* [rec, f] */
  int fi = lua_gettop(L);
  lua_pushcfunction(L, task_handler);              /* [rec, f, h] */
  int hi = lua_gettop(L);
  batchrun br;
  memset(&br, 0, sizeof br);
  br.c = c;
  br.f = f;
  br.n = n;
  br.off = 9;
  br.count = count;
  br.unpack = unpack;
  br.ctx = ctx;
  br.cap = cap;
  size_t m = pd_conn_begin(c, PD_F_RESULTS);
  br.bt.mark = m;
  pdi_le32_append(&c->out, job);
  br.bt.countat = c->out.len;
  pdi_le32_append(&c->out, count);
  size_t secat = c->out.len;
  double z = 0;
  pd_buf_append(&c->out, &z, 8);
  while (br.e < count) {
    lua_pushcfunction(L, run_batch);               /* [rec, f, h, run] */
    lua_pushlightuserdata(L, &br);
    lua_pushvalue(L, fi);
    int status = lua_pcall(L, 2, 0, hi);           /* [rec, f, h] or [.., err] */
    if (status == LUA_OK) break;
    /* task br.idx raised (or ran out of memory): drop what it wrote, keep
     * its error, go on with the next */
    ctx->in_task = 0;
    c->out.len = br.bt.entry;
    if (status == LUA_ERRMEM) oom_exit(c, &br.bt, br.idx, cap->limit);
    put_result(L, &br, PD_T_ERROR);                /* [rec, f, h] */
    br.bt.done++;
    br.e++;
  }
  double secs = pd_now() - t0;
  memcpy(c->out.data + secat, &secs, 8);
  pd_conn_end(c, m);
  lua_pop(L, 3);
}

/* Message handler for the job loader: [err] -> ["message\ntraceback"].
 * (pdi_msghandler lives in the pdlua executable, not in pd/core.so.) */
static int load_handler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* A function that raises its upvalue.  Stack: [...] -> error */
static int raise_upvalue(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  return lua_error(L);
}

/* core.map.worker(loader): never returns (exits the process at EOF). */
static int m_worker(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  const char *fds = getenv("PDLUA_WORKER_FD");
  if (!fds) return luaL_error(L, "not a worker (PDLUA_WORKER_FD unset)");
  int fd = atoi(fds);
  static capalloc cap;                             /* one worker per process */
  const char *mem = getenv("PDLUA_WORKER_MEMORY");
  cap.limit = mem ? (size_t)strtoull(mem, NULL, 10) : 0;
  if (cap.limit) {
    cap.f = lua_getallocf(L, &cap.ud);
    cap.used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, cap_alloc, &cap);
  }
  taskctx *ctx = (taskctx *)lua_newuserdatauv(L, sizeof *ctx, 0);
  memset(ctx, 0, sizeof *ctx);
  lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY);
  lua_newtable(L);                                 /* [loader, cache] */
  int cache = lua_gettop(L);                       /* blob -> {f, shared} */
  int ncached = 0;
  /* The last job's blob (a C copy) and its {f, shared}: a loop of small
   * maps of one function sends the same blob per job, and comparing bytes
   * here is cheaper than making and hashing a long Lua string (~1 us for
   * a typical 700-byte blob: bench/map (b)). */
  lua_pushnil(L);                                  /* [loader, cache, last] */
  int last = lua_gettop(L);
  char *last_blob = NULL;
  size_t last_len = 0;
  lua_newtable(L);                                 /* [loader, cache, last, jobs] */
  int jobs = lua_gettop(L);
  pd_conn c;
  /* replies go to the pipe on PDLUA_WORKER_WFD when the pool gave one
   * (core/sched.c: cheaper than the socket); SIGPIPE there means the
   * coordinator is gone, and so should this process be */
  const char *wfds = getenv("PDLUA_WORKER_WFD");
  pd_conn_init2(&c, fd, wfds ? atoi(wfds) : fd);
  uint32_t pid = (uint32_t)getpid();
  pd_conn_put(&c, PD_F_HELLO, &pid, 4);
  pd_conn_flush(&c);
  for (;;) {
    int r = pd_conn_fill(&c);
    if (r < 0 && r != -EAGAIN) _exit(0);           /* coordinator gone */
    const char *f;
    size_t n;
    int got;
    while ((got = pd_conn_next(&c, &f, &n)) == 1) {
      switch (f[0]) {
      case PD_F_JOB: {
        if (n < 14) _exit(70);
        uint32_t job = pdi_le32_get(f + 1);
        int flags = (unsigned char)f[5];
        uint64_t seed;
        memcpy(&seed, f + 6, 8);
        lua_pushcfunction(L, load_handler);        /* [.., h] */
        if (last_blob && last_len == n - 14 && memcmp(last_blob, f + 14, n - 14) == 0) {
          lua_rawgeti(L, last, 1);
          lua_rawgeti(L, last, 2);                 /* [.., h, f, shared] */
          goto loaded;
        }
        lua_pushlstring(L, f + 14, n - 14);        /* [.., h, blob] */
        lua_pushvalue(L, -1);
        if (lua_rawget(L, cache) == LUA_TTABLE) {  /* the same function again */
          lua_remove(L, -2);                       /* [.., h, {f, shared}] */
          lua_rawgeti(L, -1, 1);
          lua_rawgeti(L, -2, 2);                   /* [.., h, c, f, shared] */
          lua_remove(L, -3);
        } else {
          lua_pop(L, 1);                           /* [.., h, blob] */
          lua_pushvalue(L, 1);
          lua_pushvalue(L, -2);                    /* [.., h, blob, loader, blob] */
          if (lua_pcall(L, 1, 2, -4) != LUA_OK) {  /* [.., h, blob, err] */
            /* the job cannot load here: each of its tasks fails with why */
            lua_pushcclosure(L, raise_upvalue, 1); /* [.., h, blob, f] */
            lua_pushnil(L);                        /* [.., h, blob, f, nil] */
          } else {                                 /* [.., h, blob, f, shared] */
            if (++ncached > 64) {                  /* bounded: start afresh */
              lua_newtable(L);
              lua_replace(L, cache);
              ncached = 1;
            }
            lua_createtable(L, 2, 0);
            lua_pushvalue(L, -3); lua_rawseti(L, -2, 1);
            lua_pushvalue(L, -2); lua_rawseti(L, -2, 2);
            lua_pushvalue(L, -4);
            lua_insert(L, -2);
            lua_rawset(L, cache);                  /* cache[blob] = {f, shared} */
          }
          lua_remove(L, -3);                       /* [.., h, f, shared] */
        }
        /* remember this blob as the last one, unless it failed to load */
        free(last_blob);
        last_blob = NULL;
        if (lua_tocfunction(L, -2) != raise_upvalue && (last_blob = malloc(n - 14 ? n - 14 : 1))) {
          memcpy(last_blob, f + 14, n - 14);
          last_len = n - 14;
          lua_createtable(L, 2, 0);                /* [.., h, f, shared, {f, shared}] */
          lua_pushvalue(L, -3); lua_rawseti(L, -2, 1);
          lua_pushvalue(L, -2); lua_rawseti(L, -2, 2);
          lua_replace(L, last);                    /* [.., h, f, shared] */
        }
      loaded:
        /* [.., h, f, shared] */
        lua_createtable(L, 4, 0);                  /* [.., h, f, shared, rec] */
        lua_pushvalue(L, -3); lua_rawseti(L, -2, 1);
        lua_pushinteger(L, flags); lua_rawseti(L, -2, 2);
        lua_pushinteger(L, (lua_Integer)seed); lua_rawseti(L, -2, 3);
        lua_pushvalue(L, -2); lua_rawseti(L, -2, 4);
        lua_rawseti(L, jobs, job);
        lua_settop(L, jobs);
        break;
      }
      case PD_F_TASKS:
        run_tasks(L, &c, f, n, jobs, ctx, &cap);
        /* each batch's results leave now: a later task that crashes the
         * process must not take finished ones with it, and the
         * coordinator's per-task clocks (timeouts) start from here */
        if (pd_conn_flush(&c) < 0) _exit(0);
        break;
      case PD_F_DROP:
        if (n < 5) _exit(70);
        lua_pushnil(L);
        lua_rawseti(L, jobs, pdi_le32_get(f + 1));          /* the GC takes it in its time */
        break;
      default:
        _exit(70);
      }
    }
    if (got < 0) _exit(70);
    if (pd_conn_flush(&c) < 0) _exit(0);
  }
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

/* core.map.isatty([fd = 2]) -> boolean */
static int m_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 2)));
  return 1;
}

/* core.map.getpid() -> this process's pid */
static int m_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

/* core.map.machine() -> cpus online, MemAvailable bytes (0 if unknown). */
static int m_machine(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  double avail = 0;
  FILE *f = fopen("/proc/meminfo", "r");
  if (f) {
    char line[256];
    while (fgets(line, sizeof line, f)) {
      unsigned long long kb;
      if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) { avail = (double)kb * 1024; break; }
    }
    fclose(f);
  }
  lua_pushnumber(L, avail);
  return 2;
}

/* core.map.rss(pid) -> resident bytes of a process (from /proc), or nil. */
static int m_rss(lua_State *L) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)luaL_optinteger(L, 1, getpid()));
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[256];
  double rss = -1, hwm = -1;
  while (fgets(line, sizeof line, f)) {
    unsigned long long kb;
    if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) rss = (double)kb * 1024;
    if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) hwm = (double)kb * 1024;
  }
  fclose(f);
  if (rss < 0) return 0;
  lua_pushnumber(L, rss);
  lua_pushnumber(L, hwm);
  return 2;
}

/* core.map.alive(pid) -> true while the process exists (and is not a zombie). */
static int m_alive(lua_State *L) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)luaL_checkinteger(L, 1));
  FILE *f = fopen(path, "r");
  int alive = 0;
  if (f) {
    if (fgets(line, sizeof line, f)) {
      char *rp = strrchr(line, ')');
      alive = rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
    }
    fclose(f);
  }
  lua_pushboolean(L, alive);
  return 1;
}

/* core.map.set_error_mt(mt): the metatable of error objects. */
static int m_set_error_mt(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, ERROR_MT_KEY);
  return 0;
}

/* core.map.set_pd(pd): the table whose `shared` field tasks see. */
static int m_set_pd(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "pd.map.pd");
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

static const luaL_Reg map_funcs[] = {
  {"pool", m_pool}, {"worker", m_worker}, {"encode", m_encode},
  {"decode", m_decode}, {"task", m_task}, {"table", m_table},
  {"isatty", m_isatty}, {"getpid", m_getpid}, {"machine", m_machine},
  {"rss", m_rss}, {"alive", m_alive}, {"set_error_mt", m_set_error_mt},
  {"set_pd", m_set_pd}, {"codec_encode", m_codec_encode}, {"autopump", m_autopump},
  {NULL, NULL},
};

/* Stack: [] -> [pd.core.map] */
int luaopen_pd_core_map(lua_State *L) {
  if (luaL_newmetatable(L, POOL_MT)) {
    luaL_newlib(L, pool_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, p_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, p_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  luaL_newlib(L, map_funcs);
  return 1;
}
