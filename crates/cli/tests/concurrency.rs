//! Concurrent calls get their own instances up to the function's maximum, then wait
//! their turn. Overlap is judged from the handlers' own clocks and the platform's
//! status, never from how long a call took.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{eventually, Hearth};
use serde_json::{json, Value};
use std::time::Duration;

fn two_calls_at_once(hearth: &Hearth, name: &str) -> (Value, Value) {
    std::thread::scope(|s| {
        let a = s.spawn(|| hearth.invoke(name, json!({"seconds": 1})));
        let b = s.spawn(|| hearth.invoke(name, json!({"seconds": 1})));
        (a.join().unwrap(), b.join().unwrap())
    })
}

fn interval(inv: &Value) -> (f64, f64) {
    assert_eq!(inv["status"], "success", "{inv}");
    (
        inv["result"]["start"].as_f64().unwrap(),
        inv["result"]["end"].as_f64().unwrap(),
    )
}

#[test]
fn concurrent_calls_run_on_two_instances_at_once() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture(
        "sleepy",
        "py-sleep",
        json!({"runtime": "python", "timeout_ms": 60000}),
    );
    // A warm instance first, so the long call's handler starts as soon as it takes it
    // (a cold one could still be starting while a second instance serves the other).
    hearth.invoke("sleepy", json!({"seconds": 0}));
    hearth.wait_settled("sleepy");
    // A long call holds one instance; a second call made while it is busy (seen in
    // /v1/status, not guessed from a sleep) must be served by another instance and
    // end inside the long call's interval, by the handlers' own clocks. The long
    // call's 20 s are a margin for the second one's cold start on a loaded machine.
    let (long, short) = std::thread::scope(|s| {
        let long = s.spawn(|| hearth.invoke("sleepy", json!({"seconds": 20})));
        eventually(
            Duration::from_secs(60),
            "the long call holds its instance",
            || hearth.busy_instances("sleepy") == 1,
        )
        .unwrap();
        let short = hearth.invoke("sleepy", json!({"seconds": 0}));
        (long.join().unwrap(), short)
    });
    let ((l0, l1), (s0, s1)) = (interval(&long), interval(&short));
    // The second call may even start first (the long one's handler may still be
    // starting when /v1/status shows it busy): what matters is that they overlapped.
    assert!(
        l0 < s1 && s0 < l1,
        "the two calls ran at once: {s0}..{s1} and {l0}..{l1}"
    );
    assert_ne!(
        long["result"]["instance"], short["result"]["instance"],
        "two instances served them"
    );
}

#[test]
fn with_max_instances_one_the_second_call_waits_its_turn() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture(
        "single",
        "py-sleep",
        json!({"runtime": "python", "max_instances": 1}),
    );
    let (a, b) = two_calls_at_once(&hearth, "single");
    let ((a0, a1), (b0, b1)) = (interval(&a), interval(&b));
    assert!(
        a1 <= b0 || b1 <= a0,
        "the sleeps did not overlap: {a0}..{a1} and {b0}..{b1}"
    );
    assert_eq!(
        a["result"]["instance"], b["result"]["instance"],
        "one instance served both"
    );
}
