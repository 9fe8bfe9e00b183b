#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then unit,
# integration and end-to-end tests against real `hearth up` processes (real
# namespaces and cgroups: run as root), the end-to-end suites once per sandbox backend
# (native, then Docker: the engine is installed and started by scripts/docker.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

scripts/setup.sh debug

echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --quiet --workspace --all-targets -- -D warnings

export HEARTH_AGENT="$PWD/target/agent/x86_64-unknown-linux-gnu/release/hearth-agent"
# The store suites (SQLite + PostgreSQL, local dir + S3) and the cluster tests run
# inside `cargo test --workspace` against these; they fail loudly without them.
echo "test: services (Redis, PostgreSQL, moto's S3)"
eval "$(scripts/services.sh --env)"
echo "test: Docker engine and runtime images (for the Docker backend's tests; the cpp/go builder images too)"
scripts/docker.sh
target/debug/hearth images build
echo "test: cargo test (unit, integration, end-to-end)"
cargo test --workspace --no-fail-fast -- --test-threads "${HEARTH_TEST_THREADS:-2}"
echo "test: the end-to-end suites again, on the Docker backend"
HEARTH_TEST_SANDBOX=docker cargo test --no-fail-fast -p hearth --test lifecycle --test failures \
  --test concurrency --test hostile --test bad_input --test async_invocations \
  --test outputs_and_logs --test cli_commands --test tuning --test attempts --test blame --test disk --test host_side --test bad_events -- --test-threads "${HEARTH_TEST_THREADS:-2}"

echo "test: the dashboard in a real browser (Playwright + Debian chromium, tests/browser)"
scripts/browser.sh
target/venv/bin/pytest -q -p no:cacheprovider tests/browser

echo "test: schemathesis against a live hearth up with its OpenAPI document (scripts/schemathesis.sh)"
scripts/schemathesis.sh target/debug/hearth

echo "test: hearth bench --smoke on both backends (every figure; no timing asserted)"
scripts/bench-smoke.sh

echo "test: all passed in $(( $(date +%s) - started )) s"
