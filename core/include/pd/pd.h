/*
 * pd.h: the public C interface of pdlua's runtime (core/, no Lua in it).
 *
 * Naming: pd_ is public and written down here once; pdi_ is internal to a
 * layer; everything else is static.  Functions return 0 on success and a
 * negative errno-style code on failure unless their comment says otherwise.
 * Ownership of any pointer that crosses a call is stated in its comment.
 */
#ifndef PD_PD_H
#define PD_PD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PD_VERSION_MAJOR 0
#define PD_VERSION_MINOR 1

/* ---- growable byte buffer ------------------------------------------------
 * A pd_buf owns its bytes.  pd_buf_init makes an empty one that allocates
 * nothing; pd_buf_free releases the bytes and leaves it empty again.  The
 * reserve and append calls return 0, or -ENOMEM with the buffer unchanged. */
typedef struct pd_buf {
  char *data;
  size_t len;
  size_t cap;
} pd_buf;

void pd_buf_init(pd_buf *b);
void pd_buf_free(pd_buf *b);
int pd_buf_reserve(pd_buf *b, size_t extra);     /* room for len+extra bytes */
int pd_buf_append(pd_buf *b, const void *p, size_t n);
/* Hand the bytes to the caller (who frees them with free()); b is left empty. */
char *pd_buf_steal(pd_buf *b, size_t *len);

/* ---- hashing --------------------------------------------------------------
 * SHA-256 of n bytes into out[32] (mbedtls underneath).  pd_sha256_hex writes
 * 64 lowercase hex digits and a NUL into hex[65]. */
void pd_sha256(const void *p, size_t n, unsigned char out[32]);
void pd_sha256_hex(const void *p, size_t n, char hex[65]);

/* ---- randomness and MACs ----------------------------------------------------
 * pd_random fills p with n bytes from the kernel's CSPRNG (getrandom);
 * returns 0 or a negative errno.  pd_hmac_sha256 is HMAC-SHA256 (mbedtls).
 * pd_ct_equal compares n bytes in time independent of where they differ. */
int pd_random(void *p, size_t n);
void pd_hmac_sha256(const void *key, size_t klen, const void *msg, size_t n,
                    unsigned char out[32]);
int pd_ct_equal(const void *a, const void *b, size_t n);

/* ---- shared secrets -----------------------------------------------------------
 * A secret is 1 to 1024 bytes.  pd_secret_load reads one from a file that only
 * its owner may read or write (mode 0600 or stricter; a trailing newline is
 * dropped) and returns 0, or -1 with a one-line reason in err[n] such as
 * "secret file /x/s is readable by others (mode 0644): chmod 600 /x/s". */
#define PD_SECRET_MAX 1024
typedef struct pd_secret {
  unsigned char key[PD_SECRET_MAX];
  size_t len;
} pd_secret;

int pd_secret_load(const char *path, pd_secret *s, char *err, size_t n);
int pd_secret_set(pd_secret *s, const void *p, size_t n);  /* 0, or -EINVAL */
/* pd_secret_create writes a fresh secret to a new file at path: 32 bytes
 * from the kernel's CSPRNG as 64 hex digits and a newline, mode 0600 from
 * the start (never readable by others, not even for a moment).  An existing
 * file is not overwritten.  0, or -1 with a one-line reason in err[n]. */
int pd_secret_create(const char *path, char *err, size_t n);
void pd_secret_wipe(pd_secret *s);

/* ---- mutual authentication ------------------------------------------------------
 * Both ends of a connection prove they hold the same secret K, without sending
 * it, before anything else is accepted (code above all).  Four messages, on
 * any transport that keeps message boundaries:
 *
 *   dialer   -> listener  HELLO    "PDA1" 'H' Nd[32]
 *   listener -> dialer    CHALL    "PDA1" 'C' Nl[32] HMAC(K, "pdlua-auth-v1 listener" Nd Nl)
 *   dialer   -> listener  PROOF    "PDA1" 'P' HMAC(K, "pdlua-auth-v1 dialer" Nl Nd)
 *   listener -> dialer    VERDICT  "PDA1" 'K' (accepted) or 'N' (refused)
 *
 * Nd and Nl are fresh 32-byte nonces, so a recorded exchange cannot be
 * replayed.  The dialer checks the listener's MAC before proving itself, so
 * it never talks to an impostor; the listener accepts nothing but PROOF
 * before the verdict.  Both ends then hold a session key
 * HMAC(K, "pdlua-session-v1" Nd Nl), which nothing uses yet: the frames that
 * follow the handshake are not sealed (no per-message MAC) today.
 *
 * The handshake driver.  One pd_handshake per connection runs the exchange
 * for either role; it never reads or writes a socket, so every owner of a
 * connection drives it from its own loop (a coordinator's event loop and
 * its blocking queries, a node's loop, the poll loop of a task set's
 * links).  Messages travel in whatever frame the caller's protocol gives
 * them (cwire.h's 'A' frames); the driver sees only their bytes.
 *
 *   pd_handshake_start(h, role, K, out)   dialer: appends HELLO to out;
 *                                         listener: appends nothing
 *   pd_handshake_step(h, msg, n, out)     feed the next message received;
 *                                         appends the answer, if any, to out
 *
 * Both return PD_HS_MORE (send what out holds, then feed the next message),
 * 0 (authenticated: send what out holds, the listener's VERDICT; the
 * session key is pd_handshake_session(h)), or a failure: PD_AUTH_EPROTO
 * (malformed or out-of-order message), PD_AUTH_EDENIED (the peer does not
 * hold K), or a negative errno (no randomness, out of memory).  On a
 * failure out may hold the listener's refusal VERDICT ('N'): a caller may
 * send it before it closes.  A failed or finished handshake answers any
 * further step with PD_AUTH_EPROTO.  pd_auth_strerror(rc) says what a
 * result means; pd_handshake_awaits(h) is the message awaited next
 * (PD_HS_HELLO .. PD_HS_VERDICT), PD_HS_DONE or PD_HS_FAILED, so that a
 * caller can say which step went wrong.
 *
 * Ownership: the caller owns h, K (copied into h: it may go after start)
 * and out (the driver only appends to it; it never clears it); msg is
 * only read during the call.  Deadlines are the caller's (the driver
 * keeps no clock): a coordinator gives a node 4 heartbeats of silence, a
 * query and a task set's links their timeout.  pd_handshake_wipe forgets
 * nonces, keys and the session key; call it when the connection ends. */
#define PD_AUTH_EPROTO (-1001)
#define PD_AUTH_EDENIED (-1002)
#define PD_HS_MORE 1

enum { PD_HS_DIALER = 1, PD_HS_LISTENER };
enum { PD_HS_HELLO = 1, PD_HS_CHALL, PD_HS_PROOF, PD_HS_VERDICT, PD_HS_DONE, PD_HS_FAILED };

typedef struct pd_handshake {
  int role;                     /* PD_HS_DIALER or PD_HS_LISTENER */
  int state;                    /* the message awaited next, or DONE / FAILED */
  int rc;                       /* the failure, once FAILED */
  unsigned char nd[32], nl[32]; /* the dialer's and the listener's nonces */
  unsigned char session[32];    /* HMAC(K, "pdlua-session-v1" Nd Nl), once DONE */
  pd_secret key;
} pd_handshake;

int pd_handshake_start(pd_handshake *h, int role, const pd_secret *k, pd_buf *out);
int pd_handshake_step(pd_handshake *h, const void *msg, size_t n, pd_buf *out);
int pd_handshake_awaits(const pd_handshake *h);
/* The 32-byte session key once the handshake is done, else NULL. */
const unsigned char *pd_handshake_session(const pd_handshake *h);
void pd_handshake_wipe(pd_handshake *h);
const char *pd_auth_strerror(int rc);

/* ---- discovery beacons --------------------------------------------------------
 * A node that announces itself sends a small UDP datagram every few seconds
 * to a multicast group (default 239.255.80.76:27182, TTL 1: it never leaves
 * the local network) carrying its name, URL and what it lends.  With a
 * secret the datagram ends in a 16-byte truncated HMAC under a key derived
 * from the secret, and receivers holding the secret drop beacons whose MAC
 * is wrong or whose timestamp is more than PD_BEACON_MAX_SKEW seconds off
 * (limits replay).  Discovery only finds addresses: connections still
 * authenticate with the handshake above.
 *
 * Layout (little-endian): "PDB1" u8 version=1, u8 flags (1 = has MAC),
 * u64 unix time in ms, u16 cpus, u16 gpus, u8 name_len, name, u16 url_len,
 * url, [MAC16 over all preceding bytes]. */
#define PD_BEACON_PORT 27182
#define PD_BEACON_GROUP "239.255.80.76"
#define PD_BEACON_MAX 1200
#define PD_BEACON_MAX_SKEW 30.0

typedef struct pd_beacon {
  char name[256];
  char url[1024];
  int cpus, gpus;
  double time;           /* unix seconds when sent */
  int authenticated;     /* decode: the MAC checked out under the secret */
} pd_beacon;

/* Encode b (time is filled in by the caller) with an optional secret (k may
 * be NULL).  Returns the length written into out[cap], or -EINVAL when a
 * field is too long or cap too small. */
int pd_beacon_encode(const pd_beacon *b, const pd_secret *k, unsigned char *out, size_t cap);
/* Decode n bytes.  With k, a beacon without a valid MAC or with a timestamp
 * more than PD_BEACON_MAX_SKEW from `now` is refused.  Returns 0, or
 * -EPROTO (malformed), -EACCES (MAC missing or wrong), -ESTALE (too old or
 * too new). */
int pd_beacon_decode(const void *p, size_t n, const pd_secret *k, double now, pd_beacon *b);

/* Parse "host:port" (IPv4, or a bare host with the default port) for
 * beacons.  Returns 0 or -EINVAL.  *addr receives a sockaddr_in. */
struct sockaddr_in;
int pd_beacon_addr(const char *spec, struct sockaddr_in *addr);
/* A UDP socket for sending beacons to addr (multicast TTL 1, loop on), or
 * receiving them (bound to addr's port, joined to its group when it is a
 * multicast address).  Returns the fd or a negative errno. */
int pd_beacon_socket(const struct sockaddr_in *addr, int receiver);

/* ---- durable files (file.c) ------------------------------------------------
 * pd_file_replace writes n bytes to path so that a crash or a failed write
 * at any point leaves either the old file or the new one, never a mix:
 * the bytes go to path.tmp (every write checked), which is fsync'ed, renamed
 * over path, and the directory fsync'ed.  pd_file_append adds n bytes to
 * the end of path (created if missing) and fsyncs it before returning.
 * Both return 0, or -1 with a one-line reason naming the file in err[errn]
 * (path.tmp is removed when replace fails). */
int pd_file_replace(const char *path, const void *p, size_t n, char *err, size_t errn);
int pd_file_append(const char *path, const void *p, size_t n, char *err, size_t errn);

/* ---- time ----------------------------------------------------------------- */
double pd_now(void);        /* monotonic seconds */


/* ---- frames over a byte stream (wire.c) ------------------------------------
 * Between a process and the workers it starts itself, the wire frames travel
 * over a socketpair (and back on a pipe: pd_spawn_rpipe) rather than nng
 * (docs/map.md, "Internals"): a frame is a 4-byte
 * little-endian payload length, then the payload, whose first byte is the
 * frame type.  A pd_conn buffers both directions so that many frames cost
 * one read() and one write(): pd_conn_put only appends, pd_conn_flush
 * writes.  Frames longer than PD_FRAME_MAX are refused as malformed. */
#define PD_FRAME_MAX (1u << 30)

typedef struct pd_conn {
  int fd;              /* owned: pd_conn_close closes it */
  pd_buf in;           /* bytes read and not yet consumed, from in_off */
  size_t in_off;
  pd_buf out;          /* bytes queued and not yet written, from out_off */
  size_t out_off;
  int wfd;             /* owned: a pipe's write end that frames go to instead
                          of fd (pd_conn_init2: a local worker's replies), or
                          0: write to fd (a zeroed pd_conn writes to fd) */
  int wsock;           /* wfd is a socket: written with MSG_NOSIGNAL, so a
                          dead peer is -EPIPE, never SIGPIPE (the
                          coordinator's side of a local worker) */
} pd_conn;

void pd_conn_init(pd_conn *c, int fd);
/* Read from rfd, write to wfd (a socket one way and a pipe the other, or
 * two pipes; wfd == rfd is pd_conn_init).  Writing to a pipe whose reader is gone raises SIGPIPE: use
 * it where that is acceptable (a worker whose coordinator is gone). */
void pd_conn_init2(pd_conn *c, int rfd, int wfd);
void pd_conn_close(pd_conn *c);
/* Queue one frame (type byte, then n payload bytes; p may be NULL when n is 0).
 * pd_conn_begin/pd_conn_end build a frame in place: begin reserves the header
 * and writes the type, the caller appends to c->out, end patches the length. */
int pd_conn_put(pd_conn *c, int type, const void *p, size_t n);
size_t pd_conn_begin(pd_conn *c, int type);
void pd_conn_end(pd_conn *c, size_t mark);
/* Write queued bytes.  Returns 0 when all are written, -EAGAIN when the fd
 * (non-blocking) is full, -EPIPE or another -errno when the peer is gone. */
int pd_conn_flush(pd_conn *c);
/* Read what the fd has (one read()).  Returns the number of bytes read (> 0),
 * -EAGAIN when nothing is ready, -EPIPE at end of stream, or -errno. */
int pd_conn_fill(pd_conn *c);
/* Next complete frame: 1 and *p and *n set to its payload (type byte first; valid
 * until the next fill), 0 when none is complete, -EPROTO when malformed. */
int pd_conn_next(pd_conn *c, const char **p, size_t *n);

/* ---- worker processes (proc.c) ---------------------------------------------
 * pd_spawn starts argv[0] (a path) with one end of a fresh socketpair as its
 * fd 3 and returns the other end (close-on-exec, non-blocking) in *fd.  The
 * child dies with its parent (PR_SET_PDEATHSIG SIGKILL, checked against the
 * race with the parent's exit), gets its own process group, and, when
 * as_limit is non-zero, an RLIMIT_AS of that many bytes.  env entries
 * ("NAME=value", NULL-terminated, may be NULL) are added to the child's
 * environment.  Returns 0, or -errno with nothing left running. */
int pd_spawn(char *const argv[], char *const env[], unsigned long long as_limit,
             int *fd, int *pid);
/* pd_spawn, plus a pipe for the child's replies: its write end is the
 * child's fd 4, its read end (close-on-exec, non-blocking) comes back in
 * *rfd.  A pipe round trip costs less than a socketpair's (bench/map (b));
 * the parent still writes to the socket (MSG_NOSIGNAL: no SIGPIPE in the
 * coordinator when a worker dies). */
int pd_spawn_rpipe(char *const argv[], char *const env[], unsigned long long as_limit,
                   int *fd, int *rfd, int *pid);
/* Kill (SIGKILL) and reap a child; returns its wait status, or -1. */
int pd_kill_reap(int pid);
/* The environment a child is started with: the entries of env (NULL-
 * terminated, may be NULL) followed by this process's own, an inherited
 * NAME=... left out when env sets NAME (ours win).  Returns a malloc'ed
 * NULL-terminated array whose strings are borrowed from env and environ
 * (free the array only), or NULL when out of memory.  Built before fork:
 * nothing after fork may allocate. */
char **pd_env_merge(char *const env[]);

/* pd_spawn_fds is pd_spawn that also hands the child npass more
 * descriptors: pass[i] becomes the child's fd 4 + i (pass[i] stays open in
 * the parent; the caller closes it).  Task sets use it to give each node its
 * ends of the tubes (gang.c). */
int pd_spawn_fds(char *const argv[], char *const env[], unsigned long long as_limit,
                 const int *pass, int npass, int *fd, int *pid);

/* ---- the local scheduler (sched.c) ---------------------------------------
 * A pool of worker processes and the jobs that run on them, driven by
 * pd_pool_pump from the coordinator's own thread (no threads, no signals:
 * a dead worker is seen as end of stream on its socket).  Bytes only: the
 * function blob, each task's argument and each result are opaque encoded
 * values to this layer.  docs/map.md ("Internals") has the wire frames. */
enum {
  PD_T_QUEUED = 0, PD_T_INFLIGHT, PD_T_DONE, /* ok: result bytes */
  PD_T_ERROR,      /* a Lua error: result bytes are the encoded error */
  PD_T_FAILED,     /* a system failure (timeout, lost, out of memory):
                      result bytes are a plain message */
  PD_T_CANCELLED
};
enum { PD_JOB_QUEUED = 0, PD_JOB_RUNNING, PD_JOB_DONE, PD_JOB_FAILED,
       PD_JOB_CANCELLED };

typedef struct pd_pool pd_pool;
typedef struct pd_job pd_job;

typedef struct pd_job_opts {
  int chunk;             /* tasks per message; 0: adaptive */
  int cpus;              /* at most this many workers; 0: the pool's */
  int retries;           /* re-runs after a worker is lost */
  int stop_on_error;     /* first failed task ends the job */
  int unpack;            /* worker calls f(table.unpack(arg)) */
  double timeout;        /* seconds per task; 0: none */
  uint64_t seed;
  int gang;              /* one task per worker, never two in flight on one
                            (the nodes of a task set across machines, pd.tasks) */
} pd_job_opts;

typedef struct pd_pool_opts {
  int workers;                   /* most workers at once */
  unsigned long long memory;     /* bytes one worker may hold; 0: no cap */
  char *const *argv;             /* how to start a worker (argv[0] a path) */
  int gpus;                      /* > 0: each worker is bound to one of devices
                                    0..gpus-1 (PDLUA_GPU_DEVICE in its
                                    environment), spread evenly, and gets no
                                    RLIMIT_AS; 0: CPU workers */
} pd_pool_opts;

pd_pool *pd_pool_new(const pd_pool_opts *o);   /* NULL on out-of-memory */
/* Kill and reap every worker, free every job.  NULL is allowed. */
void pd_pool_free(pd_pool *p);
/* Change the worker count; extra idle workers are stopped on the next pump. */
void pd_pool_resize(pd_pool *p, int workers);

/* A new job of n tasks.  fn (fnlen bytes) is copied; arguments are added
 * with pd_job_arg in task order before pd_pool_submit.  NULL on OOM. */
pd_job *pd_job_new(pd_pool *p, const void *fn, size_t fnlen, uint32_t n,
                   const pd_job_opts *o);
/* Append the encoding of the next task's argument: pd_job_argbuf gives the
 * buffer to append to, pd_job_argend closes one task's bytes. */
pd_buf *pd_job_argbuf(pd_job *j);
int pd_job_argend(pd_job *j);
/* A read-only look at a job's per-task arrays, for callers that walk many
 * tasks (decoding a map's results): st[i] (PD_T_*), and for a final task
 * its bytes res + roff[i], rlen[i] long; order[0 .. ndone) the tasks in the
 * order they finished.  Valid until the next pump, submit or release. */
typedef struct pd_job_view {
  const uint8_t *st;
  const uint64_t *roff;
  const uint32_t *rlen;
  const uint32_t *order;
  const char *res;
  uint32_t n, ndone;
} pd_job_view;
void pd_job_view_get(const pd_job *j, pd_job_view *v);
/* Hand the job to the scheduler (status becomes queued/running). */
void pd_pool_submit(pd_pool *p, pd_job *j);
pd_job *pd_pool_job(pd_pool *p, uint32_t id);
/* Forget a job: its workers drop its function; its memory is freed. */
void pd_pool_release(pd_pool *p, pd_job *j);
/* Cancel: queued tasks never start; workers running its tasks are killed and
 * replaced (their tasks of other jobs run again without penalty). */
void pd_pool_cancel(pd_pool *p, pd_job *j);

/* Do the scheduler's work: start workers, hand out batches, read results,
 * enforce timeouts; waits up to `timeout` seconds (0: do not wait, < 0: no
 * limit) for something to happen.  Returns the number of tasks that reached
 * a final state, or -errno on a fatal error (cannot start any worker). */
int pd_pool_pump(pd_pool *p, double timeout);

/* Does any job have tasks queued or running?  (The caller may want to pump.) */
int pd_pool_pending(const pd_pool *p);

uint32_t pd_job_id(const pd_job *j);
int pd_job_status(const pd_job *j);
void pd_job_progress(const pd_job *j, uint32_t *done, uint32_t *total, uint32_t *failed);
/* Task i's state (PD_T_*) and, when final, its bytes (*p, *n; owned by the job). */
int pd_job_task(const pd_job *j, uint32_t i, const char **p, size_t *n, int *pid);
/* The k-th task to reach a final state (completion order), or UINT32_MAX. */
uint32_t pd_job_completed(const pd_job *j, uint32_t k);
/* The lowest-index failed task, or UINT32_MAX. */
uint32_t pd_job_first_failure(const pd_job *j);

/* Workers holding tasks now. */
int pd_pool_busy(const pd_pool *p);
/* Worker pids now running (up to max); returns how many. */
int pd_pool_pids(const pd_pool *p, int *pids, int max);
typedef struct pd_pool_stats {
  uint64_t spawned, lost, frames_out, frames_in, tasks_done;
  double task_seconds;  /* seconds the workers spent running tasks, as they report */
} pd_pool_stats;
void pd_pool_stats_get(const pd_pool *p, pd_pool_stats *s);

/* Frame types on the worker socketpair. */
enum {
  PD_F_HELLO = 1,    /* w->c: u32 pid */
  PD_F_JOB = 2,      /* c->w: u32 job, u8 flags, u64 seed, fn blob */
  PD_F_TASKS = 3,    /* c->w: u32 job, u32 count, count x (u32 index, u32 len, bytes) */
  PD_F_RESULTS = 4,  /* w->c: u32 job, u32 count, f64 seconds, count x (u32 index, u8 state, u32 len, bytes) */
  PD_F_DROP = 5      /* c->w: u32 job */
};
#define PD_JOBF_UNPACK 1


/* ---- remote slots (sched.c, for core/cluster.c) -------------------------------
 * A node connection is a set of remote slots for the same scheduler: each
 * is a socketpair end carrying the frames above, whose other end the
 * cluster bridge forwards over the network.  The hook runs in the pool's
 * own thread at the top of every pump round (it attaches and retires
 * slots); wakefd, when >= 0, wakes a waiting pump (the hook drains it). */
typedef void (*pd_pool_hook)(pd_pool *p, void *arg);
void pd_pool_set_hook(pd_pool *p, pd_pool_hook h, void *arg, int wakefd);
/* Add a remote slot named ext (> 0) on fd (owned by the pool from now on,
 * even on failure).  Returns 0 or -ENOMEM. */
int pd_pool_attach(pd_pool *p, int fd, int ext);
/* Give no new batches to slot ext; close it once its batches are back. */
void pd_pool_retire(pd_pool *p, int ext);
/* Tasks queued or in flight over all unfinished jobs. */
uint32_t pd_pool_demand(const pd_pool *p);
int pd_pool_local(const pd_pool *p);          /* local worker processes */

/* ---- links: nng streams as file descriptors (link.c) ---------------------------
 * A link is one nng stream (tcp://, tls+tcp://, ipc://) seen by its owner as
 * a non-blocking socketpair end: two threads copy bytes between the stream
 * and the socketpair, so the owner polls plain fds and frames them with
 * pd_conn.  No Lua and no callbacks: the threads use blocking aio waits.
 * TLS: a listener needs cert and key files (PEM); a dialer verifies the
 * node's certificate against ca when given, and does not verify otherwise
 * (the HMAC handshake still proves the peer). */
typedef struct pd_tls {
  const char *cert, *key;       /* listener: PEM files */
  const char *ca;               /* dialer: PEM file to verify against, or NULL */
} pd_tls;

typedef struct pd_link pd_link;
/* Dial url within timeout seconds.  Returns 0 with *l and *fd set, or a
 * negative code with a reason in err[n]. */
int pd_link_dial(const char *url, const pd_tls *tls, double timeout, pd_link **l, int *fd,
                 char *err, size_t n);
/* Close the stream (both threads end) and the owner's fd.  NULL is allowed. */
void pd_link_close(pd_link *l);
/* The peer's address as text ("10.0.0.2:41234"), for logs. */
const char *pd_link_peer(const pd_link *l);

typedef struct pd_listener pd_listener;
/* Listen on url; each accepted link is reported by writing a pd_link
 * pointer (sizeof(void *) bytes) to notify_fd.  Returns 0 or a negative
 * code with a reason in err. */
int pd_listener_open(const char *url, const pd_tls *tls, int notify_fd, pd_listener **out,
                     char *err, size_t n);
void pd_listener_close(pd_listener *ls);
/* The port a tcp listener was given (useful with port 0), or 0. */
int pd_listener_port(pd_listener *ls);
int pd_link_fd(const pd_link *l);              /* the owner's end */
/* Is url's host loopback (127.0.0.0/8, localhost, ::1) or ipc://? */
int pd_url_is_loopback(const char *url);

/* ---- plain tcp for a task set across machines (tcp.c) ---------------------------
 * The tubes between machines are plain TCP sockets (TCP_NODELAY, non-
 * blocking, close-on-exec; the caller owns every fd returned), not links:
 * no bridge threads, so a round trip costs what the network does.
 *
 * pd_tcp_listen: a listening socket on every IPv4 address and an ephemeral
 * port (*port); returns the fd or -errno.  pd_tcp_accept: one connection
 * within timeout seconds; the fd, -ETIMEDOUT, or -errno.  pd_tcp_dial: an
 * IPv4 address (dotted, no names) and port, connected within timeout
 * seconds; the fd, or -errno with a reason in err[n] ("not an IPv4
 * address: h", "cannot connect to h:p: Connection refused", "socket: ..."). */
int pd_tcp_listen(int *port);
int pd_tcp_accept(int lfd, double timeout);
int pd_tcp_dial(const char *host, int port, double timeout, char *err, size_t n);

/* Blocking frames for setting a link up (before a pd_conn takes the fd
 * over: nothing is read ahead).  pd_frame_send writes one frame (u32
 * length, type, n bytes; a full socket is waited for); 0, or -1 when the
 * peer is gone.  pd_frame_recv reads one frame of at most 1 MiB into b
 * (payload only, b reset first; the caller owns b): 1 with *type, 0 when
 * no frame began by `deadline` (monotonic seconds; one that began may run
 * until `hard`), -1 when the peer is gone or the frame is broken. */
int pd_frame_send(int fd, int type, const void *p, size_t n);
int pd_frame_recv(int fd, double deadline, double hard, int *type, pd_buf *b);

/* The handshake on n links at once (fds[i]: a link's fd or a tcp socket;
 * roles[i]: PD_HS_DIALER or PD_HS_LISTENER; keys[i]: its secret), in one
 * loop, so that two nodes dialling each other never wait on each other;
 * messages are 'A' frames, sent and read with the calls above.  hs[n] is
 * the caller's, and after a success holds each link's session key
 * (pd_handshake_session); the caller wipes it.  Returns 0, or -1 with
 * *why one of "cannot start the handshake", "handshake timed out", "the
 * peer closed or broke the handshake", "the peer does not hold the set's
 * key", "the handshake failed" (static text) after timeout seconds at
 * most. */
int pd_handshake_fds(int n, const int *fds, const int *roles, const pd_secret *keys,
                     double timeout, pd_handshake *hs, const char **why);

/* ---- node (node.c): `pdlua serve` ------------------------------------------------
 * Lends up to cpus worker processes to the coordinators that connect and
 * prove the secret.  Runs until *stop becomes non-zero (a signal handler
 * may set it) or a fatal error; returns 0 or -1 with a message on stderr. */
/* The most a node lends: larger asks (serve's flags, `pdlua ctl`) are
 * clamped to these, and its answer says what it took. */
#define PD_NODE_MAX_CPUS 1024
#define PD_NODE_MAX_GPUS 64
typedef struct pd_node_opts {
  const char *listen;           /* URL */
  const char *name;
  int cpus, gpus;
  const pd_secret *secret;      /* NULL: loopback only */
  pd_tls tls;
  char *const *worker_argv;     /* how to start a worker */
  unsigned long long memory;    /* per worker, bytes; 0: none */
  int announce;                 /* send discovery beacons */
  const char *beacon;           /* "host:port" or NULL for the default group */
  double heartbeat;             /* seconds between beacons and liveness checks */
  volatile int *stop;
} pd_node_opts;
int pd_node_run(const pd_node_opts *o);

/* ---- coordinator side (cluster.c) -------------------------------------------------
 * A bridge thread holds one link per node, proves the secret, pings, and
 * forwards each remote slot's frames; remote slots reach a pool through
 * pd_pool_set_hook(pool, pd_cluster_hook, cluster, pd_cluster_wakefd()). */
typedef struct pd_cluster pd_cluster;
typedef struct pd_cluster_opts {
  const pd_secret *secret;      /* NULL: no authentication (loopback nodes) */
  pd_tls tls;
  double heartbeat;             /* seconds between pings; silent 4x: dead */
  double connect_timeout;
  const char *discover;         /* NULL, or beacon "host:port" ("" = default) */
} pd_cluster_opts;

typedef struct pd_node_info {
  char url[256], name[128];
  int cpus, gpus, busy, granted, held, alive, sessions;
  char error[256];              /* why it is down, if it is */
} pd_node_info;

pd_cluster *pd_cluster_new(const pd_cluster_opts *o);
void pd_cluster_free(pd_cluster *c);
/* Add a node by URL (idempotent).  Returns its index. */
int pd_cluster_add(pd_cluster *c, const char *url);
/* Wait up to timeout for node i's first handshake.  Returns 1 (ready), 0
 * (still trying: unreachable), or -1 with the reason in err (refused:
 * wrong secret and the like; the node is then given up). */
int pd_cluster_wait(pd_cluster *c, int i, double timeout, char *err, size_t n);
int pd_cluster_nodes(pd_cluster *c, pd_node_info *out, int max);
int pd_cluster_wakefd(pd_cluster *c);
void pd_cluster_hook(pd_pool *p, void *cluster);

/* One request to a node, synchronous (pdlua nodes, pdlua ctl): connect,
 * prove, send 'I' (info) or 'C' (set cpus/gpus; -1 leaves one as is),
 * read the answer.  Returns 0 or -1 with err. */
int pd_node_query(const char *url, const pd_secret *k, const pd_tls *tls, int set_cpus,
                  int set_gpus, double timeout, pd_node_info *out, char *err, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* PD_PD_H */
