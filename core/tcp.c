/*
 * tcp.c: the byte transport of a task set across machines (see pd.h): plain
 * TCP sockets for its tubes, blocking frames for its setup, and the
 * handshake run on all of a node's links at once.  No Lua here: lua/
 * tubelink.c binds it as pd.core.tubes.tcp_* and friends.
 *
 * A tube between two machines is a plain tcp socket (TCP_NODELAY), not an
 * nng stream: no bridge threads between the node and the wire, so a round
 * trip costs what the network does.  Every socket handed out is
 * non-blocking and close-on-exec, and is the caller's to close.
 *
 * Setup frames (the node's hello, where its tubes go, a tube's name) are
 * pd_conn frames (u32 length, type byte, payload) written and read whole,
 * blocking with a deadline, on descriptors that nothing else reads yet: no
 * buffer outlives a call, so nothing read ahead is lost when a pd_conn
 * takes the descriptor over.  They are small: a frame over 1 MiB is
 * refused as broken.
 */
#define _GNU_SOURCE
#include "pd/pd.h"
#include "pd/pdi.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SETUP_FRAME_MAX (1u << 20)

static int ms_until(double seconds) { return (int)(seconds * 1000 + 0.999); }

/* What every tube socket gets: no Nagle delay, non-blocking. */
static void tcp_tune(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* ---- sockets --------------------------------------------------------------------- */

int pd_tcp_listen(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t al = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 64) ||
      getsockname(fd, (struct sockaddr *)&a, &al)) {
    int e = errno;
    close(fd);
    return -e;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

int pd_tcp_accept(int lfd, double timeout) {
  struct pollfd p = {lfd, POLLIN, 0};
  if (poll(&p, 1, ms_until(timeout)) <= 0) return -ETIMEDOUT;
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) return -errno;
  tcp_tune(fd);
  return fd;
}

int pd_tcp_dial(const char *host, int port, double timeout, char *err, size_t n) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    snprintf(err, n, "not an IPv4 address: %s", host);
    return -EINVAL;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    int e = errno;
    snprintf(err, n, "socket: %s", strerror(e));
    return -e;
  }
  int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  if (rc < 0 && errno == EINPROGRESS) {
    struct pollfd p = {fd, POLLOUT, 0};
    int e = 0;
    socklen_t el = sizeof e;
    if (poll(&p, 1, ms_until(timeout)) <= 0) e = ETIMEDOUT;
    else getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
    rc = e ? -1 : 0;
    errno = e;
  }
  if (rc < 0) {
    int e = errno;
    close(fd);
    snprintf(err, n, "cannot connect to %s:%d: %s", host, port, strerror(e));
    return -(e ? e : ECONNREFUSED);
  }
  tcp_tune(fd);
  return fd;
}

/* ---- blocking frames ---------------------------------------------------------------- */

int pd_frame_recv(int fd, double deadline, double hard, int *type, pd_buf *b) {
  unsigned char h[5];
  size_t got = 0, need = 5;
  b->len = 0;
  for (;;) {
    double left = (got ? hard : deadline) - pd_now();   /* a frame begun is finished */
    if (left <= 0) return 0;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, ms_until(left)) <= 0) continue;
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
      uint32_t len = pdi_le32_get(h);
      if (len < 1 || len > SETUP_FRAME_MAX) return -1;
      *type = h[4];
      need = 4 + (size_t)len;
    }
    if (got >= 5 && got == need) return 1;
  }
}

int pd_frame_send(int fd, int type, const void *p, size_t n) {
  unsigned char h[5];
  pdi_le32_put(h, (uint32_t)(n + 1));
  h[4] = (unsigned char)type;
  if (pdi_write_all(fd, h, 5)) return -1;
  return pdi_write_all(fd, p, n) ? -1 : 0;
}

/* ---- the handshake on many links ------------------------------------------------------
 * One pd_handshake per link, driven from one loop: the dialers speak first,
 * then each link in turn gets a short slice to read its next message, so
 * two nodes that dial each other never wait on each other.  Messages are
 * 'A' frames (cwire.h).  A listener that refuses sends no verdict: its
 * side fails and closes, which its dialer sees. */
int pd_handshake_fds(int n, const int *fds, const int *roles, const pd_secret *keys,
                     double timeout, pd_handshake *hs, const char **why) {
  double deadline = pd_now() + timeout;
  const char *fail = NULL;
  pd_buf out, in;
  pd_buf_init(&out);
  pd_buf_init(&in);
  char *done = calloc((size_t)n + 1, 1);
  if (!done) fail = "the handshake failed";
  for (int i = 0; i < n && !fail; i++) {
    out.len = 0;
    if (pd_handshake_start(&hs[i], roles[i], &keys[i], &out) != PD_HS_MORE ||
        (out.len && pd_frame_send(fds[i], 'A', out.data, out.len)))
      fail = "cannot start the handshake";
  }
  int left = n;
  while (left > 0 && !fail) {
    for (int i = 0; i < n && !fail; i++) {
      if (done[i]) continue;
      int type;
      /* each peer answers promptly once it has our message; a short slice
       * per link keeps every handshake moving */
      int rc = pd_frame_recv(fds[i], pd_now() + 0.01, deadline, &type, &in);
      if (rc == 0) { if (pd_now() > deadline) fail = "handshake timed out"; continue; }
      if (rc < 0 || type != 'A') { fail = "the peer closed or broke the handshake"; break; }
      out.len = 0;
      int r = pd_handshake_step(&hs[i], in.data, in.len, &out);
      if (r >= 0 && out.len && pd_frame_send(fds[i], 'A', out.data, out.len)) r = -1;
      if (r == 0) { done[i] = 1; left--; }
      if (r < 0) fail = r == PD_AUTH_EDENIED ? "the peer does not hold the set's key"
                                             : "the handshake failed";
    }
  }
  free(done);
  pd_buf_free(&out);
  pd_buf_free(&in);
  *why = fail;
  return fail ? -1 : 0;
}
