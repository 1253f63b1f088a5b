# Shared settings for skein's scripts; source it, do not run it.
# One target directory per machine (DuckDB is compiled once, then reused by every clone) and
# one Python virtual environment for the test clients.
SKEIN_CACHE="${SKEIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SKEIN_CACHE/target}"
SKEIN_VENV="${SKEIN_VENV:-$SKEIN_CACHE/venv}"
SKEIN_TOOLS="$SKEIN_CACHE/tools"
export SKEIN_CACHE SKEIN_VENV SKEIN_TOOLS
