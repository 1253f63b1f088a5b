#!/usr/bin/env bash
# Installs what skein's tests need: a Python virtual environment with the Flight SQL clients
# and the oracle, and arrow-rs's flight_sql_client. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

mkdir -p "$SKEIN_CACHE" "$SKEIN_TOOLS"

if [ ! -x "$SKEIN_VENV/bin/python" ]; then
  python3 -m venv "$SKEIN_VENV"
fi
if ! "$SKEIN_VENV/bin/python" -c "import numpy, pyarrow, adbc_driver_flightsql, adbc_driver_manager, duckdb, pytest" 2>/dev/null; then
  "$SKEIN_VENV/bin/pip" install --quiet --upgrade pip
  "$SKEIN_VENV/bin/pip" install --quiet -r tests/python/requirements.txt
fi

# arrow-rs's Flight SQL command-line client, built once into the shared target directory.
if [ ! -x "$SKEIN_TOOLS/bin/flight_sql_client" ]; then
  cargo install --quiet --locked arrow-flight@60.1.0 --features cli,flight-sql,tls-ring --bin flight_sql_client \
    --root "$SKEIN_TOOLS" --target-dir "$CARGO_TARGET_DIR/tools"
fi

# cargo-fuzz, for the bounded fuzzing run of the WAL decoder.
if [ ! -x "$SKEIN_TOOLS/bin/cargo-fuzz" ]; then
  cargo install --quiet --locked cargo-fuzz@0.13.2 --root "$SKEIN_TOOLS" --target-dir "$CARGO_TARGET_DIR/tools"
fi
