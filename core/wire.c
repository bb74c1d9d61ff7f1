/* wire.c: length-prefixed frames over a byte stream (see pd.h). */
#include "pd/pd.h"
#include "pd/pdi.h"

#include <sys/stat.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void pd_conn_init(pd_conn *c, int fd) { pd_conn_init2(c, fd, fd); }

void pd_conn_init2(pd_conn *c, int rfd, int wfd) {
  c->fd = rfd;
  c->wfd = wfd == rfd ? 0 : wfd;
  struct stat st;
  c->wsock = c->wfd > 0 && fstat(c->wfd, &st) == 0 && S_ISSOCK(st.st_mode);
  pd_buf_init(&c->in);
  pd_buf_init(&c->out);
  c->in_off = c->out_off = 0;
}

void pd_conn_close(pd_conn *c) {
  if (c->wfd > 0) close(c->wfd);
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->wfd = 0;
  pd_buf_free(&c->in);
  pd_buf_free(&c->out);
  c->in_off = c->out_off = 0;
}

size_t pd_conn_begin(pd_conn *c, int type) {
  size_t mark = c->out.len;
  char h[5] = {0, 0, 0, 0, (char)type};
  if (pd_buf_append(&c->out, h, 5)) return (size_t)-1;
  return mark;
}

void pd_conn_end(pd_conn *c, size_t mark) {
  if (mark == (size_t)-1) return;
  pdi_le32_put(c->out.data + mark, (uint32_t)(c->out.len - mark - 4));
}

int pd_conn_put(pd_conn *c, int type, const void *p, size_t n) {
  if (n + 1 > PD_FRAME_MAX) return -EMSGSIZE;
  size_t m = pd_conn_begin(c, type);
  if (m == (size_t)-1 || pd_buf_append(&c->out, p, n)) return -ENOMEM;
  pd_conn_end(c, m);
  return 0;
}

int pd_conn_flush(pd_conn *c) {
  while (c->out_off < c->out.len) {
    /* a socket: send with MSG_NOSIGNAL, a dead peer is -EPIPE here, never
     * SIGPIPE (also when wfd is a socket); a pipe: write, and SIGPIPE is
     * the caller's */
    const char *d = c->out.data + c->out_off;
    size_t len = c->out.len - c->out_off;
    ssize_t w = c->wfd <= 0 ? send(c->fd, d, len, MSG_NOSIGNAL)
                : c->wsock  ? send(c->wfd, d, len, MSG_NOSIGNAL)
                            : write(c->wfd, d, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    c->out_off += (size_t)w;
  }
  c->out.len = c->out_off = 0;       /* all written: reuse the buffer */
  return 0;
}

int pd_conn_fill(pd_conn *c) {
  if (c->in_off > 0 && c->in_off == c->in.len) {
    c->in.len = c->in_off = 0;
  } else if (c->in_off > 65536 && c->in_off * 2 > c->in.len) {
    memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
    c->in.len -= c->in_off;
    c->in_off = 0;
  }
  size_t want = 65536;
  if (c->in.len - c->in_off >= 4) {  /* a frame header is here: room for it */
    size_t need = 4 + (size_t)pdi_le32_get(c->in.data + c->in_off);
    if (need > c->in.len - c->in_off && need - (c->in.len - c->in_off) > want)
      want = need - (c->in.len - c->in_off);
  }
  if (pd_buf_reserve(&c->in, want)) return -ENOMEM;
  for (;;) {
    ssize_t r = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
    if (r > 0) { c->in.len += (size_t)r; return (int)(r > 0x7fffffff ? 0x7fffffff : r); }
    if (r == 0) return -EPIPE;
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return -EPIPE;
    return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

int pd_conn_next(pd_conn *c, const char **p, size_t *n) {
  size_t have = c->in.len - c->in_off;
  if (have < 4) return 0;
  uint32_t len = pdi_le32_get(c->in.data + c->in_off);
  if (len == 0 || len > PD_FRAME_MAX) return -EPROTO;
  if (have - 4 < len) return 0;
  *p = c->in.data + c->in_off + 4;
  *n = len;
  c->in_off += 4 + (size_t)len;
  return 1;
}
