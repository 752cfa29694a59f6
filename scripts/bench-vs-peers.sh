#!/usr/bin/env bash
# Tributary side by side with peers, in one run, on this machine and the same data:
#   1. shipping log files: N bytes of generated logs in 10 files (`collector bench
#      write-logs`, as scripts/bench-agent.sh) from file to a receiver on loopback —
#        - Tributary agent -> collector (acks=all, fsync per batch, zstd 3, topic of 3 partitions);
#        - rsyslog imfile -> omfwd TCP (octet-counted) -> rsyslog imptcp, and -> rsyslog imtcp,
#          -> omfile;
#        - syslog-ng wildcard-file() -> network() TCP (RFC 5424) -> syslog-ng network() -> file();
#      the time runs from the sender's start until the receiver holds every line; sender
#      CPU-seconds per GiB and peak RSS from /proc, the receiver's CPU meanwhile;
#   2. storing records: 200-byte records acknowledged by one server and by a 3-node cluster
#      with 3 replicas — Tributary (`collector bench produce`, acks=all; the R3 cluster also at
#      acks=1) against NATS JetStream (file storage; scripts/nats-bench.c, a C publisher with
#      pipelined async publishes and a bounded number of unacknowledged ones); records/s, MB/s
#      of payload, server CPU-seconds per GB of payload.
# Measurements alternate (ours first in odd rounds, peers first in even rounds) so that the
# noise of a shared machine hits both; each runs VS_ROUNDS times and the summary gives the range
# and the ratios of the medians (peer / Tributary).
#
# Installs what it lacks from Debian packages (then it must run as root): rsyslog,
# nats-server, libnats-dev, and syslog-ng-core — which Debian will not install next to
# rsyslog (both provide system-log-daemon), so the one that is not installed is unpacked
# under target/bench-vs-peers/pkgroot-<package> (`apt-get download` + `dpkg -x`, its library
# dependencies installed) and run from there. apt runs under a policy-rc.d that forbids
# service starts, and the units the installation enabled are disabled (stopped too where
# systemd runs). Every
# daemon here runs in the foreground with its own config, port and work directory under
# target/bench-vs-peers/run, and is stopped on exit.
#
# Usage: scripts/bench-vs-peers.sh [bytes] [--json]   (default 1 GiB for the shipping part)
#   VS_ROUNDS      runs of each measurement (2)
#   VS_SECS        seconds per produce/publish run in part 2 (15)
#   VS_ONLY        ship | store: one part only
#   VS_PORT_BASE   first of the loopback ports used (17600; up to +33)
#   VS_NATS_PUBS   NATS publisher connections (1; a thread each), VS_NATS_PENDING (8192)
#   VS_NATS_BATCH  records per message in the extra "batched" NATS rows (320: 64 kB messages),
#                  VS_NATS_BATCH_PENDING (256)
#   VS_SHIP, VS_STORE  the measurements of each part, in odd-round order (see the end)
#   TRIBUTARY_BENCH_BIN  a directory with agent/collector builds (default: build target/release)
# --json prints the summary as JSON instead of tables (both are saved under
# target/bench-vs-peers: summary.txt, summary.json, results.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."

json=0
args=()
for a in "$@"; do
  case $a in
    --json) json=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$a") ;;
  esac
done
bytes=${args[0]:-1073741824}
rounds=${VS_ROUNDS:-2}
secs=${VS_SECS:-15}
only=${VS_ONLY:-}
base=${VS_PORT_BASE:-17600}
nats_pubs=${VS_NATS_PUBS:-1}
nats_pending=${VS_NATS_PENDING:-8192}
nats_batch=${VS_NATS_BATCH:-320}
nats_batch_pending=${VS_NATS_BATCH_PENDING:-256}
root=$(pwd)/target/bench-vs-peers
work=$root/run
hz=$(getconf CLK_TCK)
say() { echo "== $*" >&2; }

# ---------------------------------------------------------------------------------------
# Processes: every daemon started here is in `pids`; the EXIT trap stops them all.
pids=()
policy_created=0
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 30); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ $policy_created = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  # Bulk data goes; configs, daemon logs and results stay.
  rm -rf "$work/logs" "$work/payload" "$work"/*/data* "$work"/*/out.log "$work"/*/js* 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# start CMD...: run in the background, remember the pid in $last.
start() { "$@" & last=$!; pids+=("$last"); }
# stop PID...: SIGTERM, wait for the exit (SIGKILL after 10 s).
stop() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  local keep=() q
  for q in "${pids[@]}"; do
    local gone=0
    for p in "$@"; do [ "$q" = "$p" ] && gone=1; done
    [ $gone = 0 ] && keep+=("$q")
  done
  pids=("${keep[@]}")
}
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
listening() { ss -Hltn "sport = :$1" | grep -q .; }
wait_port() { for _ in $(seq 200); do listening "$1" && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# ---------------------------------------------------------------------------------------
# Packages.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "missing: $*; run as root (or install them) — see the header of $0" >&2
    exit 1
  fi
}
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  apt-get install -y --no-install-recommends "$@" >"$root/apt.log" 2>&1 ||
    { apt-get update >>"$root/apt.log" 2>&1 && apt-get install -y --no-install-recommends "$@" >>"$root/apt.log" 2>&1; } ||
    { tail -20 "$root/apt.log" >&2; exit 1; }
}
# Debian starts nothing under policy-rc.d (or without a running systemd) but enables the units
# for the next boot: disable them, and stop any that runs — only units of packages this script
# installed.
no_services() {
  local u now=
  command -v systemctl >/dev/null || return 0
  [ -d /run/systemd/system ] && now=--now
  for u in "$@"; do systemctl disable $now "$u" >/dev/null 2>&1 || true; done
}
# unpack PACKAGE: the .deb unpacked under $root/pkgroot-PACKAGE, its library dependencies
# installed (those not conflicting: the package itself is not installed).
unpack() {
  local pkg=$1 dir=$root/pkgroot-$1
  [ -d "$dir/usr" ] && return 0
  need_root "$pkg (unpacked)"
  local deps
  deps=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances "$pkg" |
    awk '$1 ~ /Depends:/ && $2 !~ /^</ && $2 ~ /^lib/ {print $2}' | sort -u)
  # shellcheck disable=SC2086
  [ -n "$deps" ] && apt_install $deps
  mkdir -p "$root/pkgs"
  (cd "$root/pkgs" && rm -f "${pkg}"_*.deb && apt-get download "$pkg" >>"$root/apt.log" 2>&1)
  rm -rf "$dir.tmp" && dpkg -x "$root/pkgs/${pkg}"_*.deb "$dir.tmp" && mv "$dir.tmp" "$dir"
}
mkdir -p "$root"
want=()
command -v nats-server >/dev/null || want+=(nats-server)
[ -f /usr/include/nats/nats.h ] || want+=(libnats-dev)
command -v gcc >/dev/null || want+=(gcc libc6-dev)
if ! command -v rsyslogd >/dev/null && ! installed syslog-ng-core; then want+=(rsyslog); fi
if [ ${#want[@]} -gt 0 ]; then
  need_root "${want[@]}"
  say "installing ${want[*]}"
  apt_install "${want[@]}"
  no_services rsyslog.service syslog.socket nats-server.service
fi
# rsyslogd and syslog-ng: installed, or unpacked next to the other one.
rsyslogd=(rsyslogd)
if ! command -v rsyslogd >/dev/null; then
  unpack rsyslog
  rsyslogd=("$root/pkgroot-rsyslog/usr/sbin/rsyslogd" -M "$root/pkgroot-rsyslog/usr/lib/x86_64-linux-gnu/rsyslog")
fi
if command -v syslog-ng >/dev/null; then
  syslogng=(syslog-ng)
else
  unpack syslog-ng-core
  sng=$root/pkgroot-syslog-ng-core
  syslogng=(env "LD_LIBRARY_PATH=$sng/usr/lib/syslog-ng" "$sng/usr/sbin/syslog-ng"
    "--module-path=$sng/usr/lib/syslog-ng/$(ls "$sng/usr/lib/syslog-ng" | grep -E '^[0-9]+\.[0-9]+$' | head -1)")
fi
sng_version=$("${syslogng[@]}" --version | awk '/^Config version/ {print $3}')

# ---------------------------------------------------------------------------------------
# Builds.
bin=${TRIBUTARY_BENCH_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -p collector -p agent >/dev/null
  bin=target/release
fi
bin=$(cd "$bin" && pwd)
if [ ! -x "$root/nats-bench" ] || [ scripts/nats-bench.c -nt "$root/nats-bench" ]; then
  gcc -O2 -Wall -o "$root/nats-bench" scripts/nats-bench.c -lnats -lpthread
fi

for p in $base $((base + 1)) $((base + 2)) $((base + 3)) $((base + 10)) $((base + 11)) \
  $((base + 20)) $((base + 21)) $((base + 22)) $((base + 23)) $((base + 31)) $((base + 32)) $((base + 33)); do
  if listening "$p"; then echo "port $p is in use (VS_PORT_BASE moves the ports)" >&2; exit 1; fi
done
avail=$(df -B1 --output=avail "$root" | tail -1)
# Part 1 holds the logs and one receiver's copy (~2.1 x bytes); part 2 at most ~1.6 GB
# (retention below).
need=$((bytes * 22 / 10 + 2 * 1024 * 1024 * 1024))
if [ "$avail" -lt "$need" ]; then
  echo "need about $((need / 1048576)) MiB free under $root, have $((avail / 1048576)) MiB" >&2
  exit 1
fi
rm -rf "$work" && mkdir -p "$work"
results=$work/results.jsonl
: >"$results"

# The helper: waits (lines in a file, records in a topic), runs a client with its CPU time,
# and prints the summary.
cat >"$work/vs.py" <<'PY'
import json, os, resource, statistics, subprocess, sys, time, urllib.request

def wait_lines(path, target, timeout):
    n, f, t0 = 0, None, time.time()
    while n < target and time.time() - t0 < timeout:
        if f is None:
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                time.sleep(0.05)
                continue
        b = f.read(1 << 22)
        if b:
            n += b.count(b"\n")
        else:
            time.sleep(0.05)
    return n

def wait_topic(url, topic, target, timeout):
    n, t0 = 0, time.time()
    while n < target and time.time() - t0 < timeout:
        try:
            t = json.load(urllib.request.urlopen(f"{url}/v1/topics/{topic}", timeout=5))
            n = sum(p["high_watermark"] for p in t["partitions"])
        except Exception:
            pass
        if n < target:
            time.sleep(0.1)
    return n

NOTES = [
    "Tributary agent: each batch's file ranges journaled (fsync) before sending, idempotent sequences; "
    "collector flush `always`: fdatasync (group commit) before acknowledging, acks=all: exactly once across crashes of either side.",
    "rsyslog: imfile keeps its read positions in a state file, queues in memory (LinkedList), omfwd plain TCP "
    "without application acknowledgements, receiver omfile without fsync: lines in queues or socket buffers are lost "
    "on a crash, lines read after the last state write are sent again (neither at-least- nor exactly-once).",
    "syslog-ng: flow-control (no drops under load), read positions in the persist file, memory queues (no disk-buffer), "
    "TCP without application acknowledgements, receiver file() without fsync: same guarantees as rsyslog.",
    "NATS JetStream 2.9.10: a publish is acknowledged once the server has written it to the stream's block file (R1), "
    "or once 2 of 3 replicas hold it in their Raft logs and the leader stored it (R3) - written, not fsynced: the "
    "file store syncs every 2 minutes and 2.9 has no setting for it "
    "(later versions have `sync_interval: always`; 2.9.10 refuses it as an unknown field).",
    "Tributary collector: fdatasync before every acknowledgement on the leader (acks=1) and, at acks=all, on every "
    "in-sync replica (a follower reports only what it made durable; min_insync_replicas 2).",
]

def summary(results, out_txt, out_json, as_json):
    rows = [json.loads(l) for l in open(results) if l.strip()]
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    def rng(xs, fmt):
        xs = sorted(xs)
        if not xs:
            return "-"
        return fmt(xs[0]) if len(xs) == 1 or fmt(xs[0]) == fmt(xs[-1]) else f"{fmt(xs[0])}–{fmt(xs[-1])}"
    f0 = lambda x: f"{x:.0f}"
    f1 = lambda x: f"{x:.1f}"
    f2 = lambda x: f"{x:.2f}"
    fM = lambda x: f"{x/1e6:.2f} M"
    fk = lambda x: f"{x/1e3:.0f} k"
    lines, js = [], {"ship": [], "store": []}
    ship = [r for r in rows if r["part"] == "ship"]
    systems = list(dict.fromkeys(r["system"] for r in ship))
    if ship:
        ref = [r for r in ship if r["system"] == "tributary" and r["complete"]]
        ref_t = med([r["mib_per_s"] for r in ref])
        ref_c = med([r["sender_cpu_s_per_gib"] for r in ref])
        lines.append(f"Shipping {ship[0]['bytes']/2**20:.0f} MiB of generated logs ({ship[0]['lines']:,} lines, 10 files) to a receiver on loopback")
        lines.append("| sender -> receiver | runs | MiB/s | lines/s | sender CPU-s per GiB | sender peak RSS MiB | receiver CPU-s per GiB | MiB/s vs Tributary | CPU per GiB vs Tributary |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for s in systems:
            rs = [r for r in ship if r["system"] == s]
            ok = [r for r in rs if r["complete"]]
            t = [r["mib_per_s"] for r in ok]
            c = [r["sender_cpu_s_per_gib"] for r in ok]
            d = {"system": s, "label": rs[0]["label"], "runs": len(rs), "complete": len(ok),
                 "mib_per_s": t, "lines_per_s": [r["lines_per_s"] for r in ok], "sender_cpu_s_per_gib": c,
                 "sender_rss_mib": [r["sender_rss_mib"] for r in rs],
                 "receiver_cpu_s_per_gib": [r["receiver_cpu_s_per_gib"] for r in ok],
                 "ratio_throughput": med(t) / ref_t if ref and ok else None,
                 "ratio_cpu_per_gib": med(c) / ref_c if ref and ok else None}
            js["ship"].append(d)
            ratio = lambda x: "1 (reference)" if s == "tributary" else ("-" if x is None else f"**{x:.2f}**")
            lines.append(f"| {rs[0]['label']} | {len(ok)}/{len(rs)} | {rng(t, f0)} | {rng(d['lines_per_s'], fM)} | {rng(c, f1)} | "
                         f"{rng(d['sender_rss_mib'], f0)} | {rng(d['receiver_cpu_s_per_gib'], f1)} | {ratio(d['ratio_throughput'])} | {ratio(d['ratio_cpu_per_gib'])} |")
        lines.append("")
    store = [r for r in rows if r["part"] == "store"]
    if store:
        lines.append(f"Storing 200-byte records, {store[0]['secs']} s per run (payload = record bytes)")
        lines.append("| setup | runs | records/s | MB/s payload | server CPU-s per GB payload | client CPU-s per GB payload | records/s vs Tributary | server CPU per GB vs Tributary |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for group in dict.fromkeys(r["group"] for r in store):
            g = [r for r in store if r["group"] == group]
            ref = [r for r in g if r["system"] == "tributary" and r.get("acks") == "all" and r["errors"] == 0]
            ref_r = med([r["records_per_s"] for r in ref])
            ref_c = med([r["server_cpu_s_per_gb"] for r in ref])
            for label in dict.fromkeys(r["label"] for r in g):
                rs = [r for r in g if r["label"] == label]
                ok = [r for r in rs if r["errors"] == 0]
                rr = [r["records_per_s"] for r in ok]
                sc = [r["server_cpu_s_per_gb"] for r in ok]
                d = {"group": group, "label": label, "system": rs[0]["system"], "runs": len(rs), "ok": len(ok),
                     "records_per_s": rr, "mb_per_s_payload": [r["mb_per_s_payload"] for r in ok],
                     "server_cpu_s_per_gb": sc, "client_cpu_s_per_gb": [r["client_cpu_s_per_gb"] for r in ok],
                     "ratio_records": med(rr) / ref_r if ref and ok else None,
                     "ratio_server_cpu_per_gb": med(sc) / ref_c if ref and ok else None}
                js["store"].append(d)
                is_ref = rs[0]["system"] == "tributary" and rs[0].get("acks") == "all"
                ratio = lambda x: "1 (reference)" if is_ref else ("-" if x is None else f"**{x:.2f}**")
                lines.append(f"| {label} | {len(ok)}/{len(rs)} | {rng(rr, fk)} | {rng(d['mb_per_s_payload'], f0)} | {rng(sc, f1)} | "
                             f"{rng(d['client_cpu_s_per_gb'], f1)} | {ratio(d['ratio_records'])} | {ratio(d['ratio_server_cpu_per_gb'])} |")
        lines.append("")
    lines.append("Ratios: median / the Tributary acks=all median of the same table or group (above 1: faster, or more CPU per byte).")
    lines += ["", "Durability as configured:"] + ["- " + n for n in NOTES]
    js["notes"] = NOTES
    text = "\n".join(lines)
    open(out_txt, "w").write(text + "\n")
    json.dump(js, open(out_json, "w"), indent=1)
    print(json.dumps(js, indent=1) if as_json else text)

cmd = sys.argv[1]
if cmd == "lines":
    path, target, timeout = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    n = wait_lines(path, target, timeout)
    print(n, f"{time.time():.6f}")
elif cmd == "topic":
    url, topic, target, timeout = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    n = wait_topic(url, topic, target, timeout)
    print(n, f"{time.time():.6f}")
elif cmd == "run":  # run a client that prints one JSON object; add its CPU time
    r = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, text=True)
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        d = json.loads(r.stdout.strip().splitlines()[-1])
    except Exception:
        d = {"failed": r.returncode, "stdout": r.stdout[-500:]}
    d["client_cpu_s"] = round(u.ru_utime + u.ru_stime, 2)
    print(json.dumps(d))
elif cmd == "summary":
    summary(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1")
PY
vs() { python3 "$work/vs.py" "$@"; }

# ---------------------------------------------------------------------------------------
# Part 1: shipping files.
write_logs() {
  say "writing $bytes bytes of generated logs (10 files)"
  "$bin/collector" bench write-logs --dir "$work/logs" --files 10 --bytes "$bytes" --output json >"$work/written.json"
  lines=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["lines"])' "$work/written.json")
  raw=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$work/written.json")
  sync
  ship_timeout=$((120 + bytes / 2000000))
}

# record_ship SYSTEM LABEL ROUND START END GOT SENDER_TICKS RSS_KIB RECEIVER_TICKS
record_ship() {
  python3 - "$@" "$raw" "$lines" "$hz" >>"$results" <<'PY'
import json, sys
system, label, rnd, start, end, got, sticks, rss, rticks, raw, lines, hz = sys.argv[1:]
start, end, raw, lines, hz = float(start), float(end), float(raw), int(lines), float(hz)
secs = end - start
gib = raw / 2**30
print(json.dumps({"part": "ship", "system": system, "label": label, "round": int(rnd),
    "bytes": raw, "lines": lines, "got": int(got), "complete": int(got) >= lines, "seconds": round(secs, 3),
    "mib_per_s": round(raw / secs / 2**20, 1), "lines_per_s": round(lines / secs),
    "sender_cpu_s": round(int(sticks) / hz, 2), "sender_cpu_s_per_gib": round(int(sticks) / hz / gib, 2),
    "sender_rss_mib": round(int(rss) / 1024, 1), "receiver_cpu_s": round(int(rticks) / hz, 2),
    "receiver_cpu_s_per_gib": round(int(rticks) / hz / gib, 2)}))
PY
  tail -1 "$results" >&2
}
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

ship_tributary() {
  local r=$1 d=$work/ship-tributary port=$base
  rm -rf "$d" && mkdir -p "$d/data"
  cat >"$d/collector.yaml" <<EOF
listen: 127.0.0.1:$port
kafka_listen: null
data_dirs: [$d/data]
EOF
  start "$bin/collector" serve --config "$d/collector.yaml" >"$d/collector.log" 2>&1
  local collector=$last
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  "$bin/collector" topics create logs --partitions 3 --collector "http://127.0.0.1:$port" >/dev/null
  cat >"$d/agent.yaml" <<EOF
state_dir: $d/state
inputs:
  - paths: ["$work/logs/*.log"]
    topic: logs
output:
  collectors: ["http://127.0.0.1:$port"]
  acks: all
  linger_ms: 100
  batch_bytes_max: 1048576
  zstd_level: 3
buffer_bytes_max: 8388608
EOF
  local c0 t0 got t1
  c0=$(cpu_ticks "$collector")
  t0=$(date +%s.%N)
  RUST_LOG=warn start "$bin/agent" run --config "$d/agent.yaml" >"$d/agent.out" 2>"$d/agent.log"
  local agent=$last
  read -r got t1 < <(vs topic "http://127.0.0.1:$port" logs "$lines" "$ship_timeout")
  record_ship tributary "Tributary agent -> collector (acks=all, zstd 3)" "$r" "$t0" "$t1" "$got" \
    "$(cpu_ticks "$agent")" "$(hwm_kib "$agent")" "$(($(cpu_ticks "$collector") - c0))"
  stop "$agent" "$collector"
  rm -rf "$d/data" "$d/state"
}

# rsyslog: imfile (inotify, from the beginning) -> ruleset queue -> omfwd TCP octet-counted ->
# imptcp|imtcp -> ruleset queue -> omfile (no fsync).
ship_rsyslog() {
  local r=$1 input=$2 d=$work/ship-rsyslog-$2 port=$((base + 10))
  rm -rf "$d" && mkdir -p "$d/send" "$d/recv"
  local inmod="module(load=\"$input\")"
  [ "$input" = imtcp ] && inmod="module(load=\"imtcp\" MaxSessions=\"100\")"
  cat >"$d/recv.conf" <<EOF
global(workDirectory="$d/recv" maxMessageSize="64k")
$inmod
input(type="$input" address="127.0.0.1" port="$port" ruleset="store")
template(name="line" type="string" string="%msg%\n")
ruleset(name="store" queue.type="LinkedList" queue.size="200000" queue.dequeueBatchSize="4096") {
  action(type="omfile" file="$d/out.log" template="line" ioBufferSize="1m" flushOnTXEnd="on")
}
EOF
  cat >"$d/send.conf" <<EOF
global(workDirectory="$d/send" maxMessageSize="64k")
module(load="imfile" mode="inotify")
input(type="imfile" file="$work/logs/*.log" tag="app" ruleset="fwd" freshStartTail="off" readMode="0")
ruleset(name="fwd" queue.type="LinkedList" queue.size="200000" queue.dequeueBatchSize="4096") {
  action(type="omfwd" target="127.0.0.1" port="$port" protocol="tcp" TCP_Framing="octet-counted" template="RSYSLOG_ForwardFormat")
}
EOF
  start "${rsyslogd[@]}" -n -f "$d/recv.conf" -i "$d/recv.pid" >"$d/recv.log" 2>&1
  local recv=$last
  wait_port "$port"
  local c0 t0 got t1
  c0=$(cpu_ticks "$recv")
  t0=$(date +%s.%N)
  start "${rsyslogd[@]}" -n -f "$d/send.conf" -i "$d/send.pid" >"$d/send.log" 2>&1
  local send=$last
  read -r got t1 < <(vs lines "$d/out.log" "$lines" "$ship_timeout")
  record_ship "rsyslog-$input" "rsyslog imfile -> omfwd TCP -> $input -> omfile" "$r" "$t0" "$t1" "$got" \
    "$(cpu_ticks "$send")" "$(hwm_kib "$send")" "$(($(cpu_ticks "$recv") - c0))"
  stop "$send" "$recv"
  rm -f "$d/out.log"
}

# syslog-ng: wildcard-file() from the beginning (no parsing: a line is a message) ->
# network() TCP, RFC 5424 (flags(syslog-protocol)) -> network() -> file() (no fsync);
# flow-control on both paths, so nothing is dropped.
ship_syslogng() {
  local r=$1 d=$work/ship-syslog-ng port=$((base + 11))
  rm -rf "$d" && mkdir -p "$d"
  local opts="options { stats-freq(0); use-dns(no); dns-cache(no); keep-hostname(yes); chain-hostnames(no); log-msg-size(65536); log-fifo-size(100000); };"
  cat >"$d/recv.conf" <<EOF
@version: $sng_version
$opts
source s_net { network(ip("127.0.0.1") port($port) transport("tcp") flags(syslog-protocol) max-connections(10) log-iw-size(${VS_SNG_RIW:-100000})); };
destination d_file { file("$d/out.log" template("\${MSG}\n") flush-lines(1000)); };
log { source(s_net); destination(d_file); flags(flow-control); };
EOF
  cat >"$d/send.conf" <<EOF
@version: $sng_version
$opts
source s_files { wildcard-file(base-dir("$work/logs") filename-pattern("*.log") recursive(no) flags(no-parse) follow-freq(1) max-files(${VS_SNG_MAX_FILES:-10}) log-iw-size(${VS_SNG_IW:-100000}) log-fetch-limit(${VS_SNG_FETCH:-1000})); };
destination d_net { network("127.0.0.1" port($port) transport("tcp") flags(syslog-protocol) flush-lines(1000)); };
log { source(s_files); destination(d_net); flags(flow-control); };
EOF
  start "${syslogng[@]}" -F --no-caps -f "$d/recv.conf" -R "$d/recv.persist" -p "$d/recv.pid" -c "$d/recv.ctl" >"$d/recv.log" 2>&1
  local recv=$last
  wait_port "$port"
  local c0 t0 got t1
  c0=$(cpu_ticks "$recv")
  t0=$(date +%s.%N)
  start "${syslogng[@]}" -F --no-caps -f "$d/send.conf" -R "$d/send.persist" -p "$d/send.pid" -c "$d/send.ctl" >"$d/send.log" 2>&1
  local send=$last
  read -r got t1 < <(vs lines "$d/out.log" "$lines" "$ship_timeout")
  record_ship syslog-ng "syslog-ng wildcard-file() -> network() TCP -> network() -> file()" "$r" "$t0" "$t1" "$got" \
    "$(cpu_ticks "$send")" "$(hwm_kib "$send")" "$(($(cpu_ticks "$recv") - c0))"
  stop "$send" "$recv"
  rm -f "$d/out.log"
}

# ---------------------------------------------------------------------------------------
# Part 2: storing records.
# record_store GROUP SYSTEM LABEL ACKS ROUND SERVER_TICKS CLIENT_JSON
record_store() {
  python3 - "$@" "$hz" "$secs" >>"$results" <<'PY'
import json, sys
group, system, label, acks, rnd, ticks, client, hz, secs = sys.argv[1:]
c = json.loads(client)
if system == "tributary":
    records, seconds = c.get("records", 0), c.get("seconds", 1)
    payload = c.get("mb_per_sec_uncompressed", 0) * 1e6 * seconds  # record values (the lines)
    errors = sum(c.get("errors", {}).values()) if isinstance(c.get("errors"), dict) else int(bool(c.get("errors")))
    extra = {"mb_per_s_wire": round(c.get("mb_per_sec_wire", 0), 1), "latency_ms": c.get("latency_ms")}
else:
    records, seconds = c.get("records", 0), c.get("seconds", 1)
    payload = records * c.get("record_bytes", 200)
    errors = c.get("errors", 0) + (c.get("published", 0) - c.get("acked", 0))
    extra = {"messages": c.get("acked"), "records_per_message": c.get("batch"), "pubs": c.get("pubs"),
             "streams": c.get("streams"), "max_pending": c.get("max_pending")}
if "failed" in c:
    errors = max(errors, 1)
gb = max(payload, 1) / 1e9
server = int(ticks) / float(hz)
print(json.dumps({"part": "store", "group": group, "system": system, "label": label, "acks": acks,
    "round": int(rnd), "secs": int(secs), "records": records, "seconds": seconds, "errors": errors,
    "records_per_s": round(records / seconds), "mb_per_s_payload": round(payload / seconds / 1e6, 1),
    "server_cpu_s": round(server, 2), "server_cpu_s_per_gb": round(server / gb, 2),
    "client_cpu_s": c.get("client_cpu_s"), "client_cpu_s_per_gb": round(c.get("client_cpu_s", 0) / gb, 2), **extra}))
PY
  tail -1 "$results" >&2
}
collector_common="kafka_listen: null
create_data_dirs: true
retention_check_interval_ms: 1000
topics:
  segment_bytes: 33554432
  retention_bytes: 134217728"

store_tributary() { # ROUND NODES(1|3) ACKS
  local r=$1 n=$2 acks=$3 d=$work/store-tributary-r$2 i urls="" nodes=()
  rm -rf "$d" && mkdir -p "$d"
  for i in $(seq "$n"); do
    local port=$((n == 1 ? base : base + i))
    urls+="${urls:+,}http://127.0.0.1:$port"
    {
      echo "node_id: $i"
      echo "listen: 127.0.0.1:$port"
      echo "data_dirs: [$d/data$i]"
      echo "$collector_common"
      if [ "$n" -gt 1 ]; then
        echo "controller:"
        echo "  voters:"
        for j in $(seq "$n"); do echo "    - {id: $j, address: \"127.0.0.1:$((base + j))\"}"; done
      fi
    } >"$d/n$i.yaml"
    RUST_LOG=warn,openraft=off start "$bin/collector" serve --config "$d/n$i.yaml" >"$d/n$i.log" 2>&1
    nodes+=("$last")
  done
  for i in $(seq "$n"); do
    local port=$((n == 1 ? base : base + i))
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  done
  # Until every broker has registered (a cluster's first seconds).
  for _ in $(seq 100); do
    "$bin/collector" topics create bench --partitions 3 --replication-factor "$n" --collector "$urls" >/dev/null 2>&1 && break
    sleep 0.2
  done
  local c0 out
  c0=$(cpu_ticks "${nodes[@]}")
  out=$(vs run "$bin/collector" bench produce --collector "$urls" --topic bench --partitions 3 --producers 4 \
    --record-bytes 200 --duration "${secs}s" --acks "$acks" --output json)
  record_store "R$n" tributary "Tributary, $n node$([ "$n" = 1 ] || echo s), RF $n, acks=$acks (collector bench produce, 4 producers, 3 partitions)" \
    "$acks" "$r" "$(($(cpu_ticks "${nodes[@]}") - c0))" "$out"
  stop "${nodes[@]}"
  rm -rf "$d"/data*
}

store_nats() { # ROUND NODES(1|3) RECORDS_PER_MESSAGE
  local r=$1 n=$2 batch=$3 d=$work/store-nats-r$2 i urls="" nodes=() routes=""
  local pending=$nats_pending what="200-byte messages"
  if [ "$batch" -gt 1 ]; then
    pending=$nats_batch_pending
    what="$((batch * 200 / 1000)) kB messages of $batch records"
  fi
  rm -rf "$d" && mkdir -p "$d"
  for i in $(seq "$n"); do routes+="${routes:+, }nats-route://127.0.0.1:$((base + 30 + i))"; done
  for i in $(seq "$n"); do
    local port=$((n == 1 ? base + 20 : base + 20 + i))
    urls+="${urls:+,}nats://127.0.0.1:$port"
    {
      echo "listen: 127.0.0.1:$port"
      echo "server_name: n$i"
      echo "jetstream { store_dir: \"$d/js$i\", max_file_store: 8G, max_memory_store: 256M }"
      if [ "$n" -gt 1 ]; then
        echo "cluster { name: bench, listen: 127.0.0.1:$((base + 30 + i)), routes: [$routes] }"
      fi
    } >"$d/n$i.conf"
    start nats-server -c "$d/n$i.conf" >"$d/n$i.log" 2>&1
    nodes+=("$last")
  done
  for i in $(seq "$n"); do wait_port $((n == 1 ? base + 20 : base + 20 + i)); done
  local c0 out
  c0=$(cpu_ticks "${nodes[@]}")
  # max-bytes: 384 MiB, the retention the Tributary runs keep (3 partitions x 128 MiB).
  out=$(vs run "$root/nats-bench" --url "$urls" --stream bench --replicas "$n" --size 200 --secs "$secs" \
    --pubs "$nats_pubs" --max-pending "$pending" --payload "$work/payload/app-0.log" --max-bytes 402653184 --batch "$batch")
  record_store "R$n" nats "NATS JetStream $(nats-server --version | awk '{print $2}'), $n server$([ "$n" = 1 ] || echo s), file storage, replicas $n, $what ($nats_pubs publisher$([ "$nats_pubs" = 1 ] || echo s), async, ≤ $pending unacknowledged)" \
    "-" "$r" "$(($(cpu_ticks "${nodes[@]}") - c0))" "$out"
  stop "${nodes[@]}"
  rm -rf "$d"/js*
}

# ---------------------------------------------------------------------------------------
if [ "$only" != store ]; then
  write_logs
  for r in $(seq "$rounds"); do
    read -r -a order <<<"${VS_SHIP:-tributary rsyslog-imptcp rsyslog-imtcp syslog-ng}"
    [ $((r % 2)) = 0 ] && order=($(printf '%s\n' "${order[@]}" | tac))
    for s in "${order[@]}"; do
      say "ship round $r: $s"
      case $s in
        tributary) ship_tributary "$r" ;;
        rsyslog-imptcp) ship_rsyslog "$r" imptcp ;;
        rsyslog-imtcp) ship_rsyslog "$r" imtcp ;;
        syslog-ng) ship_syslogng "$r" ;;
      esac
    done
  done
  rm -rf "$work/logs"
fi
if [ "$only" != ship ]; then
  "$bin/collector" bench write-logs --dir "$work/payload" --files 1 --bytes 50000000 --output json >/dev/null
  for r in $(seq "$rounds"); do
    read -r -a order <<<"${VS_STORE:-t1 n1 n1b t3 t3a1 n3 n3b}"
    [ $((r % 2)) = 0 ] && order=($(printf '%s\n' "${order[@]}" | tac))
    for s in "${order[@]}"; do
      say "store round $r: $s"
      case $s in
        t1) store_tributary "$r" 1 all ;;
        t3) store_tributary "$r" 3 all ;;
        t3a1) store_tributary "$r" 3 1 ;;
        n1) store_nats "$r" 1 1 ;;
        n3) store_nats "$r" 3 1 ;;
        n1b) store_nats "$r" 1 "$nats_batch" ;;
        n3b) store_nats "$r" 3 "$nats_batch" ;;
      esac
    done
  done
fi
vs summary "$results" "$root/summary.txt" "$root/summary.json" "$json"
cp "$results" "$root/results.jsonl"
