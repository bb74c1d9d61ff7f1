/*
 * sched_test.c: the scheduler and the frames with a C echo worker: this
 * test binary started again as "test_sched worker" answers each task with
 * its own bytes; an argument "sleep" makes it hang, "die" makes it exit.
 */
#define _GNU_SOURCE
#include "pd/pd.h"
#include "pd_test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char self[4096];

static int worker_main(void) {
  pd_conn c;
  pd_conn_init2(&c, 3, getenv("PDLUA_WORKER_WFD") ? 4 : 3);   /* as lua/worker.c's */
  for (;;) {
    int r = pd_conn_fill(&c);
    if (r < 0) _exit(0);
    const char *f;
    size_t n;
    while (pd_conn_next(&c, &f, &n) == 1) {
      if (f[0] != PD_F_TASKS) continue;
      uint32_t job, count;
      memcpy(&job, f + 1, 4);
      memcpy(&count, f + 5, 4);
      size_t m = pd_conn_begin(&c, PD_F_RESULTS);
      pd_buf_append(&c.out, &job, 4);
      pd_buf_append(&c.out, &count, 4);
      double secs = 1e-6 * count;
      pd_buf_append(&c.out, &secs, 8);
      size_t off = 9;
      for (uint32_t e = 0; e < count; e++) {
        uint32_t idx, len;
        memcpy(&idx, f + off, 4);
        memcpy(&len, f + off + 4, 4);
        const char *arg = f + off + 8;
        off += 8 + len;
        if (len == 5 && !memcmp(arg, "sleep", 5)) for (;;) pause();
        if (len == 3 && !memcmp(arg, "die", 3)) _exit(9);
        unsigned char st = PD_T_DONE;
        pd_buf_append(&c.out, &idx, 4);
        pd_buf_append(&c.out, &st, 1);
        pd_buf_append(&c.out, &len, 4);
        pd_buf_append(&c.out, arg, len);
      }
      pd_conn_end(&c, m);
      if (pd_conn_flush(&c) < 0) _exit(0);
    }
  }
}

static pd_pool *new_pool(int workers) {
  char *argv[] = {self, "worker", NULL};
  pd_pool_opts o = {workers, 0, argv, 0};
  return pd_pool_new(&o);
}

/* Submit n tasks whose argument is "t<i>" (or special words) and run the job
 * to its end, with a deadline. */
static pd_job *run(pd_pool *p, uint32_t n, const char *special, uint32_t at,
                   const pd_job_opts *o) {
  pd_job *j = pd_job_new(p, "fn", 2, n, o);
  for (uint32_t i = 0; i < n; i++) {
    char a[32];
    int len = (i == at && special) ? snprintf(a, sizeof a, "%s", special)
                                   : snprintf(a, sizeof a, "t%u", i);
    pd_buf_append(pd_job_argbuf(j), a, (size_t)len);
    pd_job_argend(j);
  }
  pd_pool_submit(p, j);
  double deadline = pd_now() + 30;
  while (pd_job_status(j) <= PD_JOB_RUNNING && pd_now() < deadline)
    PD_CHECK(pd_pool_pump(p, 1.0) >= 0);
  return j;
}

static void test_echo_in_order(void) {
  pd_pool *p = new_pool(2);
  pd_job_opts o = {0};
  o.stop_on_error = 1;
  pd_job *j = run(p, 10000, NULL, 0, &o);
  PD_CHECK(pd_job_status(j) == PD_JOB_DONE);
  for (uint32_t i = 0; i < 10000; i++) {
    const char *b;
    size_t n;
    char want[32];
    int wl = snprintf(want, sizeof want, "t%u", i);
    PD_CHECK(pd_job_task(j, i, &b, &n, NULL) == PD_T_DONE);
    PD_CHECK(n == (size_t)wl && !memcmp(b, want, n));
  }
  pd_pool_stats s;
  pd_pool_stats_get(p, &s);
  PD_CHECK(s.frames_out < 2000);               /* batched */
  PD_CHECK(s.spawned == 2);
  pd_pool_free(p);
}

static void test_lost_worker_retried_then_failed(void) {
  pd_pool *p = new_pool(2);
  pd_job_opts o = {0};
  o.retries = 1;
  pd_job *j = run(p, 50, "die", 7, &o);        /* collect: all tasks end */
  PD_CHECK(pd_job_status(j) == PD_JOB_DONE);
  uint32_t d, t, f;
  pd_job_progress(j, &d, &t, &f);
  PD_CHECK(d == 50 && t == 50 && f == 1);
  const char *b;
  size_t n;
  PD_CHECK(pd_job_task(j, 7, &b, &n, NULL) == PD_T_FAILED);
  PD_CHECK(memmem(b, n, "lost", 4) != NULL);
  PD_CHECK(pd_job_task(j, 8, &b, &n, NULL) == PD_T_DONE);
  pd_pool_free(p);
}

/* A task's clock starts when its batch is sent, so a task sent to a worker
 * that is still starting pays for the start (exec, ASan's set-up: past
 * 0.2 s on a loaded machine).  Only warm workers run the timed tasks here:
 * two start first; the job may use one (cpus = 1), so after the kill the
 * tasks queued behind the runaway run again on the other, and nothing that
 * must not time out waits on a start.  The timeout then bounds an echo on a
 * warm worker, far below 0.5 s even under load. */
static void test_timeout_kills_and_replaces(void) {
  pd_pool *p = new_pool(2);
  pd_job_opts warm = {0};
  PD_CHECK(pd_job_status(run(p, 2, NULL, 0, &warm)) == PD_JOB_DONE);   /* both started */
  pd_pool_stats s;
  pd_pool_stats_get(p, &s);
  PD_CHECK(s.spawned == 2);
  pd_job_opts o = {0};
  o.timeout = 0.5;
  o.cpus = 1;
  pd_job *j = run(p, 5, "sleep", 2, &o);
  PD_CHECK(pd_job_status(j) == PD_JOB_DONE);
  const char *b;
  size_t n;
  int pid = 0;
  PD_CHECK(pd_job_task(j, 2, &b, &n, &pid) == PD_T_FAILED);
  PD_CHECK(memmem(b, n, "timed out", 9) != NULL);
  PD_CHECK(pid > 0 && kill(pid, 0) != 0);            /* killed and reaped */
  for (uint32_t i = 0; i < 5; i++)                   /* the rest ran, some again */
    if (i != 2) PD_CHECK(pd_job_task(j, i, &b, &n, NULL) == PD_T_DONE);
  pd_pool_stats_get(p, &s);
  PD_CHECK(s.spawned == 2 && s.lost == 1);           /* nothing else timed out */
  /* work for two workers again: the killed one is replaced */
  PD_CHECK(pd_job_status(run(p, 4, NULL, 0, &warm)) == PD_JOB_DONE);
  pd_pool_stats_get(p, &s);
  PD_CHECK(s.spawned == 3);
  pd_pool_free(p);
}

static void test_cancel_stops_running(void) {
  pd_pool *p = new_pool(1);
  pd_job_opts o = {0};
  pd_job *j = pd_job_new(p, "fn", 2, 1, &o);
  pd_buf_append(pd_job_argbuf(j), "sleep", 5);
  pd_job_argend(j);
  pd_pool_submit(p, j);
  pd_pool_pump(p, 0.05);
  int pid;
  PD_CHECK(pd_pool_pids(p, &pid, 1) == 1);
  pd_pool_cancel(p, j);
  PD_CHECK(pd_job_status(j) == PD_JOB_CANCELLED);
  PD_CHECK(kill(pid, 0) != 0);                 /* killed and reaped */
  pd_pool_free(p);
}

static void test_frames_malformed(void) {
  pd_conn c;
  int sv[2];
  PD_CHECK(pipe(sv) == 0);
  pd_conn_init(&c, sv[0]);
  unsigned char bad[8] = {0, 0, 0, 0, 1, 2, 3, 4};   /* zero length */
  PD_CHECK(write(sv[1], bad, sizeof bad) == (ssize_t)sizeof bad);
  PD_CHECK(pd_conn_fill(&c) == 8);
  const char *f;
  size_t n;
  PD_CHECK(pd_conn_next(&c, &f, &n) == -EPROTO);
  close(sv[1]);
  pd_conn_close(&c);
}

/* pd_conn_init2: frames out on one pipe, in on another; close closes both
 * fds; a zeroed pd_conn (wfd 0) writes to its fd. */
static void test_conn_split(void) {
  int a[2], b[2];
  PD_CHECK(pipe(a) == 0 && pipe(b) == 0);
  pd_conn x, y;
  pd_conn_init2(&x, a[0], b[1]);
  pd_conn_init2(&y, b[0], a[1]);
  PD_CHECK(pd_conn_put(&x, 7, "hi", 2) == 0);
  PD_CHECK(pd_conn_flush(&x) == 0);
  PD_CHECK(pd_conn_fill(&y) == 7);
  const char *f;
  size_t n;
  PD_CHECK(pd_conn_next(&y, &f, &n) == 1 && n == 3 && f[0] == 7 && !memcmp(f + 1, "hi", 2));
  PD_CHECK(pd_conn_put(&y, 8, NULL, 0) == 0 && pd_conn_flush(&y) == 0);
  PD_CHECK(pd_conn_fill(&x) == 5);
  pd_conn_close(&x);
  pd_conn_close(&y);
  PD_CHECK(fcntl(a[0], F_GETFD) < 0 && fcntl(a[1], F_GETFD) < 0);
  PD_CHECK(fcntl(b[0], F_GETFD) < 0 && fcntl(b[1], F_GETFD) < 0);
  pd_conn z;
  memset(&z, 0, sizeof z);
  pd_conn_init(&z, -1);
  PD_CHECK(z.wfd == 0);
  pd_conn_close(&z);
}

/* The coordinator's side of a local worker reads a pipe and writes a
 * socket: a worker that died must give -EPIPE on the next flush, never
 * SIGPIPE (which would kill the coordinator).  SIGPIPE is at its default
 * here, so a regression kills this test. */
static void test_conn_split_socket_no_sigpipe(void) {
  int sv[2], r[2];
  PD_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0 && pipe(r) == 0);
  pd_conn c;
  pd_conn_init2(&c, r[0], sv[0]);
  PD_CHECK(c.wsock == 1);
  close(sv[1]);                                    /* the worker is gone */
  void (*old)(int) = signal(SIGPIPE, SIG_DFL);
  PD_CHECK(pd_conn_put(&c, 7, "hi", 2) == 0);
  PD_CHECK(pd_conn_flush(&c) == -EPIPE);
  signal(SIGPIPE, old);
  close(r[1]);
  pd_conn_close(&c);
}

int tests_main(void);
#define main tests_main
PD_TESTS = {
  {"echo 10^4 tasks in order, batched", test_echo_in_order},
  {"a lost worker's task is retried, then failed", test_lost_worker_retried_then_failed},
  {"timeout kills and replaces the worker", test_timeout_kills_and_replaces},
  {"cancel kills the worker of a running task", test_cancel_stops_running},
  {"a malformed frame is refused", test_frames_malformed},
  {"a connection reads one pipe and writes another", test_conn_split},
  {"writing to a dead worker's socket is -EPIPE, not SIGPIPE", test_conn_split_socket_no_sigpipe},
  {NULL, NULL},
};
#undef main

int main(int argc, char **argv) {
  ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
  if (k <= 0) return 1;
  self[k] = 0;
  if (argc > 1 && !strcmp(argv[1], "worker")) return worker_main();
  signal(SIGPIPE, SIG_IGN);
  return tests_main();
}
