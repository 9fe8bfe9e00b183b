#!/usr/bin/env bash
# Installs what hearth needs on a fresh Debian machine (only what is missing: Python,
# Node.js, g++, Go), then builds the static agent and the hearth binary. Idempotent;
# safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/python3 ] || need+=(python3)
command -v node >/dev/null 2>&1 || need+=(nodejs)
# Dependencies at deploy: pip fetches wheels on the host and installs them in a build
# sandbox (the sandbox's own python), npm fetches node_modules, go fetches modules.
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The compiled runtimes' toolchains, run inside build sandboxes: g++ (C++17, static
# libstdc++ and glibc) and Go from Debian's packages.
[ -x /usr/bin/g++ ] || need+=(g++)
[ -x /usr/bin/go ] || need+=(golang-go)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} from Debian packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

if [ "$(id -u)" != 0 ]; then
  echo "setup: warning: the native sandbox needs root (namespaces, cgroups); run hearth as root" >&2
fi

scripts/build.sh "${1:-release}"
