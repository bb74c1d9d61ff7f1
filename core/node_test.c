/* node_test.c: a node (node.c) on an ipc:// link, spoken to through links
 * (link.c) and one-shot queries (cluster.c): the handshake both ways,
 * refusals, live lending, and the rule that nothing but the handshake is
 * read before it ends.  Behaviour with real workers: spec/nodes_cluster_spec.lua. */
#define _GNU_SOURCE
#include "cwire.h"
#include "pd/pd.h"
#include "pd_test.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char url[128];
static volatile int stop;
static pd_secret key;
static pthread_t th;
static int node_rc;

static void *run_node(void *arg) {
  (void)arg;
  static char *argv[] = {"/bin/false", NULL};    /* no worker is ever started */
  pd_node_opts o;
  memset(&o, 0, sizeof o);
  o.listen = url;
  o.name = "testnode";
  o.cpus = 3;
  o.secret = &key;
  o.worker_argv = argv;
  o.heartbeat = 0.2;
  o.stop = &stop;
  node_rc = pd_node_run(&o);
  return NULL;
}

static void start(void) {
  snprintf(url, sizeof url, "ipc:///tmp/pdlua-node-test-%d.sock", (int)getpid());
  pd_secret_set(&key, "right", 5);
  stop = 0;
  pthread_create(&th, NULL, run_node, NULL);
  /* ready when a query answers (bounded) */
  pd_node_info info;
  char err[256];
  for (int i = 0; i < 200; i++) {
    if (pd_node_query(url, &key, NULL, -1, -1, 1.0, &info, err, sizeof err) == 0) return;
    usleep(10000);
  }
}

static void finish(void) {
  stop = 1;
  pthread_join(th, NULL);
  unlink(url + 6);
}

static void test_query(void) {
  pd_node_info info;
  char err[256];
  PD_CHECK(pd_node_query(url, &key, NULL, -1, -1, 2.0, &info, err, sizeof err) == 0);
  PD_CHECK(info.cpus == 3 && info.gpus == 0 && info.busy == 0 && info.alive);
  PD_CHECK(strcmp(info.name, "testnode") == 0);
}

static void test_wrong_secret(void) {
  pd_secret bad;
  pd_secret_set(&bad, "wrong", 5);
  pd_node_info info;
  char err[256] = "";
  PD_CHECK(pd_node_query(url, &bad, NULL, -1, -1, 2.0, &info, err, sizeof err) == -1);
  PD_CHECK(strcmp(err, "authentication failed: wrong secret (the node's proof does not "
                       "match our --secret-file)") == 0);
}

static void test_no_secret(void) {
  pd_node_info info;
  char err[256] = "";
  PD_CHECK(pd_node_query(url, NULL, NULL, -1, -1, 2.0, &info, err, sizeof err) == -1);
  PD_CHECK(strstr(err, "requires the shared secret") != NULL);
}

static void test_set_cpus(void) {
  pd_node_info info;
  char err[256];
  PD_CHECK(pd_node_query(url, &key, NULL, 1, 2, 2.0, &info, err, sizeof err) == 0);
  PD_CHECK(info.cpus == 1 && info.gpus == 2);
  PD_CHECK(pd_node_query(url, &key, NULL, -1, -1, 2.0, &info, err, sizeof err) == 0);
  PD_CHECK(info.cpus == 1 && info.gpus == 2);
  /* a ctl past what a node may lend is clamped, and the answer says so */
  PD_CHECK(pd_node_query(url, &key, NULL, 2000000000, 100000, 2.0, &info, err, sizeof err) == 0);
  PD_CHECK(info.cpus == PD_NODE_MAX_CPUS && info.gpus == PD_NODE_MAX_GPUS);
  PD_CHECK(pd_node_query(url, &key, NULL, 3, 0, 2.0, &info, err, sizeof err) == 0);
}

/* Send raw frames on a fresh link; return the type of the frame answered
 * after `skip` others (0 when the node just closed first).  */
static int raw_answer(const pd_conn *frames, int skip, char *text, size_t n) {
  pd_link *l;
  int fd;
  char err[256];
  if (pd_link_dial(url, NULL, 2.0, &l, &fd, err, sizeof err)) return -1;
  pd_conn c;
  pd_conn_init(&c, fd);
  pd_buf_append(&c.out, frames->out.data, frames->out.len);
  int type = 0;
  double end = pd_now() + 3.0;
  while (pd_now() < end) {
    pd_conn_flush(&c);
    struct pollfd pf = {fd, POLLIN, 0};
    poll(&pf, 1, 100);
    int r = pd_conn_fill(&c);
    const char *f;
    size_t fn;
    while (skip > 0 && pd_conn_next(&c, &f, &fn) == 1) skip--;
    if (skip == 0 && pd_conn_next(&c, &f, &fn) == 1) {
      type = (unsigned char)f[0];
      snprintf(text, n, "%.*s", (int)fn - 1, f + 1);
      break;
    }
    if (r < 0 && r != -EAGAIN) break;
  }
  c.fd = -1;
  pd_conn_close(&c);
  pd_link_close(l);
  return type;
}

static int raw_exchange(const pd_conn *frames, char *text, size_t n) {
  return raw_answer(frames, 0, text, n);
}

static void test_nothing_before_proof(void) {
  pd_conn m;
  pd_conn_init(&m, -1);
  pdi_put_u32frame(&m, 'W', 4, NULL, 0);          /* "give me slots", unproven */
  char text[300] = "";
  PD_CHECK(raw_exchange(&m, text, sizeof text) == 'E');
  PD_CHECK(strstr(text, "before authentication") != NULL);
  pd_conn_close(&m);
  /* a frame carrying code, unproven: refused the same way */
  pd_conn_init(&m, -1);
  char blob[64] = {0};
  pdi_put_u32frame(&m, 'F', 1, blob, sizeof blob);
  PD_CHECK(raw_exchange(&m, text, sizeof text) == 'E');
  pd_conn_close(&m);
  /* an oversized frame before the proof: the link is closed, no answer */
  pd_conn_init(&m, -1);
  static char big[PDI_PREAUTH_MAX * 2];
  pd_conn_put(&m, 'A', big, sizeof big);
  PD_CHECK(raw_exchange(&m, text, sizeof text) == 0);
  pd_conn_close(&m);
  /* and the node still serves the proven */
  test_query();
}

/* The node's side of the handshake driver: a HELLO cut short, or a
 * message of the wrong kind, is refused with the step named. */
static void test_malformed_handshake(void) {
  pd_conn m;
  pd_conn_init(&m, -1);
  pd_conn_put(&m, 'A', "PDA1H0123456789", 15);    /* a HELLO without its nonce */
  char text[300] = "";
  PD_CHECK(raw_exchange(&m, text, sizeof text) == 'E');
  PD_CHECK(strcmp(text, "malformed authentication hello") == 0);
  pd_conn_close(&m);
  /* a dialer's HELLO, then (instead of PROOF) its HELLO again */
  pd_handshake h;
  pd_buf hello;
  pd_buf_init(&hello);
  PD_CHECK(pd_handshake_start(&h, PD_HS_DIALER, &key, &hello) == PD_HS_MORE);
  pd_conn_init(&m, -1);
  pd_conn_put(&m, 'A', hello.data, hello.len);
  pd_conn_put(&m, 'A', hello.data, hello.len);
  PD_CHECK(raw_answer(&m, 0, text, sizeof text) == 'A');        /* CHALL */
  PD_CHECK(raw_answer(&m, 1, text, sizeof text) == 'A');        /* the refusal: VERDICT 'N' */
  PD_CHECK(strcmp(text, "PDA1N") == 0);
  PD_CHECK(raw_answer(&m, 2, text, sizeof text) == 'E');        /* and why */
  PD_CHECK(strcmp(text, "malformed authentication proof") == 0);
  pd_conn_close(&m);
  pd_buf_free(&hello);
  pd_handshake_wipe(&h);
  test_query();                                                  /* still serving */
}

static void test_loopback_only_without_secret(void) {
  static char *argv[] = {"/bin/false", NULL};
  volatile int never = 0;
  pd_node_opts o;
  memset(&o, 0, sizeof o);
  o.listen = "tcp://0.0.0.0:0";
  o.cpus = 1;
  o.worker_argv = argv;
  o.stop = &never;
  PD_CHECK(pd_node_run(&o) == -1);              /* refuses before listening */
  PD_CHECK(pd_url_is_loopback("tcp://127.0.0.1:5") && pd_url_is_loopback("ipc:///x") &&
           !pd_url_is_loopback("tcp://10.0.0.1:5") && !pd_url_is_loopback("tls+tcp://0.0.0.0:1"));
  /* addresses read as addresses, not text prefixes */
  PD_CHECK(pd_url_is_loopback("tcp://127.8.9.10:5") && pd_url_is_loopback("tcp://localhost:5") &&
           pd_url_is_loopback("tcp://[::1]:5"));
  PD_CHECK(!pd_url_is_loopback("tcp://127.evil.example:5") &&
           !pd_url_is_loopback("tcp://127.0.0.1.evil.example:5") &&
           !pd_url_is_loopback("tcp://localhost.evil.example:5") &&
           !pd_url_is_loopback("tcp://[::1.evil]:5") && !pd_url_is_loopback("tcp://[::2]:5") &&
           !pd_url_is_loopback("tcp://1270.0.0.1:5") && !pd_url_is_loopback("tcp://"));
}

static void test_dial_nothing(void) {
  pd_link *l;
  int fd;
  char err[256] = "";
  PD_CHECK(pd_link_dial("ipc:///tmp/pdlua-nobody-here.sock", NULL, 1.0, &l, &fd, err,
                        sizeof err) < 0);
  PD_CHECK(strstr(err, "cannot connect") != NULL);
}

static void test_start(void) { start(); }
static void test_finish(void) {
  finish();
  PD_CHECK(node_rc == 0);
}

PD_TESTS = {
  {"node starts on ipc", test_start},
  {"query with the secret", test_query},
  {"wrong secret refused, said why", test_wrong_secret},
  {"missing secret refused, said why", test_no_secret},
  {"lending set live", test_set_cpus},
  {"nothing read before the proof", test_nothing_before_proof},
  {"malformed handshake refused, said why", test_malformed_handshake},
  {"node stops cleanly", test_finish},
  {"no secret: loopback only", test_loopback_only_without_secret},
  {"dial to nobody", test_dial_nothing},
  {NULL, NULL},
};
