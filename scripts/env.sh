# Shared settings for skein's scripts; source it, do not run it.
# One target directory per machine (DuckDB is compiled once, then reused by every clone) and
# one Python virtual environment for the test clients.
SKEIN_CACHE="${SKEIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SKEIN_CACHE/target}"
SKEIN_VENV="${SKEIN_VENV:-$SKEIN_CACHE/venv}"
SKEIN_TOOLS="$SKEIN_CACHE/tools"
export SKEIN_CACHE SKEIN_VENV SKEIN_TOOLS

# Cargo finds a workspace crate fresh when its sources are older than that crate's last build
# in the target directory, and the crates of two clones share their build there: a clone whose
# files are older than another clone's last build would silently get the other clone's code.
# So when the target directory was last built from another clone, this clone's sources are
# touched and its own crates rebuilt (the dependencies, DuckDB among them, stay as they are).
skein_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
skein_mark="$CARGO_TARGET_DIR/.skein-clone"
if [ "$(cat "$skein_mark" 2>/dev/null)" != "$skein_root" ] && [ -e "$skein_root/.git" ]; then
  (cd "$skein_root" && git ls-files -z -- '*.rs' '*Cargo.toml' | xargs -0 -r touch)
  mkdir -p "$CARGO_TARGET_DIR" && printf '%s\n' "$skein_root" >"$skein_mark"
fi
unset skein_root skein_mark
