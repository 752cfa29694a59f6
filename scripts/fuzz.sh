#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after the other.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
secs="${1:-600}"
cd "$(dirname "$0")/../fuzz"
for target in kafka_frame record_batch; do
    echo "== $target for ${secs}s"
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1
done
