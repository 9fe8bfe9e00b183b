#!/usr/bin/env bash
# Builds the static in-sandbox agent (its own target dir, +crt-static) and hearth.
# Usage: scripts/build.sh [release|debug]   (the agent is always a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}

echo "build: hearth-agent (static)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
  -p hearth-agent --target x86_64-unknown-linux-gnu --target-dir target/agent

echo "build: hearth ($profile)"
if [ "$profile" = release ]; then
  cargo build --quiet --release -p hearth
  cp target/agent/x86_64-unknown-linux-gnu/release/hearth-agent target/release/hearth-agent
else
  cargo build --quiet -p hearth
fi
