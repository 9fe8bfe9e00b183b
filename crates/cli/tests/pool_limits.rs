//! The pool's promises from the README: past `max_instances`, calls wait in a bounded
//! queue, then get 429 `overloaded`; an instance idle past `--idle-timeout` goes
//! away. Judged from what the platform answers and reports, never from timings.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{eventually, expect_error, Hearth};
use serde_json::json;
use std::time::Duration;

/// Calls the worker queues behind a busy pool before refusing at once
/// (`WorkerConfig::queue_limit`'s default).
const QUEUE_LIMIT: usize = 100;

#[test]
fn past_max_instances_calls_queue_boundedly_then_get_429_overloaded() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture(
        "narrow",
        "py-sleep",
        json!({"runtime": "python", "max_instances": 1, "timeout_ms": 120000}),
    );
    hearth.invoke("narrow", json!({"seconds": 0}));
    hearth.wait_settled("narrow");
    // One long call holds the only instance for longer than the queue's 30 s wait.
    let messages = std::thread::scope(|s| {
        let long = s.spawn(|| hearth.invoke("narrow", json!({"seconds": 50})));
        eventually(
            Duration::from_secs(60),
            "the long call holds the instance",
            || hearth.busy_instances("narrow") == 1,
        )
        .unwrap();
        let callers: Vec<_> = (0..=QUEUE_LIMIT)
            .map(|_| {
                s.spawn(|| {
                    let response = hearth.invoke_raw("narrow", br#"{"seconds": 0}"#.to_vec());
                    expect_error(response, 429, "overloaded")
                })
            })
            .collect();
        let messages: Vec<String> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        let long = long.join().unwrap();
        assert_eq!(
            long["status"], "success",
            "the long call was not disturbed: {long}"
        );
        messages
    });
    // Exactly one call found the queue full and was refused at once; every other one
    // waited in it (0..=99 ahead of it) until the queue's wait ran out.
    let full = format!("1 concurrent instances and {QUEUE_LIMIT} queued calls");
    let refused_at_once = messages.iter().filter(|m| m.contains(&full)).count();
    assert_eq!(refused_at_once, 1, "{messages:#?}");
    for message in &messages {
        assert!(
            message.contains("narrow") && message.contains("retry later"),
            "a clear message: {message}"
        );
    }
    // The function serves again once the instance is free.
    assert_eq!(
        hearth.invoke("narrow", json!({"seconds": 0}))["status"],
        "success"
    );
}

#[test]
fn an_instance_idle_past_the_idle_timeout_is_destroyed() {
    let hearth = Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &["--idle-timeout", "1"]);
    hearth.deploy_fixture("sleeper", "py-counter", json!({"runtime": "python"}));
    let first = hearth.invoke("sleeper", json!({}));
    assert_eq!(first["cold_start"], true, "{first}");
    eventually(
        Duration::from_secs(60),
        "the idle instance is destroyed",
        || hearth.get("/v1/status")["totals"]["warm_instances"] == 0,
    )
    .unwrap();
    let next = hearth.invoke("sleeper", json!({}));
    assert_eq!(next["status"], "success", "{next}");
    assert_eq!(next["cold_start"], true, "a new instance served it: {next}");
}
