#!/usr/bin/env bash
# HTTPS and HTTP/2 termination: gantry vs nginx (1 worker) vs HAProxy (1 thread),
# each proxying to the same nginx `return 200` backend, same run, same certificate.
# Per target: HTTP/2 with h2load (16 connections x 10 streams), HTTP/1.1 over
# TLS with wrk (64 keep-alive connections), and new TLS connections per second
# (wrk with `Connection: close`: one handshake per request).
# Usage: bench/tls.sh [duration]   (loopback only; make bench-tls)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
SECS=${DURATION%s}
GANTRY=./target/release/gantry
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
BACKEND=$(port); G=$(port); GP=$(port); GA=$(port); N=$(port); H=$(port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -addext basicConstraints=critical,CA:FALSE \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/haproxy.pem"

cat > "$work/backend.conf" <<NGX
worker_processes 1;
pid $work/backend.pid;
error_log $work/backend.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$BACKEND;
    location / { return 200 '{"verdict":"legitimate","score":0.01}'; }
  }
}
NGX
/usr/sbin/nginx -c "$work/backend.conf" -p "$work"

cat > "$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.log;
events { worker_connections 4096; }
http {
  access_log off;
  # nginx ends a connection after 1,000 requests by default (HTTP/2 too),
  # and h2load does not reconnect: lift it, as gantry and HAProxy have no such cap.
  keepalive_requests 10000000;
  upstream b { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$N ssl http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
/usr/sbin/nginx -c "$work/nginx.conf" -p "$work"

cat > "$work/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$H ssl crt $work/haproxy.pem alpn h2,http/1.1
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$BACKEND
HAP
haproxy -q -f "$work/haproxy.cfg" & pids+=($!)

cat > "$work/gantry.yaml" <<YAML
listen: 127.0.0.1:$GP
admin: {listen: 127.0.0.1:$GA}
threads: 1
pools:
  b:
    policy: round_robin
    backends: [{addr: 127.0.0.1:$BACKEND}]
routes: [{prefix: /, pool: b}]
tls:
  listen: 127.0.0.1:$G
  certificates: [{cert: $work/cert.pem, key: $work/key.pem}]
YAML
RUST_LOG=warn "$GANTRY" proxy --config "$work/gantry.yaml" & pids+=($!)
for p in $G $N $H; do
  for _ in $(seq 100); do curl -skf "https://localhost:$p/" --resolve "localhost:$p:127.0.0.1" >/dev/null && break; sleep 0.1; done
done

h2() { h2load -D "$SECS" -c 16 -m 10 "https://127.0.0.1:$1/" 2>/dev/null | awk '/^finished in/ {gsub(",","",$4); print $4}'; }
h1() { wrk -t1 -c64 -d"$DURATION" "https://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }
hs() { wrk -t1 -c16 -d"$DURATION" -H 'Connection: close' "https://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }

declare -A R
for t in gantry:$G nginx:$N haproxy:$H; do
  name=${t%%:*}; p=${t##*:}
  R[$name.h2]=$(h2 "$p"); R[$name.h1]=$(h1 "$p"); R[$name.hs]=$(hs "$p")
  echo "$name: h2 ${R[$name.h2]} req/s, h1/TLS ${R[$name.h1]} req/s, handshakes ${R[$name.hs]}/s" >&2
done
echo
echo "| target | HTTP/2 req/s (h2load -c16 -m10) | HTTP/1.1 over TLS req/s (wrk -c64) | new TLS connections/s (wrk -c16, Connection: close) |"
echo "| --- | --- | --- | --- |"
for name in gantry nginx haproxy; do
  echo "| $name | ${R[$name.h2]} | ${R[$name.h1]} | ${R[$name.hs]} |"
done
python3 - "${R[gantry.h2]}" "${R[nginx.h2]}" "${R[haproxy.h2]}" "${R[gantry.h1]}" "${R[nginx.h1]}" "${R[haproxy.h1]}" "${R[gantry.hs]}" "${R[nginx.hs]}" "${R[haproxy.hs]}" <<'PY'
import sys
v = [float(x) for x in sys.argv[1:]]
for i, what in enumerate(["HTTP/2", "HTTP/1.1 over TLS", "handshakes"]):
    g, n, h = v[3 * i : 3 * i + 3]
    print(f"{what}: gantry/nginx {g / n:.2f}, gantry/HAProxy {g / h:.2f}")
PY
