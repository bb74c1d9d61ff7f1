#!/bin/sh
# bench/optim/run.sh [--quick | --full] [BUILD]: pdlua's optimisers on the
# anchor protocol (bench/optim/run.lua), then the Python references that
# Debian's python3 has (bench/optim/ref.py: DEAP, pyswarms, pycma if
# installed; scripts/deps.sh --bench installs the Debian ones).
#   --quick  3 seeds, 10-D (about a minute)      --full  15 seeds (minutes)
set -eu
mode="${1:---quick}"
build="${2:-build}"
here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../.." && pwd)"
export OPENBLAS_NUM_THREADS=1      # small matrices: threads only cost, and reorder sums
PDLUA_SOURCE="$src" "$src/$build/pdlua" run "$here/run.lua" "$mode"
py=/usr/bin/python3
if [ -x "$py" ] && "$py" -c "import numpy" 2>/dev/null; then
  echo
  if [ "$mode" = "--full" ]; then
    "$py" "$here/ref.py" --seeds 5 --funcs sphere,rosenbrock,rastrigin,ackley --dims 10
  else
    "$py" "$here/ref.py" --seeds 2 --funcs sphere,rastrigin --dims 10
  fi
else
  echo "(no /usr/bin/python3 with numpy: references skipped; the anchors are in anchors.csv)"
fi
