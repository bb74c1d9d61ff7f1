/* auth_test.c: HMAC, secret files and the handshake driver of pd.h (a dialer
 * and a listener driven against each other in memory). */
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

/* ---- the handshake driver, two ends in memory ------------------------------ */

static void set(pd_secret *k, const char *s) { PD_CHECK(pd_secret_set(k, s, strlen(s)) == 0); }

/* Hand what one end has to send to the other: take the message out of
 * `from` (which the receiving step may append to), feed it to h. */
static int feed(pd_handshake *h, pd_buf *from, pd_buf *to) {
  pd_buf m = *from;
  pd_buf_init(from);
  int rc = pd_handshake_step(h, m.data, m.len, to);
  pd_buf_free(&m);
  return rc;
}

/* Drive a dialer holding kd and a listener holding kl against each other
 * until neither has more to say; *rd and *rl are their last results. */
static void run(const char *kd, const char *kl, pd_handshake *d, pd_handshake *l, int *rd,
                int *rl) {
  pd_secret sd, sl;
  set(&sd, kd);
  set(&sl, kl);
  pd_buf to_l, to_d;
  pd_buf_init(&to_l);
  pd_buf_init(&to_d);
  *rd = pd_handshake_start(d, PD_HS_DIALER, &sd, &to_l);
  *rl = pd_handshake_start(l, PD_HS_LISTENER, &sl, &to_d);
  PD_CHECK(*rd == PD_HS_MORE && *rl == PD_HS_MORE);
  PD_CHECK(to_l.len == 37 && to_d.len == 0);               /* HELLO; the listener waits */
  pd_secret_wipe(&sd);                                      /* copied by start */
  pd_secret_wipe(&sl);
  for (;;) {
    if (to_l.len && *rl == PD_HS_MORE) *rl = feed(l, &to_l, &to_d);
    else if (to_d.len && *rd == PD_HS_MORE) *rd = feed(d, &to_d, &to_l);
    else break;
  }
  pd_buf_free(&to_l);
  pd_buf_free(&to_d);
}

static void test_same_secret(void) {
  pd_handshake d, l;
  int rd, rl;
  run("s3cret", "s3cret", &d, &l, &rd, &rl);
  PD_CHECK(rd == 0 && rl == 0);
  PD_CHECK(pd_handshake_awaits(&d) == PD_HS_DONE && pd_handshake_awaits(&l) == PD_HS_DONE);
  PD_CHECK(pd_handshake_session(&d) && pd_handshake_session(&l));
  PD_CHECK(memcmp(pd_handshake_session(&d), pd_handshake_session(&l), 32) == 0);
  pd_handshake d2, l2;
  run("s3cret", "s3cret", &d2, &l2, &rd, &rl);             /* fresh nonces: a new key */
  PD_CHECK(memcmp(pd_handshake_session(&d), pd_handshake_session(&d2), 32) != 0);
  pd_handshake_wipe(&d);
  PD_CHECK(pd_handshake_session(&d) == NULL);
}

static void test_wrong_secret_dialer_refuses_listener(void) {
  pd_handshake d, l;
  int rd, rl;
  run("right", "wrong", &d, &l, &rd, &rl);
  PD_CHECK(rd == PD_AUTH_EDENIED);   /* caught before the dialer proves anything */
  PD_CHECK(pd_handshake_awaits(&d) == PD_HS_FAILED && pd_handshake_session(&d) == NULL);
  PD_CHECK(rl == PD_HS_MORE);        /* the listener never saw a proof */
  PD_CHECK(pd_handshake_awaits(&l) == PD_HS_PROOF);
  PD_CHECK(strstr(pd_auth_strerror(rd), "does not hold the same secret") != NULL);
}

/* Start both ends and take them to where the dialer has sent its PROOF
 * (m3); the listener awaits it. */
static void to_proof(pd_handshake *d, pd_handshake *l, const pd_secret *k, pd_buf *m1,
                     pd_buf *m3) {
  pd_buf m2;
  pd_buf_init(&m2);
  PD_CHECK(pd_handshake_start(d, PD_HS_DIALER, k, m1) == PD_HS_MORE);
  PD_CHECK(pd_handshake_start(l, PD_HS_LISTENER, k, &m2) == PD_HS_MORE);
  PD_CHECK(pd_handshake_step(l, m1->data, m1->len, &m2) == PD_HS_MORE);
  PD_CHECK(m2.len == 69 && m2.data[4] == 'C');
  PD_CHECK(pd_handshake_step(d, m2.data, m2.len, m3) == PD_HS_MORE);
  PD_CHECK(m3->len == 37 && m3->data[4] == 'P');
  pd_buf_free(&m2);
}

/* A dialer without the listener's secret cannot make a proof: the listener
 * refuses it ('N'), and the dialer fails on that verdict. */
static void test_forged_proof_refused_on_both_sides(void) {
  pd_secret k;
  set(&k, "key");
  pd_handshake d, l;
  pd_buf m1, m3, v;
  pd_buf_init(&m1); pd_buf_init(&m3); pd_buf_init(&v);
  to_proof(&d, &l, &k, &m1, &m3);
  m3.data[m3.len - 1] ^= 1;          /* one bit off */
  PD_CHECK(pd_handshake_step(&l, m3.data, m3.len, &v) == PD_AUTH_EDENIED);
  PD_CHECK(v.len == 5 && v.data[4] == 'N');
  PD_CHECK(pd_handshake_awaits(&l) == PD_HS_FAILED && pd_handshake_session(&l) == NULL);
  PD_CHECK(pd_handshake_step(&d, v.data, v.len, &m1) == PD_AUTH_EDENIED);
  PD_CHECK(pd_handshake_awaits(&d) == PD_HS_FAILED);
  /* a failed end stays failed */
  PD_CHECK(pd_handshake_step(&l, m3.data, m3.len, &v) == PD_AUTH_EPROTO);
  pd_buf_free(&m1); pd_buf_free(&m3); pd_buf_free(&v);
}

static void test_replayed_proof_refused(void) {
  pd_secret k;
  set(&k, "key");
  pd_handshake d, l, l2;
  pd_buf m1, m3, v, m2b, v2;
  pd_buf_init(&m1); pd_buf_init(&m3); pd_buf_init(&v); pd_buf_init(&m2b); pd_buf_init(&v2);
  to_proof(&d, &l, &k, &m1, &m3);
  PD_CHECK(pd_handshake_step(&l, m3.data, m3.len, &v) == 0);
  PD_CHECK(v.len == 5 && v.data[4] == 'K');
  /* an eavesdropper replays HELLO and PROOF to a new connection */
  pd_handshake_start(&l2, PD_HS_LISTENER, &k, &m2b);
  PD_CHECK(pd_handshake_step(&l2, m1.data, m1.len, &m2b) == PD_HS_MORE);
  PD_CHECK(pd_handshake_step(&l2, m3.data, m3.len, &v2) == PD_AUTH_EDENIED);
  pd_buf_free(&m1); pd_buf_free(&m3); pd_buf_free(&v); pd_buf_free(&m2b); pd_buf_free(&v2);
}

/* Every message cut short by a byte, and every message where another is
 * awaited, fails with PD_AUTH_EPROTO and nothing to send (but the
 * listener's refusal). */
static void test_truncated_and_out_of_order(void) {
  pd_secret k;
  set(&k, "key");
  pd_handshake d, l, x;
  pd_buf m1, m3, v, out;
  pd_buf_init(&m1); pd_buf_init(&m3); pd_buf_init(&v); pd_buf_init(&out);
  to_proof(&d, &l, &k, &m1, &m3);
  PD_CHECK(pd_handshake_step(&l, m3.data, m3.len, &v) == 0);   /* v: the 'K' verdict */
  /* truncated HELLO, CHALL, PROOF, VERDICT */
  pd_handshake_start(&x, PD_HS_LISTENER, &k, &out);
  PD_CHECK(pd_handshake_step(&x, m1.data, m1.len - 1, &out) == PD_AUTH_EPROTO && out.len == 0);
  PD_CHECK(pd_handshake_awaits(&x) == PD_HS_FAILED);
  pd_handshake_start(&x, PD_HS_LISTENER, &k, &out);
  PD_CHECK(pd_handshake_step(&x, "PDA1H", 5, &out) == PD_AUTH_EPROTO);
  PD_CHECK(pd_handshake_step(&x, "", 0, &out) == PD_AUTH_EPROTO);
  pd_buf chall;
  pd_buf_init(&chall);
  pd_handshake_start(&x, PD_HS_LISTENER, &k, &chall);
  pd_handshake_step(&x, m1.data, m1.len, &chall);
  out.len = 0;
  pd_handshake_start(&d, PD_HS_DIALER, &k, &out);
  out.len = 0;
  PD_CHECK(pd_handshake_step(&d, chall.data, chall.len - 1, &out) == PD_AUTH_EPROTO);
  PD_CHECK(out.len == 0);
  PD_CHECK(pd_handshake_step(&x, m3.data, m3.len - 1, &out) == PD_AUTH_EPROTO);
  PD_CHECK(out.len == 5 && out.data[4] == 'N');             /* the listener refuses */
  out.len = 0;
  pd_handshake_start(&d, PD_HS_DIALER, &k, &out);
  PD_CHECK(pd_handshake_step(&d, chall.data, chall.len, &out) ==   /* another dialer's */
           PD_AUTH_EDENIED);
  out.len = 0;
  pd_handshake_start(&d, PD_HS_DIALER, &k, &out);
  PD_CHECK(pd_handshake_step(&d, v.data, v.len, &out) == PD_AUTH_EPROTO);   /* verdict first */
  /* out of order: PROOF to a listener awaiting HELLO, HELLO to a dialer */
  pd_handshake_start(&x, PD_HS_LISTENER, &k, &out);
  PD_CHECK(pd_handshake_step(&x, m3.data, m3.len, &out) == PD_AUTH_EPROTO);
  out.len = 0;
  pd_handshake_start(&d, PD_HS_DIALER, &k, &out);
  PD_CHECK(pd_handshake_step(&d, m1.data, m1.len, &out) == PD_AUTH_EPROTO);
  /* anything after the end */
  PD_CHECK(pd_handshake_awaits(&l) == PD_HS_DONE);
  PD_CHECK(pd_handshake_step(&l, m3.data, m3.len, &out) == PD_AUTH_EPROTO);
  PD_CHECK(pd_handshake_awaits(&l) == PD_HS_DONE && pd_handshake_session(&l) != NULL);
  char junk[37];
  memset(junk, 'x', sizeof junk);
  pd_handshake_start(&x, PD_HS_LISTENER, &k, &out);
  PD_CHECK(pd_handshake_step(&x, junk, sizeof junk, &out) == PD_AUTH_EPROTO);
  PD_CHECK(strstr(pd_auth_strerror(PD_AUTH_EPROTO), "malformed or out-of-order") != NULL);
  pd_buf_free(&m1); pd_buf_free(&m3); pd_buf_free(&v); pd_buf_free(&out); pd_buf_free(&chall);
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
  {"driver: same secret: both accept, same session key", test_same_secret},
  {"driver: wrong secret: dialer refuses the listener first", test_wrong_secret_dialer_refuses_listener},
  {"driver: forged proof refused on both sides", test_forged_proof_refused_on_both_sides},
  {"driver: replayed proof refused", test_replayed_proof_refused},
  {"driver: truncated and out-of-order messages", test_truncated_and_out_of_order},
  {"secret file permissions", test_secret_file},
  {NULL, NULL},
};
