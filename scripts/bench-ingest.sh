#!/usr/bin/env bash
# Durable ingest benchmark (not part of the tests): `scripts/bench-ingest.sh [--mb-per-run N]`.
# Prints Arrow MB/s and rows/s for 1, 4 and 16 writers with --wal-sync fsync and none, and the
# raw write+fdatasync bandwidth of the same disk at the same write size; writes JSON too.
exec "$(dirname "$0")/with-server.sh" scripts/bench_ingest.py "$@"
