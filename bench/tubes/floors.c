/*
 * floors.c: what tubes are measured against (bench/tubes/run.lua).
 *
 *   floors pipe-rtt N            round trip of 1 byte over two pipes
 *   floors pipe-spin-rtt N       the same, each reader polling without sleeping
 *                                for up to 50 us before it sleeps (as a blocked
 *                                tube pop does: lua/tubes.c, TUBE_SPIN_SECONDS)
 *   floors pipe-bw SIZE REPS     SIZE bytes there and back over two pipes
 *                                (1 MiB pipe buffers, as tubes ask for)
 *   floors nng-rtt URL N         round trip of 8 bytes, nng pair0 over URL
 *                                (tcp://127.0.0.1:PORT or ipc:///path)
 *
 * Each prints one line "seconds_per_round_trip" so that run.lua can read
 * it.  Two processes, as tubes have: a fork, then a ping-pong.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void wr(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) _exit(3);
    p += w;
    n -= (size_t)w;
  }
}

static void rd(int fd, char *p, size_t n) {
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) _exit(3);
    p += r;
    n -= (size_t)r;
  }
}

static int spin;                      /* pipe-spin-rtt: readers spin first */

static void rd_spin(int fd, char *p, size_t n) {
  double until = now() + 50e-6;
  while (n) {
    struct pollfd q = {fd, POLLIN, 0};
    if (poll(&q, 1, now() < until ? 0 : -1) <= 0) continue;
    ssize_t r = read(fd, p, n);
    if (r <= 0) _exit(3);
    p += r;
    n -= (size_t)r;
  }
}

static double pipe_pingpong(size_t size, int reps) {
  int a[2], b[2];
  if (pipe(a) || pipe(b)) exit(2);
  fcntl(a[1], F_SETPIPE_SZ, 1 << 20);
  fcntl(b[1], F_SETPIPE_SZ, 1 << 20);
  char *buf = malloc(size);
  if (!buf) exit(2);
  memset(buf, 1, size);
  pid_t c = fork();
  if (c == 0) {
    for (int i = 0; i < reps + 10; i++) {
      if (spin) rd_spin(a[0], buf, size); else rd(a[0], buf, size);
      wr(b[1], buf, size);
    }
    _exit(0);
  }
  for (int i = 0; i < 10; i++) { wr(a[1], buf, size); rd(b[0], buf, size); }
  double t = now();
  for (int i = 0; i < reps; i++) {
    wr(a[1], buf, size);
    if (spin) rd_spin(b[0], buf, size); else rd(b[0], buf, size);
  }
  t = (now() - t) / reps;
  waitpid(c, NULL, 0);
  free(buf);
  return t;
}

static double nng_pingpong(const char *url, int reps) {
  pid_t c = fork();
  if (c == 0) {
    nng_socket s;
    if (nng_pair0_open(&s) || nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK)) _exit(2);
    for (int i = 0; i < reps + 10; i++) {
      nng_msg *m;
      if (nng_recvmsg(s, &m, 0) || nng_sendmsg(s, m, 0)) _exit(3);
    }
    nng_close(s);
    _exit(0);
  }
  nng_socket s;
  if (nng_pair0_open(&s) || nng_listen(s, url, NULL, 0)) { fprintf(stderr, "listen %s\n", url); exit(2); }
  double t = 0;
  for (int i = 0; i < reps + 10; i++) {
    if (i == 10) t = now();
    nng_msg *m;
    if (nng_msg_alloc(&m, 8) || nng_sendmsg(s, m, 0) || nng_recvmsg(s, &m, 0)) exit(3);
    nng_msg_free(m);
  }
  t = (now() - t) / reps;
  waitpid(c, NULL, 0);
  nng_close(s);
  return t;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "pipe-rtt")) {
    printf("%.9f\n", pipe_pingpong(1, atoi(argv[2])));
  } else if (argc >= 3 && !strcmp(argv[1], "pipe-spin-rtt")) {
    spin = 1;
    printf("%.9f\n", pipe_pingpong(1, atoi(argv[2])));
  } else if (argc >= 4 && !strcmp(argv[1], "pipe-bw")) {
    printf("%.9f\n", pipe_pingpong((size_t)atoll(argv[2]), atoi(argv[3])));
  } else if (argc >= 4 && !strcmp(argv[1], "nng-rtt")) {
    printf("%.9f\n", nng_pingpong(argv[2], atoi(argv[3])));
  } else {
    fprintf(stderr, "usage: floors pipe-rtt N | pipe-bw SIZE REPS | nng-rtt URL N\n");
    return 2;
  }
  return 0;
}
