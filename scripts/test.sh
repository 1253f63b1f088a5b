#!/usr/bin/env bash
# Installs what the tests need and runs every test: formatting and clippy's lints, Rust unit and
# integration tests, then the end-to-end tests that drive real skein-server processes with ADBC,
# pyarrow and arrow-rs's flight_sql_client (including the SIGKILL crash test), with a bounded
# fuzzing run of the WAL decoder in between. Everything builds with the release profile into one
# shared target directory, so the bundled DuckDB is compiled once per machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

scripts/setup.sh
cargo build --release --workspace --all-targets
# Style and lints gate like the tests; clippy checks with the build's profile and features, so
# DuckDB's build script does not run again.
cargo fmt --all --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace
scripts/fuzz.sh 30
SKEIN_SERVER_BIN="$CARGO_TARGET_DIR/release/skein-server" \
SKEIN_CLI_BIN="$CARGO_TARGET_DIR/release/skein" \
FLIGHT_SQL_CLIENT="$SKEIN_TOOLS/bin/flight_sql_client" \
  "$SKEIN_VENV/bin/python" -m pytest -q tests/python "$@"
