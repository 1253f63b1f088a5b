#!/usr/bin/env bash
# Durable ingest benchmark (not part of the tests): `scripts/bench-ingest.sh [--mb-per-run N]`.
# Prints Arrow MB/s and rows/s for 1, 4 and 16 writers with --wal-sync fsync and none, and the
# raw write+fdatasync bandwidth of the same disk at the same write size; writes JSON too.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

scripts/setup.sh
cargo build --release -p skein-server
SKEIN_SERVER_BIN="$CARGO_TARGET_DIR/release/skein-server" \
  "$SKEIN_VENV/bin/python" scripts/bench_ingest.py "$@"
