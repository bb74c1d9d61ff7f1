/*
 * link.c: nng streams (tcp://, tls+tcp://, ipc://) seen as file descriptors.
 *
 * Why streams and not an SP protocol: a node serves several coordinators
 * at once, and the one SP socket that can address many peers one by one
 * (PAIR1 polyamorous) drops a message when a peer's two-message queue is
 * full (pair1_poly.c, "we just discard the message"), which would lose
 * results under load.  A stream per connection keeps every byte, in order,
 * with TCP's back-pressure, and carries the same length-prefixed frames as
 * the worker socketpairs (pd_conn).  nng still gives us the transports,
 * TLS on mbedtls, and one URL syntax.
 *
 * Each link has two threads that only copy bytes (stream -> socketpair and
 * socketpair -> stream) with blocking aio waits, which nng allows outside
 * its callbacks.  The owner polls its socketpair end like any worker fd.
 * Teardown: whichever side ends first shuts the socketpair down and closes
 * the stream, which wakes the other thread; the last of three references
 * (owner, reader, writer) frees the link.
 */
#define _GNU_SOURCE
#include "pd/pd.h"

#include <errno.h>
#include <fcntl.h>
#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

/* ---- nng, opened on first use ------------------------------------------------
 * Only this file calls nng.  It is dlopen'ed the first time a link is dialled
 * or a listener opened, not linked: nng and the TLS libraries it pulls in
 * (mbedtls, mbedx509) cost every pdlua process, above all every worker,
 * about a millisecond of start-up (bench/map (d)), and local work never
 * needs them.  The table is filled once; a missing library is an ordinary
 * error ("cannot load libnng.so.1: ...") from pd_link_dial/pd_listener_open. */
#define PD_NNG_FUNCS(X) \
  X(strerror) \
  X(tls_config_free) \
  X(stream_dialer_free) \
  X(aio_free) \
  X(aio_wait) \
  X(aio_result) \
  X(aio_alloc) \
  X(stream_listener_free) \
  X(tls_config_auth_mode) \
  X(stream_set_bool) \
  X(stream_free) \
  X(aio_set_timeout) \
  X(aio_set_iov) \
  X(aio_get_output) \
  X(aio_count) \
  X(tls_config_server_name) \
  X(tls_config_own_cert) \
  X(tls_config_ca_file) \
  X(tls_config_alloc) \
  X(stream_send) \
  X(stream_recv) \
  X(stream_listener_set_ptr) \
  X(stream_listener_listen) \
  X(stream_listener_get_int) \
  X(stream_listener_close) \
  X(stream_listener_alloc) \
  X(stream_listener_accept) \
  X(stream_get_addr) \
  X(stream_dialer_set_ptr) \
  X(stream_dialer_dial) \
  X(stream_dialer_alloc) \
  X(stream_close)

static struct {
#define X(f) __typeof__(&nng_##f) f;
  PD_NNG_FUNCS(X)
#undef X
} N;
static pthread_once_t nng_once = PTHREAD_ONCE_INIT;
static int nng_loaded;
static char nng_why[300];

static void nng_open(void) {
  const char *name = getenv("PDLUA_NNG");
  if (!name || !*name) name = "libnng.so.1";
  void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(nng_why, sizeof nng_why, "cannot load %s: %s", name, dlerror());
    return;
  }
#define X(f)                                                                  \
  *(void **)&N.f = dlsym(h, "nng_" #f);                                       \
  if (!N.f) {                                                                 \
    snprintf(nng_why, sizeof nng_why, "%s lacks nng_%s", name, #f);          \
    return;                                                                   \
  }
  PD_NNG_FUNCS(X)
#undef X
  nng_loaded = 1;
}

/* 0 when nng is usable; else -ENOSYS with the reason in err[n]. */
static int nng_ready(char *err, size_t n) {
  pthread_once(&nng_once, nng_open);
  if (nng_loaded) return 0;
  snprintf(err, n, "networking not available: %s", nng_why);
  return -ENOSYS;
}

#define X(f) /* nng_f(...) below means N.f(...) */
#define nng_strerror N.strerror
#define nng_tls_config_free N.tls_config_free
#define nng_stream_dialer_free N.stream_dialer_free
#define nng_aio_free N.aio_free
#define nng_aio_wait N.aio_wait
#define nng_aio_result N.aio_result
#define nng_aio_alloc N.aio_alloc
#define nng_stream_listener_free N.stream_listener_free
#define nng_tls_config_auth_mode N.tls_config_auth_mode
#define nng_stream_set_bool N.stream_set_bool
#define nng_stream_free N.stream_free
#define nng_aio_set_timeout N.aio_set_timeout
#define nng_aio_set_iov N.aio_set_iov
#define nng_aio_get_output N.aio_get_output
#define nng_aio_count N.aio_count
#define nng_tls_config_server_name N.tls_config_server_name
#define nng_tls_config_own_cert N.tls_config_own_cert
#define nng_tls_config_ca_file N.tls_config_ca_file
#define nng_tls_config_alloc N.tls_config_alloc
#define nng_stream_send N.stream_send
#define nng_stream_recv N.stream_recv
#define nng_stream_listener_set_ptr N.stream_listener_set_ptr
#define nng_stream_listener_listen N.stream_listener_listen
#define nng_stream_listener_get_int N.stream_listener_get_int
#define nng_stream_listener_close N.stream_listener_close
#define nng_stream_listener_alloc N.stream_listener_alloc
#define nng_stream_listener_accept N.stream_listener_accept
#define nng_stream_get_addr N.stream_get_addr
#define nng_stream_dialer_set_ptr N.stream_dialer_set_ptr
#define nng_stream_dialer_dial N.stream_dialer_dial
#define nng_stream_dialer_alloc N.stream_dialer_alloc
#define nng_stream_close N.stream_close
#undef X

#define LINK_BUF 65536
#define LINK_SEND_TIMEOUT_MS 5000

struct pd_link {
  nng_stream *s;
  nng_stream_dialer *d;         /* kept while the stream lives */
  int fd;                       /* owner's end (non-blocking) */
  int inner;                    /* the threads' end (blocking) */
  atomic_int refs;
  atomic_int closed;
  char peer[80];
};

struct pd_listener {
  nng_stream_listener *l;
  nng_tls_config *cfg;
  int notify;
  pthread_t th;
  atomic_int stop;
};

static void link_unref(pd_link *l) {
  if (atomic_fetch_sub(&l->refs, 1) != 1) return;
  nng_stream_free(l->s);
  if (l->d) nng_stream_dialer_free(l->d);
  close(l->inner);
  free(l);
}

/* End the link from any side: no more bytes either way. */
static void link_shut(pd_link *l) {
  if (atomic_exchange(&l->closed, 1)) return;
  shutdown(l->inner, SHUT_RDWR);
  nng_stream_close(l->s);
}

static void *reader(void *arg) {
  pd_link *l = arg;
  nng_aio *aio;
  char *buf = malloc(LINK_BUF);
  if (buf && nng_aio_alloc(&aio, NULL, NULL) == 0) {
    for (;;) {
      nng_iov iov = {buf, LINK_BUF};
      nng_aio_set_iov(aio, 1, &iov);
      nng_stream_recv(l->s, aio);
      nng_aio_wait(aio);
      if (nng_aio_result(aio) != 0) break;
      size_t n = nng_aio_count(aio), off = 0;
      while (off < n) {
        ssize_t w = send(l->inner, buf + off, n - off, MSG_NOSIGNAL);   /* never SIGPIPE */
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) goto out;
        off += (size_t)w;
      }
    }
  out:
    nng_aio_free(aio);
  }
  free(buf);
  link_shut(l);
  link_unref(l);
  return NULL;
}

static void *writer(void *arg) {
  pd_link *l = arg;
  nng_aio *aio;
  char *buf = malloc(LINK_BUF);
  if (buf && nng_aio_alloc(&aio, NULL, NULL) == 0) {
    nng_aio_set_timeout(aio, LINK_SEND_TIMEOUT_MS);
    for (;;) {
      ssize_t n = read(l->inner, buf, LINK_BUF);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      size_t off = 0;
      while (off < (size_t)n) {
        nng_iov iov = {buf + off, (size_t)n - off};
        nng_aio_set_iov(aio, 1, &iov);
        nng_stream_send(l->s, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) goto out;
        off += nng_aio_count(aio);
      }
    }
  out:
    nng_aio_free(aio);
  }
  free(buf);
  link_shut(l);
  link_unref(l);
  return NULL;
}

/* Wrap an established stream.  Returns the link or NULL (stream freed). */
static pd_link *link_new(nng_stream *s, nng_stream_dialer *d) {
  pd_link *l = calloc(1, sizeof *l);
  int sv[2];
  if (!l || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
    free(l);
    nng_stream_free(s);
    if (d) nng_stream_dialer_free(d);
    return NULL;
  }
  l->s = s;
  l->d = d;
  l->fd = sv[0];
  l->inner = sv[1];
  fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK);
  nng_stream_set_bool(s, NNG_OPT_TCP_NODELAY, true);   /* no-ops on ipc */
  nng_stream_set_bool(s, NNG_OPT_TCP_KEEPALIVE, true);
  nng_sockaddr sa;
  snprintf(l->peer, sizeof l->peer, "?");
  if (nng_stream_get_addr(s, NNG_OPT_REMADDR, &sa) == 0) {
    char ip[64];
    if (sa.s_family == NNG_AF_INET) {
      inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof ip);
      snprintf(l->peer, sizeof l->peer, "%s:%u", ip, ntohs(sa.s_in.sa_port));
    } else if (sa.s_family == NNG_AF_INET6) {
      inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof ip);
      snprintf(l->peer, sizeof l->peer, "[%s]:%u", ip, ntohs(sa.s_in6.sa_port));
    } else {
      snprintf(l->peer, sizeof l->peer, "local");
    }
  }
  atomic_init(&l->refs, 3);
  atomic_init(&l->closed, 0);
  pthread_t a, b;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&at, 256 * 1024);
  int ra = pthread_create(&a, &at, reader, l);
  int rb = ra ? -1 : pthread_create(&b, &at, writer, l);
  pthread_attr_destroy(&at);
  if (ra || rb) {                               /* cannot run: undo */
    link_shut(l);
    if (ra) atomic_fetch_sub(&l->refs, 1);     /* the reader never started */
    atomic_fetch_sub(&l->refs, 1);             /* nor the writer */
    close(l->fd);
    link_unref(l);
    return NULL;
  }
  return l;
}

/* Graceful: the writer sends what the owner queued, sees end of file, and
 * then closes the stream; a send stuck on a dead peer gives up after
 * LINK_SEND_TIMEOUT_MS, so a dropped link never holds its threads long. */
void pd_link_close(pd_link *l) {
  if (!l) return;
  close(l->fd);
  /* give the writer a moment to put the last frames (a refusal, say) on
   * the wire before this process perhaps exits; bounded */
  for (int i = 0; i < 500 && !atomic_load(&l->closed); i++) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  link_unref(l);
}

int pd_link_fd(const pd_link *l) { return l->fd; }
const char *pd_link_peer(const pd_link *l) { return l->peer; }

/* The host of "scheme://host:port" is an address (or "localhost"), read as
 * one: "127.0.0.1" is loopback, "127.evil.example:80" is not (it names a
 * host anywhere). */
int pd_url_is_loopback(const char *url) {
  if (!strncmp(url, "ipc://", 6) || !strncmp(url, "inproc://", 9)) return 1;
  const char *h = strstr(url, "://");
  if (!h) return 0;
  h += 3;
  char host[64];
  const char *end;
  int v6 = *h == '[';
  if (v6) {
    h++;
    end = strchr(h, ']');
  } else {
    end = strrchr(h, ':');
    if (!end) end = h + strlen(h);
  }
  if (!end || (size_t)(end - h) >= sizeof host) return 0;
  memcpy(host, h, (size_t)(end - h));
  host[end - h] = '\0';
  if (!v6 && !strcmp(host, "localhost")) return 1;
  if (v6) {
    struct in6_addr a6;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
  }
  struct in_addr a4;
  return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  pd_buf b;
  pd_buf_init(&b);
  char tmp[4096];
  size_t n;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) pd_buf_append(&b, tmp, n);
  fclose(f);
  pd_buf_append(&b, "", 1);
  return pd_buf_steal(&b, &n);
}

static int tls_config(const char *url, const pd_tls *t, int server, nng_tls_config **out,
                      char *err, size_t n) {
  *out = NULL;
  if (strncmp(url, "tls+", 4)) return 0;
  nng_tls_config *cfg;
  int rv = nng_tls_config_alloc(&cfg, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT);
  if (rv) {
    snprintf(err, n, "TLS: %s", nng_strerror(rv));
    return -1;
  }
  if (server) {
    if (!t || !t->cert || !t->key) {
      snprintf(err, n, "a tls+tcp:// listener needs --tls-cert FILE and --tls-key FILE");
      nng_tls_config_free(cfg);
      return -1;
    }
    char *cert = slurp(t->cert), *key = slurp(t->key);
    if (!cert || !key) {
      snprintf(err, n, "cannot read %s", !cert ? t->cert : t->key);
      free(cert); free(key);
      nng_tls_config_free(cfg);
      return -1;
    }
    rv = nng_tls_config_own_cert(cfg, cert, key, NULL);
    free(cert); free(key);
    if (rv) {
      snprintf(err, n, "TLS certificate or key refused: %s", nng_strerror(rv));
      nng_tls_config_free(cfg);
      return -1;
    }
  } else if (t && t->ca) {
    rv = nng_tls_config_ca_file(cfg, t->ca);
    if (!rv) rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED);
    if (rv) {
      snprintf(err, n, "TLS CA file %s: %s", t->ca, nng_strerror(rv));
      nng_tls_config_free(cfg);
      return -1;
    }
  } else {
    nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_NONE);
  }
  *out = cfg;
  return 0;
}

int pd_link_dial(const char *url, const pd_tls *tls, double timeout, pd_link **out, int *fd,
                 char *err, size_t n) {
  nng_stream_dialer *d;
  nng_tls_config *cfg;
  int rv = nng_ready(err, n);
  if (rv) return rv;
  rv = nng_stream_dialer_alloc(&d, url);
  if (rv) {
    snprintf(err, n, "bad node URL '%s': %s", url, nng_strerror(rv));
    return -EINVAL;
  }
  if (tls_config(url, tls, 0, &cfg, err, n)) {
    nng_stream_dialer_free(d);
    return -EINVAL;
  }
  if (cfg) {
    /* verify the host name only when a CA is given (self-signed setups) */
    if (tls && tls->ca) {
      char host[256];
      const char *h = strstr(url, "://") + 3;
      size_t k = strcspn(h, ":/");
      snprintf(host, sizeof host, "%.*s", (int)k, h);
      nng_tls_config_server_name(cfg, host);
    }
    rv = nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
    nng_tls_config_free(cfg);                   /* the dialer holds it */
    if (rv) {
      snprintf(err, n, "TLS: %s", nng_strerror(rv));
      nng_stream_dialer_free(d);
      return -EINVAL;
    }
  }
  nng_aio *aio;
  if (nng_aio_alloc(&aio, NULL, NULL)) {
    nng_stream_dialer_free(d);
    snprintf(err, n, "out of memory");
    return -ENOMEM;
  }
  nng_aio_set_timeout(aio, (nng_duration)(timeout * 1000));
  nng_stream_dialer_dial(d, aio);
  nng_aio_wait(aio);
  rv = nng_aio_result(aio);
  if (rv) {
    snprintf(err, n, "cannot connect to %s: %s", url, nng_strerror(rv));
    nng_aio_free(aio);
    nng_stream_dialer_free(d);
    return rv == NNG_ECONNREFUSED ? -ECONNREFUSED : -EHOSTUNREACH;
  }
  nng_stream *s = nng_aio_get_output(aio, 0);
  nng_aio_free(aio);
  pd_link *l = link_new(s, d);
  if (!l) {
    snprintf(err, n, "out of resources for a link");
    return -ENOMEM;
  }
  *out = l;
  *fd = l->fd;
  return 0;
}

static void *acceptor(void *arg) {
  pd_listener *ls = arg;
  nng_aio *aio;
  if (nng_aio_alloc(&aio, NULL, NULL)) return NULL;
  while (!atomic_load(&ls->stop)) {
    nng_stream_listener_accept(ls->l, aio);
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    if (rv == NNG_ECLOSED || atomic_load(&ls->stop)) break;
    if (rv) continue;                          /* a failed TLS handshake and the like */
    pd_link *l = link_new(nng_aio_get_output(aio, 0), NULL);
    if (!l) continue;
    if (write(ls->notify, &l, sizeof l) != (ssize_t)sizeof l) pd_link_close(l);
  }
  nng_aio_free(aio);
  return NULL;
}

int pd_listener_open(const char *url, const pd_tls *tls, int notify_fd, pd_listener **out,
                     char *err, size_t n) {
  int rv = nng_ready(err, n);
  if (rv) return rv;
  pd_listener *ls = calloc(1, sizeof *ls);
  if (!ls) return -ENOMEM;
  rv = nng_stream_listener_alloc(&ls->l, url);
  if (rv) {
    snprintf(err, n, "bad listen URL '%s': %s", url, nng_strerror(rv));
    free(ls);
    return -EINVAL;
  }
  if (tls_config(url, tls, 1, &ls->cfg, err, n)) {
    nng_stream_listener_free(ls->l);
    free(ls);
    return -EINVAL;
  }
  if (ls->cfg && (rv = nng_stream_listener_set_ptr(ls->l, NNG_OPT_TLS_CONFIG, ls->cfg))) {
    snprintf(err, n, "TLS: %s", nng_strerror(rv));
    pd_listener_close(ls);
    return -EINVAL;
  }
  if ((rv = nng_stream_listener_listen(ls->l))) {
    snprintf(err, n, "cannot listen on %s: %s", url, nng_strerror(rv));
    pd_listener_close(ls);
    return -EADDRINUSE;
  }
  ls->notify = notify_fd;
  atomic_init(&ls->stop, 0);
  if (pthread_create(&ls->th, NULL, acceptor, ls)) {
    snprintf(err, n, "cannot start the accept thread");
    nng_stream_listener_free(ls->l);
    if (ls->cfg) nng_tls_config_free(ls->cfg);
    free(ls);
    return -EAGAIN;
  }
  *out = ls;
  return 0;
}

int pd_listener_port(pd_listener *ls) {
  int port = 0;
  if (nng_stream_listener_get_int(ls->l, NNG_OPT_TCP_BOUND_PORT, &port)) return 0;
  return port;
}

void pd_listener_close(pd_listener *ls) {
  if (!ls) return;
  if (ls->th) {
    atomic_store(&ls->stop, 1);
    nng_stream_listener_close(ls->l);
    pthread_join(ls->th, NULL);
  }
  nng_stream_listener_free(ls->l);
  if (ls->cfg) nng_tls_config_free(ls->cfg);
  free(ls);
}
