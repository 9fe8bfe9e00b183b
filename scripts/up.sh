#!/usr/bin/env bash
# The first command of the README: set up, build, and run `hearth up` on embedded
# defaults (data in ./.hearth). On a fresh data dir it deploys and invokes a sample.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh release
exec target/release/hearth up "$@"
