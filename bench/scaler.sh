#!/usr/bin/env bash
# Scaler benchmark (make bench-scaler): load spike -> first request on a new
# replica, and zero replicas -> first response, for the docker runtime (the
# worker image) and local `gantry worker` processes. Loopback only.
#
#   bench/scaler.sh [RUNS]      (GANTRY_BIN, WORKER_IMAGE override the defaults)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GANTRY_BIN:-$root/target/release/gantry}
image=${WORKER_IMAGE:-gantry-worker:$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$root/.cache/onnxruntime-1.31.1/libonnxruntime.so}
cleanup() {
  docker ps -aq --filter label=gantry.deployment=gantry-bench --filter label=gantry.managed=true | xargs -r docker rm -f >/dev/null
  docker network rm gantry-bench-spike gantry-bench-zero >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
python3 "$root/bench/scaler.py" "$bin" "$image" "${1:-5}"
