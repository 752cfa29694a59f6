#!/usr/bin/env bash
# Three collectors on this machine (one disk, two cores), replication factor 3, acks=all:
# produce throughput and latency with `collector bench`, then the failover time — from
# `kill -9` of a partition leader to the first acknowledged write on its successor.
# Usage: scripts/bench-cluster.sh [seconds]   (data under target/bench-cluster)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
work=${TRIBUTARY_BENCH_DIR:-target/bench-cluster}
cargo build --release -p collector >/dev/null
bin=$(pwd)/target/release/collector
rm -rf "$work" && mkdir -p "$work"
work=$(cd "$work" && pwd)
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for i in 1 2 3; do
  mkdir -p "$work/d$i"
  cat >"$work/n$i.yaml" <<CFG
node_id: $i
listen: 127.0.0.1:760$i
kafka_listen: 127.0.0.1:919$i
data_dirs: [$work/d$i]
controller:
  voters:
    - {id: 1, address: "127.0.0.1:7601"}
    - {id: 2, address: "127.0.0.1:7602"}
    - {id: 3, address: "127.0.0.1:7603"}
CFG
  RUST_LOG=warn,openraft=off "$bin" serve --config "$work/n$i.yaml" >"$work/n$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:760$i/health" >/dev/null && break; sleep 0.1; done
done
"$bin" topics create bench --partitions 3 --replication-factor 3 --collector http://127.0.0.1:7601 >/dev/null
echo "== 3 nodes, RF 3, acks=all, ${secs}s"
"$bin" bench produce --topic bench --partitions 3 --producers 4 --duration "${secs}s" --acks all --collector http://127.0.0.1:7601
echo "== failover"
python3 - "$bin" <<'PY'
import json, subprocess, sys, time, urllib.request
def meta():
    for p in (7601, 7602, 7603):
        try:
            return json.load(urllib.request.urlopen(f"http://127.0.0.1:{p}/v1/metadata", timeout=1))
        except Exception:
            pass
def leader():
    m = meta()
    t = next(t for t in m["topics"] if t["name"] == "bench")
    l = t["partitions"][0]["leader"]
    return l, next(b["address"] for b in m["brokers"] if b["id"] == l)
def produce(addr):
    req = urllib.request.Request(f"http://{addr}/v1/topics/bench/records?acks=all",
        data=json.dumps({"partition": 0, "records": [{"value": "x"}]}).encode(),
        headers={"content-type": "application/json"})
    try:
        return urllib.request.urlopen(req, timeout=2).status == 200
    except Exception:
        return False
l, addr = leader()
assert produce(addr)
pid = int(subprocess.check_output(["pgrep", "-f", f"n{l}.yaml"]).split()[0])
killed = time.time()
subprocess.run(["kill", "-9", str(pid)])
while True:
    try:
        nl, naddr = leader()
    except Exception:
        time.sleep(0.05); continue
    if nl != l and produce(naddr):
        break
    time.sleep(0.05)
print(f"leader {l} killed; first acknowledged write on the new leader {nl} after {time.time() - killed:.2f} s")
PY
