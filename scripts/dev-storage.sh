#!/usr/bin/env bash
# Starts a local Redis and a SeaweedFS S3 store (`weed mini`) for development, with their data
# under ${SKEIN_DEV_DIR:-./skein-dev}, creates the bucket `skein`, prints how to point
# skein-server at them, and stops both on Ctrl-C. Data survives a restart of this script.
#
#   REDIS_PORT (6379)  S3_PORT (8333)  SKEIN_DEV_DIR (./skein-dev)
#   SKEIN_DEV_ACCESS_KEY (skeindev)  SKEIN_DEV_SECRET_KEY (skeindevsecret)  SKEIN_DEV_BUCKET (skein)
#   WEED_MASTER_PORT (9333)  WEED_FILER_PORT (8888)  WEED_VOLUME_PORT (9340)  WEED_ADMIN_PORT (23646)
# SeaweedFS also listens on each of its ports + 10000 (gRPC).
set -euo pipefail
DEV_DIR="${SKEIN_DEV_DIR:-./skein-dev}"  # relative to where this is run from
mkdir -p "$DEV_DIR/redis" "$DEV_DIR/seaweedfs"
DEV_DIR="$(cd "$DEV_DIR" && pwd)"
cd "$(dirname "$0")/.."
. scripts/env.sh

if [ ! -x "$SKEIN_VENV/bin/weed" ] || ! command -v redis-server >/dev/null 2>&1 \
  || ! "$SKEIN_VENV/bin/python" -c "import redis, pyarrow" 2>/dev/null; then
  scripts/setup.sh
fi

REDIS_PORT="${REDIS_PORT:-6379}"
S3_PORT="${S3_PORT:-8333}"
master_port="${WEED_MASTER_PORT:-9333}"
filer_port="${WEED_FILER_PORT:-8888}"
volume_port="${WEED_VOLUME_PORT:-9340}"
admin_port="${WEED_ADMIN_PORT:-23646}"
BUCKET="${SKEIN_DEV_BUCKET:-skein}"
ACCESS_KEY="${SKEIN_DEV_ACCESS_KEY:-skeindev}"
SECRET_KEY="${SKEIN_DEV_SECRET_KEY:-skeindevsecret}"

redis_pid=""
weed_pid=""
stop() {
  trap - INT TERM EXIT
  echo "stopping Redis and SeaweedFS ..." >&2
  for pid in $weed_pid $redis_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  # weed mini now and then hangs for 30 s while stopping; what it acknowledged survives SIGKILL.
  for _ in $(seq 100); do
    kill -0 "$weed_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -z "$weed_pid" ] || kill -KILL "$weed_pid" 2>/dev/null || true
  for pid in $weed_pid $redis_pid; do wait "$pid" 2>/dev/null || true; done
  # weed leaves unix sockets named after its ports in /tmp.
  for port in "$S3_PORT" "$master_port" "$filer_port" "$volume_port" "$admin_port"; do
    rm -f /tmp/seaweedfs-*-"$port".sock /tmp/seaweedfs-*-grpc-$((port + 10000)).sock
  done
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap 'stop' EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DEV_DIR/redis" \
  --save "" --appendonly yes --logfile "$DEV_DIR/redis/redis.log" &
redis_pid=$!

expected_volumes=$(find "$DEV_DIR/seaweedfs" -maxdepth 1 -name '*.dat' | wc -l)
env AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
  "$SKEIN_VENV/bin/weed" mini -dir="$DEV_DIR/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.telemetry=false -admin.ui=false \
  -s3.port="$S3_PORT" -master.port="$master_port" -filer.port="$filer_port" \
  -volume.port="$volume_port" -admin.port="$admin_port" \
  -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false \
  -master.volumeSizeLimitMB=64 -volume.max=500 -volume.preStopSeconds=0 \
  >>"$DEV_DIR/seaweedfs.log" 2>&1 &
weed_pid=$!

# Wait (60 s at most) until Redis answers PING and SeaweedFS serves (S3 answers a signed request
# and the master knows every volume on disk), then create the bucket.
PYTHONPATH="$PWD/tests/python" "$SKEIN_VENV/bin/python" - "$REDIS_PORT" "$S3_PORT" "$ACCESS_KEY" "$SECRET_KEY" \
  "$BUCKET" "$redis_pid" "$weed_pid" "$master_port" "$expected_volumes" <<'EOF'
import os, sys, time
import redis
from components import s3_request, weed_ready

redis_port, s3_port, ak, sk, bucket = sys.argv[1:6]
pids = {"redis-server": int(sys.argv[6]), "weed": int(sys.argv[7])}
master_port, expected_volumes = int(sys.argv[8]), int(sys.argv[9])
endpoint = f"http://127.0.0.1:{s3_port}"
deadline = time.monotonic() + 60

def alive(name):
    try:
        os.kill(pids[name], 0)
    except OSError:
        sys.exit(f"{name} exited; see its log under the dev directory")

while True:
    alive("redis-server")
    try:
        if redis.Redis(port=int(redis_port), socket_connect_timeout=1).ping():
            break
    except redis.RedisError:
        pass
    if time.monotonic() > deadline:
        sys.exit("redis-server did not answer PING")
    time.sleep(0.1)
while True:
    alive("weed")
    if weed_ready(endpoint, ak, sk, master_port, expected_volumes):
        break
    try:
        status, _, body = s3_request(endpoint, ak, sk, "us-east-1", "GET", "/", timeout=2)
        if status == 403:
            sys.exit("SeaweedFS refused the credentials (another store on this port?): " + body.decode()[:300])
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("SeaweedFS S3 did not become ready")
    time.sleep(0.1)
status, _, body = s3_request(endpoint, ak, sk, "us-east-1", "PUT", f"/{bucket}")
if status // 100 != 2 and b"BucketAlreadyOwnedByYou" not in body:
    sys.exit(f"creating bucket {bucket}: HTTP {status}: {body.decode()[:300]}")
EOF

cat <<EOF

Redis:      redis://127.0.0.1:$REDIS_PORT/0        (data in $DEV_DIR/redis)
SeaweedFS:  http://127.0.0.1:$S3_PORT, bucket $BUCKET (data in $DEV_DIR/seaweedfs, log $DEV_DIR/seaweedfs.log)

Run skein-server against them with:

  AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=us-east-1 \\
    skein-server --redis-url redis://127.0.0.1:$REDIS_PORT/0 --s3-endpoint http://127.0.0.1:$S3_PORT --s3-bucket $BUCKET

Ctrl-C stops both.
EOF

# Run until Ctrl-C, or until either process exits (then stop the other and fail).
set +e
wait -n "$redis_pid" "$weed_pid"
echo "a storage process exited unexpectedly; see the logs in $DEV_DIR" >&2
exit 1
