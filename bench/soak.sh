#!/usr/bin/env bash
# Soak (make soak DURATION=30m): steady load at about half of measured capacity
# through the full `gantry up` stack (proxy, cache, scaler, local release
# workers), Zipf(1.0)-repeating analysis requests, in one-minute rounds. Each
# round records req/s, p99, failed requests, ready replicas, the memory
# tier's bytes and the resident memory of the gantry process and of its
# largest worker. Exits 1 when any request failed or gantry's RSS grew more
# than 10 % after warm-up: round 7 (the cache filled in the first seconds and
# went through its first stale-while-revalidate refresh at 5 min), or half
# the rounds of a shorter run.
#
#   bench/soak.sh [DURATION]      (30m default; s, m or h; at least 4m)
#   CONNS=16 (connections before pacing), WARM=N (warm-up rounds), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-30m}
CONNS=${CONNS:-16}
GANTRY=./target/release/gantry
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls -d "$PWD"/.cache/onnxruntime-*/ | head -n1)libonnxruntime.so}
seconds() { python3 -c "import sys; v=sys.argv[1]; m={'s':1,'m':60,'h':3600}[v[-1]]; print(int(float(v[:-1])*m))" "$1"; }
ROUNDS=$(( $(seconds "$DURATION") / 60 ))
[ "$ROUNDS" -ge 4 ] || { echo "DURATION must be at least 4m" >&2; exit 2; }
WARM=${WARM:-$(( ROUNDS >= 14 ? 7 : ROUNDS / 2 ))}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PROXY_PORT=$(port); ADMIN_PORT=$(port)
URL="http://127.0.0.1:$PROXY_PORT/v1/analyze"

# The make-run stack, on free ports, its cache and policies in the work directory.
mkdir -p "$work/policies"
cp policies/analysis.yaml "$work/policies/"
sed -e "s|^listen: .*|listen: 127.0.0.1:$PROXY_PORT|" \
    -e "s|  listen: 127.0.0.1:9090|  listen: 127.0.0.1:$ADMIN_PORT|" \
    -e "s|path: var/cache/gantry-cache.redb|path: $work/cache.redb|" \
    -e "s|policies: policies|policies: $work/policies|" \
    -e "s|args: \[worker, --model, models/phishing-url\]|args: [worker, --model, $PWD/models/phishing-url]|" \
    gantry.yaml > "$work/gantry.yaml"

# 200,000 requests drawn Zipf(1.0) over 100,000 distinct URLs, one JSON body per line.
python3 - "$work/bodies.txt" <<'PY'
import random, sys
random.seed(7)
n = 100_000
weights = [1.0 / (r + 1) for r in range(n)]
ranks = random.choices(range(n), weights=weights, k=200_000)
with open(sys.argv[1], "w") as f:
    for r in ranks:
        f.write('{"url":"http://host%d.example/login?id=%d","mode":"full"}\n' % (r % 997, r))
PY
cat > "$work/soak.lua" <<'LUA'
local requests, i, pause = {}, 0, 0
function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for body in io.lines(os.getenv("SOAK_BODIES")) do
    requests[#requests + 1] = wrk.format("POST", nil, headers, body)
  end
  i = math.random(#requests)
  pause = tonumber(os.getenv("SOAK_DELAY_MS") or "0")
end
function request()
  i = i % #requests + 1
  return requests[i]
end
function delay() return pause end
LUA
export SOAK_BODIES="$work/bodies.txt"

RUST_LOG=warn "$GANTRY" up --config "$work/gantry.yaml" > "$work/gantry.log" 2>&1 &
GPID=$!; pids+=("$GPID")
for _ in $(seq 600); do
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' -d '{"url":"http://warm.example/"}' "$URL" && break
  sleep 0.1
done
curl -sf -o /dev/null -X POST -H 'content-type: application/json' -d '{"url":"http://warm.example/"}' "$URL" \
  || { echo "gantry up never answered; log:"; tail -20 "$work/gantry.log"; exit 1; }

field() { awk -v k="$2" '$1==k {print $2}' "$1"; }
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
p99() { awk '$1=="99%" {print $2}' "$1"; }
failed() { awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}' "$1"; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
worker_rss() {
  local max=0 r
  for c in $(pgrep -P "$GPID" || true); do r=$(rss_mib "$c"); [ "$r" -gt "$max" ] && max=$r; done
  echo "$max"
}
ready() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^gantry_scaler_replicas\{.*state="ready"/ {print $2; exit}'; }
l1_mib() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^gantry_cache_bytes\{tier="l1"\}/ {printf "%.0f", $2/1048576; exit}'; }

# Capacity: a closed-loop run with no pauses; the soak aims at half of it.
SOAK_DELAY_MS=0 wrk -t1 -c64 -d15s --latency -s "$work/soak.lua" "$URL" > "$work/capacity.txt"
CAPACITY=$(rps "$work/capacity.txt")
# Each connection sends one request, then pauses: rate ~ CONNS / (pause + latency).
# wrk pauses in whole milliseconds, so at least 1 ms; a 10 s probe at that
# pause then scales the connection count to land at half of capacity.
DELAY=$(python3 -c "print(max(1, round($CONNS * 1000 / ($CAPACITY / 2) - 0.5)))")
export SOAK_DELAY_MS=$DELAY
wrk -t1 -c"$CONNS" -d10s -s "$work/soak.lua" "$URL" > "$work/pace.txt"
CONNS=$(python3 -c "print(min(1000, max(1, round($CONNS * ($CAPACITY / 2) / $(rps "$work/pace.txt")))))")
echo "## Soak: $ROUNDS one-minute rounds, $CONNS connections pausing ${DELAY} ms (capacity $CAPACITY req/s, aiming at half)"
echo "Command: bench/soak.sh $DURATION; $(nproc) cores, loopback; $(date -u +%Y-%m-%d)"
echo
echo "| round | req/s | p99 | failed | ready replicas | L1 MiB | gantry RSS MiB | largest worker RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
total_failed=0; warm_rss=0; first_p99=""; last_p99=""
for r in $(seq "$ROUNDS"); do
  wrk -t1 -c"$CONNS" -d60s --latency -s "$work/soak.lua" "$URL" > "$work/round$r.txt"
  f=$(failed "$work/round$r.txt"); total_failed=$((total_failed + f))
  g=$(rss_mib "$GPID"); w=$(worker_rss)
  [ "$r" -eq "$WARM" ] && warm_rss=$g && first_p99=$(p99 "$work/round$r.txt")
  last_p99=$(p99 "$work/round$r.txt"); last_rss=$g
  echo "| $r | $(rps "$work/round$r.txt") | $last_p99 | $f | $(ready) | $(l1_mib) | $g | $w |"
done
growth=$(python3 -c "print(f'{($last_rss - $warm_rss) * 100 / max($warm_rss, 1):.1f}')")
echo
echo "failed requests: $total_failed; gantry RSS after warm-up (round $WARM) $warm_rss MiB -> $last_rss MiB ($growth %); p99 round $WARM $first_p99 -> last $last_p99"
python3 -c "import sys; sys.exit(0 if $total_failed == 0 and $growth < 10 else 1)"
