#!/usr/bin/env bash
# The fault campaign, long form: N episodes from a first seed against real 3-node clusters
# (tests/tests/campaign.rs), then a summary — episodes, faults by kind, operations,
# acknowledged records, acks=1 losses, agent lines, anomalies, and the seeds of any failed
# episode. CAMPAIGN_MIX=process draws process faults only; =disk adds full disks,
# =storage full disks and failing fsyncs, =full those and power cuts (of one node and of
# every node at once); disk, storage and full need root.
# It runs a copy of the binaries (collector, agent, the campaign test) taken at its start,
# so the workspace can be rebuilt while it runs.
# Usage: scripts/campaign.sh [first-seed] [episodes] [seconds-per-episode]
#        (defaults 1000, 100, 20; output under target/campaign)
# Every episode runs even after one fails; failed seeds are listed (replay one with
# CAMPAIGN_SEED=<seed> CAMPAIGN_EPISODES=1 cargo nextest run -p tributary-tests --test campaign).
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:-1000}
episodes=${2:-100}
secs=${3:-20}
out=target/campaign
mkdir -p "$out"
log="$out/campaign-$first-$episodes.txt"
status=0
bin="$out/bin-$first-$episodes"
rm -rf "$bin" && mkdir -p "$bin"
cargo build --bins -p collector -p agent
test_exe=$(cargo test -p tributary-tests --test campaign --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "campaign" and m.get("executable"):
        print(m["executable"])')
cp target/debug/collector target/debug/agent "$test_exe" "$bin/"
TRIB_BIN_DIR="$bin" CAMPAIGN_SEED=$first CAMPAIGN_EPISODES=$episodes CAMPAIGN_SECS=$secs \
  "$bin/$(basename "$test_exe")" --exact a_short_campaign_of_mixed_faults_finds_no_anomaly \
  --nocapture --test-threads 1 >"$log" 2>&1 || status=$?
python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
kinds = {"kill -9 node": "kill -9 node", "SIGSTOP": "SIGSTOP", "SIGTERM": "SIGTERM",
         "partition node": "partition (one node)", "partition the controller leader": "partition (controller leader)",
         "one-way partition": "one-way partition", "bridge": "bridge", "slow links": "slow links",
         "kill -9 the agent": "kill -9 agent", "clock of node": "clock jump", "disk of node": "disk full", "fsyncs of node": "failing fsyncs",
         "power cut of node": "power cut (one node)", "power cut of every node": "power cut (every node)"}
faults = {}
for pattern, name in kinds.items():
    faults[name] = len(re.findall(r"^\s+\d+ ms: " + re.escape(pattern), text, re.M))
agent = re.findall(r"agent: (\d+) lines written, (\d+) records", text)
reports = re.findall(r"episode seed (\d+): (\d+) operations, (\d+) acks=all records, (\d+) acks=1 records \((\d+) lost\), (\d+) offsets read, (\d+) anomalies", text)
failed = re.findall(r"seed (\d+): anomalies", text) + re.findall(r"failed episodes: seeds (\[[^\]]*\])", text)
ops = sum(int(r[1]) for r in reports)
print(f"episodes checked: {len(reports)} (seeds {reports[0][0]}..{reports[-1][0]})" if reports else "episodes checked: 0")
print("faults: " + ", ".join(f"{k} {v}" for k, v in faults.items()) + f" (total {sum(faults.values())})")
print(f"operations: {ops}; acks=all records acknowledged: {sum(int(r[2]) for r in reports)}; "
      f"acks=1 records: {sum(int(r[3]) for r in reports)} ({sum(int(r[4]) for r in reports)} lost); "
      f"offsets read back: {sum(int(r[5]) for r in reports)}")
print(f"agent lines written: {sum(int(a[0]) for a in agent)}, records stored: {sum(int(a[1]) for a in agent)}")
print(f"anomalies: {sum(int(r[6]) for r in reports)} in the history checks; failed episodes: {failed or 'none'}")
PY
echo "full output: $log"
exit $status
