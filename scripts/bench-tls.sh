#!/usr/bin/env bash
# TLS against plaintext on the HTTP front end, in one sitting: two collectors on the same
# disk and build — one plaintext, one with TLS and client_auth: required (certificates from
# `collector certs init`) — and, interleaved:
#   1. `collector bench produce` (acks=all, zstd, 200-byte lines, 4 producers, 3
#      partitions) at 1 MiB and 64 KiB batches, and `collector bench consume` of the result;
#   2. handshake cost: GET /health on a new connection each time (TLS: a full handshake
#      with a client certificate) and on one kept-alive connection, N times each.
# Prints one JSON line per run; collector CPU-seconds per run from /proc.
# Usage: scripts/bench-tls.sh [seconds per run] [rounds]   (defaults 10, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
work=${TRIBUTARY_BENCH_DIR:-target/bench-tls}
pport=${TRIBUTARY_BENCH_PORT:-7496}
tport=$((pport + 1))
cargo build --release -p collector >/dev/null
bin=$(pwd)/target/release
rm -rf "$work" && mkdir -p "$work"
work=$(cd "$work" && pwd)
"$bin/collector" certs init --dir "$work/certs" --hosts 127.0.0.1 --clients bench >/dev/null
common="retention_check_interval_ms: 1000
kafka_listen: null
topics:
  segment_bytes: 67108864
  retention_bytes: 268435456"
cat >"$work/plain.yaml" <<EOF2
listen: 127.0.0.1:$pport
data_dirs: [$work/plain-data]
create_data_dirs: true
$common
EOF2
cat >"$work/tls.yaml" <<EOF2
listen: 127.0.0.1:$tport
data_dirs: [$work/tls-data]
create_data_dirs: true
tls: {cert_file: $work/certs/node1.pem, key_file: $work/certs/node1-key.pem, ca_file: $work/certs/ca.pem, client_auth: required}
$common
EOF2
"$bin/collector" serve --config "$work/plain.yaml" >"$work/plain.log" 2>&1 &
plain=$!
"$bin/collector" serve --config "$work/tls.yaml" >"$work/tls.log" 2>&1 &
tls=$!
trap 'kill $plain $tls 2>/dev/null || true; wait $plain $tls 2>/dev/null || true; rm -rf "$work/plain-data" "$work/tls-data"' EXIT
tlsflags=(--tls-ca "$work/certs/ca.pem" --tls-cert "$work/certs/bench.pem" --tls-key "$work/certs/bench-key.pem")
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$pport/health" >/dev/null && break; sleep 0.1; done
for _ in $(seq 50); do curl -sf --cacert "$work/certs/ca.pem" --cert "$work/certs/bench.pem" --key "$work/certs/bench-key.pem" "https://127.0.0.1:$tport/health" >/dev/null && break; sleep 0.1; done
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
run() { # label, pid, command...
  local label=$1 pid=$2; shift 2
  local before after out
  before=$(cpu "$pid")
  out=$("$@")
  after=$(cpu "$pid")
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["run"]=sys.argv[2]; d["collector_cpu_s"]=round(float(sys.argv[4])-float(sys.argv[3]),2); print(json.dumps({k: d[k] for k in ("run","records_per_sec","mb_per_sec_wire","collector_cpu_s","errors") if k in d}))' "$out" "$label" "$before" "$after"
}
for batch in 1048576 65536; do
  for r in $(seq "$rounds"); do
    run "plain produce batch=$batch #$r" $plain "$bin/collector" bench produce --collector "http://127.0.0.1:$pport" --topic "p$batch" \
      --partitions 3 --record-bytes 200 --batch-bytes "$batch" --producers 4 --duration "${secs}s" --output json
    run "tls produce batch=$batch #$r" $tls "$bin/collector" bench produce --collector "127.0.0.1:$tport" "${tlsflags[@]}" --topic "t$batch" \
      --partitions 3 --record-bytes 200 --batch-bytes "$batch" --producers 4 --duration "${secs}s" --output json
  done
done
for r in $(seq "$rounds"); do
  run "plain consume #$r" $plain "$bin/collector" bench consume --collector "http://127.0.0.1:$pport" --topic p1048576 --output json
  run "tls consume #$r" $tls "$bin/collector" bench consume --collector "127.0.0.1:$tport" "${tlsflags[@]}" --topic t1048576 --output json
done
python3 - "$pport" "$tport" "$work/certs" <<'PY'
import http.client, json, ssl, sys, time
pport, tport, certs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
ctx.load_cert_chain(f"{certs}/bench.pem", f"{certs}/bench-key.pem")
n = 500
def timed(make, reuse):
    conn = make() if reuse else None
    start = time.perf_counter()
    for _ in range(n):
        c = conn or make()
        c.request("GET", "/health")
        c.getresponse().read()
        if not reuse:
            c.close()
    return (time.perf_counter() - start) / n * 1e6
for label, make in [("plain", lambda: http.client.HTTPConnection("127.0.0.1", pport)),
                    ("tls", lambda: http.client.HTTPSConnection("127.0.0.1", tport, context=ctx))]:
    print(json.dumps({"run": f"{label} GET /health, new connection each", "us_per_request": round(timed(make, False), 1)}))
    print(json.dumps({"run": f"{label} GET /health, one kept-alive connection", "us_per_request": round(timed(make, True), 1)}))
PY
