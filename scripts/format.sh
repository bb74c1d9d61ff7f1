#!/bin/sh
# Reformat the C sources in place with the project's .clang-format
# (scripts/format.sh --check only reports files that would change).
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h')
if [ "${1:-}" = "--check" ]; then
  clang-format --dry-run $files 2>&1 | grep -o '^[^:]*\.[ch]' | sort -u
else
  clang-format -i $files
fi
