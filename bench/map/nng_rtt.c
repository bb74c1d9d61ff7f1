/* nng_rtt.c: the nng floor: a 16-byte message echoed over pair0 ipc:// between
 * two processes.  Prints the median and min round trip in us.
 * Usage: nng_rtt [iterations] */
#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>
#include <stdio.h>
#define NAME "nng"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 5000;
  char url[128];
  snprintf(url, sizeof url, "ipc:///tmp/pdlua-nng-rtt-%d", (int)getpid());
  pid_t c = fork();
  if (c == 0) {
    nng_socket s;
    if (nng_pair0_open(&s) || nng_listen(s, url, NULL, 0)) _exit(1);
    for (;;) {
      char *buf = NULL;
      size_t len;
      if (nng_recv(s, &buf, &len, NNG_FLAG_ALLOC)) _exit(0);
      int stop = len == 4 && !memcmp(buf, "stop", 4);
      nng_send(s, buf, len, NNG_FLAG_ALLOC);
      if (stop) { nng_close(s); _exit(0); }
    }
  }
  nng_socket s;
  if (nng_pair0_open(&s)) return 1;
  while (nng_dial(s, url, NULL, 0)) usleep(1000);
  double *t = malloc(sizeof *t * n);
  char msg[16] = "0123456789abcdef", back[16];
  for (int i = 0; i < n + 200; i++) {
    size_t len = sizeof back;
    double t0 = now();
    if (nng_send(s, msg, sizeof msg, 0) || nng_recv(s, back, &len, 0)) return 1;
    if (i >= 200) t[i - 200] = (now() - t0) * 1e6;
  }
  size_t len = sizeof back;
  nng_send(s, "stop", 4, 0);
  nng_recv(s, back, &len, 0);
  nng_close(s);
  waitpid(c, NULL, 0);
  qsort(t, n, sizeof *t, cmp);
  printf("{\"system\": \"%s\", \"test\": \"floor\", \"median_us\": %.2f, \"min_us\": %.2f}\n", NAME, t[n / 2], t[0]);
  return 0;
}
