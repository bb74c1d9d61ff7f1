/*
 * cluster.c: the coordinator's side of a cluster (see pd.h and cwire.h).
 *
 * A bridge thread (no Lua in it) holds one link per node: it dials (each
 * attempt in a short-lived helper thread, so one unreachable node delays
 * nobody), proves the secret, says how many slots it wants, pings every
 * heartbeat, and forwards frames between each remote slot and its
 * socketpair end in the scheduler.  The scheduler sees a remote slot as a
 * worker fd like any other: batching, ordering and retries stay in one
 * place (sched.c).  Changes the scheduler must see (a slot to attach, a
 * slot to retire) go into a queue that the pool's thread drains in
 * pd_cluster_hook, woken through a pipe: nothing here touches a pool or a
 * lua_State from the bridge thread.
 *
 * Failures: a node whose link ends (killed: the kernel closes its sockets)
 * or that is silent for 4 heartbeats (cut off) is dropped: each slot's
 * socketpair is closed, the scheduler sees end of stream and runs the
 * slot's in-flight tasks again elsewhere.  The node is dialled again with
 * a back-off of at most 2 s, and rejoins when it answers.
 */
#define _GNU_SOURCE
#include "cwire.h"
#include "pd/pd.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { N_DOWN = 0, N_DIALING, N_OPENWAIT, N_AUTH, N_READY, N_REFUSED };
enum { OP_ATTACH = 1, OP_RETIRE };

typedef struct cslot {
  uint32_t slot;
  int ext, retiring;
  pd_conn c;                    /* the bridge's end of the socketpair */
} cslot;

typedef struct cnode {
  char url[256];
  int state, ready_once, tries;
  pd_link *link;
  pd_conn c;
  pd_handshake hs;
  double last_rx, next_ping, next_dial;
  uint32_t want_sent;
  pd_node_info info;
  cslot *slots;
  int nslots, capslots;
  /* a finished dial, handed over by its helper thread */
  pd_link *dialed;
  int dial_done, dial_rc;
  char dial_err[256];
} cnode;

typedef struct op { int kind, ext, fd; } op;

struct pd_cluster {
  pd_cluster_opts o;
  pd_secret secret;
  char ca[512];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  cnode **nodes;
  int nn, capn;
  int ctl[2];                   /* wakes the bridge thread */
  int wake[2];                  /* wakes the pool's pump */
  op *ops;
  size_t nops, capops;
  uint32_t demand, want;
  double demand_at;
  int stop, dials, orphaned;
  pthread_t th;
  int started;
  int next_ext;
  int beacon_fd;
};

static void poke(int fd) {
  char b = 1;
  ssize_t r = write(fd, &b, 1);
  (void)r;
}

static int push_op(pd_cluster *c, int kind, int ext, int fd) {
  if (c->nops == c->capops) {
    size_t cap = c->capops ? c->capops * 2 : 16;
    op *o = realloc(c->ops, cap * sizeof *o);
    if (!o) return -ENOMEM;
    c->ops = o;
    c->capops = cap;
  }
  c->ops[c->nops++] = (op){kind, ext, fd};
  poke(c->wake[1]);
  return 0;
}

/* ---- nodes (bridge thread, c->mu held) ---------------------------------------------- */

static void close_slot(cslot *s) { pd_conn_close(&s->c); }

/* The node is gone or refused us: close its link and every slot (the
 * scheduler reruns their tasks), and plan the next dial. */
static void node_down(pd_cluster *c, cnode *n, int state, const char *why) {
  for (int k = 0; k < n->nslots; k++) close_slot(&n->slots[k]);
  n->nslots = 0;
  if (n->link) {
    pd_conn_flush(&n->c);
    pd_link_close(n->link);
    n->link = NULL;
    n->c.fd = -1;
    pd_conn_close(&n->c);
  }
  pd_handshake_wipe(&n->hs);
  if (why && *why) snprintf(n->info.error, sizeof n->info.error, "%s", why);
  if (n->state == N_READY && state != N_READY)
    fprintf(stderr, "pdlua: node %s lost (%s); its tasks run elsewhere\n", n->url, why);
  n->state = state;
  n->info.alive = 0;
  n->info.held = 0;
  n->want_sent = 0;
  double back = 0.2 * (1 << (n->tries < 4 ? n->tries : 4));
  if (back > 2.0) back = 2.0;
  n->next_dial = pd_now() + back;
  n->tries++;
  pthread_cond_broadcast(&c->cv);
}

/* What a dial helper needs, copied: it must not read the node or the
 * cluster's settings while it dials (pd_cluster_free may run meanwhile). */
typedef struct dialarg {
  pd_cluster *c;
  cnode *n;                     /* touched only under c->mu, and only if !c->stop */
  char url[256], ca[512];
  double timeout;
} dialarg;

static void *dial_thread(void *arg) {
  dialarg *d = arg;
  pd_cluster *c = d->c;
  cnode *n = d->n;
  pd_tls tls = {NULL, NULL, d->ca[0] ? d->ca : NULL};
  char err[256] = "";
  pd_link *l = NULL;
  int fd;
  int rc = pd_link_dial(d->url, &tls, d->timeout, &l, &fd, err, sizeof err);
  free(d);
  pthread_mutex_lock(&c->mu);
  if (c->stop) {                                 /* the cluster is going away */
    if (l) pd_link_close(l);
    int last = --c->dials == 0 && c->orphaned;
    pthread_mutex_unlock(&c->mu);
    if (last) {                                  /* pd_cluster_free left it to us */
      pthread_mutex_destroy(&c->mu);
      pthread_cond_destroy(&c->cv);
      free(c);
    }
    return NULL;
  }
  n->dialed = l;
  n->dial_rc = rc;
  snprintf(n->dial_err, sizeof n->dial_err, "%s", err);
  n->dial_done = 1;
  poke(c->ctl[1]);                               /* under the lock: c is alive */
  c->dials--;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

static void start_dial(pd_cluster *c, cnode *n) {
  dialarg *d = malloc(sizeof *d);
  if (!d) return;
  d->c = c;
  d->n = n;
  snprintf(d->url, sizeof d->url, "%s", n->url);
  snprintf(d->ca, sizeof d->ca, "%s", c->ca);
  d->timeout = c->o.connect_timeout > 0 ? c->o.connect_timeout : 5.0;
  pthread_t t;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  n->state = N_DIALING;
  n->dial_done = 0;
  c->dials++;
  if (pthread_create(&t, &at, dial_thread, d)) {
    free(d);
    c->dials--;
    n->state = N_DOWN;
    n->next_dial = pd_now() + 1.0;
  }
  pthread_attr_destroy(&at);
}

/* 'W': slots wanted, and how often we ping (the node's silence limit). */
static void send_want(pd_cluster *c, cnode *n, uint32_t want) {
  unsigned char ms[4];
  pdi_le32_put(ms, (uint32_t)(c->o.heartbeat * 1000));
  pdi_put_u32frame(&n->c, 'W', want, ms, 4);
  n->want_sent = want;
}

static void dial_finished(pd_cluster *c, cnode *n) {
  n->dial_done = 0;
  if (n->dial_rc || !n->dialed) {
    n->state = N_DIALING;                        /* node_down logs only READY ones */
    node_down(c, n, N_DOWN, n->dial_err);
    return;
  }
  n->link = n->dialed;
  n->dialed = NULL;
  pd_conn_init(&n->c, pd_link_fd(n->link));
  n->last_rx = pd_now();
  if (c->secret.len) {
    pd_buf out;
    pd_buf_init(&out);
    pd_handshake_start(&n->hs, PD_HS_DIALER, &c->secret, &out);
    pd_conn_put(&n->c, 'A', out.data, out.len);
    pd_buf_free(&out);
    n->state = N_AUTH;
  } else {
    pd_conn_put(&n->c, 'O', "pdlua", 5);
    send_want(c, n, c->want);
    n->state = N_OPENWAIT;
  }
}

static void became_ready(pd_cluster *c, cnode *n) {
  n->state = N_READY;
  n->tries = 0;
  n->info.alive = 1;
  n->info.error[0] = '\0';
  if (n->ready_once) fprintf(stderr, "pdlua: node %s is back\n", n->url);
  n->ready_once = 1;
  n->next_ping = pd_now() + c->o.heartbeat;
  pthread_cond_broadcast(&c->cv);
}

/* Give back slots beyond the node's grant: the scheduler finishes their
 * batches, then closes them (we then tell the node 'X'). */
static void apply_grant(pd_cluster *c, cnode *n) {
  int open = 0;
  for (int k = 0; k < n->nslots; k++) open += !n->slots[k].retiring;
  for (int k = n->nslots - 1; k >= 0 && open > n->info.granted; k--) {
    cslot *s = &n->slots[k];
    if (s->retiring) continue;
    s->retiring = 1;
    open--;
    push_op(c, OP_RETIRE, s->ext, -1);
  }
  n->info.held = open;
}

static void slot_open(pd_cluster *c, cnode *n, uint32_t slot) {
  int sv[2];
  if (n->nslots == n->capslots) {
    int cap = n->capslots ? n->capslots * 2 : 8;
    cslot *s = realloc(n->slots, (size_t)cap * sizeof *s);
    if (!s) return;
    n->slots = s;
    n->capslots = cap;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) return;
  fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
  fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
  cslot *s = &n->slots[n->nslots++];
  memset(s, 0, sizeof *s);
  s->slot = slot;
  s->ext = ++c->next_ext;
  pd_conn_init(&s->c, sv[1]);
  if (push_op(c, OP_ATTACH, s->ext, sv[0])) close(sv[0]);
  apply_grant(c, n);
}

static void slot_remove(cnode *n, int k) {
  close_slot(&n->slots[k]);
  n->slots[k] = n->slots[--n->nslots];
}

static void refused(pd_cluster *c, cnode *n, const char *what, const char *detail) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s%s", what ? what : "", detail ? detail : "");
  node_down(c, n, N_REFUSED, msg);
}

/* One frame from node n.  Returns 0, or -1 when the node was dropped. */
static int on_node_frame(pd_cluster *c, cnode *n, const char *f, size_t len) {
  int t = (unsigned char)f[0];
  const char *p = f + 1;
  size_t pn = len - 1;
  if (t == 'E') {
    char txt[300];
    snprintf(txt, sizeof txt, "%.*s", (int)(pn > 290 ? 290 : pn), p);
    refused(c, n, "refused by the node: ", txt);
    return -1;
  }
  if (n->state == N_AUTH) {
    if (t != 'A') {
      refused(c, n, NULL, "protocol violation during authentication");
      return -1;
    }
    int chall = pd_handshake_awaits(&n->hs) == PD_HS_CHALL;
    pd_buf out;
    pd_buf_init(&out);
    int rc = pd_handshake_step(&n->hs, p, pn, &out);
    if (rc >= 0 && out.len) pd_conn_put(&n->c, 'A', out.data, out.len);   /* PROOF */
    pd_buf_free(&out);
    if (rc == PD_HS_MORE) return 0;
    if (rc == 0) {
      send_want(c, n, c->want);
      became_ready(c, n);
      return 0;
    }
    if (!chall) {
      refused(c, n, NULL, "authentication refused by the node (wrong secret)");
      return -1;
    }
    const char *m = "authentication failed: wrong secret (this node's proof does not "
                    "match the coordinator's secret)";
    pd_conn_put(&n->c, 'E', m, strlen(m));
    refused(c, n, NULL, rc == PD_AUTH_EDENIED
                            ? "authentication failed: wrong secret (the node's proof "
                              "does not match our --secret-file)"
                            : "malformed authentication challenge");
    return -1;
  }
  if (n->state == N_OPENWAIT) {
    if (t != 'G') {
      refused(c, n, NULL, "protocol violation");
      return -1;
    }
    became_ready(c, n);
  }
  switch (t) {
  case 'G':
    if (pn < 24) return 0;
    n->info.granted = (int)pdi_le32_get(p);
    n->info.cpus = (int)pdi_le32_get(p + 4);
    n->info.gpus = (int)pdi_le32_get(p + 8);
    n->info.busy = (int)pdi_le32_get(p + 12);
    n->info.sessions = (int)pdi_le32_get(p + 20);
    snprintf(n->info.name, sizeof n->info.name, "%.*s", (int)(pn - 24 > 120 ? 120 : pn - 24),
             p + 24);
    apply_grant(c, n);
    return 0;
  case 'S':
    if (pn >= 4) slot_open(c, n, pdi_le32_get(p));
    return 0;
  case 'X':
    if (pn < 4) return 0;
    for (int k = 0; k < n->nslots; k++)
      if (n->slots[k].slot == pdi_le32_get(p)) {
        slot_remove(n, k);
        break;
      }
    apply_grant(c, n);
    return 0;
  case 'F':
    if (pn < 5) return 0;
    for (int k = 0; k < n->nslots; k++)
      if (n->slots[k].slot == pdi_le32_get(p)) {
        pd_conn_put(&n->slots[k].c, (unsigned char)p[4], p + 5, pn - 5);
        break;
      }
    return 0;
  default:
    return 0;
  }
}

static cnode *find_node(pd_cluster *c, const char *url) {
  for (int i = 0; i < c->nn; i++)
    if (!strcmp(c->nodes[i]->url, url)) return c->nodes[i];
  return NULL;
}

static int add_locked(pd_cluster *c, const char *url) {
  for (int i = 0; i < c->nn; i++)
    if (!strcmp(c->nodes[i]->url, url)) return i;
  if (c->nn == c->capn) {
    int cap = c->capn ? c->capn * 2 : 8;
    cnode **v = realloc(c->nodes, (size_t)cap * sizeof *v);
    if (!v) return -ENOMEM;
    c->nodes = v;
    c->capn = cap;
  }
  cnode *n = calloc(1, sizeof *n);
  if (!n) return -ENOMEM;
  snprintf(n->url, sizeof n->url, "%s", url);
  snprintf(n->info.url, sizeof n->info.url, "%s", url);
  n->c.fd = -1;
  c->nodes[c->nn] = n;
  return c->nn++;
}

static void on_beacon(pd_cluster *c) {
  unsigned char buf[PD_BEACON_MAX + 16];
  for (;;) {
    ssize_t r = recv(c->beacon_fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r <= 0) return;
    pd_beacon b;
    if (pd_beacon_decode(buf, (size_t)r, c->secret.len ? &c->secret : NULL, pdi_unix_now(), &b))
      continue;
    if (c->secret.len && !b.authenticated) continue;
    if (!find_node(c, b.url) && add_locked(c, b.url) >= 0)
      fprintf(stderr, "pdlua: discovered node %s (%s)\n", b.url, b.name);
  }
}

/* ---- the bridge thread -------------------------------------------------------------- */

static uint32_t effective_want(pd_cluster *c, double now) {
  /* keep what we hold a little after the work runs out (the next map
   * reuses warm workers), then give it back so other coordinators get it */
  if (c->demand > 0) {
    c->want = c->demand > 4096 ? 4096 : c->demand;
    c->demand_at = now;
  } else if (now - c->demand_at > 2.0) {
    c->want = 0;
  }
  return c->want;
}

static void *bridge(void *arg) {
  pd_cluster *c = arg;
  double hb = c->o.heartbeat;
  size_t capfds = 0;
  struct pollfd *fds = NULL;
  int *who = NULL;
  pthread_mutex_lock(&c->mu);
  while (!c->stop) {
    double now = pd_now();
    uint32_t want = effective_want(c, now);
    /* timers: dial, ping, silence */
    for (int i = 0; i < c->nn; i++) {
      cnode *n = c->nodes[i];
      if (n->dial_done) dial_finished(c, n);
      if (n->state == N_DOWN && now >= n->next_dial) start_dial(c, n);
      if (n->state == N_READY && want != n->want_sent) send_want(c, n, want);
      if (n->state >= N_OPENWAIT && n->state <= N_READY) {
        if (now - n->last_rx > 4 * hb)
          node_down(c, n, N_DOWN, n->state == N_READY ? "silent: no heartbeat" :
                                                        "no answer during the handshake");
        else if (n->state == N_READY && now >= n->next_ping) {
          pd_conn_put(&n->c, 'P', NULL, 0);
          n->next_ping = now + hb;
        }
      }
    }
    /* the descriptors to wait on */
    size_t need = 2;
    for (int i = 0; i < c->nn; i++) need += 1 + (size_t)c->nodes[i]->nslots;
    if (need > capfds) {
      free(fds); free(who);
      capfds = need * 2;
      fds = malloc(capfds * sizeof *fds);
      who = malloc(capfds * sizeof *who);
      if (!fds || !who) break;
    }
    int nf = 0;
    fds[nf] = (struct pollfd){c->ctl[0], POLLIN, 0}; who[nf++] = -1;
    if (c->beacon_fd >= 0) { fds[nf] = (struct pollfd){c->beacon_fd, POLLIN, 0}; who[nf++] = -2; }
    for (int i = 0; i < c->nn; i++) {
      cnode *n = c->nodes[i];
      if (!n->link) continue;
      pd_conn_flush(&n->c);
      fds[nf] = (struct pollfd){n->c.fd, (short)(POLLIN | (n->c.out.len ? POLLOUT : 0)), 0};
      who[nf++] = i << 16 | 0xffff;
      for (int k = 0; k < n->nslots; k++) {
        pd_conn_flush(&n->slots[k].c);
        fds[nf] = (struct pollfd){n->slots[k].c.fd,
                                  (short)(POLLIN | (n->slots[k].c.out.len ? POLLOUT : 0)), 0};
        who[nf++] = i << 16 | k;
      }
    }
    int ms = (int)(hb * 250);
    if (ms < 10) ms = 10;
    pthread_mutex_unlock(&c->mu);
    int nr = poll(fds, (nfds_t)nf, ms);
    pthread_mutex_lock(&c->mu);
    if (nr <= 0) continue;
    for (int f = 0; f < nf; f++) {
      if (!(fds[f].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      if (who[f] == -1) {
        char b[64];
        while (read(c->ctl[0], b, sizeof b) > 0) {}
        continue;
      }
      if (who[f] == -2) { on_beacon(c); continue; }
      cnode *n = c->nodes[who[f] >> 16];
      int k = who[f] & 0xffff;
      if (!n->link) continue;                     /* dropped earlier this round */
      if (k == 0xffff) {
        if (fds[f].fd != n->c.fd) continue;
        int r;
        while ((r = pd_conn_fill(&n->c)) > 0) {}
        const char *fp;
        size_t fn;
        int got = 0;
        n->last_rx = pd_now();
        if (n->state != N_READY && n->c.in.len - n->c.in_off > PDI_PREAUTH_MAX) {
          refused(c, n, NULL, "oversized message during the handshake");
          continue;
        }
        while (n->link && (got = pd_conn_next(&n->c, &fp, &fn)) == 1)
          if (on_node_frame(c, n, fp, fn) < 0) break;
        if (!n->link) continue;
        if (got < 0) node_down(c, n, N_DOWN, "malformed frame from the node");
        else if (r != -EAGAIN && n->state != N_READY && !n->ready_once &&
                 !strncmp(n->url, "tls+", 4))
          refused(c, n, NULL, "TLS handshake failed: the node's certificate is not trusted "
                              "by --tls-ca, or its name does not match the URL's host");
        else if (r != -EAGAIN)
          node_down(c, n, N_DOWN, n->state == N_READY ? "link closed" :
                    "link closed during the handshake (a TLS node? then use tls+tcp://)");
        continue;
      }
      if (k >= n->nslots || fds[f].fd != n->slots[k].c.fd) continue;
      cslot *s = &n->slots[k];
      int r, gone = 0;
      while ((r = pd_conn_fill(&s->c)) > 0) {}
      if (r != -EAGAIN) gone = 1;
      const char *fp;
      size_t fn;
      int got;
      while ((got = pd_conn_next(&s->c, &fp, &fn)) == 1) {
        size_t m = pd_conn_begin(&n->c, 'F');
        pdi_le32_append(&n->c.out, s->slot);
        pd_buf_append(&n->c.out, fp, fn);
        pd_conn_end(&n->c, m);
      }
      if (got < 0 || gone) {                      /* the scheduler let it go */
        pdi_put_u32frame(&n->c, 'X', s->slot, NULL, 0);
        slot_remove(n, k);
        apply_grant(c, n);
      }
    }
    for (int i = 0; i < c->nn; i++)
      if (c->nodes[i]->link) pd_conn_flush(&c->nodes[i]->c);
  }
  pthread_mutex_unlock(&c->mu);
  free(fds);
  free(who);
  return NULL;
}

/* ---- the coordinator's thread ------------------------------------------------------ */

pd_cluster *pd_cluster_new(const pd_cluster_opts *o) {
  pd_cluster *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->o = *o;
  if (c->o.heartbeat <= 0) c->o.heartbeat = 1.0;
  if (o->secret) c->secret = *o->secret;
  if (o->tls.ca) snprintf(c->ca, sizeof c->ca, "%s", o->tls.ca);
  c->o.secret = NULL;
  c->o.tls.ca = NULL;
  c->beacon_fd = -1;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  if (pipe2(c->ctl, O_CLOEXEC | O_NONBLOCK)) goto fail;
  if (pipe2(c->wake, O_CLOEXEC | O_NONBLOCK)) goto fail;
  if (o->discover) {
    struct sockaddr_in a;
    if (pd_beacon_addr(*o->discover ? o->discover : PD_BEACON_GROUP, &a) == 0)
      c->beacon_fd = pd_beacon_socket(&a, 1);
    if (c->beacon_fd < 0) goto fail;
  }
  if (pthread_create(&c->th, NULL, bridge, c)) goto fail;
  c->started = 1;
  return c;
fail:
  pd_cluster_free(c);
  return NULL;
}

void pd_cluster_free(pd_cluster *c) {
  if (!c) return;
  if (c->started) {
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_mutex_unlock(&c->mu);
    poke(c->ctl[1]);
    pthread_join(c->th, NULL);
  }
  /* dial helpers still blocked in a connect see stop (under the lock) and
   * then touch nothing of the cluster but the lock and the count */
  pthread_mutex_lock(&c->mu);
  c->stop = 1;
  pthread_mutex_unlock(&c->mu);
  for (int i = 0; i < c->nn; i++) {
    cnode *n = c->nodes[i];
    if (n->dialed) pd_link_close(n->dialed);
    for (int k = 0; k < n->nslots; k++) close_slot(&n->slots[k]);
    if (n->link) {
      pd_conn_flush(&n->c);
      pd_link_close(n->link);
      n->c.fd = -1;
    }
    pd_conn_close(&n->c);
    pd_handshake_wipe(&n->hs);
    free(n->slots);
    free(n);
  }
  for (size_t k = 0; k < c->nops; k++)
    if (c->ops[k].fd >= 0) close(c->ops[k].fd);
  free(c->ops);
  free(c->nodes);
  for (int k = 0; k < 2; k++) {
    if (c->ctl[k] > 0) close(c->ctl[k]);
    if (c->wake[k] > 0) close(c->wake[k]);
  }
  if (c->beacon_fd >= 0) close(c->beacon_fd);
  pd_secret_wipe(&c->secret);
  c->nodes = NULL;
  c->nn = 0;
  c->ops = NULL;
  c->nops = 0;
  /* everything but the lock is gone: the last helper still dialling (if
   * any) frees the rest when it returns */
  pthread_mutex_lock(&c->mu);
  if (c->dials > 0) {
    c->orphaned = 1;
    pthread_mutex_unlock(&c->mu);
    return;
  }
  pthread_mutex_unlock(&c->mu);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

int pd_cluster_add(pd_cluster *c, const char *url) {
  pthread_mutex_lock(&c->mu);
  int i = add_locked(c, url);
  pthread_mutex_unlock(&c->mu);
  poke(c->ctl[1]);
  return i;
}

int pd_cluster_wait(pd_cluster *c, int i, double timeout, char *err, size_t n) {
  double deadline = pd_now() + timeout;
  pthread_mutex_lock(&c->mu);
  int rc = 0;
  for (;;) {
    cnode *nd = c->nodes[i];
    if (nd->ready_once) { rc = 1; break; }
    if (nd->state == N_REFUSED) {
      snprintf(err, n, "node %s: %s", nd->url, nd->info.error);
      rc = -1;
      break;
    }
    double left = deadline - pd_now();
    if (left <= 0) {
      snprintf(err, n, "node %s: %s", nd->url, nd->info.error[0] ? nd->info.error : "no answer");
      break;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + (left < 0.1 ? left : 0.1);
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

int pd_cluster_nodes(pd_cluster *c, pd_node_info *out, int max) {
  pthread_mutex_lock(&c->mu);
  int k = 0;
  for (int i = 0; i < c->nn && k < max; i++) out[k++] = c->nodes[i]->info;
  pthread_mutex_unlock(&c->mu);
  return k;
}

int pd_cluster_wakefd(pd_cluster *c) { return c->wake[0]; }

void pd_cluster_hook(pd_pool *p, void *arg) {
  pd_cluster *c = arg;
  char b[256];
  while (read(c->wake[0], b, sizeof b) > 0) {}
  uint32_t d = pd_pool_demand(p);
  pthread_mutex_lock(&c->mu);
  for (size_t k = 0; k < c->nops; k++) {
    op *o = &c->ops[k];
    if (o->kind == OP_ATTACH) pd_pool_attach(p, o->fd, o->ext);
    else pd_pool_retire(p, o->ext);
  }
  c->nops = 0;
  int changed = d != c->demand;
  c->demand = d;
  pthread_mutex_unlock(&c->mu);
  if (changed) poke(c->ctl[1]);
}

/* ---- one-shot queries (pdlua nodes, pdlua ctl) ---------------------------------------- */

/* Wait for the next frame on a blocking-style exchange.  Returns 1 with
 * the frame, or -1 with err. */
static int next_frame(pd_conn *cn, double deadline, const char **f, size_t *n, char *err,
                      size_t en) {
  for (;;) {
    int got = pd_conn_next(cn, f, n);
    if (got == 1) return 1;
    if (got < 0) { snprintf(err, en, "malformed answer"); return -1; }
    if (pd_conn_flush(cn) < 0) { snprintf(err, en, "link closed"); return -1; }
    double left = deadline - pd_now();
    if (left <= 0) { snprintf(err, en, "no answer (timed out)"); return -1; }
    struct pollfd pf = {cn->fd, (short)(POLLIN | (cn->out.len ? POLLOUT : 0)), 0};
    poll(&pf, 1, (int)(left * 1000) + 1);
    int r = pd_conn_fill(cn);
    if (r < 0 && r != -EAGAIN) { snprintf(err, en, "link closed by the node"); return -1; }
  }
}

int pd_node_query(const char *url, const pd_secret *k, const pd_tls *tls, int set_cpus,
                  int set_gpus, double timeout, pd_node_info *out, char *err, size_t en) {
  memset(out, 0, sizeof *out);
  snprintf(out->url, sizeof out->url, "%s", url);
  pd_link *l;
  int fd;
  if (pd_link_dial(url, tls, timeout, &l, &fd, err, en)) return -1;
  double deadline = pd_now() + timeout;
  pd_conn cn;
  pd_conn_init(&cn, fd);
  pd_handshake hs;
  memset(&hs, 0, sizeof hs);
  pd_buf out_b;
  pd_buf_init(&out_b);
  const char *f;
  size_t n;
  int rc = -1;
  if (k && k->len) {
    int r = pd_handshake_start(&hs, PD_HS_DIALER, k, &out_b);
    while (r == PD_HS_MORE) {
      pd_conn_put(&cn, 'A', out_b.data, out_b.len);                /* HELLO, PROOF */
      out_b.len = 0;
      if (next_frame(&cn, deadline, &f, &n, err, en) < 0) goto done;
      if (f[0] == 'E') { snprintf(err, en, "refused by the node: %.*s", (int)n - 1, f + 1); goto done; }
      int chall = pd_handshake_awaits(&hs) == PD_HS_CHALL;
      r = f[0] == 'A' ? pd_handshake_step(&hs, f + 1, n - 1, &out_b) : PD_AUTH_EPROTO;
      if (r < 0 && chall) {
        const char *m = "authentication failed: wrong secret";
        pd_conn_put(&cn, 'E', m, strlen(m));
        pd_conn_flush(&cn);
        snprintf(err, en, "authentication failed: wrong secret (the node's proof does not "
                          "match our --secret-file)");
        goto done;
      }
    }
    if (r) {
      snprintf(err, en, "authentication refused by the node (wrong secret)");
      goto done;
    }
  } else {
    pd_conn_put(&cn, 'O', "pdlua", 5);
  }
  if (set_cpus >= 0 || set_gpus >= 0) {
    size_t m = pd_conn_begin(&cn, 'C');
    pdi_le32_append(&cn.out, set_cpus >= 0 ? (uint32_t)set_cpus : ~0u);
    pdi_le32_append(&cn.out, set_gpus >= 0 ? (uint32_t)set_gpus : ~0u);
    pd_conn_end(&cn, m);
  } else {
    pd_conn_put(&cn, 'I', NULL, 0);
  }
  if (next_frame(&cn, deadline, &f, &n, err, en) < 0) goto done;
  if (f[0] == 'E') { snprintf(err, en, "refused by the node: %.*s", (int)n - 1, f + 1); goto done; }
  if (f[0] != 'G' || n < 25) { snprintf(err, en, "unexpected answer"); goto done; }
  out->cpus = (int)pdi_le32_get(f + 5);
  out->gpus = (int)pdi_le32_get(f + 9);
  out->busy = (int)pdi_le32_get(f + 13);
  out->sessions = (int)pdi_le32_get(f + 21);
  snprintf(out->name, sizeof out->name, "%.*s", (int)(n - 25 > 120 ? 120 : n - 25), f + 25);
  out->alive = 1;
  rc = 0;
done:
  pd_buf_free(&out_b);
  pd_handshake_wipe(&hs);
  pd_conn_flush(&cn);
  cn.fd = -1;
  pd_conn_close(&cn);
  pd_link_close(l);
  return rc;
}
