#!/usr/bin/env bash
# Runs a Python script of the project against the release `skein-server`, with the test
# environment (scripts/setup.sh) in place: `scripts/with-server.sh scripts/bench_x.py [args]`.
# The bench-*.sh scripts are this with their script named.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

scripts/setup.sh
cargo build --release --workspace --all-targets
SKEIN_SERVER_BIN="$CARGO_TARGET_DIR/release/skein-server" exec "$SKEIN_VENV/bin/python" "$@"
