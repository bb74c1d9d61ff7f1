/*
 * node.c: `pdlua serve`, a node that lends worker processes (see pd.h).
 *
 * One thread runs everything here with poll(): sessions (one per link that
 * proved the secret), the worker processes lent to them, discovery
 * beacons.  The accept thread (link.c) only hands new links over a pipe.
 * The node never looks inside a job: it forwards a slot's frames between
 * the coordinator's link and the worker's socketpair, so batching,
 * ordering and retries stay in the coordinator's scheduler.
 *
 * Lending: at most `cpus` workers at once, over all sessions.  Each
 * coordinator says how many slots it wants ('W'); the node shares what it
 * lends by water-filling (nobody gets more than it wants, the rest is
 * split evenly), so two coordinators on one node each get half and
 * neither starves.  When a share shrinks (a new coordinator, or
 * `pdlua ctl set --cpus` lower) the node says so ('G'); the coordinator
 * gives back idle slots ('X') as their batches finish, and only then does
 * the node start workers for others: running tasks finish, and no more
 * than `cpus` workers ever run new work.
 *
 * Failures: a coordinator whose link ends, or that sends nothing for
 * 4 heartbeats (it pings every heartbeat), is dropped with its workers
 * (killed and reaped); the node keeps serving the others.
 */
#define _GNU_SOURCE
#include "cwire.h"
#include "pd/pd.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SESS 64
#define MAX_WORK 1024

enum { S_FREE = 0, S_HELLO, S_AUTH, S_READY, S_CLOSING };
enum { R_NONE = 0, R_COORD, R_QUERY };

typedef struct sess {
  int state, role;
  pd_link *link;
  pd_conn c;
  pd_handshake hs;
  uint32_t want, grant, held, next_slot;
  double last_rx, closing_at;
  double ping;                  /* the coordinator's ping interval, seconds */
  char peer[80];
} sess;

typedef struct nwork {
  int used, pid, sess, pending;
  double born;
  uint32_t slot;
  pd_conn c;
} nwork;

typedef struct node {
  const pd_node_opts *o;
  char url[512];
  char announce[512];           /* the URL in beacons, when it differs */
  int cpus, gpus;
  sess s[MAX_SESS];
  nwork w[MAX_WORK];
  int nworkers;
  int notify[2];
  pd_listener *ls;
  int beacon_fd;
  struct sockaddr_in beacon_to;
  double next_beacon;
  int quick_deaths;             /* workers in a row that died young */
  double hold_until;            /* start no worker before this (crash loop) */
} node;

static void logf_(node *nd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(node *nd, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "pdlua serve[%s]: %s\n", nd->o->name ? nd->o->name : "node", msg);
  fflush(stderr);
}

/* ---- workers ---------------------------------------------------------------------- */

static int spawn_worker(node *nd, int si) {
  int k = 0;
  while (k < MAX_WORK && nd->w[k].used) k++;
  if (k == MAX_WORK) return -ENOMEM;
  char mem[64];
  snprintf(mem, sizeof mem, "PDLUA_WORKER_MEMORY=%llu", nd->o->memory);
  char name[300];
  snprintf(name, sizeof name, "PDLUA_NODE_NAME=%s", nd->o->name ? nd->o->name : "");
  char *env[] = {"PDLUA_WORKER_FD=3", mem, "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1",
                 "PDLUA_REMOTE_WORKER=1", name, NULL};
  unsigned long long as = nd->o->memory ? nd->o->memory + (1ull << 30) : 0;
  int fd, pid;
  int rc = pd_spawn(nd->o->worker_argv, env, as, &fd, &pid);
  if (rc) return rc;
  nwork *w = &nd->w[k];
  memset(w, 0, sizeof *w);
  w->used = 1;
  w->pid = pid;
  w->born = pd_now();
  w->sess = si;
  sess *s = &nd->s[si];
  w->slot = ++s->next_slot;
  pd_conn_init(&w->c, fd);
  s->held++;
  nd->nworkers++;
  pdi_put_u32frame(&s->c, 'S', w->slot, NULL, 0);
  return 0;
}

/* Kill, reap and forget worker k; tell its coordinator when `tell`. */
static void drop_worker(node *nd, int k, int tell) {
  nwork *w = &nd->w[k];
  sess *s = &nd->s[w->sess];
  pd_kill_reap(w->pid);
  pd_conn_close(&w->c);
  if (s->held) s->held--;
  if (tell && s->state == S_READY) pdi_put_u32frame(&s->c, 'X', w->slot, NULL, 0);
  nd->nworkers--;
  memset(w, 0, sizeof *w);
}

static int busy(const node *nd) {
  int b = 0;
  for (int k = 0; k < MAX_WORK; k++) b += nd->w[k].used && nd->w[k].pending > 0;
  return b;
}

static int nsessions(const node *nd) {
  int n = 0;
  for (int i = 0; i < MAX_SESS; i++) n += nd->s[i].state == S_READY && nd->s[i].role == R_COORD;
  return n;
}

static void send_info(node *nd, sess *s) {
  size_t m = pd_conn_begin(&s->c, 'G');
  pdi_le32_append(&s->c.out, s->grant);
  pdi_le32_append(&s->c.out, (uint32_t)nd->cpus);
  pdi_le32_append(&s->c.out, (uint32_t)nd->gpus);
  pdi_le32_append(&s->c.out, (uint32_t)busy(nd));
  pdi_le32_append(&s->c.out, (uint32_t)nd->nworkers);
  pdi_le32_append(&s->c.out, (uint32_t)nsessions(nd));
  const char *name = nd->o->name ? nd->o->name : "";
  pd_buf_append(&s->c.out, name, strlen(name));
  pd_conn_end(&s->c, m);
}

/* Share the lent CPUs among coordinators (water-filling), tell those
 * whose share changed, and start workers where a share has room. */
static void regrant(node *nd) {
  uint32_t left = (uint32_t)nd->cpus;
  int idx[MAX_SESS], n = 0;
  uint32_t newg[MAX_SESS] = {0};
  for (int i = 0; i < MAX_SESS; i++)
    if (nd->s[i].state == S_READY && nd->s[i].role == R_COORD && nd->s[i].want > 0) idx[n++] = i;
  int open = n;
  int done[MAX_SESS] = {0};
  while (open > 0 && left > 0) {
    uint32_t share = left / (uint32_t)open;
    int settled = 0;
    for (int a = 0; a < n; a++) {
      sess *s = &nd->s[idx[a]];
      if (done[a] || s->want > share) continue;
      newg[a] = s->want;
      left -= s->want;
      done[a] = 1;
      open--;
      settled = 1;
    }
    if (settled) continue;
    /* everyone left wants more than the even share: give it, and the
     * remainder one each to the sessions holding the most now (so that
     * nobody must give a slot back just to take one) */
    uint32_t rem = left - share * (uint32_t)open;
    for (int a = 0; a < n; a++)
      if (!done[a]) newg[a] = share;
    while (rem > 0) {
      int best = -1;
      for (int a = 0; a < n; a++)
        if (!done[a] && newg[a] == share &&
            (best < 0 || nd->s[idx[a]].held > nd->s[idx[best]].held)) best = a;
      if (best < 0) break;
      newg[best]++;
      rem--;
    }
    break;
  }
  for (int i = 0; i < MAX_SESS; i++) {
    sess *s = &nd->s[i];
    if (s->state != S_READY || s->role != R_COORD) continue;
    uint32_t g = 0;
    for (int a = 0; a < n; a++)
      if (idx[a] == i) g = newg[a];
    if (g != s->grant) {
      s->grant = g;
      send_info(nd, s);
    }
  }
  /* start workers, one at a time round the sessions, within the lending
   * (not while a crash loop is held off) */
  if (pd_now() < nd->hold_until) return;
  for (int more = 1; more;) {
    more = 0;
    for (int i = 0; i < MAX_SESS && nd->nworkers < nd->cpus; i++) {
      sess *s = &nd->s[i];
      if (s->state != S_READY || s->role != R_COORD || s->held >= s->grant) continue;
      int rc = spawn_worker(nd, i);
      if (rc) {
        logf_(nd, "cannot start a worker: %s", strerror(-rc));
        return;
      }
      more = 1;
    }
  }
}

/* ---- sessions -------------------------------------------------------------------- */

static void end_session(node *nd, int i, const char *why) {
  sess *s = &nd->s[i];
  int dropped = 0, role = s->role;
  for (int k = 0; k < MAX_WORK; k++)
    if (nd->w[k].used && nd->w[k].sess == i) {
      dropped += nd->w[k].pending;
      drop_worker(nd, k, 0);
    }
  if (role == R_COORD)
    logf_(nd, "coordinator %s left (%s); %d batch%s dropped", s->peer, why, dropped,
          dropped == 1 ? "" : "es");
  else if (why && *why && s->state != S_READY && s->state != S_CLOSING)
    logf_(nd, "refused %s: %s", s->peer, why);
  pd_link_close(s->link);
  s->c.fd = -1;                                    /* the link owned it */
  pd_conn_close(&s->c);
  pd_handshake_wipe(&s->hs);
  memset(s, 0, sizeof *s);
  if (role == R_COORD) regrant(nd);
}

/* Send an error frame, then close once it is out (or after a moment). */
static void refuse(node *nd, int i, const char *msg) {
  sess *s = &nd->s[i];
  pd_conn_put(&s->c, 'E', msg, strlen(msg));
  pd_conn_flush(&s->c);
  logf_(nd, "refused %s: %s", s->peer, msg);
  s->state = S_CLOSING;
  s->closing_at = pd_now() + 1.0;
}

static void new_session(node *nd, pd_link *l) {
  int i = 0;
  while (i < MAX_SESS && nd->s[i].state != S_FREE) i++;
  if (i == MAX_SESS) {
    pd_link_close(l);
    return;
  }
  sess *s = &nd->s[i];
  memset(s, 0, sizeof *s);
  s->state = S_HELLO;
  s->link = l;
  pd_conn_init(&s->c, pd_link_fd(l));
  s->last_rx = pd_now();
  snprintf(s->peer, sizeof s->peer, "%s", pd_link_peer(l));
}

/* One frame from session i.  Returns 0, or -1 when the session must end. */
static int on_sess_frame(node *nd, int i, const char *f, size_t n) {
  sess *s = &nd->s[i];
  int t = (unsigned char)f[0];
  const char *p = f + 1;
  size_t pn = n - 1;
  pd_buf out;
  pd_buf_init(&out);
  if (t == 'E') {
    char why[400];
    snprintf(why, sizeof why, "%s: %.*s", s->state == S_READY ? "it ended the session" :
             "authentication failed; the peer says", (int)(pn > 300 ? 300 : pn), p);
    end_session(nd, i, why);
    return -1;
  }
  if (s->state == S_HELLO) {
    if (t == 'O') {
      if (nd->o->secret) {
        refuse(nd, i, "this node requires the shared secret: give the coordinator "
                      "--secret-file (the same file as the node's)");
        return 0;
      }
      s->state = S_READY;
      return 0;
    }
    if (t == 'A' && !nd->o->secret) {
      refuse(nd, i, "this node has no secret (it serves loopback only, "
                    "unauthenticated): start it with --secret-file to match");
      return 0;
    }
    if (t == 'A') {
      pd_handshake_start(&s->hs, PD_HS_LISTENER, nd->o->secret, &out);
      s->state = S_AUTH;
    }
  }
  if (s->state == S_HELLO || (s->state == S_AUTH && t != 'A')) {
    refuse(nd, i, "protocol violation before authentication");
    return 0;
  }
  if (s->state == S_AUTH) {
    int hello = pd_handshake_awaits(&s->hs) == PD_HS_HELLO;
    int rc = pd_handshake_step(&s->hs, p, pn, &out);
    if (out.len) pd_conn_put(&s->c, 'A', out.data, out.len);      /* CHALL, VERDICT */
    pd_buf_free(&out);
    if (rc < 0)
      refuse(nd, i, hello ? "malformed authentication hello"
                    : rc == PD_AUTH_EDENIED
                        ? "authentication failed: wrong secret (the coordinator's proof "
                          "does not match this node's secret)"
                        : "malformed authentication proof");
    else if (rc == 0)
      s->state = S_READY;
    return 0;
  }
  if (s->state != S_READY) return 0;
  switch (t) {
  case 'W':
    if (pn < 4) return -1;
    if (s->role != R_COORD) logf_(nd, "coordinator %s joined", s->peer);
    s->role = R_COORD;
    s->want = pdi_le32_get(p);
    if (pn >= 8) s->ping = pdi_le32_get(p + 4) / 1000.0;
    regrant(nd);
    send_info(nd, s);
    return 0;
  case 'P':
  case 'I':
    if (t == 'I' && s->role == R_NONE) s->role = R_QUERY;
    send_info(nd, s);
    return 0;
  case 'C': {
    if (pn < 8) return -1;
    uint32_t c = pdi_le32_get(p), g = pdi_le32_get(p + 4);
    if (c != ~0u) nd->cpus = c > PD_NODE_MAX_CPUS ? PD_NODE_MAX_CPUS : (int)c;
    if (g != ~0u) nd->gpus = g > PD_NODE_MAX_GPUS ? PD_NODE_MAX_GPUS : (int)g;
    if (s->role == R_NONE) s->role = R_QUERY;
    logf_(nd, "now lends %d cpus, %d gpus (set by %s)", nd->cpus, nd->gpus, s->peer);
    regrant(nd);
    for (int a = 0; a < MAX_SESS; a++)
      if (nd->s[a].state == S_READY && nd->s[a].role == R_COORD) send_info(nd, &nd->s[a]);
    send_info(nd, s);
    return 0;
  }
  case 'F': {
    if (pn < 5) return -1;
    uint32_t slot = pdi_le32_get(p);
    for (int k = 0; k < MAX_WORK; k++) {
      nwork *w = &nd->w[k];
      if (!w->used || w->sess != i || w->slot != slot) continue;
      if ((unsigned char)p[4] == PD_F_TASKS) w->pending++;
      pd_conn_put(&w->c, (unsigned char)p[4], p + 5, pn - 5);
      break;
    }
    return 0;                                     /* a closed slot: dropped */
  }
  case 'X': {
    if (pn < 4) return -1;
    uint32_t slot = pdi_le32_get(p);
    for (int k = 0; k < MAX_WORK; k++)
      if (nd->w[k].used && nd->w[k].sess == i && nd->w[k].slot == slot) {
        drop_worker(nd, k, 0);
        break;
      }
    regrant(nd);
    return 0;
  }
  default:
    return -1;
  }
}

/* ---- beacons --------------------------------------------------------------------- */

static void send_beacon(node *nd) {
  pd_beacon b;
  memset(&b, 0, sizeof b);
  snprintf(b.name, sizeof b.name, "%s", nd->o->name ? nd->o->name : "");
  snprintf(b.url, sizeof b.url, "%s", nd->announce[0] ? nd->announce : nd->url);
  b.cpus = nd->cpus;
  b.gpus = nd->gpus;
  b.time = pdi_unix_now();
  unsigned char buf[PD_BEACON_MAX];
  int n = pd_beacon_encode(&b, nd->o->secret, buf, sizeof buf);
  if (n > 0)
    sendto(nd->beacon_fd, buf, (size_t)n, 0, (struct sockaddr *)&nd->beacon_to,
           sizeof nd->beacon_to);
}

/* A node listening on every address (0.0.0.0) announces the first
 * non-loopback IPv4 address that is up instead, which others can reach. */
static void announce_url(node *nd) {
  const char *h = strstr(nd->url, "://0.0.0.0:");
  if (!h) return;
  struct ifaddrs *ifs, *i;
  if (getifaddrs(&ifs)) return;
  for (i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK) ||
        !(i->ifa_flags & IFF_UP))
      continue;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, ip, sizeof ip);
    snprintf(nd->announce, sizeof nd->announce, "%.*s://%s:%s", (int)(h - nd->url), nd->url, ip,
             h + 11);
    break;
  }
  freeifaddrs(ifs);
}

/* ---- the loop -------------------------------------------------------------------- */

int pd_node_run(const pd_node_opts *o) {
  node *nd = calloc(1, sizeof *nd);                /* large: on the heap */
  if (!nd) return -1;
  nd->o = o;
  nd->cpus = o->cpus > PD_NODE_MAX_CPUS ? PD_NODE_MAX_CPUS : o->cpus;
  nd->gpus = o->gpus > PD_NODE_MAX_GPUS ? PD_NODE_MAX_GPUS : o->gpus;
  nd->beacon_fd = -1;
  double hb = o->heartbeat > 0 ? o->heartbeat : 1.0;
  int rc = -1;
  char err[256];
  if (!o->secret && !pd_url_is_loopback(o->listen)) {
    fprintf(stderr, "pdlua serve: refusing to listen on %s without a secret: anyone who can "
                    "reach it could run code here.  Give --secret-file FILE (mode 0600), or "
                    "listen on loopback (tcp://127.0.0.1:PORT)\n", o->listen);
    free(nd);
    return -1;
  }
  if (pipe2(nd->notify, O_CLOEXEC | O_NONBLOCK)) {
    free(nd);
    return -1;
  }
  if (pd_listener_open(o->listen, &o->tls, nd->notify[1], &nd->ls, err, sizeof err)) {
    fprintf(stderr, "pdlua serve: %s\n", err);
    goto out;
  }
  /* the URL as others reach it: the port filled in when it was 0 */
  snprintf(nd->url, sizeof nd->url, "%s", o->listen);
  int port = pd_listener_port(nd->ls);
  char *colon = strrchr(nd->url, ':');
  if (port > 0 && colon && strncmp(nd->url, "ipc", 3))
    snprintf(colon + 1, sizeof nd->url - (size_t)(colon + 1 - nd->url), "%d", port);
  if (o->announce) {
    announce_url(nd);
    if (pd_beacon_addr(o->beacon && *o->beacon ? o->beacon : PD_BEACON_GROUP, &nd->beacon_to) ||
        (nd->beacon_fd = pd_beacon_socket(&nd->beacon_to, 0)) < 0) {
      fprintf(stderr, "pdlua serve: cannot send discovery beacons to %s\n",
              o->beacon && *o->beacon ? o->beacon : PD_BEACON_GROUP);
      goto out;
    }
  }
  printf("pdlua serve: listening on %s (lends %d cpus, %d gpus%s%s%s)\n", nd->url, nd->cpus,
         nd->gpus, o->secret ? ", secret required" : ", loopback only, no secret",
         o->announce ? ", announced as " : "",
         o->announce ? (nd->announce[0] ? nd->announce : nd->url) : "");
  fflush(stdout);
  signal(SIGPIPE, SIG_IGN);

  while (!*o->stop) {
    double now = pd_now();
    if (nd->beacon_fd >= 0 && now >= nd->next_beacon) {
      send_beacon(nd);
      nd->next_beacon = now + (hb < 2.0 ? hb : 2.0);
    }
    if (nd->hold_until > 0 && now >= nd->hold_until) {   /* crash-loop pause over */
      nd->hold_until = 0;
      regrant(nd);
    }
    /* sessions silent too long, or done closing */
    for (int i = 0; i < MAX_SESS; i++) {
      sess *s = &nd->s[i];
      if (s->state == S_FREE) continue;
      if (s->state == S_CLOSING && now >= s->closing_at) end_session(nd, i, "");
      else if (s->state != S_CLOSING && s->role != R_QUERY &&
               now - s->last_rx > 4 * (s->ping > hb ? s->ping : hb))
        end_session(nd, i, "silent: no heartbeat");
      else if (s->state != S_READY && s->state != S_CLOSING && now - s->last_rx > 10.0)
        end_session(nd, i, "handshake timed out");
    }
    struct pollfd fds[1 + MAX_SESS + MAX_WORK];
    int who[1 + MAX_SESS + MAX_WORK];
    int nf = 0;
    fds[nf].fd = nd->notify[0]; fds[nf].events = POLLIN; who[nf++] = -1;
    for (int i = 0; i < MAX_SESS; i++) {
      sess *s = &nd->s[i];
      if (s->state == S_FREE) continue;
      pd_conn_flush(&s->c);
      fds[nf].fd = s->c.fd;
      fds[nf].events = POLLIN | (s->c.out.len ? POLLOUT : 0);
      who[nf++] = i;
    }
    for (int k = 0; k < MAX_WORK; k++) {
      nwork *w = &nd->w[k];
      if (!w->used) continue;
      pd_conn_flush(&w->c);
      fds[nf].fd = w->c.fd;
      fds[nf].events = POLLIN | (w->c.out.len ? POLLOUT : 0);
      who[nf++] = MAX_SESS + k;
    }
    int ms = (int)(hb * 250);                     /* a quarter heartbeat */
    if (ms < 20) ms = 20;
    int nr = poll(fds, (nfds_t)nf, ms);
    if (nr < 0 && errno != EINTR) break;
    if (nr <= 0) continue;
    for (int f = 0; f < nf; f++) {
      if (!(fds[f].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      if (who[f] == -1) {
        pd_link *l;
        while (read(nd->notify[0], &l, sizeof l) == (ssize_t)sizeof l) new_session(nd, l);
      } else if (who[f] < MAX_SESS) {
        int i = who[f];
        sess *s = &nd->s[i];
        if (s->state == S_FREE) continue;
        int r = pd_conn_fill(&s->c);
        if (r == -EAGAIN) continue;
        if (r < 0) {
          end_session(nd, i, s->state == S_READY ? "link closed" : "link closed during handshake");
          continue;
        }
        s->last_rx = pd_now();
        if (s->state != S_READY && s->c.in.len - s->c.in_off > PDI_PREAUTH_MAX) {
          end_session(nd, i, "oversized message before authentication");
          continue;
        }
        const char *fp;
        size_t fn;
        int got;
        while (s->state != S_FREE && s->state != S_CLOSING &&
               (got = pd_conn_next(&s->c, &fp, &fn)) == 1) {
          if (on_sess_frame(nd, i, fp, fn) < 0) {
            if (s->state != S_FREE) end_session(nd, i, "protocol error");
            break;
          }
        }
        if (s->state != S_FREE && s->state != S_CLOSING && got < 0)
          end_session(nd, i, "malformed frame");
      } else {
        int k = who[f] - MAX_SESS;
        nwork *w = &nd->w[k];
        if (!w->used) continue;
        sess *s = &nd->s[w->sess];
        int gone = 0;
        for (;;) {
          int r = pd_conn_fill(&w->c);
          if (r == -EAGAIN) break;
          if (r < 0) { gone = 1; break; }
        }
        const char *fp;
        size_t fn;
        int got;
        while ((got = pd_conn_next(&w->c, &fp, &fn)) == 1) {
          if ((unsigned char)fp[0] == PD_F_RESULTS && w->pending > 0) w->pending--;
          size_t m = pd_conn_begin(&s->c, 'F');
          pdi_le32_append(&s->c.out, w->slot);
          pd_buf_append(&s->c.out, fp, fn);
          pd_conn_end(&s->c, m);
        }
        if (got < 0) gone = 1;
        if (gone) {
          /* a worker that dies young again and again (a broken install,
           * no memory) is not restarted in a tight loop */
          double now2 = pd_now();
          nd->quick_deaths = now2 - w->born < 1.0 ? nd->quick_deaths + 1 : 0;
          if (nd->quick_deaths >= 5) {
            nd->hold_until = now2 + 2.0;
            nd->quick_deaths = 0;
            logf_(nd, "workers keep dying at start; waiting 2 s before the next");
          }
          drop_worker(nd, k, 1);
          regrant(nd);
        }
      }
    }
  }
  rc = 0;
  logf_(nd, "stopping");
out:
  for (int i = 0; i < MAX_SESS; i++)
    if (nd->s[i].state != S_FREE) end_session(nd, i, "node stopping");
  pd_listener_close(nd->ls);
  {
    pd_link *l;
    while (read(nd->notify[0], &l, sizeof l) == (ssize_t)sizeof l) pd_link_close(l);
  }
  close(nd->notify[0]);
  close(nd->notify[1]);
  if (nd->beacon_fd >= 0) close(nd->beacon_fd);
  free(nd);
  return rc;
}
