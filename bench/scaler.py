#!/usr/bin/env python3
"""Scaler benchmark: time from a load spike to the first request served by a
new replica, and from zero replicas to the first response.

Runs the real `gantry up` (docker runtime with the worker image, and local
`gantry worker` processes) on loopback ports, with short policy intervals;
`docker+warm` is the docker runtime with warm spares (`warm:` in the policy),
so scaling up promotes a ready container instead of starting one.
Standard library only. Usage: bench/scaler.py GANTRY_BIN [IMAGE] [RUNS]
(BENCH_SCALER_MODES picks modes; default "docker docker+warm local").
"""
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = b'{"url":"http://paypal.com.secure-login.example.ru/"}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None, timeout=15):
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


class Gantry:
    """`gantry up` with a config and one policy in a temp dir."""

    def __init__(self, binary, runtime, image, pool, policy):
        self.dir = tempfile.mkdtemp(prefix="gantry-bench-")
        os.mkdir(os.path.join(self.dir, "policies"))
        with open(os.path.join(self.dir, "policies", pool + ".yaml"), "w") as f:
            f.write(policy)
        port, admin = free_port(), free_port()
        self.url, self.admin, self.pool = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", pool
        model = os.path.join(ROOT, "models", "phishing-url")
        config = f"""listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin}}}
pools:
  {pool}: {{health: {{interval: 200ms}}, drain_timeout: 5s}}
routes: [{{prefix: /v1/analyze, pool: {pool}, idempotent: true}}]
scaler:
  policies: {self.dir}/policies
  runtime: {runtime}
  deployment: gantry-bench
  local: {{args: [worker, --model, '{model}']}}
  docker: {{image: '{image}', network: gantry-bench-{pool}, publish: true}}
"""
        with open(os.path.join(self.dir, "gantry.yaml"), "w") as f:
            f.write(config)
        self.log = open(os.path.join(self.dir, "gantry.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "up", "--config", os.path.join(self.dir, "gantry.yaml")],
            stdout=subprocess.DEVNULL, stderr=self.log, cwd=self.dir,
            env=dict(os.environ, RUST_LOG="info,pingora=warn"))
        self.wait(lambda: self.members() is not None, 20, "admin API")

    def members(self):
        try:
            _, body = http(self.admin + "/admin/pools", timeout=2)
        except OSError:
            return None
        for p in json.loads(body):
            if p["name"] == self.pool:
                return [(b["addr"], b["state"]) for b in p["backends"]]
        return []

    def up(self):
        return sum(1 for _, s in (self.members() or []) if s == "up")

    def served(self):
        _, text = http(self.admin + "/metrics")
        out = {}
        pat = re.compile(r'gantry_upstream_requests_total\{(.*)\} (\S+)')
        for m in pat.finditer(text.decode()):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("pool") == self.pool and labels.get("outcome") == "ok":
                out[labels["backend"]] = float(m.group(2))
        return out

    def spares(self):
        _, text = http(self.admin + "/metrics")
        m = re.search(r'gantry_scaler_replicas\{pool="%s",state="warm"\} (\S+)' % self.pool, text.decode())
        return int(float(m.group(1))) if m else 0

    def wait_spares(self, n):
        """Waits for n spares, then long enough for a worker to load its model."""
        if n:
            self.wait(lambda: self.spares() == n, 90, f"{n} warm spares")
            time.sleep(3)

    def start_seconds(self):
        _, text = http(self.admin + "/metrics")
        t = text.decode()
        s = re.search(r'gantry_scaler_replica_start_seconds_sum\{pool="%s"\} (\S+)' % self.pool, t)
        c = re.search(r'gantry_scaler_replica_start_seconds_count\{pool="%s"\} (\S+)' % self.pool, t)
        return (float(s.group(1)), int(float(c.group(1)))) if s and c else (0.0, 0)

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.02)
        raise SystemExit(f"timed out waiting for {what}; log in {self.dir}/gantry.log")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def load(url, clients, stop, counts):
    def client():
        while not stop.is_set():
            try:
                http(url, BODY)
                counts["ok"] += 1
            except OSError:
                counts["failed"] += 1
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


def spike(binary, runtime, image, runs, warm):
    """Load spike -> first request served by a replica that was not in the pool before."""
    policy = f"""pool: spike
min: 1
max: 3
warm: {warm}
interval: 500ms
window: 10s
metrics: [{{metric: request_rate_per_replica, target: 50}}]
panic: {{window: 2s, threshold: 2}}
scale_up: {{max_step: 2, period: 1s}}
scale_down: {{stabilization: 2s, cooldown: 0s, max_step: 2, period: 1s}}
ready_timeout: 60s
"""
    g = Gantry(binary, runtime, image, "spike", policy)
    times = []
    try:
        for _ in range(runs):
            g.wait(lambda: g.up() == 1 and len(g.members()) == 1, 90, "one replica")
            g.wait_spares(warm)
            before = set(g.members())
            old = g.served()
            stop, counts = threading.Event(), {"ok": 0, "failed": 0}
            t0 = time.monotonic()
            threads = load(g.url + "/v1/analyze", 8, stop, counts)

            def new_served():
                now = g.served()
                return any(v > old.get(b, 0) for b, v in now.items()
                           if b not in {a for a, _ in before})
            g.wait(new_served, 90, "a new replica serving")
            times.append(time.monotonic() - t0)
            time.sleep(1)
            stop.set()
            for t in threads:
                t.join()
            if counts["failed"]:
                print(f"  warning: {counts['failed']} failed requests", file=sys.stderr)
        total, n = g.start_seconds()
    finally:
        g.stop()
    return times, (total / n if n else None)


def zero(binary, runtime, image, runs, warm):
    """Zero replicas -> first response (the proxy holds the request)."""
    policy = f"""pool: zero
min: 1
max: 2
warm: {warm}
interval: 500ms
window: 2s
metrics: [{{metric: inflight_per_replica, target: 4}}]
scale_to_zero: {{after: 2s, hold_timeout: 30s}}
ready_timeout: 60s
"""
    g = Gantry(binary, runtime, image, "zero", policy)
    times = []
    try:
        for _ in range(runs):
            g.wait(lambda: g.members() == [], 90, "zero replicas")
            g.wait_spares(warm)
            t0 = time.monotonic()
            status, _ = http(g.url + "/v1/analyze", BODY, timeout=60)
            times.append(time.monotonic() - t0)
            assert status == 200, status
    finally:
        g.stop()
    return times


def fmt(ts):
    return "median %.2f s (min %.2f, max %.2f; %s)" % (
        statistics.median(ts), min(ts), max(ts), ", ".join("%.2f" % t for t in ts))


def main():
    binary = sys.argv[1]
    image = sys.argv[2] if len(sys.argv) > 2 else "gantry-worker:0.1.0"
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    print(f"gantry {binary}; image {image}; {runs} runs each; {os.cpu_count()} cores")
    modes = os.environ.get("BENCH_SCALER_MODES", "docker docker+warm local").split()
    for mode in modes:
        runtime, _, warm = mode.partition("+")
        # Spike: up to two replicas join at once; zero: one.
        spike_warm, zero_warm = (2, 1) if warm else (0, 0)
        times, start = spike(binary, runtime, image, runs, spike_warm)
        start_s = "%.2f s" % start if start is not None else "n/a (promoted spares only)"
        print(f"{mode}: load spike -> first request on a new replica: {fmt(times)}; "
              f"replica start -> in pool (mean): {start_s}", flush=True)
        print(f"{mode}: zero replicas -> first response: "
              f"{fmt(zero(binary, runtime, image, runs, zero_warm))}", flush=True)


if __name__ == "__main__":
    main()
