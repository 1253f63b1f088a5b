#!/usr/bin/env bash
# What a three-node cluster ships between nodes, partial aggregate against gather (not a test):
# `scripts/bench-cluster.sh [--rows N] [--groups G]`. About a minute at the default 3M rows.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

scripts/setup.sh
cargo build --release -p skein-server --bins
SKEIN_SERVER_BIN="$CARGO_TARGET_DIR/release/skein-server" \
  "$SKEIN_VENV/bin/python" scripts/bench_cluster.py "$@"
