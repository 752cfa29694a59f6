#!/usr/bin/env python3
"""Scale: a 3-node cluster holding many partitions, idle and then under load.

Starts three release collectors on this machine, creates one topic of --partitions
partitions (replication factor 3) and reports:
  - creation: time until every partition has a leader and its full ISR;
  - idle for --idle seconds: CPU per node (share of one core), RSS per node and per
    partition replica, open fds, TCP connections between brokers;
  - restart-to-serving of one node after SIGTERM and after kill -9 (health ok, then every
    partition's ISR full again);
  - acks=all produce to --hot (default 5%) of the partitions with `collector bench produce`
    against the same produce to a topic of 100 partitions (throughput, p99).

Usage: scripts/bench-scale.py [--partitions 10000] [--idle 60] [--work target/bench-scale]
Prints a table; --json writes the figures as JSON too.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTS = {1: 7601, 2: 7602, 3: 7603}
TICK = os.sysconf("SC_CLK_TCK")


def get(port, path, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.load(r)


def post(port, path, body, timeout=120):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.load(r)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def replica_dirs(work, node, topic):
    try:
        return sum(1 for d in os.listdir(f"{work}/d{node}") if d.startswith(topic + "-"))
    except OSError:
        return 0


def broker_connections(pids):
    """Established TCP connections from each node to another node's HTTP port."""
    inodes = {}
    for node, pid in pids.items():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes[link[8:-1]] = node
    by_port = {p: n for n, p in PORTS.items()}
    pairs = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            remote, state, inode = parts[2], parts[3], parts[9]
            if state != "01" or inode not in inodes:
                continue
            port = int(remote.split(":")[1], 16)
            if port in by_port and by_port[port] != inodes[inode]:
                key = f"{inodes[inode]}->{by_port[port]}"
                pairs[key] = pairs.get(key, 0) + 1
    return pairs


class Cluster:
    def __init__(self, work, binary, extra):
        self.work, self.bin, self.extra = work, binary, extra
        self.procs = {}

    def config(self, i):
        path = os.path.join(self.work, f"n{i}.yaml")
        voters = "\n".join(
            f'    - {{id: {n}, address: "127.0.0.1:{p}"}}' for n, p in PORTS.items()
        )
        with open(path, "w") as f:
            f.write(
                f"node_id: {i}\nlisten: 127.0.0.1:{PORTS[i]}\nkafka_listen: null\n"
                f"data_dirs: [{self.work}/d{i}]\ncreate_data_dirs: true\n"
                f"controller:\n  voters:\n{voters}\n{self.extra}"
            )
        return path

    def start(self, i):
        log = open(os.path.join(self.work, f"n{i}.log"), "a")
        env = dict(os.environ, RUST_LOG="warn,openraft=off")
        self.procs[i] = subprocess.Popen(
            [self.bin, "serve", "--config", self.config(i)],
            stdout=log,
            stderr=log,
            env=env,
        )

    def pid(self, i):
        return self.procs[i].pid

    def healthy(self, i):
        try:
            return get(PORTS[i], "/health", timeout=1).get("status") == "ok"
        except Exception:
            return False

    def stop(self, i, sig):
        self.procs[i].send_signal(sig)
        self.procs[i].wait(timeout=120)

    def kill_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()


def wait(what, cond, timeout):
    start = time.time()
    while time.time() - start < timeout:
        if cond():
            return time.time() - start
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


def quiet(cl, timeout):
    """Waits until no node used more than 10% of a core over a 2 s window."""
    start = time.time()
    while time.time() - start < timeout:
        before = {i: cpu_seconds(cl.pid(i)) for i in PORTS}
        time.sleep(2)
        if all(cpu_seconds(cl.pid(i)) - before[i] < 0.2 for i in PORTS):
            return
    raise SystemExit("the cluster did not quiet down")


def topic_settled(port, name, count):
    """Every partition of `name` has a leader and all its replicas in the ISR."""
    try:
        m = get(port, "/v1/metadata", timeout=10)
    except Exception:
        return False
    t = next((t for t in m["topics"] if t["name"] == name), None)
    if t is None or len(t["partitions"]) != count:
        return False
    alive = {b["id"] for b in m["brokers"] if b.get("alive", True)}
    return all(
        p["leader"] in alive and sorted(p["isr"]) == sorted(p["replicas"])
        for p in t["partitions"]
    )


def bench(binary, topic, partitions, secs, batch):
    out = subprocess.run(
        [
            binary, "bench", "produce", "--topic", topic, "--partitions", str(partitions),
            "--producers", "4", "--duration", f"{secs}s", "--acks", "all",
            "--batch-bytes", str(batch), "--collector",
            ",".join(f"http://127.0.0.1:{p}" for p in PORTS.values()), "--output", "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=60)
    ap.add_argument("--hot", type=float, default=0.05)
    ap.add_argument("--produce-secs", type=int, default=15)
    ap.add_argument("--batch-bytes", type=int, default=64 * 1024)
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench-scale"))
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "-p", "collector"], cwd=ROOT, check=True,
            stdout=subprocess.DEVNULL,
        )
    binary = os.path.join(ROOT, "target", "release", "collector")
    for _ in range(10):
        shutil.rmtree(a.work, ignore_errors=True)
        if not os.path.exists(a.work):
            break
        time.sleep(1)
    os.makedirs(a.work)
    cl = Cluster(a.work, binary, "")
    fig = {"partitions": a.partitions, "replicas_per_node": a.partitions}
    try:
        for i in PORTS:
            cl.start(i)
        for i in PORTS:
            wait(f"node {i} healthy", lambda i=i: cl.healthy(i), 60)
        base = {i: (cpu_seconds(cl.pid(i)), rss_kib(cl.pid(i))) for i in PORTS}
        t0 = time.time()
        status, _ = post(PORTS[1], "/v1/topics", {
            "name": "scale", "partitions": a.partitions, "replication_factor": 3})
        assert status == 201, status
        fig["create_answered_s"] = round(time.time() - t0, 2)
        wait("every partition led with its full ISR",
             lambda: topic_settled(PORTS[1], "scale", a.partitions), 600)
        fig["create_settled_s"] = round(time.time() - t0, 2)
        # Every replica's log open on every node (its directory made; one descriptor each).
        wait("every replica open on every node",
             lambda: all(replica_dirs(a.work, i, "scale") >= a.partitions
                         and fds(cl.pid(i)) >= a.partitions for i in PORTS), 1800)
        fig["create_replicas_open_s"] = round(time.time() - t0, 2)
        quiet(cl, 600)
        fig["create_quiet_s"] = round(time.time() - t0, 2)
        before = {i: cpu_seconds(cl.pid(i)) for i in PORTS}
        t1 = time.time()
        time.sleep(a.idle)
        span = time.time() - t1
        fig["idle_cpu_per_node"] = {
            i: round((cpu_seconds(cl.pid(i)) - before[i]) / span, 4) for i in PORTS}
        fig["rss_mib_per_node"] = {i: round(rss_kib(cl.pid(i)) / 1024, 1) for i in PORTS}
        fig["rss_kib_per_replica"] = {
            i: round((rss_kib(cl.pid(i)) - base[i][1]) / a.partitions, 1) for i in PORTS}
        fig["fds_per_node"] = {i: fds(cl.pid(i)) for i in PORTS}
        fig["broker_connections"] = broker_connections({i: cl.pid(i) for i in PORTS})
        # Restart-to-serving of node 3: after a clean stop, then after kill -9.
        for how, sig in (("clean", signal.SIGTERM), ("kill9", signal.SIGKILL)):
            cl.stop(3, sig)
            t = time.time()
            cl.start(3)
            wait("node 3 healthy", lambda: cl.healthy(3), 300)
            fig[f"restart_{how}_healthy_s"] = round(time.time() - t, 2)
            wait("every ISR full again",
                 lambda: topic_settled(PORTS[1], "scale", a.partitions), 600)
            fig[f"restart_{how}_isr_full_s"] = round(time.time() - t, 2)
        hot = max(1, int(a.partitions * a.hot))
        r_hot = bench(binary, "scale", hot, a.produce_secs, a.batch_bytes)
        r_small = bench(binary, "small", 100, a.produce_secs, a.batch_bytes)
        fig["produce_hot"] = {"partitions": hot, **r_hot}
        fig["produce_100"] = {"partitions": 100, **r_small}
    finally:
        cl.kill_all()
    print(json.dumps(fig, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(fig, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
