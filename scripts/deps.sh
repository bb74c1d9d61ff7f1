#!/bin/sh
# Install every build, test and benchmark dependency of pdlua from Debian's
# packages. Does nothing (and needs no network) when all are already there.
# Usage: scripts/deps.sh [--bench]   (--bench adds the Python and Lua peers for bench/)
set -eu

PKGS="build-essential cmake pkg-config git
lua5.4 liblua5.4-dev lua-cjson lua-busted
libnng-dev libmbedtls-dev
libedit-dev
libopenblas-dev liblapacke-dev
luajit2 libluajit2-5.1-dev lua-compat53-dev
clang libclang-rt-14-dev
tmux iproute2 procps openssl"

if [ "${1:-}" = "--bench" ]; then
  PKGS="$PKGS python3 python3-joblib python3-dask python3-distributed lua-messagepack python3-numpy python3-deap python3-pyswarms"
fi

missing=""
for p in $PKGS; do
  # dpkg-query prints "install ok installed" only for a fully installed package
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done

[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
