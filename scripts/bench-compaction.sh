#!/usr/bin/env bash
# A query over 1,000 small files, after compaction, and over the same rows as one file (not a
# test): `scripts/bench-compaction.sh [--files N] [--rows-per-file R]`. A few minutes.
exec "$(dirname "$0")/with-server.sh" scripts/bench_compaction.py "$@"
