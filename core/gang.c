/* gang.c: starting the nodes of a task set with their tube ends (see pd.h).
 *
 * pd_spawn (proc.c) gives a worker one socketpair on fd 3.  A node of a task
 * set needs more: each of its tubes is one end of a pipe created by the
 * coordinator before the nodes start (lua/gang.c), so that tubes go
 * straight from node to node and never through the coordinator
 * (docs/tasks.md, "Tubes").
 * The ends are placed at fixed numbers (4, 5, ...) across exec: no
 * SCM_RIGHTS round trip, and nothing to pass after the start. */
#define _GNU_SOURCE
#include "pd/pd.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>


#define GANG_MAX_PASS 4096

int pd_spawn_fds(char *const argv[], char *const env[], unsigned long long as_limit,
                 const int *pass, int npass, int *fd, int *pid) {
  if (npass < 0 || npass > GANG_MAX_PASS) return -EINVAL;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  /* Everything the child needs is built before fork (only async-signal-safe
   * calls between fork and exec): the environment (ours win over inherited
   * ones, as in pd_spawn) and a scratch table for the descriptor shuffle. */
  char **envp = pd_env_merge(env);
  int *tmp = malloc(((size_t)npass + 1) * sizeof *tmp);
  if (!envp || !tmp) {
    free(envp); free(tmp);
    close(sv[0]); close(sv[1]);
    return -ENOMEM;
  }
  /* The coordinator may poke a node (SIGUSR1) as soon as it exists; until
   * the child ignores the signal it must not arrive: block it across fork. */
  sigset_t usr1, oldmask;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, &oldmask);
  pid_t parent = getpid();
  pid_t c = fork();
  if (c != 0) pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
  if (c < 0) {
    int e = errno;
    free(envp); free(tmp);
    close(sv[0]); close(sv[1]);
    return -e;
  }
  if (c == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    setpgid(0, 0);
    if (as_limit) {
      struct rlimit rl = {(rlim_t)as_limit, (rlim_t)as_limit};
      setrlimit(RLIMIT_AS, &rl);
    }
    /* Move every source above the targets first (close-on-exec copies), so
     * that placing one never overwrites another still to be placed. */
    int base = 4 + npass + 16;
    tmp[0] = fcntl(sv[1], F_DUPFD_CLOEXEC, base);
    if (tmp[0] < 0) _exit(127);
    for (int i = 0; i < npass; i++) {
      tmp[i + 1] = fcntl(pass[i], F_DUPFD_CLOEXEC, base);
      if (tmp[i + 1] < 0) _exit(127);
    }
    if (dup2(tmp[0], 3) < 0) _exit(127);         /* dup2 clears close-on-exec */
    for (int i = 0; i < npass; i++)
      if (dup2(tmp[i + 1], 4 + i) < 0) _exit(127);
    signal(SIGUSR1, SIG_IGN);   /* the coordinator's pokes, until the node listens */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_IGN);
    execve(argv[0], argv, envp);
    _exit(127);
  }
  free(envp);
  free(tmp);
  close(sv[1]);
  int fl = fcntl(sv[0], F_GETFL);
  fcntl(sv[0], F_SETFL, fl | O_NONBLOCK);
  *fd = sv[0];
  *pid = (int)c;
  return 0;
}
