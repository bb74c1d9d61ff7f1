/* auth_test.c: HMAC, secret files and the mutual handshake of pd.h. */
#define _GNU_SOURCE
#include "pd/pd.h"
#include "pd_test.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_hmac_rfc4231(void) {
  /* RFC 4231, test case 2 */
  static const unsigned char want[32] = {
      0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
      0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
  unsigned char out[32];
  const char *msg = "what do ya want for nothing?";
  pd_hmac_sha256("Jefe", 4, msg, strlen(msg), out);
  PD_CHECK(memcmp(out, want, 32) == 0);
}

/* Run the whole exchange; returns the dialer's and listener's results. */
static void handshake(const char *kd, const char *kl, int *rd, int *rl, pd_auth *d, pd_auth *l) {
  pd_secret sd, sl;
  pd_secret_set(&sd, kd, strlen(kd));
  pd_secret_set(&sl, kl, strlen(kl));
  pd_buf m1, m2, m3, m4;
  pd_buf_init(&m1); pd_buf_init(&m2); pd_buf_init(&m3); pd_buf_init(&m4);
  *rd = *rl = 1;
  PD_CHECK(pd_auth_dialer_start(d, &sd, &m1) == 0);
  PD_CHECK(pd_auth_listener_start(l, &sl, m1.data, m1.len, &m2) == 0);
  *rd = pd_auth_dialer_prove(d, m2.data, m2.len, &m3);
  if (*rd == 0) {
    *rl = pd_auth_listener_check(l, m3.data, m3.len, &m4);
    *rd = pd_auth_dialer_finish(d, m4.data, m4.len);
  }
  pd_buf_free(&m1); pd_buf_free(&m2); pd_buf_free(&m3); pd_buf_free(&m4);
}

static void test_same_secret(void) {
  pd_auth d, l;
  int rd, rl;
  handshake("s3cret", "s3cret", &rd, &rl, &d, &l);
  PD_CHECK(rd == 0 && rl == 0);
  PD_CHECK(memcmp(d.session, l.session, 32) == 0);
}

static void test_wrong_secret_dialer_refuses_listener(void) {
  pd_auth d, l;
  int rd, rl;
  handshake("right", "wrong", &rd, &rl, &d, &l);
  PD_CHECK(rd == PD_AUTH_EDENIED);   /* caught before the dialer proves anything */
  PD_CHECK(rl == 1);                 /* the listener never saw a proof */
}

static void test_forged_proof_refused(void) {
  pd_secret k;
  pd_secret_set(&k, "key", 3);
  pd_auth d, l;
  pd_buf m1, m2, m3, v;
  pd_buf_init(&m1); pd_buf_init(&m2); pd_buf_init(&m3); pd_buf_init(&v);
  PD_CHECK(pd_auth_dialer_start(&d, &k, &m1) == 0);
  PD_CHECK(pd_auth_listener_start(&l, &k, m1.data, m1.len, &m2) == 0);
  PD_CHECK(pd_auth_dialer_prove(&d, m2.data, m2.len, &m3) == 0);
  m3.data[m3.len - 1] ^= 1;          /* one bit off */
  PD_CHECK(pd_auth_listener_check(&l, m3.data, m3.len, &v) == PD_AUTH_EDENIED);
  PD_CHECK(v.len == 5 && v.data[4] == 'N');
  PD_CHECK(pd_auth_dialer_finish(&d, v.data, v.len) == PD_AUTH_EDENIED);
  pd_buf_free(&m1); pd_buf_free(&m2); pd_buf_free(&m3); pd_buf_free(&v);
}

static void test_replayed_proof_refused(void) {
  pd_secret k;
  pd_secret_set(&k, "key", 3);
  pd_auth d, l, l2;
  pd_buf m1, m2, m3, v, m2b, v2;
  pd_buf_init(&m1); pd_buf_init(&m2); pd_buf_init(&m3); pd_buf_init(&v);
  pd_buf_init(&m2b); pd_buf_init(&v2);
  pd_auth_dialer_start(&d, &k, &m1);
  pd_auth_listener_start(&l, &k, m1.data, m1.len, &m2);
  pd_auth_dialer_prove(&d, m2.data, m2.len, &m3);
  PD_CHECK(pd_auth_listener_check(&l, m3.data, m3.len, &v) == 0);
  /* an eavesdropper replays HELLO and PROOF to a new connection */
  PD_CHECK(pd_auth_listener_start(&l2, &k, m1.data, m1.len, &m2b) == 0);
  PD_CHECK(pd_auth_listener_check(&l2, m3.data, m3.len, &v2) == PD_AUTH_EDENIED);
  pd_buf_free(&m1); pd_buf_free(&m2); pd_buf_free(&m3); pd_buf_free(&v);
  pd_buf_free(&m2b); pd_buf_free(&v2);
}

static void test_malformed(void) {
  pd_secret k;
  pd_secret_set(&k, "key", 3);
  pd_auth a;
  pd_buf out;
  pd_buf_init(&out);
  PD_CHECK(pd_auth_listener_start(&a, &k, "PDA1H", 5, &out) == PD_AUTH_EPROTO);
  PD_CHECK(pd_auth_listener_start(&a, &k, "", 0, &out) == PD_AUTH_EPROTO);
  char junk[37];
  memset(junk, 'x', sizeof junk);
  PD_CHECK(pd_auth_listener_start(&a, &k, junk, sizeof junk, &out) == PD_AUTH_EPROTO);
  pd_auth d;
  pd_auth_dialer_start(&d, &k, &out);
  PD_CHECK(pd_auth_dialer_finish(&d, "PDA1K", 5) == PD_AUTH_EPROTO);   /* out of order */
  PD_CHECK(strstr(pd_auth_strerror(PD_AUTH_EDENIED), "same secret") != NULL);
  pd_buf_free(&out);
}

static void write_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  PD_CHECK(fd >= 0);
  PD_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
  close(fd);
  chmod(path, mode);
}

static void test_secret_file(void) {
  char path[] = "/tmp/pd_secret_XXXXXX";
  int fd = mkstemp(path);
  PD_CHECK(fd >= 0);
  close(fd);
  pd_secret s;
  char err[256];

  write_file(path, "hunter2\n", 0600);
  PD_CHECK(pd_secret_load(path, &s, err, sizeof err) == 0);
  PD_CHECK(s.len == 7 && memcmp(s.key, "hunter2", 7) == 0);

  write_file(path, "hunter2\n", 0644);
  PD_CHECK(pd_secret_load(path, &s, err, sizeof err) == -1);
  PD_CHECK(strstr(err, "chmod 600") != NULL && strstr(err, "0644") != NULL);

  write_file(path, "", 0600);
  PD_CHECK(pd_secret_load(path, &s, err, sizeof err) == -1);
  PD_CHECK(strstr(err, "empty") != NULL);

  unlink(path);
  PD_CHECK(pd_secret_load(path, &s, err, sizeof err) == -1);
  PD_CHECK(strstr(err, "cannot open") != NULL);
  pd_secret_wipe(&s);
  PD_CHECK(s.len == 0);
}

PD_TESTS = {
  {"hmac-sha256 RFC 4231", test_hmac_rfc4231},
  {"same secret: both accept, same session key", test_same_secret},
  {"wrong secret: dialer refuses the listener first", test_wrong_secret_dialer_refuses_listener},
  {"forged proof refused", test_forged_proof_refused},
  {"replayed proof refused", test_replayed_proof_refused},
  {"malformed messages", test_malformed},
  {"secret file permissions", test_secret_file},
  {NULL, NULL},
};
