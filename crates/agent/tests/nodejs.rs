//! The Node.js runtime through a real agent in Existing mode: what only Node.js has
//! (sync and async handlers, rejections, ES modules, its load errors). What every
//! runtime shares is table-driven: `handler_cases.rs`, `fail_cases.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{existing_fixture, spec, Agent};
use hearth_core::protocol::{FailurePhase, FromAgent, OutcomeStatus, RootSetup};
use hearth_core::Runtime;
use serde_json::json;

fn agent_with(code: &str) -> (Agent, FromAgent) {
    Agent::existing(
        spec(Runtime::Nodejs, RootSetup::Existing),
        &[("index.js", code)],
    )
}

#[test]
fn a_sync_handler_returns_its_value() {
    let code = "exports.handler = (event, context) => ({ sum: event.a + event.b, rid: context.requestId });";
    let (mut agent, first) = agent_with(code);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    let reply = agent.invoke("s", 5000, r#"{"a": 2, "b": 3}"#);
    assert_eq!(reply.value(), json!({"sum": 5, "rid": "s"}));
    let reply = agent.invoke("s2", 5000, r#"{"a": 1, "b": 1}"#);
    assert_eq!(reply.value(), json!({"sum": 2, "rid": "s2"}));
}

#[test]
fn a_rejected_promise_is_an_error() {
    // A throw, for every runtime: handler_cases.rs and fail_cases.rs.
    let (mut agent, _) = existing_fixture(spec(Runtime::Nodejs, RootSetup::Existing), "node-agent");
    let reply = agent.invoke("r", 5000, r#"{"action": "reject"}"#);
    assert_eq!(reply.outcome.status, OutcomeStatus::Error);
    let error = reply.outcome.error.unwrap();
    assert_eq!(error.kind, "RangeError");
    assert_eq!(error.message, "too far");
}

#[test]
fn a_require_error_fails_init() {
    let (mut agent, first) =
        agent_with("require('./does-not-exist');\nexports.handler = () => 1;\n");
    match first {
        FromAgent::Failed(f) => {
            assert_eq!(f.phase, FailurePhase::CodeLoad);
            assert!(f.message.contains("Cannot find module"), "{}", f.message);
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(agent.wait().code(), Some(1));
}

#[test]
fn a_missing_handler_export_fails_init() {
    let (_agent, first) = agent_with("exports.other = () => 1;\n");
    match first {
        FromAgent::Failed(f) => assert!(f.message.contains("handler"), "{}", f.message),
        other => panic!("expected failed, got {other:?}"),
    }
}

#[test]
fn es_modules_and_large_events_work() {
    let files = [
        ("package.json", r#"{"type": "module"}"#),
        (
            "index.js",
            "export const handler = async (event) => ({ len: event.blob.length });\n",
        ),
    ];
    let (mut agent, first) = Agent::existing(spec(Runtime::Nodejs, RootSetup::Existing), &files);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    let blob = "z".repeat(3 << 20);
    let reply = agent.invoke("big", 10_000, &json!({ "blob": blob }).to_string());
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        reply.outcome
    );
    assert_eq!(reply.value(), json!({"len": 3 << 20}));
}

#[test]
fn the_closed_result_pipe_ends_the_process_and_an_exit_of_its_own_keeps_its_status() {
    let code = "const fs = require('fs');\n\
exports.handler = (event) => {\n\
  if (event.action === 'log') { for (let i = 0; i < 2000; i++) console.log('line ' + i); return 'logged'; }\n\
  if (event.action === 'exit') { process.exit(3); }\n\
  if (event.action === 'close') { fs.closeSync(3); for (;;) {} }\n\
};\n";
    let (mut agent, first) = agent_with(code);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    // Everything printed before the result is there: the bootstrap flushed first.
    let logged = agent.invoke("l", 30_000, r#"{"action": "log"}"#);
    assert_eq!(logged.value(), json!("logged"));
    assert_eq!(logged.outcome.exit_code, Some(0));
    assert_eq!(logged.outcome.signal, None);
    assert!(
        logged.outcome.output.stdout.contains("line 1999") || logged.outcome.output.truncated,
        "{:?}",
        logged.outcome.output
    );
    let exited = agent.invoke("e", 30_000, r#"{"action": "exit"}"#);
    assert_eq!(exited.outcome.exit_code, Some(3), "{:?}", exited.outcome);
    assert_eq!(exited.outcome.status, OutcomeStatus::Crashed);
    // A handler closing fd 3 itself and spinning is ended then, not at its timeout.
    let closed = agent.invoke("c", 30_000, r#"{"action": "close"}"#);
    assert_eq!(
        closed.outcome.status,
        OutcomeStatus::Crashed,
        "{:?}",
        closed.outcome
    );
    let after = agent.invoke("a", 30_000, r#"{"action": "log"}"#);
    assert_eq!(
        after.value(),
        json!("logged"),
        "the next call gets a fresh process"
    );
}
