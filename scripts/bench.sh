#!/usr/bin/env bash
# skein's benchmark (not part of the tests): `scripts/bench.sh [--only SECTIONS] [--sf N]`.
# Installs what it needs (like the test command), builds skein with the release profile, then
# measures every figure next to its baseline in one run and prints the table; the JSON goes to
# ~/.cache/skein/bench.json (or --json PATH). Sections: transport, ingest, tpch (and the large
# result fetch), latency. About 10 minutes at scale factor 1 on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

scripts/setup.sh
"$SKEIN_VENV/bin/pip" install --quiet -r scripts/bench-requirements.txt
cargo build --release --workspace --all-targets
SKEIN_SERVER_BIN="$CARGO_TARGET_DIR/release/skein-server" \
  "$SKEIN_VENV/bin/python" scripts/bench.py "$@"
