#!/usr/bin/env bash
# make bench-compare: gantry beside nginx, HAProxy and direct, measured with `gantry bench` in one run.
#   1. analysis traffic: Zipf(1.0) over 100k bodies to two release `gantry worker`s, through
#      gantry (cache as shipped), nginx (proxy_cache POST), HAProxy (round robin) and direct;
#   2. pass-through overhead to a fast static backend (nginx `return 200`), CPU µs per request;
#   3. the seed's targets with --slo against `gantry up` (make run's stack).
#   4. (not in the default) all-miss traffic: HAProxy, gantry with the cache off, L1 only and L1 + L3, nginx.
# Usage: bench/compare.sh [seconds per run (60)] [users (64)]    Peer configs: bench/peers/.
# Writes Markdown to BENCH_OUT (default target/bench-compare.md); KEEP=1 keeps the work dir; GANTRY=path picks the binary;
# PARTS="1 2 3" picks parts (4, all-miss traffic: make bench-miss); PROFILE=1 adds perf profiles of gantry's analysis,
# pass-through and all-miss runs (PROFILE_RUN=gantry-l1 or gantry-nocache picks another part-4 run).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
USERS=${2:-64}
PASS_SECS=${PASS_SECS:-20}
SEED_SECS=${SEED_SECS:-30}
PARTS=${PARTS:-1 2 3}
part() { [[ " $PARTS " == *" $1 "* ]]; }
GANTRY=${GANTRY:-./target/release/gantry}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.cache/onnxruntime-1.31.1/libonnxruntime.so}
out=${BENCH_OUT:-target/bench-compare.md}
for tool in nginx haproxy; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "compare.sh: $tool is not installed (scripts/install-deps.sh bench)" >&2; exit 1; }
done
[ -f "$ORT_DYLIB_PATH" ] || { echo "compare.sh: no $ORT_DYLIB_PATH (make onnxruntime)" >&2; exit 1; }
work=$(mktemp -d)
chmod 755 "$work" # nginx workers (nobody) write their cache under it
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }
# render TEMPLATE OUT KEY=VALUE...: a peer config from bench/peers with its ports filled in.
render() {
  local tpl=$1 dst=$2; shift 2
  local args=(-e "s|@WORK@|$work|g")
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "bench/peers/$tpl" > "$dst"
}
. bench/lib.sh # ticks: CPU ticks (1/100 s) of processes so far
worker_requests() { local n=0; for p in "$@"; do n=$(python3 -c "import sys,re;print(int($n+sum(float(l.split()[-1]) for l in sys.stdin if l.startswith('gantry_worker_requests_total'))))" < <(curl -s "http://127.0.0.1:$p/metrics")); done; echo "$n"; }
# bench NAME URL EXTRA...: one steady closed-loop run; JSON in $work/NAME.json.
bench() {
  local name=$1 url=$2; shift 2
  "$GANTRY" bench --scenario "$work/steady.yaml" --target "$url" --json "$work/$name.json" "$@" > "$work/$name.txt" 2>&1 || true
}
# start_workers: two release workers on W1 and W2, their pids in wpids, once both are ready.
start_workers() {
  W1=$(port); W2=$(port); wpids=()
  for w in $W1 $W2; do
    RUST_LOG=warn "$GANTRY" worker --model models/phishing-url --listen "127.0.0.1:$w" >"$work/worker-$w.log" 2>&1 & pids+=($!); wpids+=($!)
  done
  wait_http "http://127.0.0.1:$W1/ready"; wait_http "http://127.0.0.1:$W2/ready"
}
field() { python3 -c "import json,sys;r=json.load(open('$work/$1.json'));print(eval(sys.argv[1]))" "$2"; }
profile() { # profile DATA TITLE: the top self time of a perf recording, into the report
  [ -n "${PROFILE:-}" ] && [ -f "$1" ] || return 0
  { echo "$2 (perf, top self time):"; echo; echo '```';
    perf report -q -i "$1" --no-children -g none --sort dso,symbol --stdio 2>/dev/null | grep -v '^$' | head -30 || true
    echo '```'; echo; } >> "$out"
}

{
echo "# bench-compare $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -r)"
echo
echo "gantry $("$GANTRY" --version | cut -d' ' -f2), $(/usr/sbin/nginx -v 2>&1 | cut -d' ' -f3), $(haproxy -v | head -1 | cut -d' ' -f1-3)"
echo "load: \`gantry bench\` closed loop, $USERS users, one steady stage; configs: bench/peers/"
echo
} > "$out"

# --- 1. analysis traffic -------------------------------------------------------------
if part 1; then
start_workers
cat > "$work/steady.yaml" <<YAML
# One steady stage of Zipf(1.0) over 100k generated analysis bodies.
stages: [{duration: ${SECS}s, users: $USERS, label: steady}]
request: {distinct: 100000, zipf: 1.0}
YAML
GP=$(port); GA=$(port); NP=$(port); HP=$(port)
render gantry-cache.yaml "$work/gantry-cache.yaml" PORT="$GP" ADMIN="$GA" W1="$W1" W2="$W2" DISK_BYTES=1073741824
render nginx-cache.conf "$work/nginx-cache.conf" PORT="$NP" W1="$W1" W2="$W2"
render haproxy.cfg "$work/haproxy.cfg" PORT="$HP" SERVERS="  server w1 127.0.0.1:$W1\n  server w2 127.0.0.1:$W2"
sed -i 's/\\n/\n/g' "$work/haproxy.cfg"
RUST_LOG=warn "$GANTRY" proxy --config "$work/gantry-cache.yaml" >"$work/gantry.log" 2>&1 & gpid=$!; pids+=($gpid)
/usr/sbin/nginx -c "$work/nginx-cache.conf" -p "$work"
haproxy -D -f "$work/haproxy.cfg"
wait_http "http://127.0.0.1:$GA/health"; sleep 1
npid=$(cat "$work/nginx-cache.pid"); nworker=$(pgrep -P "$npid" | head -1); hpid=$(cat "$work/haproxy.pid")
{
echo "## 1. Analysis traffic: ${SECS} s, Zipf(1.0) over 100,000 bodies, two release workers"
echo
echo "| path | req/s | p50 ms | p99 ms | errors % | cache hits % | backend requests | worker CPU % | proxy CPU µs/req |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
} >> "$out"
for t in "gantry:http://127.0.0.1:$GP:$gpid" "nginx:http://127.0.0.1:$NP:$nworker" "haproxy:http://127.0.0.1:$HP:$hpid" "direct:http://127.0.0.1:$W1:"; do
  name=${t%%:*}; rest=${t#*:}; proc=${rest##*:}; url=${rest%:*}
  r0=$(worker_requests "$W1" "$W2"); w0=$(ticks "${wpids[@]}"); p0=$([ -n "$proc" ] && ticks "$proc" || echo 0)
  if [ -n "${PROFILE:-}" ] && [ "$name" = gantry ]; then
    perf record -q -g -o "$work/perf-analysis.data" -p "$proc" -- sleep "$((SECS / 2))" >/dev/null 2>&1 &
  fi
  bench "$name" "$url"
  r1=$(worker_requests "$W1" "$W2"); w1=$(ticks "${wpids[@]}"); p1=$([ -n "$proc" ] && ticks "$proc" || echo 0)
  python3 - "$work/$name.json" "$name" $((r1 - r0)) $((w1 - w0)) $((p1 - p0)) "$SECS" "$proc" >> "$out" <<'PY'
import json, sys
path, name, backend, wticks, pticks, secs, proc = sys.argv[1:8]
r = json.load(open(path)); c = r["counts"]; l = r["latency"]
hit = c.get("cache_hit_percent"); hit = "–" if hit is None else f"{hit:.1f}"
per = f"{int(pticks) * 10000 / max(c['ok'], 1):.1f}" if proc else "–"
print(f"| {name} | {r['throughput_rps']:.0f} | {l['p50_ms']:.2f} | {l['p99_ms']:.2f} | {c['error_percent']:.3f} | {hit} | {backend} | {int(wticks) / float(secs):.0f} | {per} |")
PY
done
python3 - "$work" >> "$out" <<'PY'
import json, sys
g = json.load(open(f"{sys.argv[1]}/gantry.json")); n = json.load(open(f"{sys.argv[1]}/nginx.json"))
print(f"\ngantry / nginx throughput: {g['throughput_rps'] / max(n['throughput_rps'], 1e-9):.2f}x; p99 {g['latency']['p99_ms']:.2f} ms vs {n['latency']['p99_ms']:.2f} ms\n")
PY
profile "$work/perf-analysis.data" "gantry analysis-traffic profile"
kill "$gpid" "$(cat "$work/nginx-cache.pid")" "$hpid" 2>/dev/null || true
for p in "${wpids[@]}"; do kill "$p" 2>/dev/null || true; done
sleep 1
fi

# --- 2. pass-through overhead ----------------------------------------------------------
if part 2; then
B1=$(port); GP=$(port); GA=$(port); NP=$(port); HP=$(port)
render static.conf "$work/static.conf" PORT="$B1"
render gantry-pass.yaml "$work/gantry-pass.yaml" PORT="$GP" ADMIN="$GA" B1="$B1"
render nginx-pass.conf "$work/nginx-pass.conf" PORT="$NP" B1="$B1"
render haproxy.cfg "$work/haproxy.cfg" PORT="$HP" SERVERS="  server s1 127.0.0.1:$B1"
/usr/sbin/nginx -c "$work/static.conf" -p "$work"
/usr/sbin/nginx -c "$work/nginx-pass.conf" -p "$work"
haproxy -D -f "$work/haproxy.cfg"
RUST_LOG=warn "$GANTRY" proxy --config "$work/gantry-pass.yaml" >"$work/gantry-pass.log" 2>&1 & gpid=$!; pids+=($gpid)
wait_http "http://127.0.0.1:$GP/"
npid=$(pgrep -P "$(cat "$work/nginx-pass.pid")" | head -1); hpid=$(cat "$work/haproxy.pid")
cat > "$work/steady.yaml" <<YAML
# One steady stage of GET / to a static backend.
stages: [{duration: ${PASS_SECS}s, users: $USERS, label: steady}]
request: {method: GET, path: /}
YAML
{
echo "## 2. Pass-through overhead: ${PASS_SECS} s of GET / to a static nginx backend, cache off"
echo
echo "| path | req/s | p50 ms | p99 ms | errors % | proxy CPU µs/req | vs direct |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
} >> "$out"
for t in "direct:http://127.0.0.1:$B1:" "gantry:http://127.0.0.1:$GP:$gpid" "haproxy:http://127.0.0.1:$HP:$hpid" "nginx:http://127.0.0.1:$NP:$npid"; do
  name=pass-${t%%:*}; rest=${t#*:}; proc=${rest##*:}; url=${rest%:*}
  p0=$([ -n "$proc" ] && ticks "$proc" || echo 0)
  if [ -n "${PROFILE:-}" ] && [ "$name" = pass-gantry ]; then
    perf record -q -g -o "$work/perf.data" -p "$proc" -- sleep "$((PASS_SECS / 2))" >/dev/null 2>&1 &
  fi
  bench "$name" "$url"
  p1=$([ -n "$proc" ] && ticks "$proc" || echo 0)
  python3 - "$work" "$name" $((p1 - p0)) "$proc" >> "$out" <<'PY'
import json, sys
work, name, pticks, proc = sys.argv[1:5]
r = json.load(open(f"{work}/{name}.json")); c = r["counts"]; l = r["latency"]
d = json.load(open(f"{work}/pass-direct.json"))
per = f"{int(pticks) * 10000 / max(c['ok'], 1):.1f}" if proc else "–"
print(f"| {name[5:]} | {r['throughput_rps']:.0f} | {l['p50_ms']:.2f} | {l['p99_ms']:.2f} | {c['error_percent']:.3f} | {per} | {r['throughput_rps'] / max(d['throughput_rps'], 1e-9):.2f} |")
PY
done
echo >> "$out"
profile "$work/perf.data" "gantry pass-through profile"
kill "$gpid" "$(cat "$work/nginx-pass.pid")" "$(cat "$work/static.pid")" "$hpid" 2>/dev/null || true
sleep 1
fi
# --- 4. all-miss traffic -----------------------------------------------------------------
# Every request a distinct body (5M cycled from a random offset per user): what caching costs when it never hits.
# gantry's disk tier is bounded at 32 MiB so it fills and evicts during the run.
if part 4; then
start_workers
cat > "$work/steady.yaml" <<YAML
# One steady stage over 5M distinct bodies, each user cycling from its own offset: (almost) every request a miss.
stages: [{duration: ${SECS}s, users: $USERS, label: steady}]
request: {distinct: 5000000}
YAML
GP=$(port); GA=$(port); NP=$(port); HP=$(port); G0=$(port); A0=$(port); G1=$(port); A1=$(port)
render gantry-cache.yaml "$work/gantry-miss.yaml" PORT="$GP" ADMIN="$GA" W1="$W1" W2="$W2" DISK_BYTES=33554432
render gantry-cache.yaml "$work/gantry-l1.yaml" PORT="$G1" ADMIN="$A1" W1="$W1" W2="$W2" DISK_BYTES=0
sed -i 's/^  disk:.*/  disk: {enabled: false}/' "$work/gantry-l1.yaml" # memory only: what L1 costs apart from L3
render gantry-nocache.yaml "$work/gantry-nocache.yaml" PORT="$G0" ADMIN="$A0" W1="$W1" W2="$W2"
render nginx-cache.conf "$work/nginx-cache.conf" PORT="$NP" W1="$W1" W2="$W2"
render haproxy.cfg "$work/haproxy.cfg" PORT="$HP" SERVERS="  server w1 127.0.0.1:$W1\n  server w2 127.0.0.1:$W2"
sed -i 's/\\n/\n/g' "$work/haproxy.cfg"
rm -rf "$work/nginx-cache" "$work/gantry-cache.redb"
RUST_LOG=warn "$GANTRY" proxy --config "$work/gantry-miss.yaml" >"$work/gantry-miss.log" 2>&1 & gpid=$!; pids+=($gpid)
RUST_LOG=warn "$GANTRY" proxy --config "$work/gantry-nocache.yaml" >"$work/gantry-nocache.log" 2>&1 & g0pid=$!; pids+=($g0pid)
RUST_LOG=warn "$GANTRY" proxy --config "$work/gantry-l1.yaml" >"$work/gantry-l1.log" 2>&1 & g1pid=$!; pids+=($g1pid)
/usr/sbin/nginx -c "$work/nginx-cache.conf" -p "$work"
haproxy -D -f "$work/haproxy.cfg"
wait_http "http://127.0.0.1:$GA/health"; wait_http "http://127.0.0.1:$A0/health"; wait_http "http://127.0.0.1:$A1/health"; sleep 1
npid=$(cat "$work/nginx-cache.pid"); nworker=$(pgrep -P "$npid" | head -1); hpid=$(cat "$work/haproxy.pid")
{
echo "## 4. All-miss traffic: ${SECS} s, 5,000,000 distinct bodies cycled, two release workers (gantry's L3 bounded at 32 MiB)"
echo
echo "| path | req/s | p50 ms | p99 ms | errors % | cache hits % | proxy CPU µs/req |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
} >> "$out"
for t in "haproxy:http://127.0.0.1:$HP:$hpid" "gantry-nocache:http://127.0.0.1:$G0:$g0pid" "gantry-l1:http://127.0.0.1:$G1:$g1pid" "gantry-miss:http://127.0.0.1:$GP:$gpid" "nginx-miss:http://127.0.0.1:$NP:$nworker"; do
  name=${t%%:*}; rest=${t#*:}; proc=${rest##*:}; url=${rest%:*}
  [ "$name" = haproxy ] && name=haproxy-miss
  p0=$(ticks "$proc")
  if [ -n "${PROFILE:-}" ] && [ "$name" = "${PROFILE_RUN:-gantry-miss}" ]; then
    perf record -q -g -o "$work/perf-miss.data" -p "$proc" -- sleep "$((SECS / 2))" >/dev/null 2>&1 &
  fi
  bench "$name" "$url"
  p1=$(ticks "$proc")
  python3 - "$work/$name.json" "$name" $((p1 - p0)) >> "$out" <<'PY'
import json, sys
path, name, pticks = sys.argv[1:4]
r = json.load(open(path)); c = r["counts"]; l = r["latency"]
hit = c.get("cache_hit_percent"); hit = "–" if hit is None else f"{hit:.1f}"
print(f"| {name} | {r['throughput_rps']:.0f} | {l['p50_ms']:.2f} | {l['p99_ms']:.2f} | {c['error_percent']:.3f} | {hit} | {int(pticks) * 10000 / max(c['ok'], 1):.1f} |")
PY
done
python3 - "$work" >> "$out" <<'PY'
import json, sys
on = json.load(open(f"{sys.argv[1]}/gantry-miss.json")); off = json.load(open(f"{sys.argv[1]}/gantry-nocache.json"))
print(f"\ngantry cache on / off on all-miss traffic: {on['throughput_rps'] / max(off['throughput_rps'], 1e-9):.2f}x\n")
PY
l3=$(curl -s "http://127.0.0.1:$GA/metrics" | awk '/^gantry_cache_(bytes|entries)\{tier="l3"/{printf "%s ", $2}')
[ -n "$l3" ] && echo "gantry's L3 at the end (bytes of 33554432, entries): ${l3}" >> "$out" && echo >> "$out"
profile "$work/perf-miss.data" "${PROFILE_RUN:-gantry-miss} all-miss profile"
kill "$gpid" "$g0pid" "$g1pid" "$(cat "$work/nginx-cache.pid")" "$hpid" 2>/dev/null || true
for p in "${wpids[@]}"; do kill "$p" 2>/dev/null || true; done
sleep 1
fi
part 3 || { cat "$out"; exit 0; }

# --- 3. the seed's targets against gantry up --------------------------------------------
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null || (exec 3<>/dev/tcp/127.0.0.1/9090) 2>/dev/null; then
  echo "## 3. Seed targets: skipped (127.0.0.1:8080 or :9090 is in use; make run's stack needs them)" >> "$out"
  cat "$out"; exit 0
fi
RUST_LOG=warn "$GANTRY" up >"$work/up.log" 2>&1 & upid=$!; pids+=($upid)
wait_http "http://127.0.0.1:9090/health"
for _ in $(seq 300); do curl -sf -o /dev/null -d '{"url":"http://a.example/"}' http://127.0.0.1:8080/v1/analyze && break; sleep 0.2; done
printf '# The seed targets: every field left out.\n' > "$work/seed-slo.yaml"
{
echo "## 3. Seed targets with \`--slo\` (all defaults) against \`gantry up\`, ${SEED_SECS} s each"
echo
echo "| load | req/s | peak | mean ms | p95 ms | p99 ms | batch p99 ms | errors % | in flight | CPU % | memory % | cache hits % | failed objectives |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
} >> "$out"
# seed FILE LABEL ARGS...: one run against gantry up; its row in the table.
seed() {
  local name=$1 label=$2; shift 2
  "$GANTRY" bench "$@" --target http://127.0.0.1:8080 --admin http://127.0.0.1:9090 --pid "$upid" \
    --slo "$work/seed-slo.yaml" --json "$work/$name.json" --report "$work/$name.html" > "$work/$name.txt" 2>&1 || true
  python3 - "$work/$name.json" "$label" >> "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency"]; s = {x["objective"]["name"]: x for x in r["slo"]}
def v(k, f="{:.1f}"):
    a = s.get(k, {}).get("actual")
    return "–" if a is None else f.format(a)
failed = ", ".join(k for k, x in s.items() if x["verdict"] == "fail") or "none"
print(f"| {sys.argv[2]} | {r['throughput_rps']:.0f} | {r['peak_rps']:.0f} | {v('mean_ms', '{:.2f}')} | {v('p95_ms', '{:.2f}')} | {v('p99_ms', '{:.2f}')} | {v('batch_p99_ms', '{:.2f}')} | {r['counts']['error_percent']:.3f} | {r['max_in_flight']} | {v('cpu_percent')} | {v('memory_percent')} | {v('cache_hit_percent')} | {failed} |")
PY
}
seed seed-100 "open 100 req/s" load --rate 100 --duration "${SEED_SECS}s" --zipf 1.0 --distinct 1000
seed seed-500 "open 500 req/s" load --rate 500 --duration "${SEED_SECS}s" --zipf 1.0 --distinct 1000
seed seed-users "closed 1000 users" load --users 1000 --duration "${SEED_SECS}s" --zipf 1.0 --distinct 1000
seed seed-batch "batch 10, 20 req/s" load --rate 20 --batch 10 --duration "${SEED_SECS}s" --zipf 1.0 --distinct 1000
[ -n "${KEEP:-}" ] && cp "$work"/*.html target/ 2>/dev/null || true
cat "$out"
