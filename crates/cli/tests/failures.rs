//! A function's own failures (raise, endless loop, memory) end in the right status,
//! and the function keeps serving afterwards. Memory readings are per invocation.
//!
//! One suite for every runtime: each has a `{prefix}-fail` fixture whose actions (picked
//! by the event) misbehave the same way (`hearth_testkit::runtimes`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{runtimes, Hearth};
use serde_json::json;

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

/// What a raised error looks like per runtime: its type, and the function a trace names
/// (C++ exceptions carry no trace; a Go handler returns its error).
fn raised(runtime: &str) -> (&'static str, Option<&'static str>) {
    match runtime {
        "python" => ("ValueError", Some("fail_deeply")),
        "nodejs" => ("TypeError", Some("failDeeply")),
        "cpp" => ("std::invalid_argument", None),
        "go" => ("error", None),
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn a_raising_handler_reports_type_message_and_trace() {
    let hearth = hearth();
    for (runtime, prefix) in runtimes() {
        let name = format!("{prefix}-raise");
        hearth.deploy_fixture(
            &name,
            &format!("{prefix}-fail"),
            json!({"runtime": runtime}),
        );
        let inv = hearth.invoke(&name, json!({"action": "raise", "detail": 42}));
        assert_eq!(inv["status"], "error", "{inv}");
        let error = &inv["error"];
        let (expected_type, frame) = raised(runtime);
        assert_eq!(error["type"], expected_type, "{inv}");
        assert_eq!(error["message"], "bad input: 42");
        if let Some(frame) = frame {
            let trace = error["trace"].as_str().unwrap();
            assert!(
                trace.contains(frame),
                "trace names the raising function: {trace}"
            );
        }
        assert_recovers(&hearth, &name);
    }
}

#[test]
fn an_endless_loop_is_killed_by_its_timeout_and_the_function_keeps_serving() {
    let hearth = hearth();
    for (runtime, prefix) in runtimes() {
        let name = format!("{prefix}-loop");
        hearth.deploy_fixture(
            &name,
            &format!("{prefix}-fail"),
            json!({"runtime": runtime, "timeout_ms": 1000}),
        );
        hearth.invoke(&name, json!({"action": "none"}));
        let inv = hearth.invoke(&name, json!({"action": "loop"}));
        assert_eq!(inv["status"], "timeout", "{runtime}: {inv}");
        // The agent's own clock fired (it killed the handler at the function's timeout),
        // not the worker's fallback for an agent that stopped answering.
        assert_eq!(inv["error"]["type"], "Timeout", "{runtime}: {inv}");
        assert_eq!(
            inv["error"]["message"], "invocation timed out after 1000 ms",
            "{runtime}: {inv}"
        );
        assert_recovers(&hearth, &name);
    }
}

#[test]
fn allocating_past_the_limit_is_oom_and_the_next_call_succeeds() {
    let hearth = hearth();
    for (runtime, prefix) in runtimes() {
        let name = format!("{prefix}-oom");
        hearth.deploy_fixture(
            &name,
            &format!("{prefix}-fail"),
            json!({"runtime": runtime, "memory_mb": 128}),
        );
        let inv = hearth.invoke(&name, json!({"action": "alloc", "mb": 400}));
        assert_eq!(inv["status"], "oom", "{inv}");
        assert!(
            inv["error"]["message"].as_str().unwrap().contains("128 MB"),
            "{inv}"
        );
        assert_recovers(&hearth, &name);
    }
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
