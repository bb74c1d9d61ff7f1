#!/bin/sh
# scripts/test.sh: install what is missing, build, and run every test.
#
# Three configurations, each built from scratch-safe build dirs and tested
# with ctest (C unit tests and busted specs alike):
#   build        Lua 5.4, warnings as errors          (the one users get)
#   build-asan   Lua 5.4, clang, ASan + UBSan, fuzz harnesses
#   build-luajit LuaJIT 2.1, warnings as errors
# PDLUA_CONFIGS="build" scripts/test.sh runs a subset.  The last line is
# "N passed, N failed" over all configurations; the exit status is 0 only
# when nothing failed.
set -u
cd "$(dirname "$0")/.."
scripts/deps.sh || { echo "deps: installing dependencies failed" >&2; exit 1; }

JOBS=$(nproc 2>/dev/null || echo 2)
CONFIGS=${PDLUA_CONFIGS:-"build build-asan build-luajit"}
passed=0
failed=0

run_config() {
  dir=$1
  shift
  echo "==== $dir: configure and build"
  if ! cmake -S . -B "$dir" -DPDLUA_WERROR=ON "$@" >"$dir.configure.log" 2>&1; then
    cat "$dir.configure.log"
    echo "==== $dir: configure FAILED"
    failed=$((failed + 1))
    return
  fi
  if ! cmake --build "$dir" -j"$JOBS" >"$dir.build.log" 2>&1; then
    tail -n 60 "$dir.build.log"
    echo "==== $dir: build FAILED"
    failed=$((failed + 1))
    return
  fi
  echo "==== $dir: test"
  ctest --test-dir "$dir" --output-on-failure -j"$JOBS" --timeout 600 >"$dir.ctest.log" 2>&1
  cat "$dir.ctest.log"
  # ctest: "100% tests passed, 0 tests failed out of 12"
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$dir.ctest.log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "==== $dir: ctest gave no summary"
    failed=$((failed + 1))
    return
  fi
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/')
  t=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/')
  passed=$((passed + t - f))
  failed=$((failed + f))
}

mkdir -p build
for c in $CONFIGS; do
  case $c in
    build)        run_config build ;;
    build-asan)   run_config build-asan -DCMAKE_C_COMPILER=clang -DPDLUA_SANITIZE=ON -DPDLUA_FUZZ=ON ;;
    build-luajit) run_config build-luajit -DPDLUA_LUA=luajit ;;
    *) echo "unknown configuration $c" >&2; failed=$((failed + 1)) ;;
  esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
