/* proc.c: starting and stopping worker processes (see pd.h). */
#define _GNU_SOURCE
#include "pd/pd.h"
#include "pd/pdi.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define PD_SPAWN_BUFFER (1 << 20)   /* bytes of socket and pipe buffer per worker */

extern char **environ;

char **pd_env_merge(char *const env[]) {
  size_t ne = 0, na = 0;
  while (environ[ne]) ne++;
  while (env && env[na]) na++;
  char **envp = malloc((ne + na + 1) * sizeof *envp);
  if (!envp) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < na; i++) envp[k++] = env[i];
  for (size_t i = 0; i < ne; i++) {           /* ours win over inherited ones */
    const char *eq = strchr(environ[i], '=');
    size_t l = eq ? (size_t)(eq - environ[i]) + 1 : strlen(environ[i]);
    int dup = 0;
    for (size_t j = 0; j < na && !dup; j++) dup = !strncmp(env[j], environ[i], l);
    if (!dup) envp[k++] = environ[i];
  }
  envp[k] = NULL;
  return envp;
}

int pd_spawn(char *const argv[], char *const env[], unsigned long long as_limit,
             int *fd, int *pid) {
  return pd_spawn_rpipe(argv, env, as_limit, fd, NULL, pid);
}

/* rfd NULL: the socketpair only (pd_spawn). */
int pd_spawn_rpipe(char *const argv[], char *const env[], unsigned long long as_limit,
                   int *fd, int *rfd, int *pid) {
  int sv[2], rp[2] = {-1, -1};
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  if (rfd && pipe2(rp, O_CLOEXEC) < 0) {
    int e = errno;
    close(sv[0]); close(sv[1]);
    return -e;
  }
  /* the child's fd 4 must not be clobbered by its fd 3: keep the pipe's
   * write end above both (close-on-exec until the child's dup2) */
  if (rfd && rp[1] < 5) {
    int hi = fcntl(rp[1], F_DUPFD_CLOEXEC, 5);
    if (hi < 0) { int e = errno; close(sv[0]); close(sv[1]); close(rp[0]); close(rp[1]); return -e; }
    close(rp[1]);
    rp[1] = hi;
  }
  /* Room for a whole batch in flight each way, so that a big TASKS frame or
   * RESULTS frame crosses in a few writes instead of a wake-up per 64 KiB
   * (best effort: the kernel caps these at wmem_max and pipe-max-size). */
  int sb = PD_SPAWN_BUFFER;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);
  if (rfd) fcntl(rp[1], F_SETPIPE_SZ, PD_SPAWN_BUFFER);
  /* Build the child's environment before fork: only async-signal-safe calls
   * are allowed between fork and exec in a process that may have threads. */
  char **envp = pd_env_merge(env);
  if (!envp) {
    close(sv[0]); close(sv[1]);
    if (rfd) { close(rp[0]); close(rp[1]); }
    return -ENOMEM;
  }
  pid_t parent = getpid();
  pid_t c = fork();
  if (c < 0) {
    int e = errno;
    free(envp); close(sv[0]); close(sv[1]);
    if (rfd) { close(rp[0]); close(rp[1]); }
    return -e;
  }
  if (c == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);      /* parent already gone */
    setpgid(0, 0);                            /* Ctrl-C goes to the coordinator */
#ifndef PDLUA_SANITIZE
    /* (not under ASan: it reserves terabytes of shadow address space at
     * start, which any RLIMIT_AS forbids; the worker's allocator cap in
     * lua/worker.c still bounds the Lua heap there) */
    if (as_limit) {
      struct rlimit rl = {(rlim_t)as_limit, (rlim_t)as_limit};
      setrlimit(RLIMIT_AS, &rl);
    }
#else
    (void)as_limit;
#endif
    if (dup2(sv[1], 3) < 0) _exit(127);       /* dup2 clears close-on-exec */
    if (rfd && dup2(rp[1], 4) < 0) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_IGN);                  /* the coordinator decides */
    execve(argv[0], argv, envp);
    _exit(127);
  }
  free(envp);
  close(sv[1]);
  int fl = fcntl(sv[0], F_GETFL);
  fcntl(sv[0], F_SETFL, fl | O_NONBLOCK);
  *fd = sv[0];
  if (rfd) {
    close(rp[1]);
    fl = fcntl(rp[0], F_GETFL);
    fcntl(rp[0], F_SETFL, fl | O_NONBLOCK);
    *rfd = rp[0];
  }
  *pid = (int)c;
  return 0;
}

int pd_kill_reap(int pid) {
  int st;
  if (pid <= 0) return -1;
  kill((pid_t)pid, SIGKILL);
  while (waitpid((pid_t)pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return st;
}

const char *pdi_describe_status(int st, char *buf, size_t n) {
  if (st < 0) snprintf(buf, n, "vanished");
  else if (WIFSIGNALED(st)) snprintf(buf, n, "killed by signal %d", WTERMSIG(st));
  else if (WIFEXITED(st)) snprintf(buf, n, "exited with status %d", WEXITSTATUS(st));
  else snprintf(buf, n, "stopped");
  return buf;
}
