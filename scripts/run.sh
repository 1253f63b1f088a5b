#!/usr/bin/env bash
# Builds and runs one skein node on the embedded default (Flight SQL on 127.0.0.1:32010,
# health and metrics on 127.0.0.1:32011, data in ./skein-data). Flags pass through:
#   scripts/run.sh --help
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
. "$here/scripts/env.sh"
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --workspace --all-targets
exec "$CARGO_TARGET_DIR/release/skein-server" "$@"
