/* pipe_rtt.c: the floor for a local round trip: 1 byte over a pipe pair
 * between two processes, there and back.  Prints the median and min in us.
 * Usage: pipe_rtt [iterations] [socketpair]   (socketpair: the same over a
 * unix stream socketpair, what pd.map's workers use) */
#include <stdio.h>
#define NAME "pipe"
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <string.h>

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
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  int ab[2], ba[2];
  int sock = argc > 2 && !strcmp(argv[2], "socketpair");
  if (sock) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 1;
    /* one connection both ways: [0] parent end, [1] child end */
    ab[0] = sv[1]; ab[1] = sv[0]; ba[0] = dup(sv[0]); ba[1] = dup(sv[1]);
  } else if (pipe(ab) || pipe(ba)) return 1;
  pid_t c = fork();
  if (c == 0) {
    char x;
    close(ab[1]);
    close(ba[0]);
    while (read(ab[0], &x, 1) == 1) if (write(ba[1], &x, 1) != 1) break;
    _exit(0);
  }
  close(ab[0]);
  close(ba[1]);
  double *t = malloc(sizeof *t * n);
  char x = 'x';
  for (int i = 0; i < n + 200; i++) {
    double t0 = now();
    if (write(ab[1], &x, 1) != 1 || read(ba[0], &x, 1) != 1) return 1;
    if (i >= 200) t[i - 200] = (now() - t0) * 1e6;
  }
  close(ab[1]);
  close(ba[0]);                 /* the child sees end of stream either way */
  waitpid(c, NULL, 0);
  qsort(t, n, sizeof *t, cmp);
  printf("{\"system\": \"%s\", \"test\": \"floor\", \"median_us\": %.2f, \"min_us\": %.2f}\n",
         sock ? "socketpair" : NAME, t[n / 2], t[0]);
  return 0;
}
