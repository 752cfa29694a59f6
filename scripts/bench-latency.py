#!/usr/bin/env python3
"""End-to-end latency: a line appended to a tailed file -> agent -> collector -> `collector
tail`. Each line carries the wall-clock time it was written; the consumer side subtracts it
from the time the line reaches it. Runs every (rate, linger_ms) pair and prints p50/p99.

Usage: scripts/bench-latency.py [seconds per run, default 10]
Needs release binaries: cargo build --release -p collector -p agent
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
PORT = 7497


def wait_healthy(url):
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit("collector did not start")


def run(rate, linger_ms, seconds):
    work = tempfile.mkdtemp(prefix="tributary-latency-")
    url = f"http://127.0.0.1:{PORT}"
    os.makedirs(os.path.join(work, "data"))
    with open(os.path.join(work, "collector.yaml"), "w") as f:
        f.write(f"listen: 127.0.0.1:{PORT}\nkafka_listen: null\ndata_dirs: [{work}/data]\n")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    open(path, "w").close()
    with open(os.path.join(work, "agent.yaml"), "w") as f:
        f.write(
            f"state_dir: {work}/state\ninputs:\n  - paths: [\"{logs}/*.log\"]\n"
            f"output:\n  collectors: [\"{url}\"]\n  linger_ms: {linger_ms}\n"
        )
    env = dict(os.environ, RUST_LOG="warn")
    col = subprocess.Popen([f"{BIN}/collector", "serve", "--config", f"{work}/collector.yaml"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    procs = [col]
    try:
        wait_healthy(url)
        agent = subprocess.Popen([f"{BIN}/agent", "run", "--config", f"{work}/agent.yaml"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(agent)
        tail = subprocess.Popen([f"{BIN}/collector", "tail", "--group", "lat", "--topic", "logs",
                                 "--collector", url], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env)
        procs.append(tail)
        latencies = []
        start = time.time()
        warmup = start + 2.0

        def reader():
            for raw in tail.stdout:
                now = time.time_ns()
                line = raw.decode(errors="replace")
                if line.startswith("t="):
                    t = int(line[2:line.index(" ")])
                    if t / 1e9 >= warmup:
                        latencies.append((now - t) / 1e6)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        # Write `rate` lines per second in 1 ms ticks; each carries its write time.
        pad = "x" * 150
        seq = 0
        tick = 0.001
        per_tick = rate * tick
        owed = 0.0
        with open(path, "a", buffering=1 << 16) as f:
            next_t = time.time()
            while time.time() < start + 2.0 + seconds:
                owed += per_tick
                n = int(owed)
                owed -= n
                if n:
                    now = time.time_ns()
                    f.write("".join(f"t={now} seq={seq + k} {pad}\n" for k in range(n)))
                    f.flush()
                    seq += n
                next_t += tick
                delay = next_t - time.time()
                if delay > 0:
                    time.sleep(delay)
        time.sleep(1.5)
        latencies.sort()
        if not latencies:
            return None
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
        return len(latencies), q(0.5), q(0.99), latencies[-1]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    print("| lines/s | linger_ms | lines measured | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for rate in (1000, 10000):
        for linger in (5, 100):
            r = run(rate, linger, seconds)
            if r is None:
                print(f"| {rate} | {linger} | 0 | - | - | - |")
            else:
                n, p50, p99, mx = r
                print(f"| {rate} | {linger} | {n} | {p50:.1f} | {p99:.1f} | {mx:.1f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
