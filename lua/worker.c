/*
 * worker.c: the worker process's loop, core.map.worker(loader), and what a
 * running task sees of it (core.map.task; pd.shared, from the table
 * core.map.set_pd gave).
 *
 * fd 3 (PDLUA_WORKER_FD) carries frames (docs/map.md, "Internals").  For
 * each JOB frame, loader(blob) -> f [, shared] is called once per distinct
 * blob (the blob cache below); for each TASKS frame every task runs under
 * one protected call with pdi_msghandler_table (call.c), which keeps the
 * message and the traceback apart; results go back in one RESULTS frame
 * per batch, sent as soon as the batch ends.  Out of memory (the allocator
 * cap below, or RLIMIT_AS) reports the task and exits with status 75, and
 * the coordinator starts another worker.  Anything malformed from the
 * coordinator exits 70; the coordinator gone exits 0.
 *
 * This loop is the floor of a tiny task's cost: a task's decode, call and
 * result encode are inline here (taskvalue.h), and one protected call runs
 * a whole batch until a task raises.
 */
#include "taskvalue.h"
#include "pd/pdi.h"

#include "pd/pd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CTX_KEY "pd.map.ctx"         /* registry: the worker's task context */

/* ==== the running task ======================================================
 * pd.rng() inside a task is pd.random's stream (job seed, task index): the
 * worker records here which task runs; stdlib/pd/map.lua makes the stream.
 * The task now running in this worker (registry CTX_KEY). */
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

/* ==== the memory cap ========================================================
 * PDLUA_WORKER_MEMORY bytes for the Lua heap: an allocation past it fails,
 * which Lua raises as LUA_ERRMEM in the task (and the worker exits 75). */

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

/* ==== tasks =================================================================== */

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
  PDI_STACK(L);
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
    PDI_STACK_CHECK(L, -1);
    return;
  }
  lua_pushcfunction(L, pdi_map_encode);
  lua_pushvalue(L, -2);
  int es = lua_pcall(L, 1, 1, 0);                  /* [.., r, s|err]: the coder
                                                      runs no Lua; its bare
                                                      message is part of ours */
  if (es == LUA_ERRMEM) oom_exit(c, &br->bt, idx, br->cap->limit);
  if (es != LUA_OK) {
    lua_createtable(L, 0, 2);
    lua_pushfstring(L, "task %d returned a value that cannot be sent back: %s",
                    (int)idx + 1, lua_tostring(L, -2));
    lua_setfield(L, -2, "message");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "traceback");
    lua_pushcfunction(L, pdi_map_encode);
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
  PDI_STACK_CHECK(L, -1);
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
    pdi_map_decode(L, a, len);
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
  PDI_ASSERT(lua_gettop(L) == 2);
  return 0;
}

/* Run one TASKS frame.  Stack balanced.  jobs: index of the jobs table. */
static void run_tasks(lua_State *L, pd_conn *c, const char *f, size_t n, int jobs,
                      taskctx *ctx, capalloc *cap) {
  if (n < 9) _exit(70);
  PDI_STACK(L);
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
  lua_getfield(L, LUA_REGISTRYINDEX, PD_KEY);      /* [rec, f, shared, pd] */
  if (lua_istable(L, -1)) {
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "shared");
  }
  lua_pop(L, 2);                                   /* [rec, f] */
  int fi = lua_gettop(L);
  lua_pushcfunction(L, pdi_msghandler_table);      /* [rec, f, h] */
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
  lua_pop(L, 3);                                   /* [] */
  PDI_STACK_CHECK(L, 0);
}

/* ==== jobs and the blob cache ===============================================
 * A JOB frame carries the function as a blob that the loader turns into
 * f [, shared].  Loading runs Lua (require, the codec), so it is cached:
 * blob -> {f, shared} in a table of at most 64 entries (started afresh when
 * full), and before that the last job's blob as a C copy: a loop of small
 * maps of one function sends the same blob per job, and comparing bytes
 * here is cheaper than making and hashing a long Lua string (~1 us for a
 * typical 700-byte blob: bench/map (b)).  A blob that fails to load is not
 * cached: each of its tasks raises the loader's error. */

/* m_worker's tables, by their stack slots, and the last blob. */
typedef struct jobtab {
  int loader, cache, last, jobs;   /* slots: loader, blob -> {f, shared},
                                      last {f, shared}, job id -> rec */
  int ncached;
  char *last_blob;                 /* malloc'd copy, or NULL */
  size_t last_len;
} jobtab;

/* A function that raises its upvalue.  Stack: [...] -> error */
static int raise_upvalue(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  return lua_error(L);
}

/* One JOB frame (u32 job, u8 flags, u64 seed, blob): jobs[job] = {f,
 * flags, seed, shared}.  The loader runs under pdi_msghandler (call.c).
 * Stack balanced. */
static void load_job(lua_State *L, jobtab *jt, const char *f, size_t n) {
  if (n < 14) _exit(70);
  PDI_STACK(L);
  uint32_t job = pdi_le32_get(f + 1);
  int flags = (unsigned char)f[5];
  uint64_t seed;
  memcpy(&seed, f + 6, 8);
  const char *blob = f + 14;
  size_t len = n - 14;
  lua_pushcfunction(L, pdi_msghandler);            /* [h] */
  if (jt->last_blob && jt->last_len == len && memcmp(jt->last_blob, blob, len) == 0) {
    lua_rawgeti(L, jt->last, 1);
    lua_rawgeti(L, jt->last, 2);                   /* [h, f, shared] */
    goto loaded;
  }
  lua_pushlstring(L, blob, len);                   /* [h, blob] */
  lua_pushvalue(L, -1);
  if (lua_rawget(L, jt->cache) == LUA_TTABLE) {    /* the same function again */
    lua_remove(L, -2);                             /* [h, {f, shared}] */
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);                         /* [h, c, f, shared] */
    lua_remove(L, -3);
  } else {
    lua_pop(L, 1);                                 /* [h, blob] */
    lua_pushvalue(L, jt->loader);
    lua_pushvalue(L, -2);                          /* [h, blob, loader, blob] */
    if (lua_pcall(L, 1, 2, -4) != LUA_OK) {        /* [h, blob, err] */
      /* the job cannot load here: each of its tasks fails with why */
      lua_pushcclosure(L, raise_upvalue, 1);       /* [h, blob, f] */
      lua_pushnil(L);                              /* [h, blob, f, nil] */
    } else {                                       /* [h, blob, f, shared] */
      if (++jt->ncached > 64) {                    /* bounded: start afresh */
        lua_newtable(L);
        lua_replace(L, jt->cache);
        jt->ncached = 1;
      }
      lua_createtable(L, 2, 0);
      lua_pushvalue(L, -3); lua_rawseti(L, -2, 1);
      lua_pushvalue(L, -2); lua_rawseti(L, -2, 2);
      lua_pushvalue(L, -4);
      lua_insert(L, -2);
      lua_rawset(L, jt->cache);                    /* cache[blob] = {f, shared} */
    }
    lua_remove(L, -3);                             /* [h, f, shared] */
  }
  /* remember this blob as the last one, unless it failed to load */
  free(jt->last_blob);
  jt->last_blob = NULL;
  if (lua_tocfunction(L, -2) != raise_upvalue && (jt->last_blob = malloc(len ? len : 1))) {
    memcpy(jt->last_blob, blob, len);
    jt->last_len = len;
    lua_createtable(L, 2, 0);                      /* [h, f, shared, {f, shared}] */
    lua_pushvalue(L, -3); lua_rawseti(L, -2, 1);
    lua_pushvalue(L, -2); lua_rawseti(L, -2, 2);
    lua_replace(L, jt->last);                      /* [h, f, shared] */
  }
loaded:
  lua_createtable(L, 4, 0);                        /* [h, f, shared, rec] */
  lua_pushvalue(L, -3); lua_rawseti(L, -2, 1);
  lua_pushinteger(L, flags); lua_rawseti(L, -2, 2);
  lua_pushinteger(L, (lua_Integer)seed); lua_rawseti(L, -2, 3);
  lua_pushvalue(L, -2); lua_rawseti(L, -2, 4);
  lua_rawseti(L, jt->jobs, job);                   /* [h, f, shared] */
  lua_pop(L, 3);                                   /* [] */
  PDI_STACK_CHECK(L, 0);
}

/* ==== the loop ================================================================ */

/* core.map.worker(loader): never returns (exits the process at EOF).
 * Stack: [loader, cache, last, jobs] for as long as it runs. */
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
  lua_settop(L, 1);                                /* [loader] */
  jobtab jt = {1, 2, 3, 4, 0, NULL, 0};
  lua_newtable(L);                                 /* [loader, cache] */
  lua_pushnil(L);                                  /* [loader, cache, last] */
  lua_newtable(L);                                 /* [loader, cache, last, jobs] */
  pd_conn c;
  /* replies go to the pipe on PDLUA_WORKER_WFD when the pool gave one
   * (core/sched.c: cheaper than the socket); SIGPIPE there means the
   * coordinator is gone, and so should this process be */
  const char *wfds = getenv("PDLUA_WORKER_WFD");
  pd_conn_init2(&c, fd, wfds ? atoi(wfds) : fd);
  unsigned char pid[4];
  pdi_le32_put(pid, (uint32_t)getpid());
  pd_conn_put(&c, PD_F_HELLO, pid, 4);
  pd_conn_flush(&c);
  for (;;) {
    int r = pd_conn_fill(&c);
    if (r < 0 && r != -EAGAIN) _exit(0);           /* coordinator gone */
    const char *f;
    size_t n;
    int got;
    while ((got = pd_conn_next(&c, &f, &n)) == 1) {
      switch (f[0]) {
      case PD_F_JOB:
        load_job(L, &jt, f, n);
        break;
      case PD_F_TASKS:
        run_tasks(L, &c, f, n, jt.jobs, ctx, &cap);
        /* each batch's results leave now: a later task that crashes the
         * process must not take finished ones with it, and the
         * coordinator's per-task clocks (timeouts) start from here */
        if (pd_conn_flush(&c) < 0) _exit(0);
        break;
      case PD_F_DROP:
        if (n < 5) _exit(70);
        lua_pushnil(L);
        lua_rawseti(L, jt.jobs, pdi_le32_get(f + 1));   /* the GC takes it in its time */
        break;
      default:
        _exit(70);
      }
      PDI_ASSERT(lua_gettop(L) == jt.jobs);
    }
    if (got < 0) _exit(70);
    if (pd_conn_flush(&c) < 0) _exit(0);
  }
}

static const luaL_Reg worker_funcs[] = {
  {"worker", m_worker}, {"task", m_task},
  {NULL, NULL},
};

void pdi_map_open_worker(lua_State *L) {
  luaL_setfuncs(L, worker_funcs, 0);
}
