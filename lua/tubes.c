/*
 * tubes.c: pd.core.tubes, the native side of pd.tasks (stdlib/pd/tasks.lua)
 * and of a task-set node (stdlib/pd/tasknode.lua); guide: docs/tasks.md.
 * This file is the node's side, a "pd.TaskNode": the control link and the
 * tube ends.  The coordinator's side (pd.Gang) is gang.c; the links between
 * machines (pd.TubeLink) are tubelink.c; tubes_open.c puts them together.
 *
 *   core.tubes.node(ctlfd) -> node
 *   node:add(name, "in"|"out", fd [, peer])   (peer: the other end's index)
 *   node:recv([seconds]) -> type, payload | nil, "timeout" | false (gone)
 *   node:send(type, payload)
 *   node:push(name, v)  node:pop(name [, seconds])  node:poll(name)
 *   node:flush()  node:close()  node:aborted()
 *   node:watch(fn, computing)  fn(type, payload) is called for control
 *                    frames that arrive while the node waits (INFO), and,
 *                    with computing true, when SIGUSR1 says one is there
 *                    while it computes; an ABORT frame raises in the node
 *   core.tubes.bound: the default push bound, bytes
 *
 * A tube end is a descriptor the node is given: a pipe's end on one
 * machine (gang.c makes the pipes), a tcp socket across machines
 * (tubelink.c).  Frames are pd_conn frames (4-byte length, type byte,
 * codec message), so a value goes from node to node with one write and one
 * read.  The node process ignores SIGPIPE, so a reader that is gone shows
 * as EPIPE.
 *
 * Bounds.  push never waits while at most TUBE_BOUND bytes (64 MiB) sit
 * unsent on its tube (beyond what the kernel's socket buffer already took);
 * past that it waits for the target to read (back-pressure).  While a node
 * waits for anything (pop, a push held back, the final flush) it keeps
 * sending what its other tubes hold and reads what arrives on all of them,
 * up to TUBE_BOUND buffered per tube, so two nodes pushing large values at
 * each other do not deadlock.
 */
#define _GNU_SOURCE
#include "binding.h"
#include "array.h"
#include "codec.h"
#include "tubes.h"

#include "pd/pd.h"
#include "pd/pdi.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NODE_MT "pd.TaskNode"
#define NODE_KEY "pd.tubes.node"       /* registry: the node of this state */
#define WATCH_KEY "pd.tubes.watch"     /* registry: its control watcher */

#define TUBE_BOUND_DEFAULT ((size_t)64 << 20)  /* bytes unsent (or unread) per tube */
#define TUBE_BOUND (N->bound)
#define TUBE_VALUE 1                    /* frame type of a value on a tube */

/* A blocked pop (or push) polls without sleeping for this long before it
 * sleeps in poll: a process that sleeps gives its CPU up, and waking it on
 * an idle CPU costs 5 to 50 us, which a solver swapping halo rows every
 * step would pay every step.  Bounded, so an idle node costs nothing. */
#define TUBE_SPIN_SECONDS 50e-6

/* A lone array as a codec message (docs/wire.md): version byte, the EXT tag
 * (lua/codec_impl.h's T_EXT), ext id 1, u32 LE payload length, then the payload
 * of lua/array.h's wire form.  Built here only for the direct path of
 * large arrays (n_push); the specs decode it with the codec. */
#define TUBE_T_EXT 0x0f
#define TUBE_DIRECT_MIN ((size_t)1 << 16)   /* smaller arrays are copied */

/* Control frame types (tasks.lua names them too). */
enum { C_INFO = 3, C_ABORT = 4 };

/* Raise a message without a position prefix (the node's traceback says
 * where): these errors are the set's, not a line of this file's.  */
static int raise_plain(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

typedef struct tube {
  char *name;
  size_t namelen;
  int out;          /* 1: this node pushes, 0: it pops */
  int closed;       /* the other end is gone (EOF, EPIPE) */
  int peer;         /* the node at the other end (for messages) */
  pd_conn c;
} tube;

typedef struct tnode {
  pd_conn ctl;
  tube *t;
  int nt, capt;
  struct pollfd *pfd;
  int aborted;      /* the set failed: an ABORT arrived or a tube closed */
  int busy;         /* in a wait: the hook leaves control frames to it */
  int open_t;       /* tube with a frame being encoded, or -1 */
  size_t bound;     /* TUBE_BOUND_DEFAULT; smaller in specs (node:set_bound) */
  size_t push_limit; /* W_PUSH waits until the tube holds at most this */
  size_t open_mark;
} tnode;

static tnode *check_node(lua_State *L) {
  tnode *N = (tnode *)luaL_checkudata(L, 1, NODE_MT);
  if (N->ctl.fd < 0 && !N->t) luaL_error(L, "attempt to use a closed node");
  return N;
}

/* A push whose encoding raised left a partial frame: drop it. */
static void discard_open(tnode *N) {
  if (N->open_t < 0) return;
  tube *t = &N->t[N->open_t];
  if (t->c.out.len > N->open_mark) t->c.out.len = N->open_mark;
  N->open_t = -1;
}

static size_t pending(const tube *t) { return t->c.out.len - t->c.out_off; }
static size_t buffered(const tube *t) { return t->c.in.len - t->c.in_off; }

/* A complete frame waits in t's input buffer. */
static int frame_ready(const tube *t) {
  size_t have = buffered(t);
  if (have < 4) return 0;
  return have - 4 >= pdi_le32_get(t->c.in.data + t->c.in_off);
}

static int find_tube(lua_State *L, tnode *N, int idx, int out) {
  size_t n;
  const char *s = luaL_checklstring(L, idx, &n);
  for (int i = 0; i < N->nt; i++)
    if (N->t[i].out == out && N->t[i].namelen == n && !memcmp(N->t[i].name, s, n)) return i;
  lua_getfield(L, LUA_REGISTRYINDEX, "pd.tubes.names");      /* who has what: for the message */
  const char *have = lua_tostring(L, -1);
  raise_plain(L, "pd.tasks: this node has no tube '%s' %s (%s)", s,
             out ? "going out" : "coming in", have ? have : "no tubes");
  return -1;
}

/* pd_conn_flush for a pipe (write(), not send()).  Returns 0 when all is
 * written, -EAGAIN when the pipe is full, or -errno (-EPIPE: reader gone). */
static int tube_flush(tube *t) {
  pd_conn *c = &t->c;
  while (c->out_off < c->out.len) {
    ssize_t w = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    c->out_off += (size_t)w;
  }
  c->out.len = c->out_off = 0;
  return 0;
}

/* Write what each out tube holds, as far as the sockets take it.  A tube
 * whose reader is gone drops what it holds (nobody will ever read it). */
static void flush_outs(tnode *N) {
  for (int i = 0; i < N->nt; i++) {
    tube *t = &N->t[i];
    if (!t->out || !pending(t)) continue;
    int rc = tube_flush(t);
    if (rc < 0 && rc != -EAGAIN) {
      t->closed = 1;
      t->c.out.len = t->c.out_off = 0;
    }
  }
}

static void run_control(lua_State *L, tnode *N);

/* Read what t's socket holds now.  Stack: unchanged. */
static void fill_in(tnode *N, tube *t) {
  /* past TUBE_BOUND buffered, read on only to complete a frame */
  for (int i = 0; i < 64 && !t->closed && (buffered(t) < TUBE_BOUND || !frame_ready(t)); i++) {
    int rc = pd_conn_fill(&t->c);
    if (rc == -EAGAIN) return;
    if (rc < 0) { t->closed = 1; return; }
    if (frame_ready(t)) return;
  }
}

enum { W_POP, W_PUSH, W_FLUSH, W_WRITABLE };

/* Wait until tube ti has a frame (W_POP), until tube ti holds at most
 * TUBE_BOUND bytes unsent (W_PUSH), or until every out tube is sent
 * (W_FLUSH), serving control frames meanwhile.  Returns 1, or 0 when the
 * deadline (monotonic seconds; < 0: none) passed.  Raises when the set is
 * aborted, when the popped tube closes empty, or when the coordinator is
 * gone.  Stack: unchanged. */
static int wait_for(lua_State *L, tnode *N, int why, int ti, double deadline) {
  PDI_STACK(L);
  int writable = 0;                 /* W_WRITABLE: tube ti's pipe took POLLOUT */
  double spin_until = -1;           /* set on the first pass that would sleep */
  for (;;) {
    flush_outs(N);
    if (why == W_POP) {
      tube *t = &N->t[ti];
      if (frame_ready(t)) return 1;
      if (t->closed) {
        /* The feeder has ended.  When it failed, the coordinator's ABORT
         * is on its way (the feeder reported before it exited): give it a
         * moment, so that this node fails with the set's reason. */
        N->aborted = 1;
        struct pollfd cp = {N->ctl.fd, POLLIN, 0};
        if (poll(&cp, 1, 200) > 0) run_control(L, N);
        raise_plain(L, "pd.tasks: tube '%s' is closed: node %d, which feeds it, has ended",
                    t->name, t->peer);
      }
    } else if (why == W_PUSH) {
      if (N->t[ti].closed || pending(&N->t[ti]) <= N->push_limit) return 1;
    } else if (why == W_WRITABLE) {
      if (N->t[ti].closed || writable) return 1;
    } else {
      int all = 1;
      for (int i = 0; i < N->nt && all; i++) all = !N->t[i].out || !pending(&N->t[i]);
      if (all) return 1;
    }
    double left = deadline < 0 ? -1 : deadline - pd_now();
    if (deadline >= 0 && left <= 0) return 0;
    int np = 0;
    N->pfd[np].fd = N->ctl.fd;
    N->pfd[np].events = POLLIN;
    N->pfd[np++].revents = 0;
    for (int i = 0; i < N->nt; i++) {
      tube *t = &N->t[i];
      short ev = 0;
      if (!t->closed && !t->out && (buffered(t) < TUBE_BOUND || !frame_ready(t))) ev = POLLIN;
      if (!t->closed && t->out && (pending(t) || (why == W_WRITABLE && i == ti))) ev = POLLOUT;
      N->pfd[np].fd = ev ? t->c.fd : -1;
      N->pfd[np].events = ev;
      N->pfd[np++].revents = 0;
    }
    int ms = left < 0 ? -1 : (int)(left * 1000 + 0.999);
    if (ms != 0) {                                   /* spin a little first */
      double t = pd_now();
      if (spin_until < 0) spin_until = t + TUBE_SPIN_SECONDS;
      if (t < spin_until) ms = 0;
    }
    int r = poll(N->pfd, (nfds_t)np, ms);
    if (r < 0 && errno != EINTR) luaL_error(L, "pd.tasks: poll: %s", strerror(errno));
    if (r <= 0) continue;
    if (N->pfd[0].revents) run_control(L, N);
    PDI_STACK_CHECK(L, 0);
    for (int i = 0; i < N->nt; i++) {
      tube *t = &N->t[i];
      if (!N->pfd[i + 1].revents) continue;
      if (!t->out) fill_in(N, t);
      else if (N->pfd[i + 1].revents & (POLLERR | POLLHUP)) {
        t->closed = 1;
        t->c.out.len = t->c.out_off = 0;
      } else if (i == ti && (N->pfd[i + 1].revents & POLLOUT)) {
        writable = 1;
      }
    }
  }
}

/* Read and act on the control frames that have arrived: ABORT raises,
 * anything else goes to the watcher, fn(type, payload).  Stack: unchanged. */
static void run_control(lua_State *L, tnode *N) {
  PDI_STACK(L);
  int rc;
  while ((rc = pd_conn_fill(&N->ctl)) > 0) {}
  int gone = rc != -EAGAIN;
  const char *f;
  size_t n;
  int got;
  while ((got = pd_conn_next(&N->ctl, &f, &n)) == 1) {
    int type = (unsigned char)f[0];
    if (type == C_ABORT) {
      N->aborted = 1;
      lua_pushlstring(L, f + 1, n - 1);
      lua_error(L);
    }
    lua_pushlstring(L, f + 1, n - 1);                /* [p] */
    lua_getfield(L, LUA_REGISTRYINDEX, WATCH_KEY);   /* [p, fn] */
    if (lua_isfunction(L, -1)) {
      lua_pushinteger(L, type);
      lua_pushvalue(L, -3);                          /* [p, fn, type, p] */
      lua_call(L, 2, 0);                             /* [p] */
    } else {
      lua_pop(L, 1);
    }
    lua_pop(L, 1);                                   /* [] */
    PDI_STACK_CHECK(L, 0);
  }
  if (got < 0 || gone) {
    N->aborted = 1;
    raise_plain(L, "pd.tasks: the coordinator is gone");
  }
}

/* Computing nodes.  A node deep in Lua computation still answers info()
 * and stops on an abort: the coordinator follows those two frames with
 * SIGUSR1 (gang:poke), whose handler sets a one-shot hook, exactly as lua.c
 * turns Ctrl-C into an error; the hook then reads the control socket.  No
 * cost while nothing is asked (a permanent count hook would slow Lua 5.4's
 * interpreter several-fold).  The handler needs the state: poke_L is the
 * node process's one state, set by node:watch (a task-set node is a
 * process of its own; a signal handler has no other way to reach it). */
static lua_State *volatile poke_L;

static int n_control(lua_State *L);
static void node_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  PDI_STACK(L);
  lua_sethook(L, NULL, 0, 0);                        /* one shot */
  lua_getfield(L, LUA_REGISTRYINDEX, NODE_KEY);      /* [N] */
  tnode *N = (tnode *)lua_touserdata(L, -1);
  if (!N || N->busy || N->ctl.fd < 0) { lua_pop(L, 1); return; }
  struct pollfd p = {N->ctl.fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) { lua_pop(L, 1); return; }
  lua_pushcfunction(L, n_control);
  lua_insert(L, -2);                                 /* [f, N] */
  N->busy = 1;
  int st = lua_pcall(L, 1, 0, 0);                    /* [] or [err] */
  N->busy = 0;
  if (st != LUA_OK) lua_error(L);                    /* abort: raise in the node */
  PDI_STACK_CHECK(L, 0);
}

static void on_poke(int sig) {
  (void)sig;
  lua_State *L = poke_L;
  if (L) lua_sethook(L, node_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* node:_control(): serve control frames now (the hook's entry, with the node
 * at index 1 as run_control wants).  Stack: [N] -> [] */
static int n_control(lua_State *L) {
  tnode *N = check_node(L);
  run_control(L, N);
  return 0;
}

/* core.tubes.node(ctlfd) -> node.  Stack: [fd] -> [node] */
static int t_node(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  PDI_STACK(L);
  tnode *N = (tnode *)lua_newuserdatauv(L, sizeof *N, 0);
  memset(N, 0, sizeof *N);
  N->open_t = -1;
  N->bound = TUBE_BOUND_DEFAULT;
  pd_conn_init(&N->ctl, -1);
  luaL_setmetatable(L, NODE_MT);
  N->pfd = malloc(sizeof *N->pfd);
  if (!N->pfd) return luaL_error(L, "not enough memory");
  signal(SIGPIPE, SIG_IGN);            /* a node process: EPIPE, not death */
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return luaL_error(L, "pd.tasks: control descriptor %d: %s", fd, strerror(errno));
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  pd_conn_init(&N->ctl, fd);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, NODE_KEY);
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* node:add(name, "in"|"out", fd).  Stack: unchanged */
static int n_add(lua_State *L) {
  tnode *N = check_node(L);
  size_t n;
  const char *name = luaL_checklstring(L, 2, &n);
  const char *dir = luaL_checkstring(L, 3);
  int fd = (int)luaL_checkinteger(L, 4);
  int peer = (int)luaL_optinteger(L, 5, 0);
  int out = !strcmp(dir, "out");
  luaL_argcheck(L, out || !strcmp(dir, "in"), 3, "\"in\" or \"out\"");
  if (N->nt == N->capt) {
    int c = N->capt ? N->capt * 2 : 8;
    tube *t = realloc(N->t, (size_t)c * sizeof *t);
    if (!t) return luaL_error(L, "not enough memory");
    N->t = t;
    struct pollfd *p = realloc(N->pfd, ((size_t)c + 1) * sizeof *p);
    if (!p) return luaL_error(L, "not enough memory");
    N->pfd = p;
    N->capt = c;
  }
  tube *t = &N->t[N->nt];
  memset(t, 0, sizeof *t);
  t->name = malloc(n + 1);
  if (!t->name) return luaL_error(L, "not enough memory");
  memcpy(t->name, name, n);
  t->name[n] = 0;
  t->namelen = n;
  t->out = out;
  t->peer = peer;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return luaL_error(L, "pd.tasks: tube descriptor %d: %s", fd, strerror(errno));
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  pd_conn_init(&t->c, fd);
  N->nt++;
  return 0;
}

/* Push a large contiguous array that would take the tube past its bound:
 * rather than copy it into the tube's buffer, wait until the tube is empty,
 * then write the frame's header and the elements straight from the
 * array's memory, serving the other tubes and the control socket while the
 * pipe is full.  Push returns once the whole array is in the pipe (this is
 * the bound at work: nothing of it is left to send).  Stack: +0 */
static int push_direct(lua_State *L, tnode *N, int ti, const pdi_array *a) {
  tube *t = &N->t[ti];
  N->busy = 1;
  N->push_limit = 0;
  wait_for(L, N, W_PUSH, ti, -1);                  /* the frames before it go first */
  N->busy = 0;
  if (t->closed) return 0;
  size_t total = pdi_array_encoded_size(a);
  size_t body = (size_t)a->n * pdi_dtype_size(a->dtype);
  size_t msg = 1 + 1 + 1 + 4 + total;               /* version, EXT, id, len, payload */
  if (total > UINT32_MAX || 1 + msg > PD_FRAME_MAX)
    return raise_plain(L, "pd.tasks: value too large for a tube (over 1 GiB encoded)");
  pd_buf *b = &t->c.out;
  unsigned char h[16];
  uint32_t flen = (uint32_t)(1 + msg), plen = (uint32_t)total;
  pdi_le32_put(h, flen);
  h[4] = TUBE_VALUE;
  h[5] = PDI_CODEC_VERSION;
  h[6] = TUBE_T_EXT;
  h[7] = PDI_CODEC_EXT_ARRAY;
  pdi_le32_put(h + 8, plen);
  h[12] = (unsigned char)a->dtype;
  h[13] = (unsigned char)a->ndim;
  if (pd_buf_append(b, h, 14) || pdi_codec_put_uvarint(b, (uint64_t)a->dims[0]) ||
      (a->ndim == 2 && pdi_codec_put_uvarint(b, (uint64_t)a->dims[1])))
    return luaL_error(L, "not enough memory");
  const char *p = a->data;
  size_t left = body;
  N->busy = 1;
  for (;;) {
    int rc = tube_flush(t);                          /* the header */
    if (rc == 0) {
      while (left) {
        ssize_t w = write(t->c.fd, p, left);
        if (w > 0) { p += w; left -= (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        t->closed = 1;                               /* reader gone: drop */
        break;
      }
      if (!left || t->closed) break;
    } else if (rc != -EAGAIN) {
      t->closed = 1;
      t->c.out.len = t->c.out_off = 0;
      break;
    }
    wait_for(L, N, W_WRITABLE, ti, -1);
    if (t->closed) break;
  }
  N->busy = 0;
  return 0;
}

/* node:push(name, v).  Encodes v into the tube's buffer and writes what the
 * socket takes; waits only while the tube holds more than TUBE_BOUND bytes
 * unsent (and for a large array that would not fit under the bound, until
 * it is written: push_direct).  A push to a node that has ended is dropped.
 * Stack: +0 */
static int n_push(lua_State *L) {
  tnode *N = check_node(L);
  luaL_checkany(L, 3);
  discard_open(N);
  int ti = find_tube(L, N, 2, 1);
  tube *t = &N->t[ti];
  if (pending(t) > TUBE_BOUND) {
    N->busy = 1;
    N->push_limit = TUBE_BOUND;
    wait_for(L, N, W_PUSH, ti, -1);
    N->busy = 0;
  }
  if (t->closed) return 0;
  pdi_array *a = pdi_array_test(L, 3);
  if (a && pdi_array_contiguous(a) &&
      (size_t)a->n * pdi_dtype_size(a->dtype) >= TUBE_DIRECT_MIN &&
      pending(t) + pdi_array_encoded_size(a) > TUBE_BOUND)
    return push_direct(L, N, ti, a);
  N->open_t = ti;
  N->open_mark = t->c.out.len;
  size_t m = pd_conn_begin(&t->c, TUBE_VALUE);
  if (m == (size_t)-1) return luaL_error(L, "not enough memory");
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  pdi_codec_encode(L, 3, &t->c.out, &o);           /* may raise: discard_open */
  pd_conn_end(&t->c, m);
  N->open_t = -1;
  if (t->c.out.len - m - 4 > PD_FRAME_MAX) {
    t->c.out.len = m;
    return raise_plain(L, "pd.tasks: value too large for a tube (over 1 GiB encoded)");
  }
  int rc = tube_flush(t);
  if (rc < 0 && rc != -EAGAIN) {
    t->closed = 1;
    t->c.out.len = t->c.out_off = 0;
  }
  return 0;
}

/* Take the next frame of tube ti and push its value.  Stack: +1 */
static void take(lua_State *L, tube *t) {
  PDI_STACK(L);
  const char *f;
  size_t n;
  if (pd_conn_next(&t->c, &f, &n) != 1 || f[0] != TUBE_VALUE)
    raise_plain(L, "pd.tasks: malformed frame on tube '%s'", t->name);
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  pdi_codec_decode(L, f + 1, n - 1, &o);
  PDI_STACK_CHECK(L, 1);
}

/* node:pop(name [, seconds]) -> v | nil, "timeout".  Blocks until a value
 * comes; raises when the set fails or the tube closes empty.  Stack: +1/+2 */
static int n_pop(lua_State *L) {
  tnode *N = check_node(L);
  discard_open(N);
  int ti = find_tube(L, N, 2, 0);
  double secs = luaL_optnumber(L, 3, -1);
  tube *t = &N->t[ti];
  if (!frame_ready(t)) fill_in(N, t);                   /* often there already */
  if (!frame_ready(t)) {
    N->busy = 1;
    int ok = wait_for(L, N, W_POP, ti, secs < 0 ? -1 : pd_now() + secs);
    N->busy = 0;
    if (!ok) {
      lua_pushnil(L);
      lua_pushliteral(L, "timeout");
      return 2;
    }
  }
  take(L, t);
  return 1;
}

/* node:poll(name) -> v, or nil when nothing has arrived.  Never waits.
 * Stack: +1 */
static int n_poll(lua_State *L) {
  tnode *N = check_node(L);
  discard_open(N);
  int ti = find_tube(L, N, 2, 0);
  tube *t = &N->t[ti];
  flush_outs(N);
  if (!frame_ready(t)) fill_in(N, t);
  if (!frame_ready(t)) { lua_pushnil(L); return 1; }
  take(L, t);
  return 1;
}

/* node:flush(): wait until every out tube is written (or its reader gone).
 * Stack: +0 */
static int n_flush(lua_State *L) {
  tnode *N = check_node(L);
  discard_open(N);
  N->busy = 1;
  wait_for(L, N, W_FLUSH, -1, -1);
  N->busy = 0;
  return 0;
}

/* node:recv([seconds]) -> type, payload | nil, "timeout" | false.  For the
 * node loop between phases (INIT, RUN).  Stack: +2 or +1 */
static int n_recv(lua_State *L) {
  tnode *N = check_node(L);
  double secs = luaL_optnumber(L, 2, -1);
  double deadline = secs < 0 ? -1 : pd_now() + secs;
  for (;;) {
    const char *f;
    size_t n;
    int got = pd_conn_next(&N->ctl, &f, &n);
    if (got == 1) {
      lua_pushinteger(L, (unsigned char)f[0]);
      lua_pushlstring(L, f + 1, n - 1);
      return 2;
    }
    if (got < 0) { lua_pushboolean(L, 0); return 1; }
    int rc = pd_conn_fill(&N->ctl);
    if (rc > 0) continue;
    if (rc != -EAGAIN) { lua_pushboolean(L, 0); return 1; }
    double left = deadline < 0 ? -1 : deadline - pd_now();
    if (deadline >= 0 && left <= 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "timeout");
      return 2;
    }
    struct pollfd p = {N->ctl.fd, POLLIN, 0};
    poll(&p, 1, left < 0 ? -1 : (int)(left * 1000 + 0.999));
  }
}

/* node:send(type, payload): a control frame to the coordinator, written
 * now (blocking until it is).  Stack: +0 */
static int n_send(lua_State *L) {
  tnode *N = check_node(L);
  int type = (int)luaL_checkinteger(L, 2);
  size_t n;
  const char *p = luaL_optlstring(L, 3, "", &n);
  if (pd_conn_put(&N->ctl, type, p, n)) return luaL_error(L, "not enough memory");
  for (;;) {
    int rc = pd_conn_flush(&N->ctl);
    if (rc == 0) break;
    if (rc != -EAGAIN) return luaL_error(L, "pd.tasks: the coordinator is gone");
    struct pollfd q = {N->ctl.fd, POLLOUT, 0};
    poll(&q, 1, -1);
  }
  return 0;
}

/* node:watch(fn [, hook]): fn(type, payload) serves control frames; with
 * hook true, a count hook checks for them while Lua computes.  Stack: +0 */
static int n_watch(lua_State *L) {
  check_node(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_setfield(L, LUA_REGISTRYINDEX, WATCH_KEY);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  if (lua_toboolean(L, 3)) {
    poke_L = L;
    sa.sa_handler = on_poke;
    sa.sa_flags = SA_RESTART;
  } else {
    sa.sa_handler = SIG_IGN;
    poke_L = NULL;
  }
  sigaction(SIGUSR1, &sa, NULL);
  if (!poke_L) lua_sethook(L, NULL, 0, 0);   /* disarm a hook set by an earlier poke */
  return 0;
}

/* node:pending(name) -> bytes pushed on the out tube and not yet written;
 * node:set_bound(bytes): the push bound (specs use a small one).  +1 / +0 */
static int n_pending(lua_State *L) {
  tnode *N = check_node(L);
  lua_pushinteger(L, (lua_Integer)pending(&N->t[find_tube(L, N, 2, 1)]));
  return 1;
}

/* node:set_bound(bytes): unsent bytes a tube may hold before push waits
 * (back-pressure).  Stack: +0 */
static int n_set_bound(lua_State *L) {
  tnode *N = check_node(L);
  lua_Integer b = luaL_checkinteger(L, 2);
  luaL_argcheck(L, b >= 1, 2, "bound must be positive");
  N->bound = (size_t)b;
  return 0;
}

/* node:aborted() -> true once the coordinator told this node to stop.
 * Stack: +1 */
static int n_aborted(lua_State *L) {
  tnode *N = check_node(L);
  lua_pushboolean(L, N->aborted);
  return 1;
}

/* node:close(): close every tube end (the peers see end of stream). */
static int n_close(lua_State *L) {
  tnode *N = (tnode *)luaL_checkudata(L, 1, NODE_MT);
  for (int i = 0; i < N->nt; i++) {
    pd_conn_close(&N->t[i].c);
    free(N->t[i].name);
  }
  free(N->t);
  N->t = NULL;
  N->nt = N->capt = 0;
  return 0;
}

/* __gc of a node: closes its tube ends and control connection, frees its
 * poll table; a closed node may be collected again safely.  Stack: +0 */
static int n_gc(lua_State *L) {
  tnode *N = (tnode *)luaL_checkudata(L, 1, NODE_MT);
  n_close(L);
  pd_conn_close(&N->ctl);
  free(N->pfd);
  N->pfd = NULL;
  return 0;
}

/* ==== registration ============================================================ */

static const luaL_Reg node_methods[] = {
  {"add", n_add}, {"push", n_push}, {"pop", n_pop}, {"poll", n_poll},
  {"flush", n_flush}, {"recv", n_recv}, {"send", n_send}, {"watch", n_watch},
  {"aborted", n_aborted}, {"pending", n_pending}, {"set_bound", n_set_bound},
  {"close", n_close}, {"_control", n_control}, {NULL, NULL},
};

static const luaL_Reg node_funcs[] = {
  {"node", t_node}, {NULL, NULL},
};

/* Make the node's class and set its functions (and the default bound)
 * into the module table on top.  Stack: [t] -> [t] */
void pdi_tubes_open_node(lua_State *L) {
  PDI_STACK(L);
  pdi_newclass(L, NODE_MT, node_methods, NULL, n_gc);        /* [t, mt] */
  lua_pop(L, 1);                                              /* [t] */
  luaL_setfuncs(L, node_funcs, 0);
  lua_pushinteger(L, (lua_Integer)TUBE_BOUND_DEFAULT);
  lua_setfield(L, -2, "bound");
  PDI_STACK_CHECK(L, 0);
}
