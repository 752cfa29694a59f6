#!/usr/bin/env bash
# How long a consumer group takes to be whole again after its coordinator dies: three
# collectors (release build), a topic of 3 partitions (RF 3), two `collector tail --group`
# members; `kill -9` of the controller leader (the group coordinator), then the time until
# a surviving node shows two members holding all 3 partitions with nothing being revoked.
# Also says whether the members kept their ids (membership lives in the active controller's
# memory; a new coordinator adopts the members from their next heartbeats, under their ids).
# Usage: scripts/bench-group-failover.sh [runs]   (data under target/bench-group-failover)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
work=${TRIBUTARY_BENCH_DIR:-target/bench-group-failover}
cargo build --release -p collector >/dev/null
bin=$(pwd)/target/release/collector
for run in $(seq "$runs"); do
  rm -rf "$work" && mkdir -p "$work"
  w=$(cd "$work" && pwd)
  pids=()
  cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; }
  trap cleanup EXIT
  for i in 1 2 3; do
    mkdir -p "$w/d$i"
    cat >"$w/n$i.yaml" <<CFG
node_id: $i
listen: 127.0.0.1:761$i
kafka_listen: null
data_dirs: [$w/d$i]
controller:
  voters:
    - {id: 1, address: "127.0.0.1:7611"}
    - {id: 2, address: "127.0.0.1:7612"}
    - {id: 3, address: "127.0.0.1:7613"}
CFG
    RUST_LOG=warn,openraft=off "$bin" serve --config "$w/n$i.yaml" >"$w/n$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:761$i/health" >/dev/null && break; sleep 0.1; done
  done
  all=http://127.0.0.1:7611,http://127.0.0.1:7612,http://127.0.0.1:7613
  "$bin" topics create g --partitions 3 --replication-factor 3 --collector http://127.0.0.1:7611 >/dev/null
  for m in 1 2; do
    "$bin" tail --group search --topic g --collector "$all" >/dev/null 2>"$w/member$m.err" &
    pids+=($!)
  done
  python3 - "${pids[@]}" <<'PY'
import json, os, signal, sys, time, urllib.request
nodes = {1: 7611, 2: 7612, 3: 7613}
pids = [int(p) for p in sys.argv[1:4]]
def get(port, path):
    try:
        return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1))
    except Exception:
        return None
def whole(ports):
    for p in ports:
        v = get(p, "/v1/groups/search")
        if not v:
            continue
        held = sorted(x for m in v["members"] for a in m["assignment"] for x in a["partitions"])
        revoking = [a for m in v["members"] for a in m["revoking"] if a["partitions"]]
        if len(v["members"]) == 2 and held == [0, 1, 2] and not revoking:
            return sorted(m["member_id"] for m in v["members"])
    return None
deadline = time.time() + 30
before = None
while time.time() < deadline and not before:
    before = whole(nodes.values())
    time.sleep(0.05)
if not before:
    sys.exit("the group never formed")
leader = get(7611, "/health")["controller_leader"]
os.kill(pids[leader - 1], signal.SIGKILL)
t0 = time.time()
rest = [p for n, p in nodes.items() if n != leader]
after = None
while time.time() < t0 + 60 and not after:
    after = whole(rest)
    time.sleep(0.05)
if not after:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{rest[0]}/v1/groups/search", timeout=2)
        why = ""
    except Exception as e:
        why = e.read().decode() if hasattr(e, "read") else str(e)
    sys.exit(f"the group was not whole again within 60 s: {why}")
same = "kept their ids" if after == before else "rejoined under new ids"
print(f"coordinator (node {leader}) killed; group whole again after {time.time() - t0:.2f} s; members {same}")
PY
  echo "member stderr: $(cat "$w"/member*.err | grep -c 'rejoining' || true) 'rejoining' lines"
  cleanup
  trap - EXIT
done
