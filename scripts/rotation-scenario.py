#!/usr/bin/env python3
"""Rotation while busy, as a user would run it (the scenario of the rotation issue).

A writer appends ~2,500 lines/s over three files in one directory:
  a.log  rotated by rename every 5 s (a.log -> a.log.N, the writer goes on in a new a.log),
  b.log  rotated by copy-truncate every 7 s (the writer pauses while it copies and truncates),
  c.log  never rotated.
The agent watches `*.log` (rotated names do not match: it drains them by open handle) and
ships to one collector, topic `logs` with 3 partitions, acks=all, linger 50 ms. Over 30 s the
agent is `kill -9`ed four times and the collector once, at times drawn from the seed.

Then every partition is read back and checked: 0 lines lost, 0 stored twice, and within each
`path` stream (same partition, same `path` header) no line older than one before it.

Usage: scripts/rotation-scenario.py [--runs 20] [--seed N] [--seconds 30]
Builds the release binaries first. Prints each run's seed; exits 1 if any run fails.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_json(url, data=None, timeout=10):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


class Proc:
    def __init__(self, args, log):
        self.args, self.log = args, log
        self.p = None

    def start(self):
        out = open(self.log, "ab")
        self.p = subprocess.Popen(self.args, stdout=out, stderr=out)

    def kill9(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


class Writer(threading.Thread):
    """Appends lines `<file> <generation> <number> <padding>` at `rate` lines/s in total."""

    def __init__(self, logs, rate, rng):
        super().__init__(daemon=True)
        self.logs, self.rate, self.rng = logs, rate, rng
        self.stop_flag = threading.Event()
        self.written = []  # every line, without its newline
        self.gen = {"a": 0, "b": 0, "c": 0}
        self.n = {"a": 0, "b": 0, "c": 0}
        self.rotations = {"a": 0, "b": 0}

    def path(self, f):
        return os.path.join(self.logs, f"{f}.log")

    def write(self, f, count):
        lines = []
        for _ in range(count):
            line = f"{f} {self.gen[f]:04d} {self.n[f]:08d} {'x' * self.rng.randrange(80)}"
            self.n[f] += 1
            lines.append(line)
        with open(self.path(f), "a") as fh:
            fh.write("".join(l + "\n" for l in lines))
        self.written.extend(lines)

    def run(self):
        start = time.time()
        next_a, next_b = start + 5, start + 7
        tick = 0.02
        per_tick = max(1, int(self.rate * tick / 3))
        while not self.stop_flag.is_set():
            for f in "abc":
                self.write(f, per_tick)
            now = time.time()
            if now >= next_a:
                self.rotations["a"] += 1
                os.rename(self.path("a"), f"{self.path('a')}.{self.rotations['a']}")
                self.gen["a"] += 1
                next_a += 5
            if now >= next_b:
                # Copy-truncate; nothing is written between the copy and the truncation.
                self.rotations["b"] += 1
                shutil.copyfile(self.path("b"), f"{self.path('b')}.{self.rotations['b']}")
                with open(self.path("b"), "r+") as fh:
                    fh.truncate(0)
                self.gen["b"] += 1
                next_b += 7
            time.sleep(tick)


def read_all(base, partitions):
    out = []  # (partition, offset, path, value)
    for p in range(partitions):
        offset = 0
        while True:
            r = http_json(f"{base}/v1/topics/logs/partitions/{p}/records?offset={offset}&limit=5000")
            recs = r["records"]
            if not recs:
                break
            for rec in recs:
                out.append((p, rec["offset"], rec["headers"].get("path", ""), rec["value"]))
            offset = recs[-1]["offset"] + 1
    return out


def check(records, written):
    want = {}
    for line in written:
        want[line] = want.get(line, 0) + 1
    got = {}
    for _, _, _, v in records:
        got[v] = got.get(v, 0) + 1
    lost = sum(max(0, n - got.get(line, 0)) for line, n in want.items())
    dup = sum(max(0, n - want.get(line, 0)) for line, n in got.items())
    disorder = []
    last = {}
    for p, o, path, v in sorted(records, key=lambda r: (r[0], r[1])):
        parts = v.split(" ")
        key = (int(parts[1]), int(parts[2]))
        prev = last.get((p, path))
        if prev is not None and key <= prev[0]:
            disorder.append(f"{path} p{p}: {v[:20]!r} at {o} after gen/line {prev[0]} at {prev[1]}")
        last[(p, path)] = (key, o)
    return lost, dup, disorder


def run_once(seed, seconds):
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="tributary-rotation-")
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    os.makedirs(os.path.join(tmp, "data"))
    with open(os.path.join(tmp, "collector.yaml"), "w") as f:
        f.write(f"listen: 127.0.0.1:{port}\nkafka_listen: null\ndata_dirs: [{tmp}/data]\n")
    with open(os.path.join(tmp, "agent.yaml"), "w") as f:
        f.write(
            f"state_dir: {tmp}/state\n"
            f"inputs:\n  - paths: [\"{logs}/*.log\"]\n"
            f"output:\n  collectors: [\"{base}\"]\n  acks: all\n  linger_ms: 50\n"
            f"  retry_backoff_max_ms: 500\n"
        )
    col = Proc([f"{BIN}/collector", "serve", "--config", f"{tmp}/collector.yaml"], f"{tmp}/collector.log")
    col.start()
    wait_http(f"{base}/health")
    http_json(f"{base}/v1/topics", json.dumps({"name": "logs", "partitions": 3, "replication_factor": 1}).encode())
    agent = Proc([f"{BIN}/agent", "run", "--config", f"{tmp}/agent.yaml"], f"{tmp}/agent.log")
    writer = Writer(logs, 2500, rng)
    for f in "abc":
        writer.write(f, 10)
    agent.start()
    writer.start()
    # Four agent kills and one collector kill at random moments of the run.
    events = sorted([(rng.uniform(1, seconds - 2), "agent") for _ in range(4)]
                    + [(rng.uniform(1, seconds - 2), "collector")])
    t0 = time.time()
    for at, what in events:
        time.sleep(max(0, t0 + at - time.time()))
        if what == "agent":
            agent.kill9()
            time.sleep(rng.uniform(0, 0.5))
            agent.start()
        else:
            col.kill9()
            time.sleep(rng.uniform(0, 1.0))
            col.start()
    time.sleep(max(0, t0 + seconds - time.time()))
    writer.stop_flag.set()
    writer.join()
    # Wait for delivery.
    deadline = time.time() + 120
    records = []
    while time.time() < deadline:
        try:
            records = read_all(base, 3)
        except Exception:
            time.sleep(0.5)
            continue
        if len(records) >= len(writer.written):
            time.sleep(2)  # late duplicates
            records = read_all(base, 3)
            break
        time.sleep(0.5)
    lost, dup, disorder = check(records, writer.written)
    agent.stop()
    col.stop()
    ok = lost == 0 and dup == 0 and not disorder
    print(
        f"seed {seed}: {len(writer.written)} lines written, {len(records)} stored; "
        f"lost {lost}, duplicated {dup}, out of order {len(disorder)} "
        f"(rotations: rename {writer.rotations['a']}, copy-truncate {writer.rotations['b']}) "
        f"{'OK' if ok else 'FAIL — logs kept in ' + tmp}",
        flush=True,
    )
    for d in disorder[:5]:
        print("   ", d)
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, help="replay one run")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "collector", "-p", "agent"],
                       cwd=ROOT, check=True)
    seeds = [a.seed] if a.seed is not None else [random.randrange(1 << 32) for _ in range(a.runs)]
    failed = [s for s in seeds if not run_once(s, a.seconds)]
    print(f"{len(seeds) - len(failed)}/{len(seeds)} runs passed" + (f"; failed seeds {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
