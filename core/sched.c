/*
 * sched.c: the local scheduler: worker processes, jobs, batches (see pd.h).
 *
 * One thread, no signal handlers.  pd_pool_pump starts workers when work is
 * queued, hands each worker batches while its window has room, reads result
 * frames, and notices a dead worker as end of stream on its socket.  The
 * ideas, with their bounds:
 *
 * - Dynamic load balancing: a worker gets a new batch only when one of its
 *   own comes back, so a slow worker simply gets fewer.  At most two batches
 *   are in flight per worker (one running, one waiting, hiding the round
 *   trip); one when a batch is long (over 2 ms), since then the round trip is
 *   noise and a queued batch could hold the tail.  Tiny tasks sent one per
 *   message (chunk = 1) may have up to 32 in flight.
 * - Automatic batching: the worker reports the seconds each batch took; the
 *   job keeps a moving estimate of one task's time and sizes batches to
 *   about PD_BATCH_SECONDS, never more than half a worker's share of what
 *   is left (guided scheduling: batches shrink towards the end).
 * - Retries: a worker lost mid-batch costs only its in-flight tasks; each
 *   is run again (alone in its batch, so a poisonous task cannot take its
 *   batch mates down with it) until it has been lost `retries` + 1 times.
 * - Timeouts and cancel kill the worker (a LuaJIT compiled loop ignores
 *   hooks) and start another; the other tasks it held run again unharmed.
 */
#define _GNU_SOURCE
#include "pd/pd.h"
#include "pd/pdi.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PD_BATCH_SECONDS 0.002   /* a batch's target duration */
#define PD_MIN_BATCH_SECONDS 0.0002 /* and its least, when there is work enough */
#define PD_SHARE 4.0   /* a batch takes at most 1/(PD_SHARE * workers) of what is left */
#define PD_MAX_CHUNK 65536
#define PD_SPARE_MAX (16u << 20) /* bytes: a released job's block kept for reuse */
#define PD_EXIT_REPORTED 75      /* a worker's exit status after it reported
                                    its own failure (out of memory) */

typedef struct inflight {
  uint32_t job, task;
} inflight;

typedef struct worker {
  int pid;
  pd_conn c;
  inflight *q;                  /* FIFO of tasks sent and not answered */
  size_t qhead, qlen, qcap;     /* live entries are q[qhead .. qlen) */
  uint32_t *jobs;               /* jobs whose function it holds */
  size_t njobs, capjobs;
  int nbatch;                   /* batches in flight */
  int solo;                     /* runs a retried task: nothing else meanwhile */
  double head_start;            /* when its oldest in-flight task started */
  int kill_reason;              /* 0, or why we are killing it */
  /* cluster: a remote slot is a worker on another machine whose frames
   * travel over a socketpair to the cluster bridge (core/cluster.c) and on
   * over the network.  ext > 0 names it; pid is then -ext (never killed,
   * never reaped: closing the fd releases it).  retiring: take no new
   * batches, close once idle (its node lends less now). */
  int ext, retiring;
  int gpu;                      /* the device it is bound to (gpus pools), else -1 */
} worker;

enum { KILL_NONE = 0, KILL_CRASH, KILL_TIMEOUT, KILL_CANCEL };

struct pd_job {
  uint32_t id;
  pd_job_opts o;
  int status;
  uint32_t n;
  pd_buf fn;
  pd_buf args;                  /* all arguments, back to back */
  uint64_t *aoff;               /* n + 1 offsets into args */
  uint32_t nargs;               /* arguments closed so far */
  uint8_t *st, *att;            /* per task: PD_T_*, times lost */
  int32_t *pid;                 /* per task: the worker that finished it */
  pd_buf res;                   /* results (or messages), back to back */
  uint64_t *roff;
  uint32_t *rlen;
  uint32_t *order;              /* completion order */
  uint32_t ndone, nfailed, inflight, next;
  uint32_t *retry;              /* tasks to run again, a stack */
  size_t nretry;
  double t_est;                 /* seconds per task, 0: unknown */
  size_t blockcap;              /* bytes of the block at aoff */
  pd_job *link;
};

struct pd_pool {
  pd_pool_opts o;
  char **argv;                  /* owned copy */
  worker *w;
  int nw;
  size_t capw;
  pd_job *jobs;
  uint32_t next_id;
  int spawn_failures;
  pd_pool_stats stats;
  /* cluster: called from pump in the pool's own thread, and a descriptor
   * that wakes a waiting pump when remote slots come or go */
  pd_pool_hook hook;
  void *hook_arg;
  int wakefd;
  /* the last released job's per-task block and buffers, for the next */
  void *spare;
  size_t spare_cap;
  pd_buf spare_args, spare_res;
};

/* ---- little helpers ----------------------------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap * 2 : 16;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * elem);
  if (!q) return -ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

static pd_job *find_job(pd_pool *p, uint32_t id) {
  for (pd_job *j = p->jobs; j; j = j->link)
    if (j->id == id) return j;
  return NULL;
}

static int job_final(const pd_job *j) {
  return j->status == PD_JOB_DONE || j->status == PD_JOB_FAILED ||
         j->status == PD_JOB_CANCELLED;
}

static uint32_t queued(const pd_job *j) {
  return (j->n - j->next) + (uint32_t)j->nretry;
}

/* Record task i's final state with its bytes.  Ends the job when it was the
 * last, or when it failed and the job stops on errors. */
static void finish(pd_job *j, uint32_t i, int state, const void *b, size_t n, int pid) {
  if (j->st[i] >= PD_T_DONE) return;                /* late or duplicate */
  if (j->st[i] == PD_T_INFLIGHT && j->inflight) j->inflight--;
  j->roff[i] = j->res.len;
  if (n <= j->res.cap - j->res.len) {               /* room reserved: the usual case */
    memcpy(j->res.data + j->res.len, b, n);
    j->res.len += n;
  } else if (pd_buf_append(&j->res, b, n)) {
    n = 0;
    state = PD_T_FAILED;                            /* could not keep it */
  }
  j->rlen[i] = (uint32_t)n;
  j->st[i] = (uint8_t)state;
  j->pid[i] = pid;
  j->order[j->ndone++] = i;
  if (state != PD_T_DONE) j->nfailed++;
  if (job_final(j)) return;
  if (state != PD_T_DONE && j->o.stop_on_error) j->status = PD_JOB_FAILED;
  else if (j->ndone == j->n) j->status = PD_JOB_DONE;   /* errors collected */
}

static void failf(pd_job *j, uint32_t i, int pid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void failf(pd_job *j, uint32_t i, int pid, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  finish(j, i, PD_T_FAILED, msg, strlen(msg), pid);
}

static void requeue(pd_job *j, uint32_t i) {
  if (j->st[i] != PD_T_INFLIGHT) return;
  j->st[i] = PD_T_QUEUED;
  if (j->inflight) j->inflight--;
  j->retry[j->nretry++] = i;                        /* room: retry has n slots */
}

/* ---- pool ----------------------------------------------------------------------- */

pd_pool *pd_pool_new(const pd_pool_opts *o) {
  pd_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->o = *o;
  size_t n = 0;
  while (o->argv[n]) n++;
  p->argv = calloc(n + 1, sizeof *p->argv);
  if (!p->argv) { free(p); return NULL; }
  for (size_t i = 0; i < n; i++) {
    p->argv[i] = strdup(o->argv[i]);
    if (!p->argv[i]) { pd_pool_free(p); return NULL; }
  }
  p->o.argv = p->argv;
  p->next_id = 1;
  p->wakefd = -1;
  return p;
}

/* A job's per-task arrays live in one block (aoff first).  The pool keeps
 * the last released job's block and buffers for the next job: a loop of
 * big maps then touches no fresh pages (a page fault per 4 KiB was about a
 * tenth of a map of numbers' cost). */
static size_t block_size(size_t m) {
  return (m + 1) * sizeof(uint64_t) + m * sizeof(uint64_t)     /* aoff, roff */
         + 4 * m * sizeof(uint32_t) + 2 * m;                   /* pid rlen order retry, st att */
}

static void job_free(pd_pool *p, pd_job *j) {
  pd_buf_free(&j->fn);
  if (p && j->blockcap > p->spare_cap && j->blockcap <= PD_SPARE_MAX &&
      j->args.cap <= PD_SPARE_MAX && j->res.cap <= PD_SPARE_MAX) {   /* keep the bigger one */
    free(p->spare);
    pd_buf_free(&p->spare_args);
    pd_buf_free(&p->spare_res);
    p->spare = j->aoff;
    p->spare_cap = j->blockcap;
    p->spare_args = j->args;
    p->spare_res = j->res;
  } else {
    free(j->aoff);
    pd_buf_free(&j->args);
    pd_buf_free(&j->res);
  }
  free(j);
}

static void worker_close(worker *w) {
  pd_conn_close(&w->c);
  free(w->q);
  free(w->jobs);
  memset(w, 0, sizeof *w);
}

void pd_pool_free(pd_pool *p) {
  if (!p) return;
  for (int i = 0; i < p->nw; i++)                 /* all at once */
    if (!p->w[i].ext) kill(p->w[i].pid, SIGKILL);
  for (int i = 0; i < p->nw; i++) {
    if (!p->w[i].ext) pd_kill_reap(p->w[i].pid);
    worker_close(&p->w[i]);
  }
  free(p->w);
  while (p->jobs) {
    pd_job *j = p->jobs;
    p->jobs = j->link;
    job_free(NULL, j);
  }
  free(p->spare);
  pd_buf_free(&p->spare_args);
  pd_buf_free(&p->spare_res);
  if (p->argv)
    for (char **a = p->argv; *a; a++) free(*a);
  free(p->argv);
  free(p);
}

void pd_pool_resize(pd_pool *p, int workers) {
  p->o.workers = workers >= 0 ? workers : 0;   /* 0: remote slots only */
}

/* ---- remote slots (cluster) ------------------------------------------------------ */

void pd_pool_set_hook(pd_pool *p, pd_pool_hook h, void *arg, int wakefd) {
  p->hook = h;
  p->hook_arg = arg;
  p->wakefd = wakefd;
}

int pd_pool_attach(pd_pool *p, int fd, int ext) {
  if (grow((void **)&p->w, &p->capw, (size_t)p->nw + 1, sizeof *p->w)) {
    close(fd);
    return -ENOMEM;
  }
  worker *w = &p->w[p->nw++];
  memset(w, 0, sizeof *w);
  w->pid = -ext;
  w->ext = ext;
  w->gpu = -1;
  pd_conn_init(&w->c, fd);
  return 0;
}

void pd_pool_retire(pd_pool *p, int ext) {
  for (int k = 0; k < p->nw; k++)
    if (p->w[k].ext == ext) p->w[k].retiring = 1;
}

uint32_t pd_pool_demand(const pd_pool *p) {
  uint64_t d = 0;
  for (const pd_job *j = p->jobs; j; j = j->link)
    if (!job_final(j)) d += queued(j) + j->inflight;
  return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

int pd_pool_local(const pd_pool *p) {
  int n = 0;
  for (int k = 0; k < p->nw; k++) n += !p->w[k].ext;
  return n;
}

int pd_pool_busy(const pd_pool *p) {
  int n = 0;
  for (int i = 0; i < p->nw; i++)                  /* local workers (cluster: not slots) */
    n += !p->w[i].ext && p->w[i].qhead < p->w[i].qlen;
  return n;
}

int pd_pool_pids(const pd_pool *p, int *pids, int max) {
  int k = 0;
  for (int i = 0; i < p->nw && k < max; i++)
    if (!p->w[i].ext) pids[k++] = p->w[i].pid;
  return k;
}

void pd_pool_stats_get(const pd_pool *p, pd_pool_stats *s) { *s = p->stats; }

static int spawn_one(pd_pool *p) {
  if (grow((void **)&p->w, &p->capw, (size_t)p->nw + 1, sizeof *p->w))
    return -ENOMEM;
  char mem[64];
  snprintf(mem, sizeof mem, "PDLUA_WORKER_MEMORY=%llu", p->o.memory);
  /* fd 3: the socketpair (frames to the worker); fd 4: a pipe for its
   * replies (a pipe round trip is cheaper than a socket's: bench/map (b)) */
  /* a gpus pool binds each worker to the device with the fewest local
   * workers now (a replacement takes the place of the one it replaces) */
  int gpu = -1;
  char gpuenv[48];
  if (p->o.gpus > 0) {
    int best = 0, bestn = INT_MAX;
    for (int g = 0; g < p->o.gpus; g++) {
      int c = 0;
      for (int k = 0; k < p->nw; k++) c += !p->w[k].ext && p->w[k].gpu == g;
      if (c < bestn) { best = g; bestn = c; }
    }
    gpu = best;
  }
  snprintf(gpuenv, sizeof gpuenv, "PDLUA_GPU_DEVICE=%d", gpu);
  char *env[] = {"PDLUA_WORKER_FD=3", "PDLUA_WORKER_WFD=4", mem, "OPENBLAS_NUM_THREADS=1",
                 "OMP_NUM_THREADS=1", gpu >= 0 ? gpuenv : NULL, NULL};
  /* RLIMIT_AS is the backstop behind the worker's own allocator cap: room
   * for the program, its libraries and C-side buffers above the Lua heap.
   * Not for GPU workers: the CUDA driver reserves address space the size of
   * all device and host memory, and cuInit fails under such a limit. */
  unsigned long long as = p->o.memory && gpu < 0 ? p->o.memory + (1ull << 30) : 0;
#ifdef PDLUA_SANITIZE
  as = 0;                        /* ASan reserves terabytes of shadow memory */
#endif
  int fd, rfd, pid;
  int rc = pd_spawn_rpipe(p->argv, env, as, &fd, &rfd, &pid);
  if (rc) return rc;
  worker *w = &p->w[p->nw++];
  memset(w, 0, sizeof *w);
  w->pid = pid;
  w->gpu = gpu;
  pd_conn_init2(&w->c, rfd, fd);                   /* read the pipe, write the socket */
  p->stats.spawned++;
  return 0;
}

/* Worker k is gone or must go: kill and reap it, settle its in-flight tasks
 * as `why` says, and take it out of the pool (the last worker moves into
 * slot k).  Returns the number of tasks that reached a final state. */
static int worker_lost(pd_pool *p, int k, int why) {
  worker *w = &p->w[k];
  int st = w->ext ? -1 : pd_kill_reap(w->pid);     /* remote: its node reaps */
  int reported = why == KILL_CRASH && st >= 0 && WIFEXITED(st) &&
                 WEXITSTATUS(st) == PD_EXIT_REPORTED;
  char how[64];
  pdi_describe_status(st, how, sizeof how);
  if (w->ext) snprintf(how, sizeof how, "its node or link went away");
  int final = 0;
  for (size_t e = w->qhead; e < w->qlen; e++) {
    pd_job *j = find_job(p, w->q[e].job);
    uint32_t i = w->q[e].task;
    if (!j || j->st[i] != PD_T_INFLIGHT) continue;
    if (job_final(j)) {                             /* nobody waits for it */
      j->st[i] = PD_T_CANCELLED;
      if (j->inflight) j->inflight--;
      continue;
    }
    if (why == KILL_TIMEOUT && e == w->qhead) {
      failf(j, i, w->pid, "task %u timed out after %g s (worker %d stopped)",
            i + 1, j->o.timeout, w->pid);
      final++;
    } else if (why == KILL_TIMEOUT || why == KILL_CANCEL || reported) {
      requeue(j, i);                                /* not its fault */
    } else if (++j->att[i] > j->o.retries) {
      failf(j, i, w->pid, "%s %d lost while running task %u (%s; tried %d times)",
            w->ext ? "remote slot" : "worker", w->ext ? w->ext : w->pid, i + 1, how,
            j->att[i]);
      final++;
    } else {
      requeue(j, i);
    }
  }
  p->stats.lost++;
  worker_close(w);
  p->w[k] = p->w[--p->nw];
  return final;
}

/* ---- jobs ----------------------------------------------------------------------- */

pd_job *pd_job_new(pd_pool *p, const void *fn, size_t fnlen, uint32_t n,
                   const pd_job_opts *o) {
  pd_job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->o = *o;
  if (j->o.timeout > 0) j->o.chunk = 1;            /* per-task clocks */
  j->n = n;
  size_t m = n ? n : 1, need = block_size(m);
  char *blk;
  if (p->spare && p->spare_cap >= need) {          /* the last job's, reused */
    blk = (char *)p->spare;
    j->blockcap = p->spare_cap;
    j->args = p->spare_args;
    j->res = p->spare_res;
    j->args.len = j->res.len = 0;
    p->spare = NULL;
    p->spare_cap = 0;
    pd_buf_init(&p->spare_args);
    pd_buf_init(&p->spare_res);
  } else {
    blk = malloc(need);
    j->blockcap = need;
  }
  if (!blk) { free(j); return NULL; }
  j->aoff = (uint64_t *)blk;
  j->roff = j->aoff + m + 1;
  j->pid = (int32_t *)(j->roff + m);
  j->rlen = (uint32_t *)(j->pid + m);
  j->order = j->rlen + m;
  j->retry = j->order + m;
  j->st = (uint8_t *)(j->retry + m);
  j->att = j->st + m;
  j->aoff[0] = 0;
  memset(j->st, 0, 2 * m);                         /* st, att: queued, never lost */
  if (pd_buf_append(&j->fn, fn, fnlen)) {
    job_free(p, j);
    return NULL;
  }
  j->id = p->next_id++;
  j->status = PD_JOB_QUEUED;
  return j;
}

pd_buf *pd_job_argbuf(pd_job *j) { return &j->args; }

int pd_job_argend(pd_job *j) {
  if (j->nargs >= j->n) return -EINVAL;
  j->aoff[++j->nargs] = j->args.len;
  return 0;
}

void pd_pool_submit(pd_pool *p, pd_job *j) {
  j->link = NULL;
  pd_job **t = &p->jobs;                            /* FIFO: append */
  while (*t) t = &(*t)->link;
  *t = j;
  if (j->n == 0) j->status = PD_JOB_DONE;
}

pd_job *pd_pool_job(pd_pool *p, uint32_t id) { return find_job(p, id); }

/* Kill the workers holding in-flight tasks of a job that no longer wants
 * them; their other tasks run again elsewhere. */
static void stop_job_workers(pd_pool *p, pd_job *j) {
  for (int k = 0; k < p->nw;) {
    worker *w = &p->w[k];
    int holds = 0;
    for (size_t e = w->qhead; e < w->qlen && !holds; e++)
      holds = w->q[e].job == j->id && j->st[w->q[e].task] == PD_T_INFLIGHT;
    if (holds) worker_lost(p, k, KILL_CANCEL);       /* slot k refilled */
    else k++;
  }
}

void pd_pool_cancel(pd_pool *p, pd_job *j) {
  if (job_final(j)) return;
  j->status = PD_JOB_CANCELLED;
  stop_job_workers(p, j);
}

void pd_pool_release(pd_pool *p, pd_job *j) {
  if (!job_final(j)) pd_pool_cancel(p, j);
  for (int k = 0; k < p->nw; k++) {                 /* workers drop its function */
    worker *w = &p->w[k];
    for (size_t a = 0; a < w->njobs; a++)
      if (w->jobs[a] == j->id) {
        w->jobs[a] = w->jobs[--w->njobs];
        unsigned char id[4];
        pdi_le32_put(id, j->id);
        pd_conn_put(&w->c, PD_F_DROP, id, 4);
        break;
      }
  }
  for (pd_job **t = &p->jobs; *t; t = &(*t)->link)
    if (*t == j) { *t = j->link; break; }
  job_free(p, j);
}

uint32_t pd_job_id(const pd_job *j) { return j->id; }
int pd_job_status(const pd_job *j) { return j->status; }

void pd_job_progress(const pd_job *j, uint32_t *done, uint32_t *total, uint32_t *failed) {
  if (done) *done = j->ndone;
  if (total) *total = j->n;
  if (failed) *failed = j->nfailed;
}

int pd_job_task(const pd_job *j, uint32_t i, const char **p, size_t *n, int *pid) {
  if (i >= j->n) return -1;
  if (j->st[i] >= PD_T_DONE && j->st[i] != PD_T_CANCELLED) {
    if (p) *p = j->res.data + j->roff[i];
    if (n) *n = j->rlen[i];
    if (pid) *pid = j->pid[i];
  }
  return j->st[i];
}

void pd_job_view_get(const pd_job *j, pd_job_view *v) {
  v->st = j->st;
  v->roff = j->roff;
  v->rlen = j->rlen;
  v->order = j->order;
  v->res = j->res.data;
  v->n = j->n;
  v->ndone = j->ndone;
}

uint32_t pd_job_completed(const pd_job *j, uint32_t k) {
  return k < j->ndone ? j->order[k] : UINT32_MAX;
}

uint32_t pd_job_first_failure(const pd_job *j) {
  uint32_t best = UINT32_MAX;
  for (uint32_t k = 0; k < j->ndone; k++) {
    uint32_t i = j->order[k];
    if (j->st[i] != PD_T_DONE && i < best) best = i;
  }
  return best;
}

/* ---- dispatch ------------------------------------------------------------------- */

static int worker_has(const worker *w, uint32_t id) {
  for (size_t a = 0; a < w->njobs; a++)
    if (w->jobs[a] == id) return 1;
  return 0;
}

static int job_wants(const pd_pool *p, const pd_job *j, int k) {
  if (job_final(j) || !queued(j)) return 0;
  return !j->o.cpus || k < j->o.cpus;
}

static uint32_t chunk_for(const pd_pool *p, const pd_job *j) {
  uint32_t q = queued(j);
  if (j->o.chunk > 0) return (uint32_t)j->o.chunk;
  if (j->t_est <= 0) return 1;                      /* measure first */
  double c = PD_BATCH_SECONDS / j->t_est;
  int all = p->nw > p->o.workers ? p->nw : p->o.workers;   /* remote slots too */
  int nw = j->o.cpus && j->o.cpus < all ? j->o.cpus : all;
  double share = (double)q / (PD_SHARE * (nw > 0 ? nw : 1));
  if (c > share) c = share;
  /* ... but a batch shorter than a few wake-ups is all overhead: the tail
   * of a map of tiny tasks goes in batches of at least PD_MIN_BATCH_SECONDS
   * (a worker or the coordinator waking on an idle CPU costs 5 to 50 us) */
  double least = PD_MIN_BATCH_SECONDS / j->t_est;
  if (c < least) c = least < q ? least : q;
  if (c > PD_MAX_CHUNK) c = PD_MAX_CHUNK;
  return c < 1 ? 1 : (uint32_t)c;
}

static int window_for(const pd_pool *p, const pd_job *j, uint32_t chunk) {
  double batch = j->t_est * chunk;
  if (j->o.gang) return 1;                          /* pd.tasks: each task its own worker */
  if (j->t_est <= 0) return 2;
  /* long batches: the next one waits on the worker while this one runs (no
   * idle round trip between two), but not near the end, where a batch held
   * by a busy worker would leave another idle */
  if (batch > 0.002) return queued(j) >= 2u * (uint32_t)(p->nw > 0 ? p->nw : 1) ? 2 : 1;
  if (chunk == 1 && batch < 0.0002) return 32;
  return 2;
}

/* Queue one batch of job j on worker k.  Returns the number of tasks sent. */
static uint32_t send_batch(pd_pool *p, worker *w, pd_job *j, uint32_t chunk) {
  pd_conn *c = &w->c;
  if (!worker_has(w, j->id)) {
    if (grow((void **)&w->jobs, &w->capjobs, w->njobs + 1, sizeof *w->jobs)) return 0;
    size_t m = pd_conn_begin(c, PD_F_JOB);
    pdi_le32_append(&c->out, j->id);
    unsigned char fl = j->o.unpack ? PD_JOBF_UNPACK : 0;
    pd_buf_append(&c->out, &fl, 1);
    pdi_le64_append(&c->out, j->o.seed);
    pd_buf_append(&c->out, j->fn.data, j->fn.len);
    pd_conn_end(c, m);
    w->jobs[w->njobs++] = j->id;
    p->stats.frames_out++;
  }
  if (grow((void **)&w->q, &w->qcap, w->qlen + chunk, sizeof *w->q)) return 0;
  size_t m = pd_conn_begin(c, PD_F_TASKS);
  pdi_le32_append(&c->out, j->id);
  size_t countat = c->out.len;
  pdi_le32_append(&c->out, 0);
  uint32_t sent = 0;
  if (!j->nretry) {                     /* fresh tasks: one reserve, then copies */
    uint32_t end = j->next + chunk < j->n ? j->next + chunk : j->n;
    size_t need = (size_t)(j->aoff[end] - j->aoff[j->next]) + 8 * (size_t)(end - j->next);
    if (pd_buf_reserve(&c->out, need)) return 0;
  }
  while (sent < chunk && queued(j)) {
    uint32_t i;
    if (j->nretry) {
      if (sent && j->att[j->retry[j->nretry - 1]]) break;   /* runs alone */
      i = j->retry[--j->nretry];
    } else {
      i = j->next++;
    }
    uint64_t a = j->aoff[i], b = j->aoff[i + 1];
    if (c->out.cap - c->out.len < 8 + (size_t)(b - a) &&
        pd_buf_reserve(&c->out, 8 + (size_t)(b - a))) break;
    char *o = c->out.data + c->out.len;
    uint32_t len = (uint32_t)(b - a);
    pdi_le32_put(o, i);
    pdi_le32_put(o + 4, len);
    memcpy(o + 8, j->args.data + a, len);
    c->out.len += 8 + (size_t)len;
    j->st[i] = PD_T_INFLIGHT;
    j->inflight++;
    w->q[w->qlen].job = j->id;
    w->q[w->qlen].task = i;
    w->qlen++;
    sent++;
    if (j->att[i]) break;                            /* a retried task runs alone */
  }
  unsigned char *cp = (unsigned char *)c->out.data + countat;
  pdi_le32_put(cp, (uint32_t)sent);
  pd_conn_end(c, m);
  if (j->status == PD_JOB_QUEUED) j->status = PD_JOB_RUNNING;
  if (w->nbatch == 0) w->head_start = pd_now();
  w->nbatch++;
  p->stats.frames_out++;
  return sent;
}

/* Breadth first: every worker gets its first batch before any gets a
 * second, so that two long tasks on two idle workers run side by side. */
static void dispatch(pd_pool *p) {
  for (int level = 1; level <= 32; level++) {
    int sent = 0, deeper = 0;
    for (int k = 0; k < p->nw; k++) {
      worker *w = &p->w[k];
      if (w->kill_reason || w->solo || w->retiring) continue;   /* cluster: retiring */
      if (w->nbatch >= level) { deeper = 1; continue; }   /* its turn comes later */
      pd_job *j = p->jobs;
      while (j && !job_wants(p, j, k)) j = j->link;
      if (!j) continue;
      uint32_t chunk = chunk_for(p, j);
      if (w->nbatch >= window_for(p, j, chunk)) continue;
      /* a task run again after a lost worker runs alone on an idle worker,
       * so that if it kills this one too no other task pays for it */
      int retry = j->nretry && j->att[j->retry[j->nretry - 1]];
      if (retry && w->nbatch) continue;
      if (!send_batch(p, w, j, chunk)) continue;
      if (retry) w->solo = 1;
      sent++;
    }
    if (!sent && !deeper) break;
  }
}

/* Workers wanted now: enough for the queued work, up to the pool's size. */
static int wanted(const pd_pool *p) {
  int want = 0;
  for (const pd_job *j = p->jobs; j; j = j->link) {
    if (job_final(j) || (!queued(j) && !j->inflight)) continue;
    int c = j->o.cpus && j->o.cpus < p->o.workers ? j->o.cpus : p->o.workers;
    uint32_t work = queued(j) + j->inflight;
    if ((uint32_t)c > work) c = (int)work;
    if (c > want) want = c;
  }
  return want;
}

/* ---- reading results ------------------------------------------------------------- */

/* One frame from worker w.  Returns tasks finished, or -1 if the worker
 * broke the protocol (it is then killed). */
static int on_frame(pd_pool *p, worker *w, const char *f, size_t n) {
  p->stats.frames_in++;
  if (f[0] == PD_F_HELLO) return 0;
  if (f[0] != PD_F_RESULTS || n < 17) return -1;
  uint32_t id = pdi_le32_get(f + 1), count = pdi_le32_get(f + 5);
  double secs;
  memcpy(&secs, f + 9, 8);
  pd_job *j = find_job(p, id);
  if (secs > 0 && secs < 1e9) p->stats.task_seconds += secs;
  if (j && count) {
    double t = secs / count;
    j->t_est = j->t_est > 0 ? 0.5 * j->t_est + 0.5 * t : t;
    if (j->t_est < 1e-8) j->t_est = 1e-8;
  }
  size_t off = 17;
  int final = 0;
  if (j) pd_buf_reserve(&j->res, n);                 /* finish appends at most that */
  for (uint32_t e = 0; e < count; e++) {
    if (n - off < 9 || w->qhead >= w->qlen) return -1;
    uint32_t i = pdi_le32_get(f + off);
    int state = (unsigned char)f[off + 4];
    uint32_t len = pdi_le32_get(f + off + 5);
    off += 9;
    if (n - off < len) return -1;
    inflight h = w->q[w->qhead];
    if (h.job != id || h.task != i) return -1;
    w->qhead++;
    if (j && i < j->n && j->st[i] == PD_T_INFLIGHT) {
      if (state != PD_T_DONE && state != PD_T_ERROR && state != PD_T_FAILED) return -1;
      if (job_final(j)) {
        j->st[i] = PD_T_CANCELLED;
        if (j->inflight) j->inflight--;
      } else {
        finish(j, i, state, f + off, len, w->pid);
        final++;
        p->stats.tasks_done++;
      }
    }
    off += len;
  }
  w->head_start = pd_now();                        /* its next task starts now */
  if (w->nbatch > 0) w->nbatch--;
  if (w->nbatch == 0) w->solo = 0;
  if (w->qhead == w->qlen) w->qhead = w->qlen = 0;
  else if (w->qhead > 1024 && w->qhead * 2 > w->qlen) {
    memmove(w->q, w->q + w->qhead, (w->qlen - w->qhead) * sizeof *w->q);
    w->qlen -= w->qhead;
    w->qhead = 0;
  }
  return final;
}

/* Read everything worker k has.  Returns tasks finished; sets *gone when the
 * worker has ended (or broke the protocol). */
static int drain(pd_pool *p, int k, int *gone) {
  worker *w = &p->w[k];
  int final = 0;
  for (;;) {
    size_t room = w->c.in.cap - w->c.in.len;
    int r = pd_conn_fill(&w->c);
    if (r == -EAGAIN) break;
    if (r < 0) { *gone = KILL_CRASH; break; }
    int drained = (size_t)r < room;                 /* a short read: nothing left */
    const char *f;
    size_t n;
    int got;
    while ((got = pd_conn_next(&w->c, &f, &n)) == 1) {
      int d = on_frame(p, w, f, n);
      if (d < 0) { *gone = KILL_CRASH; return final; }
      final += d;
    }
    if (got < 0) { *gone = KILL_CRASH; break; }
    if (drained) break;
  }
  return final;
}

/* ---- the pump --------------------------------------------------------------------- */

static double earliest_deadline(const pd_pool *p) {
  double d = 0;
  for (int k = 0; k < p->nw; k++) {
    const worker *w = &p->w[k];
    if (w->qhead >= w->qlen) continue;
    const pd_job *j = find_job((pd_pool *)p, w->q[w->qhead].job);
    if (!j || j->o.timeout <= 0) continue;
    double t = w->head_start + j->o.timeout;
    if (d == 0 || t < d) d = t;
  }
  return d;
}

static int anything_pending(const pd_pool *p) {
  for (const pd_job *j = p->jobs; j; j = j->link)
    if (!job_final(j) && (queued(j) || j->inflight)) return 1;
  return 0;
}

int pd_pool_pending(const pd_pool *p) { return anything_pending(p); }

int pd_pool_pump(pd_pool *p, double timeout) {
  double start = pd_now();
  int final = 0;
  struct pollfd stackfds[64];                       /* 2 per worker, up to 32 */
  for (;;) {
    int before = final;
    /* start workers for queued work */
    if (p->hook) p->hook(p, p->hook_arg);          /* cluster: slots come and go */
    int want = wanted(p);
    int nlocal = pd_pool_local(p);
    while (nlocal < want) {
      int rc = spawn_one(p);
      if (rc) {
        if (p->nw == 0 && !p->hook) return rc;
        break;
      }
      nlocal++;
    }
    /* stop idle local workers beyond the pool's size, and idle retiring
     * remote slots (closing the fd gives the slot back to its node) */
    for (int k = p->nw - 1; k >= 0; k--) {
      worker *w = &p->w[k];
      if (w->qhead != w->qlen) continue;
      if (w->ext ? w->retiring : nlocal > p->o.workers) {
        if (!w->ext) nlocal--;
        worker_lost(p, k, KILL_CANCEL);
      }
    }
    dispatch(p);
    for (int k = 0; k < p->nw; k++) pd_conn_flush(&p->w[k].c);  /* errors: seen as EOF */

    double now = pd_now();
    double left = timeout < 0 ? -1 : start + timeout - now;
    if (final > 0 || (timeout >= 0 && left <= 0)) left = 0;
    if (left != 0 && !anything_pending(p)) return final;
    double dl = earliest_deadline(p);
    if (dl > 0) {
      double until = dl - now;
      if (until < 0) until = 0;
      if (left < 0 || until < left) left = until;
    }
    /* fds[k]: worker k's replies; fds[nw + k]: its socket, watched for
     * room only while frames wait to be written (fd -1: ignored);
     * fds[2 nw]: the cluster's wake fd (slots changed), when there is one */
    size_t nslots = 2 * (size_t)(p->nw > 0 ? p->nw : 0) + 1;
    struct pollfd *fds =
        nslots <= sizeof stackfds / sizeof *stackfds ? stackfds : malloc(nslots * sizeof *fds);
    if (!fds) return -ENOMEM;
    for (int k = 0; k < p->nw; k++) {
      const pd_conn *c = &p->w[k].c;
      int split = c->wfd > 0;
      fds[k].fd = c->fd;
      fds[k].events = POLLIN | (!split && c->out.len ? POLLOUT : 0);
      fds[k].revents = 0;
      fds[p->nw + k].fd = split && c->out.len ? c->wfd : -1;
      fds[p->nw + k].events = POLLOUT;
      fds[p->nw + k].revents = 0;
    }
    int ms = left < 0 ? -1 : (int)(left * 1000 + (left > 0 ? 0.999 : 0));
    int nfds = p->nw;
    int woke = 0;
    nfds_t nall = 2 * (nfds_t)nfds;
    if (p->wakefd >= 0) {                            /* cluster: slots changed */
      fds[nall].fd = p->wakefd;
      fds[nall].events = POLLIN;
      fds[nall].revents = 0;
      nall++;
    }
    int nready = poll(fds, nall, ms);
    if (nready < 0 && errno == EINTR) {             /* a signal (Ctrl-C): let the */
      if (fds != stackfds) free(fds);               /* caller's Lua hook run */
      return final;
    }
    if (p->wakefd >= 0 && nready > 0 && (fds[2 * nfds].revents & POLLIN)) woke = 1;
    /* read; a worker that ended is settled after the loop (slots move) */
    int gone[nfds > 0 ? nfds : 1];
    for (int k = 0; k < nfds; k++) {
      gone[k] = 0;
      if (nready > 0 && (fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
        final += drain(p, k, &gone[k]);
    }
    if (fds != stackfds) free(fds);
    /* timeouts */
    now = pd_now();
    for (int k = 0; k < nfds; k++) {
      worker *w = &p->w[k];
      if (gone[k] || w->qhead >= w->qlen) continue;
      pd_job *j = find_job(p, w->q[w->qhead].job);
      if (j && j->o.timeout > 0 && !job_final(j) && j->st[w->q[w->qhead].task] == PD_T_INFLIGHT &&
          now - w->head_start >= j->o.timeout)
        gone[k] = KILL_TIMEOUT;
    }
    for (int k = nfds - 1; k >= 0; k--)             /* high to low: slot moves */
      if (gone[k]) final += worker_lost(p, k, gone[k]);
    /* a job that failed stops its other tasks now */
    for (pd_job *j = p->jobs; j; j = j->link)
      if (j->status == PD_JOB_FAILED && j->inflight) stop_job_workers(p, j);
    if (final > before) {                           /* hand out more, then return */
      dispatch(p);
      for (int k = 0; k < p->nw; k++) pd_conn_flush(&p->w[k].c);
      return final;
    }
    if (woke) continue;                             /* cluster: slots came or went */
    if (timeout >= 0 && pd_now() - start >= timeout) return final;
  }
}
