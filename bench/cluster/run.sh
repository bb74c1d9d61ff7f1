#!/bin/sh
# bench/cluster/run.sh: pd.map over two loopback nodes (one CPU each)
# against one local pool of two workers, and what authentication and TLS
# cost, printed as ratios.  Rounds are interleaved (every configuration
# once per round); the median of the rounds is reported.
#
#   bench/cluster/run.sh [ROUNDS] [N]        defaults: 3 rounds, N = 50000
#
# Configurations:
#   local  pdlua run --cpus 2                          (socketpairs, no network)
#   tcp    --cpus 0 --nodes tcp://127.0.0.1:A,B        (no secret: loopback only)
#   auth   the same with --secret-file (HMAC handshake per link)
#   tls    tls+tcp:// nodes with a self-signed certificate, and the secret
# Measures: tput (no-op tasks per second, default batching), lat (median
# wall time of a one-task pd.map), cpu (40 tasks of 10 ms each on 2 slots),
# cold (a fresh coordinator to its first results: connect, handshake, workers).
set -eu
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
N=${2:-50000}
PDLUA=$PWD/build/pdlua
[ -x "$PDLUA" ] || { echo "bench/cluster: build first" >&2; exit 1; }
TMP=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
umask 077
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/key.pem" \
  -out "$TMP/cert.pem" -days 1 -subj /CN=127.0.0.1 >/dev/null 2>&1

node() {   # node NAME ARGS... -> prints its URL; remembers its pid
  "$PDLUA" serve --cpus 1 --name "$@" >"$TMP/$1.out" 2>"$TMP/$1.err" &
  PIDS="$PIDS $!"
  for _ in $(seq 100); do
    u=$(grep -o '[a-z+]*://[0-9.]*:[0-9]*' "$TMP/$1.out" 2>/dev/null || true)
    [ -n "$u" ] && { echo "$u"; return; }
    sleep 0.05
  done
  echo "bench/cluster: node $1 did not start" >&2; exit 1
}
T1=$(node t1 --listen tcp://127.0.0.1:0); T2=$(node t2 --listen tcp://127.0.0.1:0)
A1=$(node a1 --listen tcp://127.0.0.1:0 --secret-file "$TMP/secret")
A2=$(node a2 --listen tcp://127.0.0.1:0 --secret-file "$TMP/secret")
S1=$(node s1 --listen tls+tcp://127.0.0.1:0 --secret-file "$TMP/secret" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem")
S2=$(node s2 --listen tls+tcp://127.0.0.1:0 --secret-file "$TMP/secret" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem")

B=bench/cluster/bench.lua
for r in $(seq "$ROUNDS"); do
  echo "bench/cluster: round $r of $ROUNDS" >&2
  echo "local $("$PDLUA" run $B "$N" --cpus 2 --no-progress)" >>"$TMP/raw"
  echo "tcp $("$PDLUA" run $B "$N" --cpus 0 --no-progress --nodes "$T1,$T2")" >>"$TMP/raw"
  echo "auth $("$PDLUA" run $B "$N" --cpus 0 --no-progress --nodes "$A1,$A2" --secret-file "$TMP/secret")" >>"$TMP/raw"
  echo "tls $("$PDLUA" run $B "$N" --cpus 0 --no-progress --nodes "$S1,$S2" --secret-file "$TMP/secret" --tls-ca "$TMP/cert.pem")" >>"$TMP/raw"
done
cp "$TMP/raw" build/bench-cluster.txt

awk '
  { split($2, a, "="); split($3, b, "="); split($4, c, "="); split($5, d, "=");
    T[$1, ++n[$1]] = a[2]; L[$1, n[$1]] = b[2]; C[$1, n[$1]] = c[2]; D[$1, n[$1]] = d[2] }
  function med(A, k, cnt,   i, j, t, v) {
    for (i = 1; i <= cnt; i++) v[i] = A[k, i]
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return v[int((cnt + 1) / 2)]
  }
  END {
    split("local tcp auth tls", ks, " ")
    printf "%-6s %14s %12s %12s %12s\n", "config", "tput tasks/s", "lat ms", "cpu40 s", "cold ms"
    for (i = 1; i <= 4; i++) { k = ks[i]
      t[k] = med(T, k, n[k]); l[k] = med(L, k, n[k]); c[k] = med(C, k, n[k]); d[k] = med(D, k, n[k])
      printf "%-6s %14.0f %12.3f %12.3f %12.1f\n", k, t[k], l[k] * 1000, c[k], d[k] * 1000 }
    printf "\nratios (median of %d rounds)\n", n["local"]
    printf "two loopback nodes / local pool: tput %.2f  lat %.2f  cpu40 %.2f\n", t["tcp"] / t["local"], l["tcp"] / l["local"], c["tcp"] / c["local"]
    printf "                                 cold %.2f\n", d["tcp"] / d["local"]
    printf "auth / no auth (both nodes):     tput %.2f  lat %.2f  cpu40 %.2f\n", t["auth"] / t["tcp"], l["auth"] / l["tcp"], c["auth"] / c["tcp"]
    printf "                                 cold %.2f\n", d["auth"] / d["tcp"]
    printf "tls+auth / auth:                 tput %.2f  lat %.2f  cpu40 %.2f\n", t["tls"] / t["auth"], l["tls"] / l["auth"], c["tls"] / c["auth"]
    printf "                                 cold %.2f\n", d["tls"] / d["auth"]
  }' "$TMP/raw"
