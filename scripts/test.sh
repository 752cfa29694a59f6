#!/usr/bin/env bash
# The whole test suite — the command README.md documents and .ci/run calls.
#
# Works on a fresh machine with only a Rust toolchain: installs cargo-nextest if missing.
# Tests that need something from the machine are #[ignore]d by default and run here when it
# is there; otherwise the runner reports them as skipped (never as passed):
#   - the two disk-full tests need their own small filesystems: as root this script mounts
#     two 8 MiB tmpfs (TRIBUTARY_SMALL_FS_STORAGE, TRIBUTARY_SMALL_FS_SERVER);
#   - the campaign's full-disk episodes mount a tmpfs per node (root);
#   - the unit-file test needs systemd-analyze (Debian package systemd);
#   - failing fsyncs in a running node need strace (Debian package) allowed to attach;
#   - wall-clock steps in a running node need libfaketime (Debian package);
#   - the Kafka tests need kcat (Debian package), confluent-kafka and kafka-python (PyPI).
# With CI=true a missing prerequisite fails the run instead.
# Extra arguments go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest (once)" >&2
  cargo install cargo-nextest --locked
fi

missing=()
skip=()
for name in storage server; do
  var="TRIBUTARY_SMALL_FS_${name^^}"
  if [ -z "${!var:-}" ] && [ "$(id -u)" = 0 ]; then
    dir="/tmp/tributary-small-fs-$name"
    mkdir -p "$dir"
    if mountpoint -q "$dir" || mount -t tmpfs -o size=8m "tributary-small-fs-$name" "$dir"; then
      export "$var=$dir"
    fi
  fi
  if [ -z "${!var:-}" ]; then
    missing+=("$var (a small tmpfs; run as root to have it mounted)")
    skip+=("test(/disk_full/)")
  fi
done
# The fault campaign's full-disk episodes mount a tmpfs per node.
if [ "$(id -u)" != 0 ]; then
  missing+=("root (the campaign's full-disk episodes mount a tmpfs per node)")
  skip+=("test(a_short_campaign_with_full_disks_finds_no_anomaly)")
fi
# Failing fsyncs in a running node are injected with strace, which must be allowed to
# attach to the collector: root, or no Yama restriction.
ptrace_scope=$(cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null || echo 0)
if ! command -v strace >/dev/null 2>&1 || { [ "$(id -u)" != 0 ] && [ "$ptrace_scope" != 0 ]; }; then
  missing+=("strace, and root or kernel.yama.ptrace_scope=0 (apt-get install strace)")
  skip+=("test(/fsync_fails_in_a_running/)" "test(a_short_campaign_with_full_disks_finds_no_anomaly)")
fi
# Wall-clock steps in a running collector come from libfaketime (LD_PRELOAD).
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
  missing+=("libfaketime (apt-get install libfaketime)")
  skip+=("test(/clock_step/)")
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  missing+=("systemd-analyze (apt-get install systemd)")
  skip+=("test(systemd_units_verify)")
fi
# The Kafka listener is tested with real clients.
if ! command -v kcat >/dev/null 2>&1 || ! python3 -c 'import confluent_kafka, kafka' 2>/dev/null; then
  missing+=("kcat and the Python packages confluent-kafka and kafka-python (apt-get install kcat; pip install confluent-kafka kafka-python)")
  skip+=("binary(kafka)")
fi

# Property tests: proptest's default is 256 cases; the suite runs 1024 of those that take
# their count from PROPTEST_CASES — the codec properties (shared/tests/codec.rs) and the
# assignor's (collector/src/groups/assignor.rs). The coordinator property runs a fixed
# 1000 cases and the storage model a fixed 96 (each case writes real files).
export PROPTEST_CASES="${PROPTEST_CASES:-1024}"

filter=()
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${CI:-}" = true ]; then
    printf 'test.sh: CI needs: %s\n' "${missing[@]}" >&2
    exit 1
  fi
  printf 'test.sh: skipping tests that need: %s\n' "${missing[@]}" >&2
  expr=$(printf '%s | ' "${skip[@]}")
  filter=(-E "not (${expr% | })")
fi
exec cargo nextest run --workspace --no-fail-fast --run-ignored all "${filter[@]}" "$@"
