#!/bin/sh
# bench/map/run.sh: pd.map against Python's multiprocessing.Pool,
# concurrent.futures, joblib and dask.distributed on the same work, in one
# session, interleaved (round r runs every system's test before round r+1),
# then one table with ratios.  Two workers everywhere.
#
#   bench/map/run.sh [ROUNDS] [N]        defaults: 3 rounds, N = 100000
#   BENCH_SYSTEMS="pdlua mp" bench/map/run.sh 1    a subset
#   BENCH_TESTS="lat cold mem" bench/map/run.sh 5  some of the tests
#
# Needs build/pdlua (cmake --build build) and scripts/deps.sh --bench.
# Raw results go to build/bench-map.jsonl; the table to stdout.
set -eu
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
N=${2:-100000}
SYSTEMS=${BENCH_SYSTEMS:-"pdlua mp cf joblib dask"}
TESTS=${BENCH_TESTS:-"tput lat cpu cold mem"}
PY=/usr/bin/python3                      # Debian's, with its joblib and dask
PDLUA=build/pdlua
OUT=build/bench-map.jsonl
[ -x "$PDLUA" ] || { echo "bench/map: build first (cmake --build build)" >&2; exit 1; }
cc -O2 -o build/bench-pipe-rtt bench/map/pipe_rtt.c
cc -O2 -o build/bench-nng-rtt bench/map/nng_rtt.c -lnng
: >"$OUT"
one() {   # one measurement, appended as a JSON line (failures are recorded, not fatal)
  if ! timeout 600 "$@" >>"$OUT" 2>/dev/null; then
    echo "{\"failed\": \"$*\"}" >>"$OUT"
  fi
}
for r in $(seq "$ROUNDS"); do
  echo "bench/map: round $r of $ROUNDS" >&2
  one build/bench-pipe-rtt 20000
  one build/bench-pipe-rtt 20000 socketpair
  one build/bench-nng-rtt 5000
  for t in $TESTS; do
    for s in $SYSTEMS; do
      if [ "$s" = pdlua ]; then
        one "$PDLUA" run --cpus 2 --no-progress bench/map/pdlua_bench.lua "$t" "$N"
      else
        one "$PY" bench/map/peers.py "$s" "$t" "$N"
      fi
    done
  done
  case " $SYSTEMS $TESTS " in *" pdlua "*" mem "*)
    one "$PDLUA" run --cpus 2 --no-progress bench/map/pdlua_bench.lua mem1m
    one "$PDLUA" run --cpus 2 --no-progress bench/map/pdlua_bench.lua lb ;;
  esac
done
"$PY" bench/map/table.py "$OUT" "$N"
