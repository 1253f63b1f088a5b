#!/usr/bin/env bash
# Starts a local skein cluster with one command: Redis and a SeaweedFS S3 store (through
# scripts/dev-storage.sh) and three nodes n1, n2, n3 of the release build, each a full Flight SQL
# endpoint. Prints how to connect; Ctrl-C stops the nodes (they flush first), then the storage.
# Data is kept under the cluster directory across runs. Extra arguments go to every node:
#   scripts/cluster.sh --flush-interval 5s
#
#   SKEIN_CLUSTER_DIR (./skein-cluster)  SKEIN_NODES (3)  SKEIN_CLUSTER_NAME (dev)
#   SKEIN_BASE_PORT (32010): node i serves Flight SQL on base + 2(i-1) and HTTP on the port after
#   REDIS_PORT, S3_PORT, WEED_*_PORT: free ports unless given (see scripts/dev-storage.sh)
#   SKEIN_SERVER_BIN: the release build of skein-server by default (built if missing)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
. "$here/scripts/env.sh"
dir="${SKEIN_CLUSTER_DIR:-./skein-cluster}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
count="${SKEIN_NODES:-3}"
base="${SKEIN_BASE_PORT:-32010}"
name="${SKEIN_CLUSTER_NAME:-dev}"

fail() {
  echo "$1" >&2
  [ -z "${2:-}" ] || tail -n 30 "$2" >&2
  exit 1
}

bin="${SKEIN_SERVER_BIN:-$CARGO_TARGET_DIR/release/skein-server}"
if [ ! -x "$bin" ]; then
  cargo build --release --quiet --manifest-path "$here/Cargo.toml" --workspace --all-targets
fi

read -r p_redis p_s3 p_master p_filer p_volume p_admin < <(PYTHONPATH="$here/tests/python" python3 -c \
  'from components import free_ports, free_weed_ports; print(*free_ports(1), *free_weed_ports(5))')
[ -n "$p_admin" ] || fail "could not pick free ports"
export REDIS_PORT="${REDIS_PORT:-$p_redis}" S3_PORT="${S3_PORT:-$p_s3}"
export WEED_MASTER_PORT="${WEED_MASTER_PORT:-$p_master}" WEED_FILER_PORT="${WEED_FILER_PORT:-$p_filer}"
export WEED_VOLUME_PORT="${WEED_VOLUME_PORT:-$p_volume}" WEED_ADMIN_PORT="${WEED_ADMIN_PORT:-$p_admin}"
export SKEIN_DEV_DIR="$dir/storage" SKEIN_DEV_BUCKET="${SKEIN_DEV_BUCKET:-skein}"
export SKEIN_DEV_ACCESS_KEY="${SKEIN_DEV_ACCESS_KEY:-skeindev}"
export SKEIN_DEV_SECRET_KEY="${SKEIN_DEV_SECRET_KEY:-skeindevsecret}"

# Children run in their own sessions, so Ctrl-C reaches only this script, which stops the nodes
# before Redis and S3 (a node's last flush needs both).
storage_pid=""
node_pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping the nodes ..." >&2
  for pid in "${node_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${node_pids[@]}"; do  # a node flushes its buffers first; 60 s at most
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$storage_pid" ]; then
    echo "stopping Redis and SeaweedFS ..." >&2
    kill -TERM "$storage_pid" 2>/dev/null || true
    wait "$storage_pid" 2>/dev/null || true
  fi
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap 'stop' EXIT

setsid "$here/scripts/dev-storage.sh" >"$dir/storage.log" 2>&1 &
storage_pid=$!
deadline=$((SECONDS + 300))  # the first run may install the test tools (scripts/setup.sh)
until grep -q "Ctrl-C stops both" "$dir/storage.log" 2>/dev/null; do
  kill -0 "$storage_pid" 2>/dev/null || fail "Redis or SeaweedFS did not start:" "$dir/storage.log"
  [ "$SECONDS" -lt "$deadline" ] || fail "Redis and SeaweedFS not ready in 300 s:" "$dir/storage.log"
  sleep 0.2
done

for i in $(seq 1 "$count"); do
  port=$((base + 2 * (i - 1)))
  AWS_ACCESS_KEY_ID="$SKEIN_DEV_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SKEIN_DEV_SECRET_KEY" AWS_REGION=us-east-1 \
    setsid "$bin" --node-id "n$i" --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$((port + 1))" \
    --advertise-addr "127.0.0.1:$port" --data-dir "$dir/n$i" --cluster-name "$name" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT/0" \
    --s3-endpoint "http://127.0.0.1:$S3_PORT" --s3-bucket "$SKEIN_DEV_BUCKET" "$@" >"$dir/n$i.log" 2>&1 &
  node_pids+=($!)
done
deadline=$((SECONDS + 60))
for i in $(seq 1 "$count"); do
  until curl -fs "http://127.0.0.1:$((base + 2 * i - 1))/health" >/dev/null; do
    kill -0 "${node_pids[$((i - 1))]}" 2>/dev/null || fail "node n$i exited:" "$dir/n$i.log"
    [ "$SECONDS" -lt "$deadline" ] || fail "node n$i not healthy in 60 s:" "$dir/n$i.log"
    sleep 0.2
  done
done

echo
echo "skein cluster \"$name\": $count nodes (data and logs in $dir)"
for i in $(seq 1 "$count"); do
  port=$((base + 2 * (i - 1)))
  echo "  n$i  grpc://127.0.0.1:$port   health and metrics http://127.0.0.1:$((port + 1))/"
done
cat <<EOF
  Redis redis://127.0.0.1:$REDIS_PORT/0, S3 http://127.0.0.1:$S3_PORT bucket $SKEIN_DEV_BUCKET

Connect to any node with a Flight SQL client, e.g.
  $CARGO_TARGET_DIR/release/skein --uri grpc://127.0.0.1:$base sql "SELECT * FROM skein_nodes"
  python: adbc_driver_flightsql.dbapi.connect("grpc://127.0.0.1:$base")
Ctrl-C stops everything.
EOF

# Until Ctrl-C, or until a process exits (then stop the rest and fail).
set +e
wait -n "$storage_pid" "${node_pids[@]}"
fail "a node or the storage exited unexpectedly; see the logs in $dir"
