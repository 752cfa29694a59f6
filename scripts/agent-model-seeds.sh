#!/usr/bin/env bash
# Runs the agent's generated file-action model test (single collector) over many fresh seeds:
#   scripts/agent-model-seeds.sh [SEEDS]    (default 200)
# Each seed is printed before its run; a failure stops at the failing seed, which
# TRIBUTARY_MODEL_SEED=<seed> replays. CI runs a handful (see tests/tests/agent_model.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-200}"
TRIBUTARY_MODEL_SEEDS="$seeds" cargo nextest run -p tributary-tests --test agent_model \
  --profile seeds --no-capture -E 'test(/exactly_once_in_order$/)' 2>&1 \
  | grep -E --line-buffered 'model seed|PASS|FAIL|TIMEOUT|panicked|seed [0-9]+:'
