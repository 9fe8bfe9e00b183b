#!/usr/bin/env bash
# Makes a Docker engine available for hearth's Docker sandbox and its tests:
#  - installs docker.io (the engine) and debootstrap (for `hearth images build`) from
#    Debian packages when missing;
#  - starts dockerd in the background when no engine answers (log: target/dockerd.log)
#    and waits for it.
# Idempotent. Fails loudly when the engine cannot be installed or started: CI must not
# silently skip the Docker tests.
# Usage: scripts/docker.sh
set -euo pipefail
cd "$(dirname "$0")/.."

socket=/var/run/docker.sock
engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "docker: installing ${need[*]} from Debian packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if engine_answers; then
  echo "docker: engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})') already running"
  exit 0
fi

mkdir -p target
echo "docker: starting dockerd (log: target/dockerd.log)"
# setsid: the daemon outlives this script and is not in its process group.
setsid dockerd >>target/dockerd.log 2>&1 </dev/null &
for _ in $(seq 1 120); do
  if [ -S "$socket" ] && engine_answers; then
    echo "docker: engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})') ready"
    exit 0
  fi
  sleep 0.5
done
echo "docker: the engine did not come up within 60 s; the end of target/dockerd.log:" >&2
tail -n 30 target/dockerd.log >&2 || true
exit 1
