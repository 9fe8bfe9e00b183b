//! Concurrent calls get their own instances up to the function's maximum, then wait
//! their turn. Overlap is judged from the handlers' own clocks, not from timings.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::Hearth;
use serde_json::{json, Value};

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
    hearth.deploy_fixture("sleepy", "py-sleep", json!({"runtime": "python"}));
    let started = std::time::Instant::now();
    let (a, b) = two_calls_at_once(&hearth, "sleepy");
    let elapsed = started.elapsed();
    let ((a0, a1), (b0, b1)) = (interval(&a), interval(&b));
    assert!(
        a0 < b1 && b0 < a1,
        "the two sleeps overlapped: {a0}..{a1} and {b0}..{b1}"
    );
    assert_ne!(
        a["result"]["instance"], b["result"]["instance"],
        "two instances served them"
    );
    eprintln!("two concurrent 1 s sleeps took {elapsed:?}");
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
