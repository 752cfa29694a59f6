#!/usr/bin/env bash
# Agent throughput: N bytes of pre-written generated logs in 10 files -> agent -> a local
# collector (acks=all, flush always). Prints MB/s of raw log, lines/s, agent CPU-seconds per
# GiB and the agent's peak RSS.
# Usage: scripts/bench-agent.sh [bytes]   (default 1 GiB; data under target/bench-agent)
set -euo pipefail
cd "$(dirname "$0")/.."
bytes=${1:-1073741824}
work=${TRIBUTARY_BENCH_DIR:-target/bench-agent}
port=${TRIBUTARY_BENCH_PORT:-7499}
# TRIBUTARY_BENCH_BIN: a directory with other agent/collector builds (to compare builds in
# one sitting); default: build and use target/release.
bin=${TRIBUTARY_BENCH_BIN:-}
# TRIBUTARY_BENCH_PIN=1: the collector on CPU 0, the agent on CPU 1 (taskset), so each
# measures against its own core rather than the other's load.
pin_collector=() pin_agent=()
if [ "${TRIBUTARY_BENCH_PIN:-0}" = 1 ]; then
  pin_collector=(taskset -c 0) pin_agent=(taskset -c 1)
fi
if [ -z "$bin" ]; then
  cargo build --release -p collector -p agent >/dev/null
  bin=target/release
fi
rm -rf "$work" && mkdir -p "$work/data"
work=$(cd "$work" && pwd)
cat >"$work/collector.yaml" <<EOF
listen: 127.0.0.1:$port
kafka_listen: null
data_dirs: [$work/data]
EOF
"${pin_collector[@]}" "$bin/collector" serve --config "$work/collector.yaml" >"$work/collector.log" 2>&1 &
collector=$!
trap 'kill $collector ${agent:-} 2>/dev/null || true' EXIT
partitions=${TRIBUTARY_BENCH_PARTITIONS:-3}
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
"$bin/collector" topics create logs --partitions "$partitions" --collector "http://127.0.0.1:$port" >/dev/null
"$bin/collector" bench write-logs --dir "$work/logs" --files 10 --bytes "$bytes" --output json >"$work/written.json"
lines=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["lines"])' "$work/written.json")
raw=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$work/written.json")
sync
cat >"$work/agent.yaml" <<EOF
state_dir: $work/state
inputs:
  - paths: ["$work/logs/*.log"]
    topic: logs
output:
  collectors: ["http://127.0.0.1:$port"]
  acks: all
  linger_ms: 100
  batch_bytes_max: 1048576
  zstd_level: ${TRIBUTARY_BENCH_ZSTD:-3}
buffer_bytes_max: ${TRIBUTARY_BENCH_BUFFER:-8388608}
EOF
hz=$(getconf CLK_TCK)
read -r c_ut0 c_st0 < <(awk '{print $14, $15}' "/proc/$collector/stat")
start=$(date +%s.%N)
RUST_LOG=${AGENT_LOG:-warn} ${AGENT_ENV:-} "${pin_agent[@]}" "$bin/agent" run --config "$work/agent.yaml" >"$work/agent.out" 2>"$work/agent.log" &
agent=$!
# Poll the topic's high watermarks until every line is in.
while :; do
  got=$(curl -s "http://127.0.0.1:$port/v1/topics/logs" | python3 -c 'import json,sys
try:
    t = json.load(sys.stdin); print(sum(p["high_watermark"] for p in t["partitions"]))
except Exception:
    print(0)')
  if [ "$got" -ge "$lines" ]; then break; fi
  sleep 0.2
done
end=$(date +%s.%N)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$agent/stat")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$agent/status")
read -r c_ut1 c_st1 < <(awk '{print $14, $15}' "/proc/$collector/stat")
collector_cpu=$(( (c_ut1 + c_st1) - (c_ut0 + c_st0) ))
python3 - "$start" "$end" "$raw" "$lines" "$utime" "$stime" "$hz" "$hwm" "$collector_cpu" <<'EOF'
import sys
start, end, raw, lines, ut, st, hz, hwm, ccpu = map(float, sys.argv[1:])
secs = end - start
cpu = (ut + st) / hz
print(f"agent: {raw/1e6:.0f} MB ({lines:.0f} lines) in {secs:.2f} s")
print(f"  {raw/secs/2**20:.0f} MiB/s of raw log, {lines/secs:,.0f} lines/s")
print(f"  CPU {cpu:.2f} s ({cpu/(raw/2**30):.2f} CPU-s per GiB; user {ut/hz:.2f} s, sys {st/hz:.2f} s)")
print(f"  peak RSS {hwm/1024:.1f} MiB")
print(f"  collector CPU meanwhile {ccpu/hz:.2f} s (same 2-core machine)")
EOF
