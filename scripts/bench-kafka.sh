#!/usr/bin/env bash
# The Kafka front end against the HTTP one, on one collector (acks=all, flush always, 3
# partitions), in one sitting, runs interleaved:
#   1. `collector bench produce` over HTTP and over Kafka (`--kafka`): the same generated
#      200-byte log lines in the same zstd batches from the same client code, at two batch
#      sizes — only the front end differs;
#   2. a real Kafka client: confluent-kafka (librdkafka), idempotent, acks=all, zstd,
#      linger 5 ms, 200-byte records (`tests/kafka/clients.py bench-produce`);
#   3. `collector bench consume` over HTTP and over Kafka (Fetch) of what was written.
# Prints one JSON line per run; collector CPU-seconds per run from /proc.
# Usage: scripts/bench-kafka.sh [seconds per run] [rounds]   (defaults 15, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
rounds=${2:-3}
work=${TRIBUTARY_BENCH_DIR:-target/bench-kafka}
port=${TRIBUTARY_BENCH_PORT:-7498}
kport=${TRIBUTARY_BENCH_KAFKA_PORT:-9798}
cargo build --release -p collector >/dev/null
bin=target/release
rm -rf "$work" && mkdir -p "$work/data"
work=$(cd "$work" && pwd)
# Size retention keeps the disk use bounded (runs write ~250 MB/s): at most ~256 MiB per
# partition stays, and consume reads what is retained.
cat >"$work/collector.yaml" <<EOF2
listen: 127.0.0.1:$port
kafka_listen: 127.0.0.1:$kport
data_dirs: [$work/data]
retention_check_interval_ms: 1000
topics:
  segment_bytes: 67108864
  retention_bytes: 268435456
EOF2
"$bin/collector" serve --config "$work/collector.yaml" >"$work/collector.log" 2>&1 &
collector=$!
trap 'kill $collector 2>/dev/null || true; wait $collector 2>/dev/null || true; rm -rf "$work/data"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port"
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$collector/stat"; }
run() { # label, command...
  local label=$1; shift
  local before after
  before=$(cpu)
  local out
  out=$("$@")
  after=$(cpu)
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["run"]=sys.argv[2]; d["collector_cpu_s"]=round(float(sys.argv[4])-float(sys.argv[3]),2); print(json.dumps({k: d[k] for k in ("run","records_per_sec","mb_per_sec_wire","collector_cpu_s","errors") if k in d}))' "$out" "$label" "$before" "$after"
}
for batch in 1048576 65536; do
  for r in $(seq "$rounds"); do
    run "http produce batch=$batch #$r" "$bin/collector" bench produce --collector "$url" --topic "h$batch" --partitions 3 \
      --record-bytes 200 --batch-bytes "$batch" --producers 4 --duration "${secs}s" --output json
    run "kafka produce batch=$batch #$r" "$bin/collector" bench produce --collector "$url" --kafka "127.0.0.1:$kport" --topic "k$batch" \
      --partitions 3 --record-bytes 200 --batch-bytes "$batch" --producers 4 --duration "${secs}s" --output json
  done
done
for r in $(seq "$rounds"); do
  run "confluent-kafka produce #$r" python3 tests/kafka/clients.py bench-produce "127.0.0.1:$kport" ck "$secs"
done
for r in $(seq "$rounds"); do
  run "http consume #$r" "$bin/collector" bench consume --collector "$url" --topic h1048576 --output json
  run "kafka consume #$r" "$bin/collector" bench consume --collector "$url" --kafka "127.0.0.1:$kport" --topic h1048576 --output json
done
