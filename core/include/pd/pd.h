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
 * before the verdict.  Both ends then share a session key
 * HMAC(K, "pdlua-session-v1" Nd Nl) for per-message MACs.
 *
 * Each step appends the message to send to `out` (when it has one) and
 * returns 0, or PD_AUTH_EPROTO (malformed or out-of-order message) or
 * PD_AUTH_EDENIED (the peer does not hold K). */
#define PD_AUTH_EPROTO (-1001)
#define PD_AUTH_EDENIED (-1002)

typedef struct pd_auth {
  int state;
  unsigned char nd[32], nl[32];
  unsigned char session[32];
  pd_secret key;
} pd_auth;

int pd_auth_dialer_start(pd_auth *a, const pd_secret *k, pd_buf *out);            /* -> HELLO */
int pd_auth_listener_start(pd_auth *a, const pd_secret *k, const void *hello, size_t n,
                           pd_buf *out);                                          /* -> CHALL */
int pd_auth_dialer_prove(pd_auth *a, const void *chall, size_t n, pd_buf *out);   /* -> PROOF */
int pd_auth_listener_check(pd_auth *a, const void *proof, size_t n, pd_buf *out); /* -> VERDICT */
int pd_auth_dialer_finish(pd_auth *a, const void *verdict, size_t n);
const char *pd_auth_strerror(int rc);
void pd_auth_wipe(pd_auth *a);        /* forget nonces and keys */

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

/* ---- time ----------------------------------------------------------------- */
double pd_now(void);        /* monotonic seconds */

#ifdef __cplusplus
}
#endif
#endif /* PD_PD_H */
