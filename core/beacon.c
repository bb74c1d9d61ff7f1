/* beacon.c: discovery beacons (see pd.h). */
#define _GNU_SOURCE
#include "pd/pd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAGIC "PDB1"
#define VERSION 1
#define MACLEN 16

static const char LBL_BEACON[] = "pdlua-beacon-v1";

/* The beacon key is derived from the secret, never the secret itself. */
static void beacon_mac(const pd_secret *k, const unsigned char *p, size_t n, unsigned char out[32]) {
  unsigned char bk[32];
  pd_hmac_sha256(k->key, k->len, LBL_BEACON, sizeof LBL_BEACON - 1, bk);
  pd_hmac_sha256(bk, sizeof bk, p, n, out);
}

static void put16(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)(v & 0xff);
  p[1] = (unsigned char)(v >> 8);
}

static unsigned get16(const unsigned char *p) { return (unsigned)p[0] | ((unsigned)p[1] << 8); }

int pd_beacon_encode(const pd_beacon *b, const pd_secret *k, unsigned char *out, size_t cap) {
  size_t nl = strnlen(b->name, sizeof b->name), ul = strnlen(b->url, sizeof b->url);
  if (nl > 255 || ul > 1023 || b->cpus < 0 || b->cpus > 65535 || b->gpus < 0 || b->gpus > 65535)
    return -EINVAL;
  size_t need = 4 + 1 + 1 + 8 + 2 + 2 + 1 + nl + 2 + ul + (k ? MACLEN : 0);
  if (need > cap || need > PD_BEACON_MAX) return -EINVAL;
  unsigned char *p = out;
  memcpy(p, MAGIC, 4);
  p += 4;
  *p++ = VERSION;
  *p++ = k ? 1 : 0;
  uint64_t ms = (uint64_t)(b->time * 1000.0);
  for (int i = 0; i < 8; i++) *p++ = (unsigned char)(ms >> (8 * i));
  put16(p, (unsigned)b->cpus);
  put16(p + 2, (unsigned)b->gpus);
  p += 4;
  *p++ = (unsigned char)nl;
  memcpy(p, b->name, nl);
  p += nl;
  put16(p, (unsigned)ul);
  p += 2;
  memcpy(p, b->url, ul);
  p += ul;
  if (k) {
    unsigned char m[32];
    beacon_mac(k, out, (size_t)(p - out), m);
    memcpy(p, m, MACLEN);
    p += MACLEN;
  }
  return (int)(p - out);
}

int pd_beacon_decode(const void *data, size_t n, const pd_secret *k, double now, pd_beacon *b) {
  const unsigned char *p = data, *end = p + n;
  memset(b, 0, sizeof *b);
  if (n < 4 + 1 + 1 + 8 + 4 + 1 || memcmp(p, MAGIC, 4) != 0 || p[4] != VERSION) return -EPROTO;
  int has_mac = p[5] & 1;
  p += 6;
  uint64_t ms = 0;
  for (int i = 0; i < 8; i++) ms |= (uint64_t)p[i] << (8 * i);
  p += 8;
  b->cpus = (int)get16(p);
  b->gpus = (int)get16(p + 2);
  p += 4;
  size_t nl = *p++;
  if ((size_t)(end - p) < nl + 2) return -EPROTO;
  memcpy(b->name, p, nl);
  b->name[nl] = '\0';
  p += nl;
  size_t ul = get16(p);
  p += 2;
  if (ul >= sizeof b->url || (size_t)(end - p) < ul) return -EPROTO;
  memcpy(b->url, p, ul);
  b->url[ul] = '\0';
  p += ul;
  size_t rest = (size_t)(end - p);
  if (rest != (has_mac ? MACLEN : 0)) return -EPROTO;
  if (memchr(b->name, '\0', nl) || memchr(b->url, '\0', ul)) return -EPROTO;
  b->time = (double)ms / 1000.0;
  if (k) {
    if (!has_mac) return -EACCES;
    unsigned char m[32];
    beacon_mac(k, data, (size_t)(p - (const unsigned char *)data), m);
    if (!pd_ct_equal(m, p, MACLEN)) return -EACCES;
    if (b->time < now - PD_BEACON_MAX_SKEW || b->time > now + PD_BEACON_MAX_SKEW) return -ESTALE;
    b->authenticated = 1;
  }
  return 0;
}

int pd_beacon_addr(const char *spec, struct sockaddr_in *addr) {
  char host[256];
  int port = PD_BEACON_PORT;
  const char *colon = spec ? strrchr(spec, ':') : NULL;
  if (!spec || !*spec) spec = PD_BEACON_GROUP;
  size_t hl = colon ? (size_t)(colon - spec) : strlen(spec);
  if (hl == 0 || hl >= sizeof host) return -EINVAL;
  memcpy(host, spec, hl);
  host[hl] = '\0';
  if (colon) {
    char *e;
    long v = strtol(colon + 1, &e, 10);
    if (*e || v <= 0 || v > 65535) return -EINVAL;
    port = (int)v;
  }
  memset(addr, 0, sizeof *addr);
  addr->sin_family = AF_INET;
  addr->sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &addr->sin_addr) != 1) return -EINVAL;
  return 0;
}

int pd_beacon_socket(const struct sockaddr_in *addr, int receiver) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  int multicast = IN_MULTICAST(ntohl(addr->sin_addr.s_addr));
  if (receiver) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in any = *addr;
    if (multicast) any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&any, sizeof any) != 0) goto fail;
    if (multicast) {
      struct ip_mreq mreq;
      mreq.imr_multiaddr = addr->sin_addr;
      mreq.imr_interface.s_addr = htonl(INADDR_ANY);
      if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) != 0) goto fail;
    }
  } else {
    if (multicast) {
      unsigned char ttl = 1, loop = 1;   /* never past the local network */
      setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl);
      setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop);
    } else {
      setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    }
  }
  return fd;
fail:;
  int e = errno;
  close(fd);
  return -e;
}
