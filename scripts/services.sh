#!/usr/bin/env bash
# Installs and starts the external parts that cluster mode and the test suites use, on
# loopback, each from its own registry (never from what someone installed by hand):
#  - redis-server (Debian)                          on 127.0.0.1:${HEARTH_TEST_REDIS_PORT:-6390}
#  - PostgreSQL 15 (Debian), database `hearth`      on 127.0.0.1:${HEARTH_TEST_PG_PORT:-5439}
#  - an S3 endpoint: moto's server (PyPI)           on 127.0.0.1:${HEARTH_TEST_S3_PORT:-5390}
#  - the Python tools of the tests in a venv under target/venv (scripts/python-requirements.txt)
# Idempotent: a service that already answers is left alone. Data and logs live under
# target/services/. Fails loudly when anything cannot be installed or started.
# Prints the environment to use them (eval "$(scripts/services.sh --env)" to export it).
# Usage: scripts/services.sh [--env]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
quiet=${1:-}
say() { [ "$quiet" = --env ] && echo "# $*" >&2 || echo "services: $*"; }

redis_port=${HEARTH_TEST_REDIS_PORT:-6390}
pg_port=${HEARTH_TEST_PG_PORT:-5439}
s3_port=${HEARTH_TEST_S3_PORT:-5390}
dir=$root/target/services
mkdir -p "$dir"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} from Debian packages"
  apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >/dev/null
fi

# The Python tools (moto's S3 server, boto3, playwright, schemathesis, ...), pinned by
# scripts/python-requirements.txt; reinstalled only when that file changes.
venv=$root/target/venv
if [ ! -x "$venv/bin/python" ]; then
  say "creating the Python venv target/venv"
  /usr/bin/python3 -m venv "$venv" >&2
fi
stamp=$venv/.requirements.sha256
want=$(sha256sum scripts/python-requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing scripts/python-requirements.txt into target/venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/python-requirements.txt >&2
  echo "$want" >"$stamp"
fi

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "services: $name did not come up; see $dir/$name.log" >&2
  tail -n 20 "$dir/$name.log" >&2 || true
  exit 1
}

# Redis: no persistence, so a restart in a test starts empty, as a crashed server would.
if ! redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
  say "starting redis-server on $redis_port"
  setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no >"$dir/redis.log" 2>&1 </dev/null &
  wait_for redis redis-cli -p "$redis_port" ping
fi

# PostgreSQL: its own cluster under target/services/pg, run as the postgres user.
pgbin=/usr/lib/postgresql/15/bin
pgdata=$dir/pg
if ! "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    say "initialising PostgreSQL in $pgdata"
    mkdir -p "$pgdata"; chown postgres:postgres "$pgdata"
    su postgres -s /bin/sh -c "$pgbin/initdb -D '$pgdata' -A trust -U postgres" >"$dir/pg-init.log" 2>&1
  fi
  say "starting PostgreSQL on $pg_port"
  touch "$dir/pg.log"; chown postgres:postgres "$dir/pg.log"
  su postgres -s /bin/sh -c "setsid $pgbin/postgres -D '$pgdata' -p $pg_port -k /tmp \
    -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off >>'$dir/pg.log' 2>&1 </dev/null &"
  wait_for pg "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"
fi
psql -h 127.0.0.1 -p "$pg_port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='hearth'" | grep -q 1 \
  || psql -h 127.0.0.1 -p "$pg_port" -U postgres -qc "CREATE DATABASE hearth" >/dev/null

# S3: moto's server, in memory (a restart starts empty).
if ! curl -sf "http://127.0.0.1:$s3_port/moto-api/" >/dev/null 2>&1; then
  say "starting moto's S3 server on $s3_port"
  setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$dir/moto.log" 2>&1 </dev/null &
  wait_for moto curl -sf "http://127.0.0.1:$s3_port/moto-api/"
fi

env=(
  "HEARTH_TEST_REDIS_URL=redis://127.0.0.1:$redis_port"
  "HEARTH_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/hearth"
  "HEARTH_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port"
  "HEARTH_TEST_VENV=$venv"
  "AWS_ACCESS_KEY_ID=testing"
  "AWS_SECRET_ACCESS_KEY=testing"
  "AWS_REGION=us-east-1"
  "AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port"
  "AWS_ALLOW_HTTP=true"
)
if [ "$quiet" = --env ]; then
  for e in "${env[@]}"; do echo "export $e"; done
else
  say "ready:"; for e in "${env[@]}"; do echo "  $e"; done
fi
