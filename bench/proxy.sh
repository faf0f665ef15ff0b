#!/usr/bin/env bash
# Proxy overhead: wrk against nginx directly, then through gantry, in the same run.
# Usage: bench/proxy.sh [duration] [connections]   (loopback only; bounded)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-32}
GANTRY=./target/release/gantry
work=$(mktemp -d)
cleanup() { [ -n "${gpid:-}" ] && kill "$gpid" 2>/dev/null; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
NGINX_PORT=$(port); PROXY_PORT=$(port); ADMIN_PORT=$(port)

cat > "$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { return 200 '{"verdict":"legitimate","score":0.01}'; }
  }
}
NGX
/usr/sbin/nginx -c "$work/nginx.conf" -p "$work"

cat > "$work/gantry.yaml" <<YAML
listen: 127.0.0.1:$PROXY_PORT
admin: {listen: 127.0.0.1:$ADMIN_PORT}
threads: 2
pools:
  fast:
    policy: round_robin
    backends: [{addr: 127.0.0.1:$NGINX_PORT}]
routes: [{prefix: /, pool: fast}]
YAML
RUST_LOG=warn "$GANTRY" proxy --config "$work/gantry.yaml" & gpid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PROXY_PORT/" >/dev/null && break; sleep 0.1; done

run() { wrk -t2 -c"$CONNS" -d"$DURATION" --latency "$1" | tee "$work/$2.txt" >&2; }
rps() { awk '/Requests\/sec/ {print $2}' "$work/$1.txt"; }
pct() { awk -v p="$2" '$1==p {print $2}' "$work/$1.txt"; }
run "http://127.0.0.1:$NGINX_PORT/" direct
run "http://127.0.0.1:$PROXY_PORT/" gantry
echo
echo "| target | req/s | p50 | p99 |"
echo "| --- | --- | --- | --- |"
for t in direct gantry; do echo "| $t | $(rps $t) | $(pct $t 50%) | $(pct $t 99%) |"; done
python3 -c "print(f'ratio gantry/direct: {float(\"$(rps gantry)\")/float(\"$(rps direct)\"):.2f}')"
