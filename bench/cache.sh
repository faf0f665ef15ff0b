#!/usr/bin/env bash
# Response cache: hit ratios under a Zipf load (in process, against a real Redis), then
# L1-hit throughput through gantry vs nginx proxy_cache hits, in the same run.
# Usage: bench/cache.sh [duration] [connections] [requests]   (loopback only; bounded)
# KEEP=1 keeps the work directory (configs, logs, wrk output) for a look afterwards;
# PROFILE=1 adds a perf profile of gantry's L1-hit run; HITS_ONLY=1 skips the hit ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
DURATION=${1:-10s}
CONNS=${2:-64}
REQUESTS=${3:-1000000}
GANTRY=./target/release/gantry
BENCH=./target/release/cache-bench
work=$(mktemp -d)
chmod 755 "$work" # nginx workers (nobody) write their cache under it
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

if [ -z "${HITS_ONLY:-}" ]; then
echo "## Hit ratio: $REQUESTS requests, Zipf(1.0) over 100k bodies, L1 = 10k entries"
REDIS_PORT=$(port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$work" >/dev/null & pids+=($!)
wait_port "$REDIS_PORT"
mkdir -p "$work/l3"
"$BENCH" --requests "$REQUESTS" --redis "redis://127.0.0.1:$REDIS_PORT" --dir "$work/l3"
echo
fi

echo "## L1-hit throughput: wrk -t1 -c$CONNS -d$DURATION, one POST body, every request a hit; one proxy thread / nginx worker"
ORIGIN_PORT=$(port); NGINX_PORT=$(port); PROXY_PORT=$(port); ADMIN_PORT=$(port)
BODY='{"url":"http://paypal.com.secure-login.example.ru/","mode":"full"}'
cat > "$work/origin.conf" <<NGX
worker_processes 1;
pid $work/origin.pid;
error_log $work/origin.log;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    location / { default_type application/json; return 200 '{"verdict":"phishing","score":0.97,"model":"gantry-url-v1"}'; }
  }
}
NGX
cat > "$work/cache.conf" <<NGX
worker_processes 1;
pid $work/cache.pid;
error_log $work/cache.log;
events { worker_connections 1024; }
http {
  access_log off;
  proxy_cache_path $work/ngx levels=1:2 keys_zone=c:10m max_size=100m inactive=60m use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 16; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    client_body_buffer_size 64k;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache c;
      proxy_cache_methods GET HEAD POST;
      proxy_cache_key "\$request_method|\$request_uri|\$request_body";
      proxy_cache_valid 200 60m;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
NGX
/usr/sbin/nginx -c "$work/origin.conf" -p "$work"
/usr/sbin/nginx -c "$work/cache.conf" -p "$work"
cat > "$work/gantry.yaml" <<YAML
listen: 127.0.0.1:$PROXY_PORT
admin: {listen: 127.0.0.1:$ADMIN_PORT}
threads: 1
pools:
  analysis:
    policy: round_robin
    backends: [{addr: 127.0.0.1:$ORIGIN_PORT}]
routes:
  - {prefix: /, pool: analysis, cache: {ttl: 1h}}
cache:
  disk: {path: $work/gantry-cache.redb}
YAML
RUST_LOG=warn "$GANTRY" proxy --config "$work/gantry.yaml" & gpid=$!; pids+=($gpid)
wait_port "$NGINX_PORT"; wait_port "$PROXY_PORT"
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
xcache() { curl -s -o /dev/null -D - -X POST -H 'content-type: application/json' -d "$BODY" "$1" | awk 'tolower($1)=="x-cache:" {print $2}' | tr -d '\r'; }
for url in "http://127.0.0.1:$NGINX_PORT/v1/analyze" "http://127.0.0.1:$PROXY_PORT/v1/analyze"; do
  xcache "$url" >/dev/null; sleep 0.2
  echo "warm-up check $url: X-Cache $(xcache "$url")"
done
# Runs wrk against $1 (label $2); with $3, the pid whose CPU time per request it records.
run() {
  local before after n
  [ -n "${3:-}" ] && before=$(ticks "$3")
  wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$work/post.lua" "$1" > "$work/$2.txt"
  if [ -n "${3:-}" ]; then
    after=$(ticks "$3")
    n=$(awk '/requests in/ {print $1}' "$work/$2.txt")
    python3 -c "import os; t=os.sysconf('SC_CLK_TCK'); print(f'$2: {($after-$before)/t/$n*1e6:.1f} CPU us per request')" > "$work/$2.cpu"
  fi
}
rps() { awk '/Requests\/sec/ {print $2}' "$work/$1.txt"; }
pct() { awk -v p="$2" '$1==p {print $2}' "$work/$1.txt"; }
run "http://127.0.0.1:$ORIGIN_PORT/v1/analyze" origin
nginx_worker=$(pgrep -P "$(cat "$work/cache.pid")" | head -1)
run "http://127.0.0.1:$NGINX_PORT/v1/analyze" nginx "$nginx_worker"
if [ -n "${PROFILE:-}" ]; then
  perf record -q -g -o "$work/perf.data" -p "$gpid" -- sleep 5 >/dev/null 2>&1 &
fi
run "http://127.0.0.1:$PROXY_PORT/v1/analyze" gantry "$gpid"
echo
echo "| target | req/s | p50 | p99 |"
echo "| --- | --- | --- | --- |"
echo "| nginx return 200 (the origin, 1 worker) | $(rps origin) | $(pct origin 50%) | $(pct origin 99%) |"
echo "| nginx proxy_cache hit (1 worker) | $(rps nginx) | $(pct nginx 50%) | $(pct nginx 99%) |"
echo "| gantry L1 hit (1 thread) | $(rps gantry) | $(pct gantry 50%) | $(pct gantry 99%) |"
python3 -c "print(f'gantry / nginx proxy_cache: {float(\"$(rps gantry)\")/float(\"$(rps nginx)\"):.2f}x; gantry / nginx return 200: {float(\"$(rps gantry)\")/float(\"$(rps origin)\"):.2f}x')"
cat "$work/nginx.cpu" "$work/gantry.cpu"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${PROFILE:-}" ] && [ -f "$work/perf.data" ]; then
  echo; echo "gantry L1-hit profile (perf, top self time):"; echo '```'
  perf report -q -i "$work/perf.data" --no-children -g none --sort dso,symbol --stdio 2>/dev/null | grep -v '^$' | head -40 || true
  echo '```'
fi
