#!/usr/bin/env bash
# Builds the Redis and Prometheus images of docker-compose.local.yml FROM scratch, out of
# this machine's Debian binaries (as docker/worker/build.sh builds the worker): no registry.
#
#   docker/compose/build-images.sh        -> gantry-redis:local, gantry-prometheus:local
#
# Each image holds the binary (Redis: and redis-cli), the loader and every library `ldd` lists, at their host
# paths, and runs as nobody (65534). Needs redis-server and prometheus installed
# (scripts/install-deps.sh test installs both).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
ctx_base=${IMAGE_CONTEXT:-$root/target/compose-images}

# build NAME BINARY WRITABLE_DIR ENTRYPOINT_JSON [MORE_BINARIES...]
build() {
  local name=$1 bin=$2 data=$3 entry=$4
  shift 4
  local path
  path=$(command -v "$bin") || { echo "build-images.sh: $bin is not installed (scripts/install-deps.sh test)" >&2; exit 1; }
  path=$(readlink -f "$path")
  local ctx=$ctx_base/$name rootfs=$ctx_base/$name/rootfs
  rm -rf "$ctx"
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/tmp" "$rootfs/etc" "$ctx/data"
  chmod 1777 "$rootfs/tmp"
  cp -L "$path" "$rootfs/usr/local/bin/$bin"
  local all=("$path") more
  for more in "$@"; do
    more=$(readlink -f "$(command -v "$more")")
    cp -L "$more" "$rootfs/usr/local/bin/$(basename "$more")"
    all+=("$more")
  done
  # Merged /usr: keep the top-level symlinks so library paths resolve as on the host.
  for link in /lib /lib64 /bin /sbin; do
    if [ -L "$link" ]; then ln -s "$(readlink "$link")" "$rootfs$link"; fi
  done
  local lib dir
  for lib in $(for b in "${all[@]}"; do ldd "$b"; done | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u); do
    dir=$(readlink -f "$(dirname "$lib")")
    mkdir -p "$rootfs$dir"
    cp -L "$lib" "$rootfs$dir/$(basename "$lib")"
  done
  # Name lookups (Prometheus resolves the compose service names) and a user to run as.
  printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
  printf 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$rootfs/etc/passwd"
  printf 'nogroup:x:65534:\n' > "$rootfs/etc/group"
  cat > "$ctx/Dockerfile" <<DOCKERFILE
# $name from this host's $bin, FROM scratch (docker/compose/build-images.sh).
FROM scratch
COPY rootfs/ /
# The one writable directory, nobody's.
COPY --chown=65534:65534 data/ $data/
USER 65534:65534
WORKDIR $data
ENTRYPOINT $entry
DOCKERFILE
  docker build --quiet -t "gantry-$name:local" "$ctx" >/dev/null
  echo "built gantry-$name:local ($(du -sh "$rootfs" | cut -f1) root filesystem, $bin $("$path" --version 2>&1 | head -n1 | grep -o '[0-9][0-9.]*' | head -n1))"
}

# redis-cli too: for a healthcheck or a look at the cache without a shell.
build redis redis-server /data '["/usr/local/bin/redis-server"]' redis-cli
build prometheus prometheus /prometheus '["/usr/local/bin/prometheus"]'
