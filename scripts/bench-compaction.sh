#!/usr/bin/env bash
# A query over 1,000 small files, after compaction, and over the same rows as one file (not a
# test): `scripts/bench-compaction.sh [--files N] [--rows-per-file R]`. A few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

scripts/setup.sh
cargo build --release -p skein-server --bins
SKEIN_SERVER_BIN="$CARGO_TARGET_DIR/release/skein-server" \
  "$SKEIN_VENV/bin/python" scripts/bench_compaction.py "$@"
