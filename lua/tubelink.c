/*
 * tubelink.c: the links of a task set across machines, the Lua side of the
 * byte transport in core/ (link.c: nng streams; tcp.c: plain sockets,
 * setup frames, the handshake on many links).  Nothing here touches a
 * socket but through those; guide: docs/tasks.md, "Across machines".
 *
 * A node's control channel to the coordinator is a link: an nng tcp stream
 * that link.c bridges to a socketpair end, so the node's and the gang's
 * code (frames, waits, bounds) runs on it unchanged.  Its tubes are plain
 * tcp sockets (core/tcp.c says why).  Every link and every tube proves the
 * set's key with the pd_handshake driver before anything else crosses it.
 *
 *   core.tubes.dial(url, seconds) -> link | nil, err
 *   core.tubes.listen(url) -> listener | nil, err
 *   listener:port()  listener:accept(seconds) -> link | nil  listener:close()
 *   link:fd() (a dup: the caller owns it)  link:peer()  link:close()
 *   core.tubes.handshake(links, roles, key, seconds) -> true | nil, err
 *   core.tubes.send_frame(link, type, payload)
 *   core.tubes.recv_frame(link, seconds) -> type, payload | nil, err
 *   core.tubes.tcp_listen() -> fd, port      (all interfaces, any port)
 *   core.tubes.tcp_accept(fd, seconds) -> fd | nil
 *   core.tubes.tcp_dial(host, port, seconds) -> fd | nil, err
 *   core.tubes.close_fd(fd)
 *   core.tubes.random(n) -> n random bytes
 *
 * Where a link is taken, a plain descriptor (an integer, as the tcp_ calls
 * hand out) is too.  Links and listeners are pd.TubeLink and
 * pd.TubeListener handles (close, __gc, __close); descriptors are the
 * caller's to close with close_fd.
 */
#define _GNU_SOURCE
#include "binding.h"
#include "tubes.h"

#include "pd/pd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* The fd of a link, or a plain descriptor given as an integer. */
static int fd_of(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) return (int)lua_tointeger(L, idx);
  return pd_link_fd(check_link(L, idx)->l);
}

int pdi_tubelink_fd(lua_State *L, int idx) { return pd_link_fd(check_link(L, idx)->l); }

/* ---- plain tcp for tubes between machines (core/tcp.c) ------------------------- */

/* core.tubes.tcp_listen() -> fd, port | nil, reason: a listening TCP socket
 * on every address, an ephemeral port; the caller owns fd.  Stack: +2 */
static int t_tcp_listen(lua_State *L) {
  int port = 0;
  int fd = pd_tcp_listen(&port);
  if (fd < 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(-fd));
    return 2;
  }
  lua_pushinteger(L, fd);
  lua_pushinteger(L, port);
  return 2;
}

/* core.tubes.tcp_accept(lfd [, seconds=10]) -> fd | nil: one accepted
 * connection, owned by the caller.  Stack: +1 */
static int t_tcp_accept(lua_State *L) {
  int lfd = (int)luaL_checkinteger(L, 1);
  double secs = luaL_optnumber(L, 2, 10);
  int fd = pd_tcp_accept(lfd, secs);
  if (fd < 0) lua_pushnil(L);
  else lua_pushinteger(L, fd);
  return 1;
}

/* core.tubes.tcp_dial(host, port [, seconds=10]) -> fd | nil, reason: an
 * IPv4 connection, owned by the caller.  Stack: +1 or +2 */
static int t_tcp_dial(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  double secs = luaL_optnumber(L, 3, 10);
  char err[256];
  int fd = pd_tcp_dial(host, port, secs, err, sizeof err);
  if (fd < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushinteger(L, fd);
  return 1;
}

/* core.tubes.close_fd(fd): closes a descriptor these calls handed out.
 * Stack: +0 */
static int t_close_fd(lua_State *L) {
  close((int)luaL_checkinteger(L, 1));
  return 0;
}

/* ---- setup frames and the handshake ------------------------------------------------ */

/* core.tubes.send_frame(link, type, payload) -> true | nil, "gone".
 * Stack: +1 or +2 */
static int t_send_frame(lua_State *L) {
  int fd = fd_of(L, 1);
  int type = (int)luaL_checkinteger(L, 2);
  size_t n;
  const char *p = luaL_optlstring(L, 3, "", &n);
  if (pd_frame_send(fd, type, p, n)) {
    lua_pushnil(L);
    lua_pushliteral(L, "gone");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.tubes.recv_frame(link, seconds) -> type, payload | nil, "timeout"|"gone".
 * Stack: +2 */
static int t_recv_frame(lua_State *L) {
  int fd = fd_of(L, 1);
  double secs = luaL_optnumber(L, 2, 10);
  pd_buf b;
  pd_buf_init(&b);
  int type = 0;
  int rc = pd_frame_recv(fd, pd_now() + secs, pd_now() + secs, &type, &b);
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
 * -> true | nil, err.  All the links prove the key at once
 * (pd_handshake_fds), so two nodes that dial each other never wait on each
 * other.  key: one string for every link, or a list of one per link (specs
 * pit two ends with different keys against each other in one process).
 * Stack: +1 or +2 */
static int t_handshake(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  int per = lua_istable(L, 3);
  if (!per) luaL_checkstring(L, 3);
  double secs = luaL_optnumber(L, 4, 10);
  lua_settop(L, 4);
  PDI_STACK(L);
  int n = (int)lua_rawlen(L, 1);
  if (n == 0) { lua_pushboolean(L, 1); return 1; }
  /* keys, handshakes, fds and roles in one block that Lua owns, so that a
   * bad argument raising on the way leaks nothing */
  size_t sz = (size_t)n * (sizeof(pd_secret) + sizeof(pd_handshake) + 2 * sizeof(int));
  pd_secret *keys = (pd_secret *)lua_newuserdatauv(L, sz, 0);  /* [.., block] */
  memset(keys, 0, sz);
  pd_handshake *hs = (pd_handshake *)(keys + n);
  int *fds = (int *)(hs + n), *roles = fds + n;
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);                        /* [.., block, link] */
    fds[i] = fd_of(L, lua_gettop(L));
    lua_pop(L, 1);
    lua_rawgeti(L, 2, i + 1);                        /* [.., block, role] */
    roles[i] = !strcmp(luaL_optstring(L, -1, "dial"), "dial") ? PD_HS_DIALER : PD_HS_LISTENER;
    lua_pop(L, 1);
    if (per) lua_rawgeti(L, 3, i + 1);               /* [.., block, key] */
    else lua_pushvalue(L, 3);
    size_t kl;
    const char *key = lua_tolstring(L, -1, &kl);
    if (!key || pd_secret_set(&keys[i], key, kl)) {
      memset(keys, 0, sz);
      return luaL_argerror(L, 3, "keys of 1 to 1024 bytes");
    }
    lua_pop(L, 1);                                   /* [.., block] */
  }
  const char *why = NULL;
  int rc = pd_handshake_fds(n, fds, roles, keys, secs, hs, &why);
  for (int i = 0; i < n; i++) {
    pd_handshake_wipe(&hs[i]);
    pd_secret_wipe(&keys[i]);
  }
  lua_pop(L, 1);                                     /* [..] */
  PDI_STACK_CHECK(L, 0);
  if (rc) {
    lua_pushnil(L);
    lua_pushstring(L, why);
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

/* ==== registration ============================================================ */

static const luaL_Reg link_methods[] = {
  {"fd", k_fd}, {"peer", k_peer}, {"close", k_close}, {NULL, NULL},
};

static const luaL_Reg listen_methods[] = {
  {"port", l_port}, {"accept", l_accept}, {"close", l_close}, {NULL, NULL},
};

static const luaL_Reg link_funcs[] = {
  {"dial", t_dial}, {"listen", t_listen}, {"handshake", t_handshake},
  {"send_frame", t_send_frame}, {"recv_frame", t_recv_frame}, {"random", t_random},
  {"tcp_listen", t_tcp_listen}, {"tcp_accept", t_tcp_accept}, {"tcp_dial", t_tcp_dial},
  {"close_fd", t_close_fd}, {NULL, NULL},
};

void pdi_tubes_open_links(lua_State *L) {
  PDI_STACK(L);
  pdi_newclass(L, LINK_MT, link_methods, NULL, k_close);      /* [t, mt] */
  lua_pop(L, 1);
  pdi_newclass(L, LISTEN_MT, listen_methods, NULL, l_close);  /* [t, mt] */
  lua_pop(L, 1);                                               /* [t] */
  luaL_setfuncs(L, link_funcs, 0);
  PDI_STACK_CHECK(L, 0);
}
