#!/usr/bin/env bash
# Install the system packages that `make run` and `make test` need, when missing.
#
# Usage: scripts/install-deps.sh run|test|bench
#   run   what building and running gantry needs (cmake for Pingora's zlib-ng, pkg-config)
#   test  that, plus the services the tests start on loopback (redis, prometheus, nginx, wrk),
#         openssl (test certificates) and chromium (the status page's browser test)
#   bench what `make bench-compare` runs beside gantry: nginx, HAProxy, wrk
#
# Packages come from the system package manager only. As root the missing ones are
# installed; otherwise the exact command to run is printed and the script exits 1.
set -euo pipefail

run_pkgs=(cmake pkg-config libssl-dev python3-pip)
test_pkgs=(redis-server prometheus wrk nginx-light openssl curl chromium)
bench_pkgs=(nginx-light haproxy wrk curl nghttp2-client openssl)

# Binaries that tell a package is present even when it was not installed by dpkg
# (a toolchain from elsewhere, say). Package -> command.
declare -A probe=(
  [cmake]=cmake [pkg-config]=pkg-config [redis-server]=redis-server
  [prometheus]=prometheus [wrk]=wrk [nginx-light]=nginx [openssl]=openssl
  [chromium]=chromium
  [haproxy]=haproxy [curl]=curl [nghttp2-client]=h2load
)

want=("${run_pkgs[@]}")
case "${1:-run}" in
  run) ;;
  test) want+=("${test_pkgs[@]}") ;;
  bench) want+=("${bench_pkgs[@]}") ;;
  *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac

present() {
  local pkg=$1 cmd=${probe[$1]:-}
  if [ -n "$cmd" ] && command -v "$cmd" >/dev/null 2>&1; then return 0; fi
  # python3-pip: any working `python3 -m pip` will do (make onnxruntime uses it).
  if [ "$pkg" = python3-pip ] && python3 -m pip --version >/dev/null 2>&1; then return 0; fi
  command -v dpkg >/dev/null 2>&1 && dpkg -s "$pkg" >/dev/null 2>&1
}

missing=()
for pkg in "${want[@]}"; do
  present "$pkg" || missing+=("$pkg")
done
check_docker() {
  [ "${1:-run}" = test ] || return 0
  if ! docker info >/dev/null 2>&1; then
    echo "make test needs a running Docker engine (the scaler's Docker tests start containers)." >&2
    echo "install one (Debian: apt-get install docker.io) and start it, then run make test again" >&2
    exit 1
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  check_docker "${1:-run}"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "gantry needs these system packages (Debian names): ${missing[*]}" >&2
  echo "install them with your package manager, then run make again" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "gantry needs these system packages: ${missing[*]}" >&2
  echo "run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "Installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
check_docker "${1:-run}"
