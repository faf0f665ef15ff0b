#!/usr/bin/env bash
# Worker benchmark (make bench-worker): throughput and p50/p99 of POST /v1/analyze
# at several concurrencies for
#   - gantry worker, INT8, batching off (--max-batch-size 1) and on,
#   - gantry worker, FP32, batching off and on,
#   - bench/python_server.py (aiohttp + onnxruntime, INT8, no batching).
# Load comes from wrk (bench/worker_post.lua) over loopback only; each run is
# bounded (BENCH_DURATION, default 5s). Servers are started here and stopped
# on exit. Writes a Markdown table to BENCH_OUT (default target/bench-worker.md).
# "server CPU µs/req" is the server process's user+system time over the
# requests wrk completed: wrk shares the same cores, so req/s alone hides it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
cd "$root"
bin=${GANTRY_BIN:-target/release/gantry}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$root/.cache/onnxruntime-1.31.1/libonnxruntime.so}
model=${MODEL_DIR:-models/phishing-url}
duration=${BENCH_DURATION:-5s}
concurrency=${BENCH_CONCURRENCY:-"1 16 64"}
batch_on=${BENCH_BATCH_ON:-"--max-batch-size 64 --max-queue-delay 0ms"}
runs=${BENCH_RUNS:-"int8-off int8-on fp32-off fp32-on python"}
venv=${BENCH_VENV:-.cache/bench-venv}
out=${BENCH_OUT:-target/bench-worker.md}

for f in "$bin" "$ORT_DYLIB_PATH" "$model/model.onnx" "$model/model.fp32.onnx" "$model/golden.jsonl"; do
  [ -f "$f" ] || { echo "worker.sh: missing $f (run \`make release onnxruntime\`)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "worker.sh: wrk is not installed (apt-get install wrk)" >&2; exit 1; }

# The Python baseline's venv, from the pinned requirements.
if [ ! -f "$venv/.installed" ] || [ bench/requirements.txt -nt "$venv/.installed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q -r bench/requirements.txt
  touch "$venv/.installed"
fi

tmp=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Request bodies: the golden URLs of up to 256 bytes (all but the two
# multi-kilobyte edge cases), one JSON body per line.
python3 -c 'import json,sys
for line in open(sys.argv[1], encoding="utf-8"):
    url = json.loads(line)["url"]
    if len(url.encode()) <= 256:
        print(json.dumps({"url": url}))' "$model/golden.jsonl" > "$tmp/bodies.txt"
export BENCH_BODIES=$tmp/bodies.txt

wait_http() { # url: up to 30 s
  for _ in $(seq 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || { echo "server exited" >&2; cat "$tmp/server.err" >&2; return 1; }
    sleep 0.1
  done
  echo "no answer from $1" >&2; return 1
}

start_gantry() { # args...
  "$bin" worker --model "$model" --listen 127.0.0.1:0 "$@" > "$tmp/server.out" 2> "$tmp/server.err" &
  server_pid=$!
  for _ in $(seq 300); do
    base=$(sed -n 's/^gantry worker listening on //p' "$tmp/server.out")
    [ -n "$base" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.err" >&2; exit 1; }
    sleep 0.1
  done
  wait_http "$base/ready"
}

start_python() { # args...
  port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$venv/bin/python" bench/python_server.py --model "$model" --port "$port" "$@" > "$tmp/server.out" 2> "$tmp/server.err" &
  server_pid=$!
  base=http://127.0.0.1:$port
  wait_http "$base/health"
}

stop_server() {
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
}

counter() { # metric name -> value from /metrics (0 if absent)
  { curl -fsS "$base/metrics" 2>/dev/null || true; } | awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }'
}

to_ms() { # wrk duration (12.3us, 4.5ms, 1.2s) -> ms
  awk -v d="$1" 'BEGIN { v = d + 0; if (d ~ /us$/) v /= 1000; else if (d ~ /ms$/) v += 0; else if (d ~ /s$/) v *= 1000; printf "%.2f", v }'
}

printf '| server | model | batching | concurrency | req/s | p50 ms | p99 ms | mean batch | server CPU µs/req | errors |\n' > "$tmp/table.md"
printf '|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n' >> "$tmp/table.md"

measure() { # server model batching
  # Warm up (sessions, allocator, connection pools), not recorded.
  wrk -t2 -c16 -d1s -s bench/worker_post.lua "$base/v1/analyze" > /dev/null
  for c in $concurrency; do
    local t=2; [ "$c" -lt 2 ] && t=1
    local inf0 exe0 inf1 exe1 mean cpu0 cpu1
    inf0=$(counter gantry_worker_inferences_total); exe0=$(counter gantry_worker_batch_executions_total)
    cpu0=$(ticks "$server_pid")
    wrk -t"$t" -c"$c" -d"$duration" --latency -s bench/worker_post.lua "$base/v1/analyze" > "$tmp/wrk.txt"
    cpu1=$(ticks "$server_pid")
    inf1=$(counter gantry_worker_inferences_total); exe1=$(counter gantry_worker_batch_executions_total)
    mean=$(awk -v a="$((inf1 - inf0))" -v b="$((exe1 - exe0))" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "1 (no batching)" }')
    local rps p50 p99 non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$tmp/wrk.txt")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$tmp/wrk.txt")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$tmp/wrk.txt")")
    non2xx=$(awk '/Non-2xx/ { print $NF }' "$tmp/wrk.txt"); non2xx=${non2xx:-0}
    sockerr=$(awk -F'[ ,]+' '/Socket errors/ { print $4 + $6 + $8 + $10 }' "$tmp/wrk.txt"); sockerr=${sockerr:-0}
    local requests cpu_us
    requests=$(awk '/requests in/ { print $1 }' "$tmp/wrk.txt")
    cpu_us=$(awk -v t="$((cpu1 - cpu0))" -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "-" }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$c" "$rps" "$p50" "$p99" "$mean" "$cpu_us" "$((non2xx + sockerr))" | tee -a "$tmp/table.md"
  done
}

echo "gantry worker vs Python onnxruntime server: $(nproc) cores, wrk ${duration} per run, concurrency ${concurrency}" >&2

for run in $runs; do
  case $run in
    int8-off) start_gantry --max-batch-size 1;                      measure gantry INT8 off ;;
    int8-on)  start_gantry $batch_on;                               measure gantry INT8 on ;;
    fp32-off) start_gantry --onnx model.fp32.onnx --max-batch-size 1; measure gantry FP32 off ;;
    fp32-on)  start_gantry --onnx model.fp32.onnx $batch_on;        measure gantry FP32 on ;;
    python)   start_python;                                         measure python INT8 off ;;
    *) echo "worker.sh: unknown run $run" >&2; exit 1 ;;
  esac
  stop_server
done

mkdir -p "$(dirname "$out")"
{
  echo "Command: \`make bench-worker\` ($(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)); batching on = \`$batch_on\`; wrk ${duration} per row."
  echo
  cat "$tmp/table.md"
} > "$out"
echo "wrote $out" >&2
