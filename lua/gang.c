/*
 * gang.c: pd.Gang, the coordinator's side of a task set (pd.tasks,
 * stdlib/pd/tasks.lua; guide: docs/tasks.md): the node processes of one set
 * and the control connection to each.
 *
 *   core.tubes.gang{argv=, count=, tubes={{name, from, to}, ...}, env=}
 *       -> gang, places   (places[k] = list of {tube, "in"|"out", fd})
 *   core.tubes.gang_links({link...}) -> gang   (nodes on other machines)
 *   gang:send(k, type, payload) -> true | nil, "gone"
 *   gang:recv(seconds) -> k, type, payload | k, false, how | nil (timeout)
 *   gang:pid(k)  gang:kill(k)  gang:poke(k)  gang:alive(k)  gang:close()
 *
 * On one machine the gang makes every tube before the nodes start: one
 * pipe per tube (the source gets the write end, the target the read end,
 * as plain descriptors at fixed numbers: core/gang.c), so a value goes
 * from node to node with one write and one read, never through the
 * coordinator (tubes.c has the node's side).  A pipe rather than a
 * socketpair: its round trip is about half an AF_UNIX stream's here, and a
 * tube only ever carries data one way.  The pipe's kernel buffer is raised
 * to 1 MiB where the system allows.
 *
 * Across machines the nodes are tasks of a map job on lent workers, and
 * the gang holds only their control links (gang_links; tubelink.c).
 *
 * A node is gone when its control connection ends or breaks the protocol:
 * recv reports it once (k, false, how: its wait status in words) after
 * reaping it.  close, __gc and __close kill and reap every node.
 */
#define _GNU_SOURCE
#include "binding.h"
#include "tubes.h"

#include "pd/pd.h"
#include "pd/pdi.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GANG_MT "pd.Gang"
#define TUBE_PIPE_SIZE (1 << 20)        /* kernel buffer asked for each tube */

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
 * already started is killed.  Stack: [opts] -> [opts, g, argv, env, tubes,
 * gang, places] (the last two are the results) */
static int t_gang(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  PDI_STACK(L);
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
  PDI_STACK_CHECK(L, 6);
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
  PDI_STACK(L);
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
      PDI_STACK_CHECK(L, 3);
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
      PDI_STACK_CHECK(L, 3);
      return 1;
    }
  }
  PDI_STACK_CHECK(L, 0);
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

/* core.tubes.gang_links({link...}) -> gang: a task set whose nodes are on
 * other machines: no processes of ours, one control link each (the gang
 * holds dups of their fds; the links stay with the caller).
 * Stack: [links] -> [links, gang] */
static int t_gang_links(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  PDI_STACK(L);
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
    int fd = fcntl(pdi_tubelink_fd(L, -1), F_DUPFD_CLOEXEC, 3);
    lua_pop(L, 1);
    if (fd < 0) return luaL_error(L, "dup: %s", strerror(errno));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    pd_conn_init(&g->nodes[k].c, fd);
  }
  PDI_STACK_CHECK(L, 1);
  return 1;
}

/* ==== registration ============================================================ */

static const luaL_Reg gang_methods[] = {
  {"send", g_send}, {"recv", g_recv}, {"pid", g_pid}, {"alive", g_alive},
  {"kill", g_kill}, {"poke", g_poke}, {"close", g_close}, {NULL, NULL},
};

static const luaL_Reg gang_funcs[] = {
  {"gang", t_gang}, {"gang_links", t_gang_links}, {NULL, NULL},
};

void pdi_tubes_open_gang(lua_State *L) {
  PDI_STACK(L);
  pdi_newclass(L, GANG_MT, gang_methods, NULL, g_close);    /* [t, mt] */
  lua_pop(L, 1);                                             /* [t] */
  luaL_setfuncs(L, gang_funcs, 0);
  PDI_STACK_CHECK(L, 0);
}
