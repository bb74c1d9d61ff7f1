/* beacon_test.c: discovery beacons, encoded, checked and sent on loopback. */
#define _GNU_SOURCE
#include "pd/pd.h"
#include "pd_test.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static pd_beacon sample(void) {
  pd_beacon b;
  memset(&b, 0, sizeof b);
  strcpy(b.name, "lab-pc-3");
  strcpy(b.url, "tcp://10.1.2.3:27180");
  b.cpus = 6;
  b.gpus = 1;
  b.time = 1700000000.25;
  return b;
}

static void test_round_trip_plain(void) {
  pd_beacon b = sample(), d;
  unsigned char buf[PD_BEACON_MAX];
  int n = pd_beacon_encode(&b, NULL, buf, sizeof buf);
  PD_CHECK(n > 0);
  PD_CHECK(pd_beacon_decode(buf, (size_t)n, NULL, 0, &d) == 0);
  PD_CHECK(strcmp(d.name, b.name) == 0 && strcmp(d.url, b.url) == 0);
  PD_CHECK(d.cpus == 6 && d.gpus == 1 && !d.authenticated);
  PD_CHECK(d.time > 1700000000.2 && d.time < 1700000000.3);
}

static void test_authenticated(void) {
  pd_secret k, other;
  pd_secret_set(&k, "lab secret", 10);
  pd_secret_set(&other, "not it", 6);
  pd_beacon b = sample(), d;
  unsigned char buf[PD_BEACON_MAX];
  int n = pd_beacon_encode(&b, &k, buf, sizeof buf);
  PD_CHECK(n > 0);
  PD_CHECK(pd_beacon_decode(buf, (size_t)n, &k, b.time + 1, &d) == 0 && d.authenticated);
  PD_CHECK(pd_beacon_decode(buf, (size_t)n, &other, b.time + 1, &d) == -EACCES);
  PD_CHECK(pd_beacon_decode(buf, (size_t)n, &k, b.time + 3600, &d) == -ESTALE);
  buf[10] ^= 1;                                   /* tampered timestamp */
  PD_CHECK(pd_beacon_decode(buf, (size_t)n, &k, b.time + 1, &d) == -EACCES);
  /* a receiver with a secret refuses beacons without a MAC */
  n = pd_beacon_encode(&b, NULL, buf, sizeof buf);
  PD_CHECK(pd_beacon_decode(buf, (size_t)n, &k, b.time, &d) == -EACCES);
}

static void test_malformed(void) {
  pd_beacon b = sample(), d;
  unsigned char buf[PD_BEACON_MAX];
  int n = pd_beacon_encode(&b, NULL, buf, sizeof buf);
  for (int cut = 0; cut < n; cut++)                /* every truncation */
    PD_CHECK(pd_beacon_decode(buf, (size_t)cut, NULL, 0, &d) == -EPROTO);
  buf[4] = 9;                                      /* unknown version */
  PD_CHECK(pd_beacon_decode(buf, (size_t)n, NULL, 0, &d) == -EPROTO);
  unsigned char junk[64];
  memset(junk, 0xff, sizeof junk);
  PD_CHECK(pd_beacon_decode(junk, sizeof junk, NULL, 0, &d) == -EPROTO);
}

static void test_addr(void) {
  struct sockaddr_in a;
  PD_CHECK(pd_beacon_addr("239.255.80.76:27182", &a) == 0 && ntohs(a.sin_port) == 27182);
  PD_CHECK(pd_beacon_addr("127.0.0.1", &a) == 0 && ntohs(a.sin_port) == PD_BEACON_PORT);
  PD_CHECK(pd_beacon_addr("localhost:1", &a) == -EINVAL);   /* numeric only */
  PD_CHECK(pd_beacon_addr("1.2.3.4:99999", &a) == -EINVAL);
}

/* Send a beacon to a receiver on 127.0.0.1 (an ephemeral port) and wait for
 * it with a deadline. */
static void test_loopback_socket(void) {
  struct sockaddr_in a;
  PD_CHECK(pd_beacon_addr("127.0.0.1:1", &a) == 0);
  a.sin_port = 0;
  int rx = pd_beacon_socket(&a, 1);
  PD_CHECK(rx >= 0);
  socklen_t al = sizeof a;
  getsockname(rx, (struct sockaddr *)&a, &al);     /* learn the port */
  int tx = pd_beacon_socket(&a, 0);
  PD_CHECK(tx >= 0);
  pd_secret k;
  pd_secret_set(&k, "s", 1);
  pd_beacon b = sample(), d;
  b.time = 1000.0;
  unsigned char buf[PD_BEACON_MAX];
  int n = pd_beacon_encode(&b, &k, buf, sizeof buf);
  PD_CHECK(sendto(tx, buf, (size_t)n, 0, (struct sockaddr *)&a, sizeof a) == n);
  struct pollfd pfd = {rx, POLLIN, 0};
  PD_CHECK(poll(&pfd, 1, 5000) == 1);
  ssize_t r = recv(rx, buf, sizeof buf, 0);
  PD_CHECK(r == n);
  PD_CHECK(pd_beacon_decode(buf, (size_t)r, &k, 1001.0, &d) == 0);
  PD_CHECK(strcmp(d.url, "tcp://10.1.2.3:27180") == 0 && d.authenticated);
  close(tx);
  close(rx);
}

PD_TESTS = {
  {"plain round trip", test_round_trip_plain},
  {"authenticated: MAC, other secret, replay window", test_authenticated},
  {"malformed and truncated", test_malformed},
  {"address parsing", test_addr},
  {"sent and received on loopback", test_loopback_socket},
  {NULL, NULL},
};
