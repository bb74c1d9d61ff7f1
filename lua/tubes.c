/*
 * tubes.c: pd.core.tubes, the native side of pd.tasks (stdlib/pd/tasks.lua)
 * and of a task-set node (stdlib/pd/tasknode.lua).  Guide: docs/tasks.md.
 *
 * Coordinator side, a "pd.Gang": the processes of one task set.
 *   core.tubes.gang{argv=, count=, tubes={{name, from, to}, ...}, env=}
 *       -> gang, places   (places[k] = list of {tube, "in"|"out", fd})
 *   gang:send(k, type, payload) -> true | nil, "gone"
 *   gang:recv(seconds) -> k, type, payload | k, false, how | nil (timeout)
 *   gang:pid(k)  gang:kill(k)  gang:poke(k)  gang:alive(k)  gang:close()
 *
 * Node side, a "pd.TaskNode": the control link and the tube ends.
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
 *
 * The local path.  A tube is one pipe made by the coordinator before the
 * nodes start (the source gets the write end, the target the read end, as
 * plain descriptors: gang.c), so a value goes from node to node with one
 * write and one read, never through the coordinator.  A pipe rather than a
 * socketpair: its round trip is about half an AF_UNIX stream's here, and a
 * tube only ever carries data one way.  The pipe's kernel buffer is raised
 * to 1 MiB where the system allows.  Frames are pd_conn frames (4-byte
 * length, type byte, codec message); the node process ignores SIGPIPE, so
 * a reader that is gone shows as EPIPE.
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GANG_MT "pd.Gang"
#define NODE_MT "pd.TaskNode"
#define NODE_KEY "pd.tubes.node"       /* registry: the node of this state */
#define WATCH_KEY "pd.tubes.watch"     /* registry: its control watcher */

#define TUBE_BOUND_DEFAULT ((size_t)64 << 20)  /* bytes unsent (or unread) per tube */
#define TUBE_BOUND (N->bound)
#define TUBE_VALUE 1                    /* frame type of a value on a tube */
#define TUBE_PIPE_SIZE (1 << 20)        /* kernel buffer asked for each tube */
/* A blocked pop (or push) polls without sleeping for this long before it
 * sleeps in poll: a process that sleeps gives its CPU up, and waking it on
 * an idle CPU costs 5 to 50 us, which a solver swapping halo rows every
 * step would pay every step.  Bounded, so an idle node costs nothing. */
#define TUBE_SPIN_SECONDS 50e-6

/* A lone array as a codec message (docs/wire.md): version byte, the EXT tag
 * (lua/codec.c's T_EXT), ext id 1, u32 LE payload length, then the payload
 * of lua/array.h's wire form.  Built here only for the direct path of
 * large arrays (n_push); the specs decode it with the codec. */
#define TUBE_T_EXT 0x0f
#define TUBE_DIRECT_MIN ((size_t)1 << 16)   /* smaller arrays are copied */

/* Control frame types (tasks.lua names them too). */
enum { C_INFO = 3, C_ABORT = 4 };

/* ==== coordinator: the gang ================================================ */

typedef struct gnode {
  int pid;          /* 0 once reaped */
  pd_conn c;
  int eof;
  int status;       /* wait status once reaped */
} gnode;

typedef struct gang {
  int n;
  gnode *nodes;     /* n entries; NULL while closed */
} gang;

static gang *check_gang(lua_State *L) {
  gang *g = (gang *)luaL_checkudata(L, 1, GANG_MT);
  if (!g->nodes) luaL_error(L, "attempt to use a closed task set");
  return g;
}

static int gang_index(lua_State *L, gang *g, int idx) {
  lua_Integer k = luaL_checkinteger(L, idx);
  luaL_argcheck(L, k >= 1 && k <= g->n, idx, "no such node");
  return (int)k - 1;
}

/* Reap node k after its socket ended: give it 200 ms to finish exiting on its
 * own (its real status says why it died), then SIGKILL. */
static void reap(gnode *nd) {
  if (nd->pid <= 0) return;
  for (int i = 0; i < 200; i++) {
    int st;
    pid_t r = waitpid(nd->pid, &st, WNOHANG);
    if (r == nd->pid) { nd->status = st; nd->pid = 0; return; }
    if (r < 0 && errno != EINTR) { nd->status = -1; nd->pid = 0; return; }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  nd->status = pd_kill_reap(nd->pid);
  nd->pid = 0;
}

/* Kill and reap every node, close every link.  Idempotent. */
static void gang_free(gang *g) {
  if (!g->nodes) return;
  for (int k = 0; k < g->n; k++)
    if (g->nodes[k].pid > 0) kill(g->nodes[k].pid, SIGKILL);    /* all at once */
  for (int k = 0; k < g->n; k++) {
    if (g->nodes[k].pid > 0) pd_kill_reap(g->nodes[k].pid);
    pd_conn_close(&g->nodes[k].c);
  }
  free(g->nodes);
  g->nodes = NULL;
}

/* gang:close(), __gc, __close.  Stack: +0 */
static int g_close(lua_State *L) {
  gang_free((gang *)luaL_checkudata(L, 1, GANG_MT));
  return 0;
}

/* core.tubes.gang{argv=, count=, tubes=, env=} -> gang, places.
 * Userdata first (closed), processes second; on a failed start every node
 * already started is killed.  Stack: [opts] -> [gang, places] */
static int t_gang(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  gang *g = (gang *)lua_newuserdatauv(L, sizeof *g, 0);     /* [opts, g] */
  g->n = 0;
  g->nodes = NULL;
  luaL_setmetatable(L, GANG_MT);
  lua_getfield(L, 1, "count");
  int n = (int)luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  luaL_argcheck(L, n >= 1 && n <= 4096, 1, "count: 1 to 4096 nodes");
  /* argv and env as C arrays (strings kept alive by the opts table) */
  char *argv[16], *env[16];
  lua_getfield(L, 1, "argv");                                /* [opts, g, argv] */
  luaL_checktype(L, -1, LUA_TTABLE);
  int na = (int)lua_rawlen(L, -1);
  luaL_argcheck(L, na >= 1 && na < 16, 1, "argv: 1 to 15 words");
  for (int i = 0; i < na; i++) {
    lua_rawgeti(L, -1, i + 1);
    argv[i] = (char *)luaL_checkstring(L, -1);
    lua_pop(L, 1);
  }
  argv[na] = NULL;
  lua_getfield(L, 1, "env");                                 /* [opts, g, argv, env] */
  int ne = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
  luaL_argcheck(L, ne < 16, 1, "env: at most 15 entries");
  for (int i = 0; i < ne; i++) {
    lua_rawgeti(L, -1, i + 1);
    env[i] = (char *)luaL_checkstring(L, -1);
    lua_pop(L, 1);
  }
  env[ne] = NULL;
  lua_getfield(L, 1, "tubes");                               /* [opts, g, argv, env, tubes] */
  luaL_checktype(L, -1, LUA_TTABLE);
  int nt = (int)lua_rawlen(L, -1);
  int tubes = lua_gettop(L);
  /* ends[2t] goes to from (out), ends[2t+1] to to (in) */
  int *from = malloc(((size_t)nt + 1) * sizeof *from);
  int *to = malloc(((size_t)nt + 1) * sizeof *to);
  int *ends = malloc(((size_t)nt * 2 + 1) * sizeof *ends);
  int *pass = malloc(((size_t)nt * 2 + 1) * sizeof *pass);
  g->nodes = calloc((size_t)n, sizeof *g->nodes);
  if (!from || !to || !ends || !pass || !g->nodes) {
    free(from); free(to); free(ends); free(pass);
    free(g->nodes); g->nodes = NULL;
    return luaL_error(L, "not enough memory");
  }
  for (int t = 0; t < 2 * nt; t++) ends[t] = -1;
  g->n = n;
  for (int k = 0; k < n; k++) pd_conn_init(&g->nodes[k].c, -1);
  const char *fail = NULL;
  int err = 0;
  for (int t = 0; t < nt && !fail; t++) {
    lua_rawgeti(L, tubes, t + 1);                          /* {name, from, to} */
    lua_rawgeti(L, -1, 2);
    lua_rawgeti(L, -2, 3);
    from[t] = (int)lua_tointeger(L, -2) - 1;
    to[t] = (int)lua_tointeger(L, -1) - 1;
    lua_pop(L, 3);
    if (from[t] < 0 || from[t] >= n || to[t] < 0 || to[t] >= n) { fail = "tube end out of range"; break; }
    int pp[2];
    if (pipe2(pp, O_CLOEXEC) < 0) { fail = "pipe"; err = errno; break; }
    fcntl(pp[1], F_SETPIPE_SZ, TUBE_PIPE_SIZE);          /* best effort */
    ends[2 * t] = pp[1];                                  /* the source writes */
    ends[2 * t + 1] = pp[0];                              /* the target reads */
  }
  lua_createtable(L, n, 0);                                  /* [.., tubes, places] */
  for (int k = 0; k < n && !fail; k++) {
    int np = 0;
    lua_createtable(L, 4, 0);                                /* [.., places, pk] */
    for (int t = 0; t < nt; t++) {
      for (int d = 0; d < 2; d++) {                          /* out first, then in */
        if ((d == 0 ? from[t] : to[t]) != k) continue;
        pass[np] = ends[2 * t + d];
        lua_createtable(L, 3, 0);
        lua_pushinteger(L, t + 1); lua_rawseti(L, -2, 1);
        lua_pushstring(L, d == 0 ? "out" : "in"); lua_rawseti(L, -2, 2);
        lua_pushinteger(L, 4 + np); lua_rawseti(L, -2, 3);
        lua_rawseti(L, -2, np + 1);
        np++;
      }
    }
    lua_rawseti(L, -2, k + 1);                               /* [.., places] */
    int fd, pid;
    int rc = pd_spawn_fds(argv, env, 0, pass, np, &fd, &pid);
    if (rc) { fail = "cannot start a node process"; err = -rc; break; }
    g->nodes[k].pid = pid;
    pd_conn_init(&g->nodes[k].c, fd);
  }
  for (int t = 0; t < 2 * nt; t++)                           /* the nodes hold them now */
    if (ends[t] >= 0) close(ends[t]);
  free(from); free(to); free(ends); free(pass);
  if (fail) {
    gang_free(g);
    return luaL_error(L, "pd.tasks: %s: %s", fail, strerror(err ? err : EINVAL));
  }
  lua_pushvalue(L, 2);                                       /* [.., places, g] */
  lua_insert(L, -2);                                         /* [.., g, places] */
  return 2;
}

/* gang:send(k, type, payload) -> true | nil, "gone".  Queues and writes
 * what the socket takes now; the rest goes out in recv.  Stack: +1 or +2 */
static int g_send(lua_State *L) {
  gang *g = check_gang(L);
  int k = gang_index(L, g, 2);
  int type = (int)luaL_checkinteger(L, 3);
  size_t n;
  const char *p = luaL_optlstring(L, 4, "", &n);
  gnode *nd = &g->nodes[k];
  if (nd->eof || nd->c.fd < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "gone");
    return 2;
  }
  if (pd_conn_put(&nd->c, type, p, n)) return luaL_error(L, "not enough memory");
  int rc = pd_conn_flush(&nd->c);
  if (rc < 0 && rc != -EAGAIN) {
    nd->c.out.len = nd->c.out_off = 0;
    lua_pushnil(L);
    lua_pushliteral(L, "gone");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Next complete frame of any node, in node order.  Returns 1 with the
 * event pushed ([k, type, payload] or [k, false, how]), or 0. */
static int gang_event(lua_State *L, gang *g) {
  for (int k = 0; k < g->n; k++) {
    gnode *nd = &g->nodes[k];
    if (nd->c.fd < 0) continue;
    const char *f;
    size_t n;
    int got = pd_conn_next(&nd->c, &f, &n);
    if (got == 1) {
      lua_pushinteger(L, k + 1);
      lua_pushinteger(L, (unsigned char)f[0]);
      lua_pushlstring(L, f + 1, n - 1);
      return 1;
    }
    if (got < 0 || nd->eof) {            /* malformed, or ended: the node is gone */
      pd_conn_close(&nd->c);
      reap(nd);
      char how[64];
      if (got < 0) snprintf(how, sizeof how, "broke the protocol");
      else pdi_describe_status(nd->status, how, sizeof how);
      lua_pushinteger(L, k + 1);
      lua_pushboolean(L, 0);
      lua_pushstring(L, how);
      return 1;
    }
  }
  return 0;
}

/* gang:recv([seconds]) -> k, type, payload | k, false, how | nil.
 * seconds nil or < 0: until an event.  Stack: +3 or +1 */
static int g_recv(lua_State *L) {
  gang *g = check_gang(L);
  double secs = luaL_optnumber(L, 2, -1);
  double deadline = secs < 0 ? -1 : pd_now() + secs;
  struct pollfd *fds = malloc((size_t)g->n * sizeof *fds);
  if (!fds) return luaL_error(L, "not enough memory");
  for (;;) {
    if (gang_event(L, g)) { free(fds); return 3; }
    int live = 0;
    for (int k = 0; k < g->n; k++) {
      gnode *nd = &g->nodes[k];
      if (nd->c.fd >= 0 && nd->c.out.len > nd->c.out_off) pd_conn_flush(&nd->c);
      fds[k].fd = nd->c.fd;                  /* < 0: ignored by poll */
      fds[k].events = POLLIN | (nd->c.out.len > nd->c.out_off ? POLLOUT : 0);
      fds[k].revents = 0;
      live += nd->c.fd >= 0;
    }
    double left = deadline < 0 ? -1 : deadline - pd_now();
    if (!live || (deadline >= 0 && left <= 0)) { free(fds); lua_pushnil(L); return 1; }
    int ms = left < 0 ? -1 : (int)(left * 1000 + 0.999);
    int r = poll(fds, (nfds_t)g->n, ms);
    if (r < 0 && errno != EINTR) { free(fds); return luaL_error(L, "poll: %s", strerror(errno)); }
    for (int k = 0; k < g->n && r > 0; k++) {
      gnode *nd = &g->nodes[k];
      if (nd->c.fd < 0 || !fds[k].revents) continue;
      for (;;) {
        int rc = pd_conn_fill(&nd->c);
        if (rc == -EAGAIN) break;
        if (rc < 0) { nd->eof = 1; break; }
      }
    }
  }
}

/* gang:pid(k) -> node k's process id, or nil once it is gone.  Stack: +1 */
static int g_pid(lua_State *L) {
  gang *g = check_gang(L);
  int k = gang_index(L, g, 2);
  if (g->nodes[k].pid > 0) lua_pushinteger(L, g->nodes[k].pid);
  else lua_pushnil(L);
  return 1;
}

/* gang:alive(k) -> whether node k's connection is still open.  Stack: +1 */
static int g_alive(lua_State *L) {
  gang *g = check_gang(L);
  int k = gang_index(L, g, 2);
  lua_pushboolean(L, g->nodes[k].c.fd >= 0);
  return 1;
}

/* gang:poke(k): SIGUSR1 to node k, after an INFO or ABORT frame, so that a
 * node busy computing reads it (see on_poke).  Stack: +0 */
static int g_poke(lua_State *L) {
  gang *g = check_gang(L);
  int k = gang_index(L, g, 2);
  if (g->nodes[k].pid > 0 && !g->nodes[k].eof) kill(g->nodes[k].pid, SIGUSR1);
  return 0;
}

/* gang:kill(k): SIGKILL node k (its end of stream is reported by recv). */
static int g_kill(lua_State *L) {
  gang *g = check_gang(L);
  int k = gang_index(L, g, 2);
  if (g->nodes[k].pid > 0) kill(g->nodes[k].pid, SIGKILL);
  return 0;
}

/* ==== node: the tube ends =================================================== */

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
  const unsigned char *u = (const unsigned char *)t->c.in.data + t->c.in_off;
  uint32_t len = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
  return have - 4 >= len;
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
  for (int i = 0; i < 4; i++) h[i] = (unsigned char)(flen >> (8 * i));
  h[4] = TUBE_VALUE;
  h[5] = PDI_CODEC_VERSION;
  h[6] = TUBE_T_EXT;
  h[7] = PDI_CODEC_EXT_ARRAY;
  for (int i = 0; i < 4; i++) h[8 + i] = (unsigned char)(plen >> (8 * i));
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
  const char *f;
  size_t n;
  if (pd_conn_next(&t->c, &f, &n) != 1 || f[0] != TUBE_VALUE)
    raise_plain(L, "pd.tasks: malformed frame on tube '%s'", t->name);
  pdi_codec_opts o;
  pdi_codec_opts_default(&o);
  pdi_codec_decode(L, f + 1, n - 1, &o);
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

/* ==== links between machines ================================================
 * Across machines a node's control channel and its tubes are links: nng
 * tcp streams that link.c bridges to a socketpair end, so the code above
 * (frames, waits, bounds) runs on them unchanged.  Every link proves the
 * set's key with the pd_auth handshake before anything else crosses it.
 *
 *   core.tubes.dial(url, seconds) -> link | nil, err
 *   core.tubes.listen(url) -> listener | nil, err
 *   listener:port()  listener:accept(seconds) -> link | nil  listener:close()
 *   link:fd() (a dup: the caller owns it)  link:peer()  link:close()
 *   core.tubes.handshake(links, roles, key, seconds) -> true | nil, err
 *   core.tubes.send_frame(link, type, payload)
 *   core.tubes.recv_frame(link, seconds) -> type, payload | nil, err
 *   core.tubes.random(n) -> n random bytes */

#define LINK_MT "pd.TubeLink"
#define LISTEN_MT "pd.TubeListener"

typedef struct tlink { pd_link *l; } tlink;
typedef struct tlisten { pd_listener *ls; int pipe[2]; } tlisten;

static tlink *check_link(lua_State *L, int idx) {
  tlink *k = (tlink *)luaL_checkudata(L, idx, LINK_MT);
  if (!k->l) luaL_error(L, "attempt to use a closed link");
  return k;
}

/* link:close(): closes the link (idempotent).  Stack: +0 */
static int k_close(lua_State *L) {
  tlink *k = (tlink *)luaL_checkudata(L, 1, LINK_MT);
  pd_link_close(k->l);
  k->l = NULL;
  return 0;
}

static tlink *new_link(lua_State *L) {
  tlink *k = (tlink *)lua_newuserdatauv(L, sizeof *k, 0);
  k->l = NULL;
  luaL_setmetatable(L, LINK_MT);
  return k;
}

/* link:fd() -> a new descriptor (>= 3, close-on-exec) dup'ed from the
 * link's; the caller owns it (close with close_fd).  Stack: +1 */
static int k_fd(lua_State *L) {
  tlink *k = check_link(L, 1);
  int fd = fcntl(pd_link_fd(k->l), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return luaL_error(L, "dup: %s", strerror(errno));
  lua_pushinteger(L, fd);
  return 1;
}

/* link:peer() -> the peer's address as text.  Stack: +1 */
static int k_peer(lua_State *L) {
  lua_pushstring(L, pd_link_peer(check_link(L, 1)->l));
  return 1;
}

/* core.tubes.dial(url [, seconds=10]) -> link | nil, reason.  The link
 * userdata owns the connection (closed by close or __gc).  Stack: +1 or +2 */
static int t_dial(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  double secs = luaL_optnumber(L, 2, 10);
  tlink *k = new_link(L);
  char err[256];
  int fd;
  if (pd_link_dial(url, NULL, secs, &k->l, &fd, err, sizeof err) < 0) {
    k->l = NULL;
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  return 1;
}

/* listener:close(): stops listening and closes links accepted but never
 * taken (idempotent).  Stack: +0 */
static int l_close(lua_State *L) {
  tlisten *t = (tlisten *)luaL_checkudata(L, 1, LISTEN_MT);
  if (t->ls) pd_listener_close(t->ls);
  t->ls = NULL;
  if (t->pipe[0] >= 0) {
    pd_link *l;                                      /* links accepted, never taken */
    while (read(t->pipe[0], &l, sizeof l) == (ssize_t)sizeof l) pd_link_close(l);
    close(t->pipe[0]);
    close(t->pipe[1]);
  }
  t->pipe[0] = t->pipe[1] = -1;
  return 0;
}

/* core.tubes.listen(url) -> listener | nil, reason.  The listener userdata
 * owns the nng listener and its notification pipe.  Stack: +1 or +2 */
static int t_listen(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  tlisten *t = (tlisten *)lua_newuserdatauv(L, sizeof *t, 0);
  t->ls = NULL;
  t->pipe[0] = t->pipe[1] = -1;
  luaL_setmetatable(L, LISTEN_MT);
  if (pipe2(t->pipe, O_CLOEXEC) < 0) return luaL_error(L, "pipe: %s", strerror(errno));
  fcntl(t->pipe[0], F_SETFL, O_NONBLOCK);
  char err[256];
  if (pd_listener_open(url, NULL, t->pipe[1], &t->ls, err, sizeof err) < 0) {
    t->ls = NULL;
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  return 1;
}

/* listener:port() -> the port it listens on (0 when closed).  Stack: +1 */
static int l_port(lua_State *L) {
  tlisten *t = (tlisten *)luaL_checkudata(L, 1, LISTEN_MT);
  lua_pushinteger(L, t->ls ? pd_listener_port(t->ls) : 0);
  return 1;
}

/* listener:accept([seconds]) -> link, or nil when none arrived in time
 * (wait forever without seconds).  The new link owns its connection.
 * Stack: +1 */
static int l_accept(lua_State *L) {
  tlisten *t = (tlisten *)luaL_checkudata(L, 1, LISTEN_MT);
  double secs = luaL_optnumber(L, 2, -1);
  if (!t->ls) return luaL_error(L, "attempt to use a closed listener");
  struct pollfd p = {t->pipe[0], POLLIN, 0};
  if (poll(&p, 1, secs < 0 ? -1 : (int)(secs * 1000 + 0.999)) <= 0) {
    lua_pushnil(L);
    return 1;
  }
  pd_link *l;
  if (read(t->pipe[0], &l, sizeof l) != (ssize_t)sizeof l) { lua_pushnil(L); return 1; }
  tlink *k = new_link(L);
  k->l = l;
  return 1;
}

/* A blocking frame exchange on a link's fd with a deadline (setup only:
 * nothing else is read from these fds before, so nothing is lost).
 * Returns 1 with *type and the payload in b, 0 when no frame began by
 * `deadline` (one that began may run until `hard`), -1 if gone. */
static int read_frame_fd(int fd, double deadline, double hard, int *type, pd_buf *b) {
  unsigned char h[5];
  size_t got = 0, need = 5;
  uint32_t len = 0;
  b->len = 0;
  for (;;) {
    double left = (got ? hard : deadline) - pd_now();   /* a frame begun is finished */
    if (left <= 0) return 0;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, (int)(left * 1000 + 0.999)) <= 0) continue;
    ssize_t r;
    if (got < 5) r = read(fd, h + got, 5 - got);
    else {
      if (pd_buf_reserve(b, need - got)) return -1;
      r = read(fd, b->data + b->len, need - got);
    }
    if (r == 0) return -1;
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -1;
    }
    if (got >= 5) b->len += (size_t)r;
    got += (size_t)r;
    if (got == 5) {
      len = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
      if (len < 1 || len > (1u << 20)) return -1;     /* setup frames are small */
      *type = h[4];
      need = 4 + (size_t)len;
    }
    if (got >= 5 && got == need) return 1;
  }
}

static int write_all_fd(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) { struct pollfd q = {fd, POLLOUT, 0}; poll(&q, 1, 1000); continue; }
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int send_frame_fd(int fd, int type, const void *p, size_t n) {
  unsigned char h[5];
  uint32_t len = (uint32_t)(n + 1);
  for (int i = 0; i < 4; i++) h[i] = (unsigned char)(len >> (8 * i));
  h[4] = (unsigned char)type;
  if (write_all_fd(fd, (const char *)h, 5)) return -1;
  return write_all_fd(fd, (const char *)p, n);
}

/* The fd of a link, or a plain descriptor given as an integer. */
static int fd_of(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) return (int)lua_tointeger(L, idx);
  return pd_link_fd(check_link(L, idx)->l);
}

/* ---- plain tcp for tubes between machines ------------------------------------
 * A tube between two machines is a plain tcp socket (TCP_NODELAY), not an
 * nng stream: no bridge threads between the node and the wire, so a round
 * trip costs what the network does.  It proves the set's key like the rest.
 *   core.tubes.tcp_listen() -> fd, port      (all interfaces, any port)
 *   core.tubes.tcp_accept(fd, seconds) -> fd | nil
 *   core.tubes.tcp_dial(host, port, seconds) -> fd | nil, err
 *   core.tubes.close_fd(fd) */
static void tcp_tune(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* core.tubes.tcp_listen() -> fd, port | nil, reason: a listening TCP socket
 * on every address, an ephemeral port; the caller owns fd.  Stack: +2 */
static int t_tcp_listen(lua_State *L) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return luaL_error(L, "socket: %s", strerror(errno));
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t al = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 64) ||
      getsockname(fd, (struct sockaddr *)&a, &al)) {
    int e = errno;
    close(fd);
    lua_pushnil(L);
    lua_pushstring(L, strerror(e));
    return 2;
  }
  lua_pushinteger(L, fd);
  lua_pushinteger(L, ntohs(a.sin_port));
  return 2;
}

/* core.tubes.tcp_accept(lfd [, seconds=10]) -> fd | nil: one accepted
 * connection, owned by the caller.  Stack: +1 */
static int t_tcp_accept(lua_State *L) {
  int lfd = (int)luaL_checkinteger(L, 1);
  double secs = luaL_optnumber(L, 2, 10);
  struct pollfd p = {lfd, POLLIN, 0};
  if (poll(&p, 1, (int)(secs * 1000 + 0.999)) <= 0) { lua_pushnil(L); return 1; }
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) { lua_pushnil(L); return 1; }
  tcp_tune(fd);
  lua_pushinteger(L, fd);
  return 1;
}

/* core.tubes.tcp_dial(host, port [, seconds=10]) -> fd | nil, reason: an
 * IPv4 connection, owned by the caller.  Stack: +1 or +2 */
static int t_tcp_dial(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  double secs = luaL_optnumber(L, 3, 10);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    lua_pushnil(L);
    lua_pushfstring(L, "not an IPv4 address: %s", host);
    return 2;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return luaL_error(L, "socket: %s", strerror(errno));
  int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  if (rc < 0 && errno == EINPROGRESS) {
    struct pollfd p = {fd, POLLOUT, 0};
    int err = 0;
    socklen_t el = sizeof err;
    if (poll(&p, 1, (int)(secs * 1000 + 0.999)) <= 0) err = ETIMEDOUT;
    else getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    rc = err ? -1 : 0;
    errno = err;
  }
  if (rc < 0) {
    int e = errno;
    close(fd);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot connect to %s:%d: %s", host, port, strerror(e));
    return 2;
  }
  tcp_tune(fd);
  lua_pushinteger(L, fd);
  return 1;
}

/* core.tubes.close_fd(fd): closes a descriptor these calls handed out.
 * Stack: +0 */
static int t_close_fd(lua_State *L) {
  close((int)luaL_checkinteger(L, 1));
  return 0;
}

/* core.tubes.send_frame(link, type, payload) -> true | nil, "gone" */
static int t_send_frame(lua_State *L) {
  int fd = fd_of(L, 1);
  int type = (int)luaL_checkinteger(L, 2);
  size_t n;
  const char *p = luaL_optlstring(L, 3, "", &n);
  if (send_frame_fd(fd, type, p, n)) {
    lua_pushnil(L);
    lua_pushliteral(L, "gone");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.tubes.recv_frame(link, seconds) -> type, payload | nil, "timeout"|"gone" */
static int t_recv_frame(lua_State *L) {
  int fd = fd_of(L, 1);
  double secs = luaL_optnumber(L, 2, 10);
  pd_buf b;
  pd_buf_init(&b);
  int type = 0;
  int rc = read_frame_fd(fd, pd_now() + secs, pd_now() + secs, &type, &b);
  if (rc <= 0) {
    pd_buf_free(&b);
    lua_pushnil(L);
    lua_pushstring(L, rc == 0 ? "timeout" : "gone");
    return 2;
  }
  lua_pushinteger(L, type);
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  pd_buf_free(&b);
  return 2;
}

/* core.tubes.handshake({link...}, {"dial"|"listen"...}, key, seconds)
 * -> true | nil, err.  All the links prove the key at once (one poll loop),
 * so two nodes that dial each other never wait on each other.  Frames of
 * type 'A' carry the pd_auth messages. */
typedef struct hs { pd_auth a; pd_secret sec; int fd, dialer, step, done; } hs;

/* key: one string for every link, or a list of one per link (specs pit
 * two ends with different keys against each other in one process). */
static int t_handshake(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  int per = lua_istable(L, 3);
  if (!per) luaL_checkstring(L, 3);
  double deadline = pd_now() + luaL_optnumber(L, 4, 10);
  int n = (int)lua_rawlen(L, 1);
  if (n == 0) { lua_pushboolean(L, 1); return 1; }
  hs *h = calloc((size_t)n, sizeof *h);
  if (!h) return luaL_error(L, "not enough memory");
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    h[i].fd = fd_of(L, lua_gettop(L));
    lua_pop(L, 1);
    lua_rawgeti(L, 2, i + 1);
    h[i].dialer = !strcmp(luaL_optstring(L, -1, "dial"), "dial");
    lua_pop(L, 1);
    if (per) lua_rawgeti(L, 3, i + 1);
    else lua_pushvalue(L, 3);
    size_t kl;
    const char *key = lua_tolstring(L, -1, &kl);
    if (!key || pd_secret_set(&h[i].sec, key, kl)) {
      free(h);
      return luaL_argerror(L, 3, "keys of 1 to 1024 bytes");
    }
    lua_pop(L, 1);
  }
  const char *fail = NULL;
  pd_buf out, in;
  pd_buf_init(&out);
  pd_buf_init(&in);
  for (int i = 0; i < n && !fail; i++)               /* dialers speak first */
    if (h[i].dialer) {
      out.len = 0;
      if (pd_auth_dialer_start(&h[i].a, &h[i].sec, &out) || send_frame_fd(h[i].fd, 'A', out.data, out.len))
        fail = "cannot start the handshake";
    }
  int left = n;
  while (left > 0 && !fail) {
    for (int i = 0; i < n && !fail; i++) {
      if (h[i].done) continue;
      int type;
      /* each peer answers promptly once it has our message; a short slice
       * per link keeps every handshake moving */
      int rc = read_frame_fd(h[i].fd, pd_now() + 0.01, deadline, &type, &in);
      if (rc == 0) { if (pd_now() > deadline) fail = "handshake timed out"; continue; }
      if (rc < 0 || type != 'A') { fail = "the peer closed or broke the handshake"; break; }
      out.len = 0;
      int r;
      if (h[i].dialer) {
        if (h[i].step == 0) {
          r = pd_auth_dialer_prove(&h[i].a, in.data, in.len, &out);
          if (!r && send_frame_fd(h[i].fd, 'A', out.data, out.len)) r = -1;
          h[i].step = 1;
        } else {
          r = pd_auth_dialer_finish(&h[i].a, in.data, in.len);
          h[i].done = 1;
          left--;
        }
      } else {
        if (h[i].step == 0) {
          r = pd_auth_listener_start(&h[i].a, &h[i].sec, in.data, in.len, &out);
          h[i].step = 1;
        } else {
          r = pd_auth_listener_check(&h[i].a, in.data, in.len, &out);
          h[i].done = 1;
          left--;
        }
        if (!r && send_frame_fd(h[i].fd, 'A', out.data, out.len)) r = -1;
        if (!r && h[i].done && out.len >= 5 && out.data[4] != 'K') r = PD_AUTH_EDENIED;
      }
      if (r) fail = r == PD_AUTH_EDENIED ? "the peer does not hold the set's key"
                                         : "the handshake failed";
    }
  }
  for (int i = 0; i < n; i++) {
    pd_auth_wipe(&h[i].a);
    pd_secret_wipe(&h[i].sec);
  }
  free(h);
  pd_buf_free(&out);
  pd_buf_free(&in);
  if (fail) {
    lua_pushnil(L);
    lua_pushstring(L, fail);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.tubes.random(n) -> n bytes (1..1024) from the kernel CSPRNG.
 * Stack: +1 */
static int t_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n > 0 && n <= 1024, 1, "1 to 1024 bytes");
  unsigned char b[1024];
  if (pd_random(b, (size_t)n)) return luaL_error(L, "no randomness");
  lua_pushlstring(L, (const char *)b, (size_t)n);
  return 1;
}

/* core.tubes.gang_links({link...}) -> gang: a task set whose nodes are on
 * other machines: no processes of ours, one control link each (the gang
 * holds dups of their fds; the links stay with the caller). */
static int t_gang_links(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)lua_rawlen(L, 1);
  luaL_argcheck(L, n >= 1 && n <= 4096, 1, "1 to 4096 links");
  gang *g = (gang *)lua_newuserdatauv(L, sizeof *g, 0);
  g->n = 0;
  g->nodes = NULL;
  luaL_setmetatable(L, GANG_MT);
  g->nodes = calloc((size_t)n, sizeof *g->nodes);
  if (!g->nodes) return luaL_error(L, "not enough memory");
  g->n = n;
  for (int k = 0; k < n; k++) pd_conn_init(&g->nodes[k].c, -1);
  for (int k = 0; k < n; k++) {
    lua_rawgeti(L, 1, k + 1);
    int fd = fcntl(pd_link_fd(check_link(L, -1)->l), F_DUPFD_CLOEXEC, 3);
    lua_pop(L, 1);
    if (fd < 0) return luaL_error(L, "dup: %s", strerror(errno));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    pd_conn_init(&g->nodes[k].c, fd);
  }
  return 1;
}

/* ==== registration ============================================================ */

static const luaL_Reg gang_methods[] = {
  {"send", g_send}, {"recv", g_recv}, {"pid", g_pid}, {"alive", g_alive},
  {"kill", g_kill}, {"poke", g_poke}, {"close", g_close}, {NULL, NULL},
};

static const luaL_Reg node_methods[] = {
  {"add", n_add}, {"push", n_push}, {"pop", n_pop}, {"poll", n_poll},
  {"flush", n_flush}, {"recv", n_recv}, {"send", n_send}, {"watch", n_watch},
  {"aborted", n_aborted}, {"pending", n_pending}, {"set_bound", n_set_bound}, {"close", n_close}, {"_control", n_control},
  {NULL, NULL},
};

static const luaL_Reg tubes_funcs[] = {
  {"gang", t_gang}, {"node", t_node}, {"dial", t_dial}, {"listen", t_listen},
  {"handshake", t_handshake}, {"send_frame", t_send_frame}, {"recv_frame", t_recv_frame},
  {"random", t_random}, {"gang_links", t_gang_links}, {"tcp_listen", t_tcp_listen},
  {"tcp_accept", t_tcp_accept}, {"tcp_dial", t_tcp_dial}, {"close_fd", t_close_fd},
  {NULL, NULL},
};

static const luaL_Reg link_methods[] = {
  {"fd", k_fd}, {"peer", k_peer}, {"close", k_close}, {NULL, NULL},
};

static const luaL_Reg listen_methods[] = {
  {"port", l_port}, {"accept", l_accept}, {"close", l_close}, {NULL, NULL},
};

/* Stack: [] -> [pd.core.tubes] */
int luaopen_pd_core_tubes(lua_State *L) {
  if (luaL_newmetatable(L, GANG_MT)) {
    luaL_newlib(L, gang_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, g_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, g_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, NODE_MT)) {
    luaL_newlib(L, node_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, n_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LINK_MT)) {
    luaL_newlib(L, link_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, k_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LISTEN_MT)) {
    luaL_newlib(L, listen_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 12);
  luaL_setfuncs(L, tubes_funcs, 0);
  lua_pushinteger(L, (lua_Integer)TUBE_BOUND_DEFAULT);
  lua_setfield(L, -2, "bound");
  return 1;
}
