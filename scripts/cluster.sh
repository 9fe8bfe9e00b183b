#!/usr/bin/env bash
# A whole hearth cluster on this machine: Redis, PostgreSQL and an S3 endpoint (moto)
# from scripts/services.sh, then two controllers and three workers (each worker with a
# data dir of its own), and how to use them. Run as root (the native sandbox needs it).
# Usage: scripts/cluster.sh [start|stop]   (start builds hearth in release first)
# Ports: controllers on ${HEARTH_CLUSTER_PORT:-8081} and the next one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$root/target/cluster
port=${HEARTH_CLUSTER_PORT:-8081}

stop() {
  for pidfile in "$dir"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null && echo "cluster: stopped $(basename "$pidfile" .pid) ($pid)"
    rm -f "$pidfile"
  done
}

if [ "${1:-start}" = stop ]; then
  stop
  exit 0
fi

stop
eval "$(scripts/services.sh --env)"
scripts/build.sh release
mkdir -p "$dir"

key_file=$dir/admin.key
[ -s "$key_file" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' | sed 's/^/hk_/' >"$key_file"
export HEARTH_API_KEY=$(cat "$key_file")
export HEARTH_REDIS_URL=$HEARTH_TEST_REDIS_URL
export HEARTH_REDIS_PREFIX=hearth-cluster
export HEARTH_DATABASE_URL=$HEARTH_TEST_DATABASE_URL
export HEARTH_DATABASE_SCHEMA=hearth_cluster
# The bucket in moto (S3 itself needs none of this: create yours once).
bucket=hearth-cluster
curl -sf -X PUT "$AWS_ENDPOINT_URL/$bucket" >/dev/null || true
if target/release/hearth worker --help | grep -q 's3://'; then
  export HEARTH_OBJECTS_URL=s3://$bucket/objects
else
  export HEARTH_OBJECTS_URL=$dir/objects
fi
hearth=$root/target/release/hearth

for i in 1 2 3; do
  setsid "$hearth" --data-dir "$dir/worker-$i" worker --id "worker-$i" \
    >"$dir/worker-$i.log" 2>&1 </dev/null &
  echo $! >"$dir/worker-$i.pid"
done
for i in 1 2; do
  setsid "$hearth" controller --port $((port + i - 1)) >"$dir/controller-$i.log" 2>&1 </dev/null &
  echo $! >"$dir/controller-$i.pid"
done

for i in 1 2; do
  for _ in $(seq 1 100); do
    grep -q "listening on" "$dir/controller-$i.log" && break
    sleep 0.1
  done
  grep -q "listening on" "$dir/controller-$i.log" || { echo "cluster: controller $i did not start:"; tail "$dir/controller-$i.log"; stop; exit 1; }
done
url=http://127.0.0.1:$port
for _ in $(seq 1 100); do
  n=$(curl -sf -H "Authorization: Bearer $HEARTH_API_KEY" "$url/v1/status" | grep -o '"heartbeat_age_ms"' | wc -l || true)
  [ "$n" = 3 ] && break
  sleep 0.2
done
[ "$n" = 3 ] || { echo "cluster: only $n workers joined; see $dir/worker-*.log"; stop; exit 1; }

cat <<EOF

hearth cluster running (logs and pids in $dir):
  controllers  $url  http://127.0.0.1:$((port + 1))
  workers      worker-1 worker-2 worker-3
  redis        $HEARTH_REDIS_URL (keys under $HEARTH_REDIS_PREFIX:)
  database     $HEARTH_DATABASE_URL (schema $HEARTH_DATABASE_SCHEMA)
  objects      $HEARTH_OBJECTS_URL

use it (any controller answers the same API):
  export HEARTH_URL=$url HEARTH_API_KEY=$HEARTH_API_KEY
  target/release/hearth deploy tests/fixtures/functions/py-echo --name hello --runtime python
  target/release/hearth invoke hello '{"name": "cluster"}'
  target/release/hearth --url http://127.0.0.1:$((port + 1)) status
  target/release/hearth bench --url $url
stop it:
  scripts/cluster.sh stop
EOF
