#!/bin/sh
# scripts/try.sh: install what is missing, build, and run an example job on
# every local CPU (the embedded default: nothing else to start).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec build/pdlua run examples/pi.lua "$@"
