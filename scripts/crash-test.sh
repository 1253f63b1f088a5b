#!/usr/bin/env bash
# The SIGKILL crash test with many cycles: `scripts/crash-test.sh [CYCLES]` (default 1000).
# The test command runs the same test with 25 cycles. SKEIN_CRASH_SEED repeats a run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

scripts/setup.sh
cargo build --release --workspace --all-targets
SKEIN_CRASH_CYCLES="${1:-1000}" \
SKEIN_SERVER_BIN="$CARGO_TARGET_DIR/release/skein-server" \
  "$SKEIN_VENV/bin/python" -m pytest -q -s tests/python/test_crash.py
