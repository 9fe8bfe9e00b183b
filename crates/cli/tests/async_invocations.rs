//! Asynchronous invocations: 202 at once, a durable queue, retries, callbacks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{eventually, expect_error, Hearth};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

fn invoke_async(hearth: &Hearth, path: &str, event: Value) -> (String, String) {
    let response = hearth
        .request(Method::POST, path)
        .header("Prefer", "respond-async")
        .json(&event)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().unwrap();
    assert_eq!(body["status"], "queued");
    (body["id"].as_str().unwrap().to_string(), location)
}

/// The host's wall clock, as the handlers read it (`time.time()`).
fn now_epoch_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn wait_final(hearth: &Hearth, location: &str, within: Duration) -> Value {
    let mut last = Value::Null;
    eventually(within, "the async invocation to end", || {
        last = hearth.get(location);
        !matches!(last["status"].as_str(), Some("queued" | "running"))
    })
    .unwrap_or_else(|e| panic!("{e}: {last}"));
    last
}

/// An HTTP server that refuses (500) the first `refuse` POSTs and accepts (204) the
/// rest, handing each body to the channel.
fn callback_receiver_refusing(refuse: usize) -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            let answer: &[u8] = if n < refuse {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            stream.write_all(answer).unwrap();
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// A server that accepts the first callback.
fn callback_receiver() -> (String, mpsc::Receiver<Value>) {
    callback_receiver_refusing(0)
}

#[test]
fn an_async_invocation_is_accepted_at_once_polled_and_called_back() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture(
        "later",
        "py-sleep",
        json!({"runtime": "python", "timeout_ms": 60000}),
    );
    let (hook, received) = callback_receiver();
    let (id, location) = invoke_async(
        &hearth,
        &format!("/v1/functions/later/invoke?callback_url={hook}"),
        json!({"seconds": 5}),
    );
    // The 202 (its body said "queued") reached us before the handler ended, by the
    // handler's own clock: the answer did not wait for the run.
    let answered = now_epoch_seconds();
    assert_eq!(location, format!("/v1/invocations/{id}"));
    let done = wait_final(&hearth, &location, Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");
    let ended = done["result"]["end"].as_f64().unwrap();
    assert!(
        answered < ended,
        "the 202 came at {answered}, after the handler ended at {ended}"
    );
    let called = received
        .recv_timeout(Duration::from_secs(60))
        .expect("the callback was not called");
    assert_eq!(called["id"], json!(id));
    assert_eq!(called["status"], "success");
    assert_eq!(called["result"], done["result"]);
}

#[test]
fn an_invocation_that_keeps_failing_ends_failed_after_three_attempts() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture("flaky", "py-fail", json!({"runtime": "python"}));
    let (_, location) = invoke_async(
        &hearth,
        "/v1/functions/flaky/invoke?async=true",
        json!({"action": "raise", "detail": "always"}),
    );
    let done = wait_final(&hearth, &location, Duration::from_secs(60));
    assert_eq!(done["status"], "failed", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("3 attempts") && message.contains("bad input: always"),
        "{message}"
    );
    let history = hearth.get("/v1/functions/flaky/invocations");
    assert_eq!(
        history["invocations"].as_array().unwrap().len(),
        1,
        "one invocation, three attempts"
    );
}

#[test]
fn a_queued_invocation_survives_a_crash_of_hearth() {
    let mut hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture(
        "durable",
        "py-sleep",
        json!({"runtime": "python", "max_instances": 1}),
    );
    let (_, first) = invoke_async(
        &hearth,
        "/v1/functions/durable/invoke",
        json!({"seconds": 2}),
    );
    let (_, second) = invoke_async(
        &hearth,
        "/v1/functions/durable/invoke",
        json!({"seconds": 0}),
    );
    hearth.crash_and_restart();
    for location in [first, second] {
        let done = wait_final(&hearth, &location, Duration::from_secs(60));
        assert_eq!(done["status"], "success", "{done}");
    }
}

#[test]
fn async_requests_for_unknown_functions_or_bad_callbacks_are_refused() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    let response = hearth
        .request(Method::POST, "/v1/functions/nobody/invoke")
        .header("Prefer", "respond-async")
        .body("{}")
        .send()
        .unwrap();
    expect_error(response, 404, "function_not_found");
    hearth.deploy_fixture("cb", "py-counter", json!({"runtime": "python"}));
    let response = hearth
        .request(
            Method::POST,
            "/v1/functions/cb/invoke?async=true&callback_url=ftp://x/y",
        )
        .body("{}")
        .send()
        .unwrap();
    expect_error(response, 400, "invalid_callback_url");
}

#[test]
fn a_refused_callback_is_retried_until_it_is_accepted() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture("called", "py-counter", json!({"runtime": "python"}));
    let (hook, received) = callback_receiver_refusing(2);
    let (id, location) = invoke_async(
        &hearth,
        &format!("/v1/functions/called/invoke?callback_url={hook}"),
        json!({}),
    );
    let done = wait_final(&hearth, &location, Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");
    // Two refusals (500), then the third attempt is accepted: three POSTs, each
    // carrying the same finished invocation.
    for attempt in 1..=3 {
        let called = received
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("callback attempt {attempt} never came"));
        assert_eq!(called["id"], json!(id), "attempt {attempt}");
        assert_eq!(called["status"], "success", "attempt {attempt}");
    }
}
