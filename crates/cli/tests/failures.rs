//! A function's own failures (raise, endless loop, memory) end in the right status,
//! and the function keeps serving afterwards. Memory readings are per invocation.
//!
//! One suite for every runtime: each has a `{prefix}-fail` fixture whose actions (picked
//! by the event) misbehave the same way (`hearth_testkit::runtimes`). The events and the
//! results expected of each runtime are data: `tests/fixtures/cases/fail.json`, which
//! the agent's own suite (`crates/agent/tests/fail_cases.rs`) runs too.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::cases::Cases;
use hearth_testkit::{runtimes, Hearth};
use serde_json::{json, Value};

const MB: u64 = 1024 * 1024;

fn hearth() -> Hearth {
    Hearth::start(env!("CARGO_BIN_EXE_hearth"))
}

fn assert_recovers(hearth: &Hearth, name: &str) {
    let next = hearth.invoke(name, json!({"action": "none"}));
    assert_eq!(
        next["status"], "success",
        "the call after a failure must succeed: {next}"
    );
}

/// Runs case `name` of `tests/fixtures/cases/fail.json` on every runtime: deployed with
/// the case's config, invoked with its event, checked against its expected result, then
/// a plain call must succeed on the same function.
fn run_case(name: &str) {
    let cases = Cases::load("fail");
    let case = cases.case(name);
    let hearth = hearth();
    for (runtime, prefix) in runtimes() {
        let function = format!("{prefix}-{}", name.replace('_', "-"));
        let mut config = case.config.clone();
        config.insert("runtime".into(), json!(runtime));
        hearth.deploy_fixture(&function, &cases.fixture_for(prefix), Value::Object(config));
        let inv = hearth.invoke(&function, case.event.clone());
        case.check(runtime, &inv);
        assert_recovers(&hearth, &function);
    }
}

#[test]
fn a_raising_handler_reports_type_message_and_trace() {
    run_case("raises");
}

#[test]
fn an_endless_loop_is_killed_by_the_agents_own_clock_and_the_function_keeps_serving() {
    // `Timeout` with the function's own limit in the message: the agent killed the
    // handler at the function's timeout, not the worker's fallback for a silent agent.
    run_case("loops");
}

#[test]
fn a_sleeping_handler_within_its_timeout_succeeds() {
    run_case("sleeps");
}

/// The case allows 30 s: near its limit a process's own code pages are reclaimed and read
/// back (no swap here) before the kernel gives up and OOM-kills it, and on a loaded
/// machine that took longer than the 3 s default (a Go call timed out at 126 of 128 MB).
#[test]
fn allocating_past_the_limit_is_oom_and_the_next_call_succeeds() {
    run_case("allocates_past_its_memory");
}

#[test]
fn allocating_within_the_limit_succeeds() {
    run_case("allocates_within_its_memory");
}

#[test]
fn memory_peak_is_each_invocations_own() {
    let hearth = hearth();
    for (runtime, prefix) in runtimes() {
        let name = format!("{prefix}-peak");
        hearth.deploy_fixture(
            &name,
            &format!("{prefix}-fail"),
            json!({"runtime": runtime, "memory_mb": 512}),
        );
        hearth.invoke(&name, json!({"action": "none"}));
        // What the runtime itself peaks at for a call that allocates nothing (Node.js's
        // heap alone is ~40 MB): the bounds below sit on top of it.
        let idle = hearth.invoke(&name, json!({"action": "none"}));
        let base = idle["memory"]["peak_bytes"].as_u64().unwrap();
        let big = hearth.invoke(&name, json!({"action": "alloc", "mb": 100}));
        assert_eq!(big["status"], "success", "{big}");
        assert_eq!(big["cold_start"], false);
        let peak = big["memory"]["peak_bytes"].as_u64().unwrap();
        assert!(
            (100 * MB..base + 140 * MB).contains(&peak),
            "{runtime}: 100 MB allocation peaked at {} MB (idle call {} MB)",
            peak / MB,
            base / MB
        );
        assert!(
            big["memory"]["max_rss_bytes"].as_u64().unwrap() >= 100 * MB,
            "{big}"
        );
        assert!(
            big["cpu"]["user_ms"].as_f64().unwrap() + big["cpu"]["system_ms"].as_f64().unwrap()
                > 0.0
        );

        let small = hearth.invoke(&name, json!({"action": "alloc", "mb": 10}));
        assert_eq!(small["cold_start"], false, "same warm instance");
        let peak = small["memory"]["peak_bytes"].as_u64().unwrap();
        assert!(
            peak < base + 40 * MB,
            "{runtime}: 10 MB allocation after a 100 MB one peaked at {} MB (idle call {} MB)",
            peak / MB,
            base / MB
        );
        assert!(
            peak > 10 * MB,
            "{runtime}: the reading covers the allocation: {} bytes",
            peak
        );
    }
}

#[test]
fn stdout_is_capped_inline_with_truncated_set() {
    let hearth = hearth();
    for (runtime, prefix) in runtimes() {
        let name = format!("{prefix}-print");
        hearth.deploy_fixture(
            &name,
            &format!("{prefix}-fail"),
            json!({"runtime": runtime}),
        );
        let small = hearth.invoke(&name, json!({"action": "print", "bytes": 1000}));
        assert_eq!(small["stdout"].as_str().unwrap().len(), 1000, "{runtime}");
        assert_eq!(small["truncated"], false);
        let big = hearth.invoke(&name, json!({"action": "print", "bytes": 3 * MB}));
        assert_eq!(big["status"], "success", "{runtime}: {}", big["error"]);
        assert_eq!(
            big["stdout"].as_str().unwrap().len() as u64,
            MB,
            "{runtime}"
        );
        assert_eq!(big["truncated"], true);
    }
}
