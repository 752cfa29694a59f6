#!/usr/bin/env bash
# Storage benchmarks beside the disk's own sequential-write ceiling, in one run.
# Usage: scripts/bench-storage.sh   (data under target/bench-data, on the real disk)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TRIBUTARY_BENCH_DIR:-target/bench-data}
mkdir -p "$dir"
echo "== disk ceiling: dd 2 GiB, one fdatasync at the end"
dd if=/dev/zero of="$dir/dd.test" bs=1M count=2048 conv=fdatasync 2>&1 | tail -1
rm -f "$dir/dd.test"
echo "== disk with an fdatasync per 1 MiB (what flush=always costs without group commit)"
dd if=/dev/zero of="$dir/dd.test" bs=1M count=512 oflag=dsync 2>&1 | tail -1
rm -f "$dir/dd.test"
echo "== cargo bench (storage)"
TRIBUTARY_BENCH_DIR="$dir" cargo bench -p collector --bench storage -- "$@"
