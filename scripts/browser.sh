#!/usr/bin/env bash
# Installs what the dashboard's browser tests drive: Debian's chromium (headless, at
# /usr/bin/chromium) and, through scripts/services.sh, Playwright for Python and pytest
# in target/venv. Playwright never downloads a browser here: the tests launch Debian's.
# Idempotent; fails loudly when anything cannot be installed.
# Usage: scripts/browser.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "browser: installing chromium from Debian packages"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version
scripts/services.sh --env >/dev/null
target/venv/bin/python -c 'import playwright, pytest; print("browser: playwright and pytest in target/venv")'
