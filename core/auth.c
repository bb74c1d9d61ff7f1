/*
 * auth.c: shared secrets and the mutual challenge-response of pd.h, with
 * the one driver of that exchange (pd_handshake) that every link uses: a
 * coordinator's links to its nodes and its one-shot queries (cluster.c), a
 * node's sessions (node.c), the links of a task set across machines
 * (tcp.c).  The driver does no I/O: its callers own their loops, frames
 * and deadlines, and get the session key when it ends.
 */
#define _GNU_SOURCE
#include "pd/pd.h"
#include "pd/pdi.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/md.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- primitives ------------------------------------------------------------ */

int pd_random(void *p, size_t n) {
  unsigned char *c = p;
  while (n > 0) {
    ssize_t r = getrandom(c, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    c += r;
    n -= (size_t)r;
  }
  return 0;
}

void pd_hmac_sha256(const void *key, size_t klen, const void *msg, size_t n,
                    unsigned char out[32]) {
  /* With the SHA-256 info present (it is compiled into mbedtls), this cannot
   * fail; a failure would be a broken library, so leave out zeroed rather
   * than a value a peer could match by chance. */
  memset(out, 0, 32);
  mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, klen, msg, n, out);
}

int pd_ct_equal(const void *a, const void *b, size_t n) {
  const volatile unsigned char *x = a, *y = b;
  unsigned char d = 0;
  for (size_t i = 0; i < n; i++) d |= x[i] ^ y[i];
  return d == 0;
}

/* ---- secrets ------------------------------------------------------------- */

int pd_secret_set(pd_secret *s, const void *p, size_t n) {
  if (n == 0 || n > PD_SECRET_MAX) return -EINVAL;
  memcpy(s->key, p, n);
  s->len = n;
  return 0;
}

static void wipe_bytes(void *p, size_t n) {
  volatile unsigned char *k = p;
  for (size_t i = 0; i < n; i++) k[i] = 0;
}

void pd_secret_wipe(pd_secret *s) {
  volatile unsigned char *k = s->key;
  for (size_t i = 0; i < sizeof s->key; i++) k[i] = 0;
  s->len = 0;
}

int pd_secret_create(const char *path, char *err, size_t n) {
  unsigned char key[32];
  char text[65 + 1];
  if (pd_random(key, sizeof key)) {
    snprintf(err, n, "cannot draw a secret: no randomness from the kernel");
    return -1;
  }
  for (size_t i = 0; i < sizeof key; i++) snprintf(text + 2 * i, 3, "%02x", key[i]);
  text[64] = '\n';
  text[65] = '\0';
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST)
      snprintf(err, n, "%s exists: a secret is never overwritten (remove it first)", path);
    else
      snprintf(err, n, "cannot create %s: %s", path, strerror(errno));
    wipe_bytes(key, sizeof key);
    wipe_bytes(text, sizeof text);
    return -1;
  }
  int rc = pdi_write_all(fd, text, 65);
  int rs = pdi_sync_close(fd);                     /* closed either way */
  if (!rc) rc = rs;
  wipe_bytes(key, sizeof key);
  wipe_bytes(text, sizeof text);
  if (rc) {
    snprintf(err, n, "cannot write %s: %s", path, strerror(-rc));
    unlink(path);
    return -1;
  }
  return 0;
}

int pd_secret_load(const char *path, pd_secret *s, char *err, size_t n) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    snprintf(err, n, "cannot open secret file %s: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, n, "secret file %s is not a regular file", path);
    close(fd);
    return -1;
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    snprintf(err, n, "secret file %s is open to others (mode %04o): chmod 600 %s", path,
             (unsigned)(st.st_mode & 07777), path);
    close(fd);
    return -1;
  }
  unsigned char buf[PD_SECRET_MAX + 2];
  size_t got = 0;
  for (;;) {
    ssize_t r = read(fd, buf + got, sizeof buf - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      snprintf(err, n, "cannot read secret file %s: %s", path, strerror(errno));
      close(fd);
      return -1;
    }
    if (r == 0 || got + (size_t)r == sizeof buf) {
      got += (size_t)r;
      break;
    }
    got += (size_t)r;
  }
  close(fd);
  if (got > 0 && buf[got - 1] == '\n') got--;
  if (got > 0 && buf[got - 1] == '\r') got--;
  int rc = 0;
  if (got == 0) {
    snprintf(err, n, "secret file %s is empty", path);
    rc = -1;
  } else if (got > PD_SECRET_MAX) {
    snprintf(err, n, "secret file %s holds more than %d bytes", path, PD_SECRET_MAX);
    rc = -1;
  } else {
    pd_secret_set(s, buf, got);
  }
  volatile unsigned char *v = buf;
  for (size_t i = 0; i < sizeof buf; i++) v[i] = 0;
  return rc;
}

/* ---- the handshake driver --------------------------------------------------
 * One state machine for both roles (pd.h has the contract).  h->state is
 * the message awaited next; each step checks that message, appends the
 * answer (when the role has one) and moves on.  The bytes are those of the
 * four messages in pd.h, built by put() below. */

#define MAGIC "PDA1"
#define HDR 5                         /* "PDA1" + type byte */

static const char LBL_LISTENER[] = "pdlua-auth-v1 listener";
static const char LBL_DIALER[] = "pdlua-auth-v1 dialer";
static const char LBL_SESSION[] = "pdlua-session-v1";

/* HMAC(K, label || a || b) with a, b 32-byte nonces. */
static void mac3(const pd_secret *k, const char *label, const unsigned char *a,
                 const unsigned char *b, unsigned char out[32]) {
  unsigned char msg[64 + 64];
  size_t l = strlen(label);
  memcpy(msg, label, l);
  memcpy(msg + l, a, 32);
  memcpy(msg + l + 32, b, 32);
  pd_hmac_sha256(k->key, k->len, msg, l + 64, out);
}

static int check_hdr(const void *m, size_t n, size_t want, char type) {
  const unsigned char *p = m;
  if (n != want || memcmp(p, MAGIC, 4) != 0 || p[4] != (unsigned char)type) return 0;
  return 1;
}

static int put(pd_buf *out, char type, const void *a, size_t na, const void *b, size_t nb) {
  char h[HDR] = {'P', 'D', 'A', '1', type};
  if (pd_buf_reserve(out, HDR + na + nb)) return -ENOMEM;
  pd_buf_append(out, h, HDR);
  if (na) pd_buf_append(out, a, na);
  if (nb) pd_buf_append(out, b, nb);
  return 0;
}

/* The end of the exchange: rc 0 (both ends hold K: derive the session key)
 * or the failure, kept so that later steps repeat it. */
static int finish(pd_handshake *h, int rc) {
  if (rc == 0) {
    mac3(&h->key, LBL_SESSION, h->nd, h->nl, h->session);
    h->state = PD_HS_DONE;
  } else {
    h->state = PD_HS_FAILED;
    h->rc = rc;
  }
  return rc;
}

int pd_handshake_start(pd_handshake *h, int role, const pd_secret *k, pd_buf *out) {
  memset(h, 0, sizeof *h);
  h->role = role;
  h->key = *k;
  if (role == PD_HS_LISTENER) {
    h->state = PD_HS_HELLO;
    return PD_HS_MORE;
  }
  int rc = pd_random(h->nd, 32);                           /* -> HELLO */
  if (!rc) rc = put(out, 'H', h->nd, 32, NULL, 0);
  if (rc) return finish(h, rc);
  h->state = PD_HS_CHALL;
  return PD_HS_MORE;
}

int pd_handshake_step(pd_handshake *h, const void *msg, size_t n, pd_buf *out) {
  const unsigned char *p = (const unsigned char *)msg + HDR;
  unsigned char m[32];
  int rc;
  switch (h->state) {
  case PD_HS_HELLO:                                        /* listener: HELLO -> CHALL */
    if (!check_hdr(msg, n, HDR + 32, 'H')) return finish(h, PD_AUTH_EPROTO);
    memcpy(h->nd, p, 32);
    rc = pd_random(h->nl, 32);
    if (rc) return finish(h, rc);
    mac3(&h->key, LBL_LISTENER, h->nd, h->nl, m);
    rc = put(out, 'C', h->nl, 32, m, 32);
    if (rc) return finish(h, rc);
    h->state = PD_HS_PROOF;
    return PD_HS_MORE;
  case PD_HS_CHALL:                                        /* dialer: CHALL -> PROOF */
    if (!check_hdr(msg, n, HDR + 64, 'C')) return finish(h, PD_AUTH_EPROTO);
    memcpy(h->nl, p, 32);
    mac3(&h->key, LBL_LISTENER, h->nd, h->nl, m);
    if (!pd_ct_equal(m, p + 32, 32))
      return finish(h, PD_AUTH_EDENIED);                   /* the listener does not hold K */
    mac3(&h->key, LBL_DIALER, h->nl, h->nd, m);
    rc = put(out, 'P', m, 32, NULL, 0);
    if (rc) return finish(h, rc);
    h->state = PD_HS_VERDICT;
    return PD_HS_MORE;
  case PD_HS_PROOF:                                        /* listener: PROOF -> VERDICT */
    if (!check_hdr(msg, n, HDR + 32, 'P')) rc = PD_AUTH_EPROTO;
    else {
      mac3(&h->key, LBL_DIALER, h->nl, h->nd, m);
      rc = pd_ct_equal(m, p, 32) ? 0 : PD_AUTH_EDENIED;
    }
    if (put(out, rc ? 'N' : 'K', NULL, 0, NULL, 0) && !rc) rc = -ENOMEM;
    return finish(h, rc);
  case PD_HS_VERDICT:                                      /* dialer: VERDICT, the end */
    if (check_hdr(msg, n, HDR, 'N')) return finish(h, PD_AUTH_EDENIED);
    return finish(h, check_hdr(msg, n, HDR, 'K') ? 0 : PD_AUTH_EPROTO);
  default:                                                 /* over: nothing is awaited */
    return PD_AUTH_EPROTO;
  }
}

int pd_handshake_awaits(const pd_handshake *h) { return h->state; }

const unsigned char *pd_handshake_session(const pd_handshake *h) {
  return h->state == PD_HS_DONE ? h->session : NULL;
}

const char *pd_auth_strerror(int rc) {
  switch (rc) {
    case 0: return "authenticated";
    case PD_AUTH_EPROTO: return "authentication failed: malformed or out-of-order handshake message";
    case PD_AUTH_EDENIED: return "authentication failed: the peer does not hold the same secret";
    default: return "authentication failed: cannot draw random nonces or out of memory";
  }
}

void pd_handshake_wipe(pd_handshake *h) {
  volatile unsigned char *p = (volatile unsigned char *)h;
  for (size_t i = 0; i < sizeof *h; i++) p[i] = 0;
}
