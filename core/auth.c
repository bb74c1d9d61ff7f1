/* auth.c: shared secrets and the mutual challenge-response of pd.h. */
#define _GNU_SOURCE
#include "pd/pd.h"

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

void pd_secret_wipe(pd_secret *s) {
  volatile unsigned char *k = s->key;
  for (size_t i = 0; i < sizeof s->key; i++) k[i] = 0;
  s->len = 0;
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

/* ---- the handshake ---------------------------------------------------------- */

enum { ST_NONE, ST_HELLO_SENT, ST_CHALL_SENT, ST_PROOF_SENT, ST_DONE };

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

int pd_auth_dialer_start(pd_auth *a, const pd_secret *k, pd_buf *out) {
  memset(a, 0, sizeof *a);
  a->key = *k;
  int rc = pd_random(a->nd, 32);
  if (rc) return rc;
  a->state = ST_HELLO_SENT;
  return put(out, 'H', a->nd, 32, NULL, 0);
}

int pd_auth_listener_start(pd_auth *a, const pd_secret *k, const void *hello, size_t n,
                           pd_buf *out) {
  memset(a, 0, sizeof *a);
  if (!check_hdr(hello, n, HDR + 32, 'H')) return PD_AUTH_EPROTO;
  a->key = *k;
  memcpy(a->nd, (const unsigned char *)hello + HDR, 32);
  int rc = pd_random(a->nl, 32);
  if (rc) return rc;
  unsigned char m[32];
  mac3(&a->key, LBL_LISTENER, a->nd, a->nl, m);
  a->state = ST_CHALL_SENT;
  return put(out, 'C', a->nl, 32, m, 32);
}

int pd_auth_dialer_prove(pd_auth *a, const void *chall, size_t n, pd_buf *out) {
  if (a->state != ST_HELLO_SENT || !check_hdr(chall, n, HDR + 64, 'C')) return PD_AUTH_EPROTO;
  const unsigned char *p = (const unsigned char *)chall + HDR;
  memcpy(a->nl, p, 32);
  unsigned char want[32];
  mac3(&a->key, LBL_LISTENER, a->nd, a->nl, want);
  if (!pd_ct_equal(want, p + 32, 32)) {
    a->state = ST_NONE;
    return PD_AUTH_EDENIED;           /* the listener does not hold K */
  }
  unsigned char m[32];
  mac3(&a->key, LBL_DIALER, a->nl, a->nd, m);
  a->state = ST_PROOF_SENT;
  return put(out, 'P', m, 32, NULL, 0);
}

int pd_auth_listener_check(pd_auth *a, const void *proof, size_t n, pd_buf *out) {
  if (a->state != ST_CHALL_SENT || !check_hdr(proof, n, HDR + 32, 'P')) {
    a->state = ST_NONE;
    put(out, 'N', NULL, 0, NULL, 0);
    return PD_AUTH_EPROTO;
  }
  unsigned char want[32];
  mac3(&a->key, LBL_DIALER, a->nl, a->nd, want);
  if (!pd_ct_equal(want, (const unsigned char *)proof + HDR, 32)) {
    a->state = ST_NONE;
    put(out, 'N', NULL, 0, NULL, 0);
    return PD_AUTH_EDENIED;
  }
  mac3(&a->key, LBL_SESSION, a->nd, a->nl, a->session);
  a->state = ST_DONE;
  return put(out, 'K', NULL, 0, NULL, 0);
}

int pd_auth_dialer_finish(pd_auth *a, const void *verdict, size_t n) {
  if (a->state != ST_PROOF_SENT) return PD_AUTH_EPROTO;
  if (check_hdr(verdict, n, HDR, 'N')) {
    a->state = ST_NONE;
    return PD_AUTH_EDENIED;
  }
  if (!check_hdr(verdict, n, HDR, 'K')) return PD_AUTH_EPROTO;
  mac3(&a->key, LBL_SESSION, a->nd, a->nl, a->session);
  a->state = ST_DONE;
  return 0;
}

const char *pd_auth_strerror(int rc) {
  switch (rc) {
    case 0: return "authenticated";
    case PD_AUTH_EPROTO: return "authentication failed: malformed or out-of-order handshake message";
    case PD_AUTH_EDENIED: return "authentication failed: the peer does not hold the same secret";
    default: return "authentication failed: cannot draw random nonces or out of memory";
  }
}

void pd_auth_wipe(pd_auth *a) {
  volatile unsigned char *p = (volatile unsigned char *)a;
  for (size_t i = 0; i < sizeof *a; i++) p[i] = 0;
}
