//! A function's own failures (raise, endless loop, memory) end in the right status,
//! and the function keeps serving afterwards. Memory readings are per invocation.

use hearth_testkit::Hearth;
use serde_json::json;

const RUNTIMES: [(&str, &str); 2] = [("python", "py"), ("nodejs", "node")];
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

#[test]
fn a_raising_handler_reports_type_message_and_trace() {
    let hearth = hearth();
    for (runtime, prefix) in RUNTIMES {
        let name = format!("{prefix}-raise");
        hearth.deploy_fixture(
            &name,
            &format!("{prefix}-fail"),
            json!({"runtime": runtime}),
        );
        let inv = hearth.invoke(&name, json!({"action": "raise", "detail": 42}));
        assert_eq!(inv["status"], "error", "{inv}");
        let error = &inv["error"];
        let expected_type = if runtime == "python" {
            "ValueError"
        } else {
            "TypeError"
        };
        assert_eq!(error["type"], expected_type, "{inv}");
        assert_eq!(error["message"], "bad input: 42");
        let trace = error["trace"].as_str().unwrap();
        let frame = if runtime == "python" {
            "fail_deeply"
        } else {
            "failDeeply"
        };
        assert!(
            trace.contains(frame),
            "trace names the raising function: {trace}"
        );
        assert_recovers(&hearth, &name);
    }
}

#[test]
fn an_endless_loop_times_out_within_a_second_of_its_timeout() {
    let hearth = hearth();
    for (runtime, prefix) in RUNTIMES {
        let name = format!("{prefix}-loop");
        hearth.deploy_fixture(
            &name,
            &format!("{prefix}-fail"),
            json!({"runtime": runtime, "timeout_ms": 1000}),
        );
        hearth.invoke(&name, json!({"action": "none"}));
        let inv = hearth.invoke(&name, json!({"action": "loop"}));
        assert_eq!(inv["status"], "timeout", "{inv}");
        let duration = inv["duration_ms"].as_f64().unwrap();
        assert!(
            (1000.0..2000.0).contains(&duration),
            "timed out after {duration} ms"
        );
        assert_recovers(&hearth, &name);
    }
}

#[test]
fn allocating_past_the_limit_is_oom_and_the_next_call_succeeds() {
    let hearth = hearth();
    for (runtime, prefix) in RUNTIMES {
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
    hearth.deploy_fixture(
        "py-peak",
        "py-fail",
        json!({"runtime": "python", "memory_mb": 512}),
    );
    hearth.invoke("py-peak", json!({"action": "none"}));
    let big = hearth.invoke("py-peak", json!({"action": "alloc", "mb": 100}));
    assert_eq!(big["status"], "success", "{big}");
    assert_eq!(big["cold_start"], false);
    let peak = big["memory"]["peak_bytes"].as_u64().unwrap();
    assert!(
        (100 * MB..140 * MB).contains(&peak),
        "100 MB allocation peaked at {} MB",
        peak / MB
    );
    assert!(
        big["memory"]["max_rss_bytes"].as_u64().unwrap() >= 100 * MB,
        "{big}"
    );
    assert!(
        big["cpu"]["user_ms"].as_f64().unwrap() + big["cpu"]["system_ms"].as_f64().unwrap() > 0.0
    );

    let small = hearth.invoke("py-peak", json!({"action": "alloc", "mb": 10}));
    assert_eq!(small["cold_start"], false, "same warm instance");
    let peak = small["memory"]["peak_bytes"].as_u64().unwrap();
    assert!(
        peak < 40 * MB,
        "10 MB allocation after a 100 MB one peaked at {} MB",
        peak / MB
    );
    assert!(
        peak > 10 * MB,
        "the reading covers the allocation: {} bytes",
        peak
    );
}

#[test]
fn stdout_is_capped_inline_with_truncated_set() {
    let hearth = hearth();
    hearth.deploy_fixture("py-print", "py-fail", json!({"runtime": "python"}));
    let small = hearth.invoke("py-print", json!({"action": "print", "bytes": 1000}));
    assert_eq!(small["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(small["truncated"], false);
    let big = hearth.invoke("py-print", json!({"action": "print", "bytes": 3 * MB}));
    assert_eq!(big["status"], "success", "{}", big["error"]);
    assert_eq!(big["stdout"].as_str().unwrap().len() as u64, MB);
    assert_eq!(big["truncated"], true);
}
