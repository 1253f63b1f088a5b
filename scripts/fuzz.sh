#!/usr/bin/env bash
# Fuzzes the WAL's record decoder and segment scanner with cargo-fuzz (libFuzzer) for a bounded
# time: `scripts/fuzz.sh [SECONDS]` (default 60). Fails if the fuzzer finds a crash; the input
# that caused it is left under wal/fuzz/artifacts/. The test command runs it for 30 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

seconds="${1:-60}"
cd wal
# cargo-fuzz needs unstable compiler flags (coverage instrumentation); the stable toolchain
# accepts them with RUSTC_BOOTSTRAP. No sanitizer: the decoder is safe Rust.
RUSTC_BOOTSTRAP=1 "$SKEIN_TOOLS/bin/cargo-fuzz" run --sanitizer none \
  --target-dir "$CARGO_TARGET_DIR/fuzz" segment_decoder -- \
  -max_total_time="$seconds" -print_final_stats=1
