#!/usr/bin/env bash
# `hearth bench --smoke` on both sandbox backends, as CI runs it: every figure is
# exercised once at a tiny size (no timing is asserted). The bench itself fails when a
# figure is broken (missing, short of samples, not a number, measured with errors, a
# baseline that could not run); this script then checks that the JSON it wrote has
# every key a reader of the report relies on. Needs the Docker engine and runtime
# images (scripts/test.sh sets both up first).
set -euo pipefail
cd "$(dirname "$0")/.."
hearth=${HEARTH_BIN:-target/debug/hearth}

check_keys() { # file, backend, runtimes...
  local file=$1 backend=$2
  shift 2
  python3 - "$file" "$backend" "$@" <<'PY'
import json, math, sys

path, backend, runtimes = sys.argv[1], sys.argv[2], sys.argv[3:]
report = json.load(open(path))
problems = []

def number(where, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        problems.append(f"{where}: {value!r} is not a number")

def latency(where, value):
    if not isinstance(value, dict):
        problems.append(f"{where}: missing")
        return
    for key in ("samples", "p50", "p90", "p99", "max"):
        number(f"{where}.{key}", value.get(key))

for section in ("warm", "warm_server_side", "cold_start"):
    for runtime in runtimes:
        latency(f"{section}.{runtime}", report.get(section, {}).get(runtime))
throughput = report.get("throughput", {})
for key in ("clients", "seconds", "completed", "per_second", "errors"):
    number(f"throughput.{key}", throughput.get(key))
latency("throughput.latency", throughput.get("latency"))
if throughput.get("errors") != 0:
    problems.append(f"throughput.errors: {throughput.get('errors')!r}")
for runtime in runtimes:
    if runtime in ("cpp", "go"):
        number(f"build_ms.{runtime}", report.get("build_ms", {}).get(runtime))
baselines = report.get("baselines") or []
whats = [b.get("what", "") for b in baselines]
for expected in ("python3 -c", "node -e", "docker exec", "docker run"):
    if not any(expected in what for what in whats):
        problems.append(f"baselines: no {expected!r} baseline in {whats}")
for b in baselines:
    number(f"baselines[{b.get('what')}].median_ms", b.get("median_ms"))
number("memory_reading_us", report.get("memory_reading_us"))
# The floor under a warm python call and what hearth adds over it (issue 18).
for key in ("http_rtt_ms", "python_fork_ms"):
    number(f"floor.{key}", report.get("floor", {}).get(key))
number("overhead.python_ms", report.get("overhead", {}).get("python_ms"))
goals = report.get("goals") or []
if not goals:
    problems.append("goals: missing")
for goal in goals:
    for key in ("figure", "goal", "unit"):
        if not isinstance(goal.get(key), str):
            problems.append(f"goals[{goal.get('figure')}].{key}: missing")
if backend == "docker":
    docker = report.get("docker")
    if not isinstance(docker, dict):
        problems.append("docker: missing")
        docker = {}
    for key in ("bare_run_ms", "exec_ms", "cold_python_vs_bare_run", "throughput_per_second"):
        number(f"docker.{key}", docker.get(key))
    for runtime in runtimes:
        number(f"docker.warm_p50_ms.{runtime}", docker.get("warm_p50_ms", {}).get(runtime))
        number(f"docker.cold_start_p50_ms.{runtime}", docker.get("cold_start_p50_ms", {}).get(runtime))
elif "docker" in report:
    problems.append("docker: present in a native run")
number("output_rss_growth_mb", report.get("output_rss_growth_mb"))
if problems:
    print(f"bench smoke JSON {path} is incomplete:", *problems, sep="\n  - ", file=sys.stderr)
    sys.exit(1)
print(f"bench smoke JSON {path}: every key present ({len(runtimes)} runtimes)")
PY
}

echo "bench-smoke: native sandbox"
"$hearth" bench --smoke --json > target/bench-smoke.json
check_keys target/bench-smoke.json native python nodejs cpp go

echo "bench-smoke: Docker sandbox"
"$hearth" bench --smoke --json --sandbox docker > target/bench-smoke-docker.json
check_keys target/bench-smoke-docker.json docker python nodejs cpp go
