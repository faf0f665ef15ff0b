#!/usr/bin/env bash
# Builds the worker image FROM scratch out of a staged root filesystem.
#
#   docker/worker/build.sh [TAG]          (default tag: gantry-worker:VERSION from Cargo.toml)
#
# Stages IMAGE_CONTEXT/rootfs (default target/worker-image/rootfs) with the
# gantry binary, libonnxruntime.so, the model directory, and the glibc loader
# and libraries that ldd lists for the binary and the .so, at their paths on
# this host (with /lib and /lib64 recreated as the symlinks they are here).
# No registry is needed: scratch is never pulled.
#
# Environment: GANTRY_BIN (default target/release/gantry), ORT_DYLIB_PATH
# (default .cache/onnxruntime-1.31.1/libonnxruntime.so), MODEL_DIR (default
# models/phishing-url), IMAGE_CONTEXT.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)
tag=${1:-gantry-worker:$version}
bin=${GANTRY_BIN:-$root/target/release/gantry}
ort=${ORT_DYLIB_PATH:-$root/.cache/onnxruntime-1.31.1/libonnxruntime.so}
model=${MODEL_DIR:-$root/models/phishing-url}
ctx=${IMAGE_CONTEXT:-$root/target/worker-image}

for f in "$bin" "$ort" "$model/model.json" "$model/model.onnx"; do
  if [ ! -f "$f" ]; then
    echo "build.sh: missing $f (run \`make release onnxruntime\`, and check the model directory)" >&2
    exit 1
  fi
done

rm -rf "$ctx"
rootfs=$ctx/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/opt/onnxruntime" "$rootfs/models" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"

# The binary without debug info (the image does not need it), the runtime, the model.
strip --strip-debug -o "$rootfs/usr/local/bin/gantry" "$bin"
cp -L "$ort" "$rootfs/opt/onnxruntime/libonnxruntime.so"
mkdir -p "$rootfs/models/$(basename "$model")"
find "$model" -maxdepth 1 -type f \( -name '*.onnx' -o -name '*.json' -o -name '*.jsonl' -o -name '*.md' \) \
  -exec cp {} "$rootfs/models/$(basename "$model")/" \;

# Top-level directory symlinks (merged /usr): keep them, so paths resolve as on the host.
for link in /lib /lib64 /bin /sbin; do
  if [ -L "$link" ]; then
    ln -s "$(readlink "$link")" "$rootfs$link"
  fi
done

# The loader and every library ldd lists, at the same path (file name kept, directory resolved).
libs=$( { ldd "$bin"; ldd "$ort"; } | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
for lib in $libs; do
  dir=$(readlink -f "$(dirname "$lib")")
  mkdir -p "$rootfs$dir"
  cp -L "$lib" "$rootfs$dir/$(basename "$lib")"
done

cp "$root/docker/worker/Dockerfile" "$ctx/Dockerfile"
docker build --quiet --build-arg "VERSION=$version" -t "$tag" "$ctx" >/dev/null
echo "built $tag ($(du -sh "$rootfs" | cut -f1) root filesystem)"
