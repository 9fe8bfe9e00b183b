//! The Node.js runtime through a real agent in Existing mode.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{process_alive, spec, Agent};
use hearth_core::protocol::{FailurePhase, FromAgent, OutcomeStatus, RootSetup};
use hearth_core::Runtime;
use serde_json::json;

const HANDLER: &str = r#"
const { spawn } = require('child_process');
let count = 0;
console.log('loaded');
exports.handler = async (event, context) => {
  count += 1;
  const action = event && event.action;
  if (action === 'throw') throw new TypeError('not a number: ' + event.value);
  if (action === 'loop') { for (;;) {} }
  if (action === 'sync-style') return 'never mind';
  if (action === 'leave') {
    const child = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' });
    return { left: child.pid };
  }
  if (action === 'wait') await new Promise((r) => setTimeout(r, event.ms));
  if (action === 'reject') return Promise.reject(new RangeError('too far'));
  console.log('hello from', context.request_id);
  console.error('to stderr');
  return {
    echo: event,
    count,
    pid: process.pid,
    uid: process.getuid(),
    request_id: context.request_id,
    function_name: context.function_name,
    version: context.version,
    memory_limit_mb: context.memory_limit_mb,
    remaining: [context.remainingTimeMs(), context.remaining_time_ms(), context.getRemainingTimeInMillis()],
    env: {
      rid: process.env.HEARTH_REQUEST_ID,
      name: process.env.HEARTH_FUNCTION_NAME,
      runtime: process.env.HEARTH_RUNTIME,
      greeting: process.env.GREETING,
    },
  };
};
"#;

fn agent_with(code: &str) -> (Agent, FromAgent) {
    Agent::existing(
        spec(Runtime::Nodejs, RootSetup::Existing),
        &[("index.js", code)],
    )
}

#[test]
fn async_handler_runs_in_a_fresh_process_each_time() {
    let (mut agent, first) = agent_with(HANDLER);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    let mut pids = Vec::new();
    for i in 0..3 {
        let rid = format!("n{i}");
        let reply = agent.invoke(&rid, 5000, &json!({"i": i}).to_string());
        assert_eq!(
            reply.outcome.status,
            OutcomeStatus::Success,
            "{:#?}",
            reply.outcome
        );
        let v = reply.value();
        assert_eq!(v["echo"], json!({"i": i}));
        assert_eq!(v["count"], 1);
        assert_eq!(v["request_id"], rid);
        assert_eq!(v["function_name"], "fn-under-test");
        assert_eq!(v["version"], 7);
        assert_eq!(v["memory_limit_mb"], 256);
        assert_eq!(v["uid"], 65534);
        for r in v["remaining"].as_array().unwrap() {
            let r = r.as_i64().unwrap();
            assert!(r > 0 && r <= 5000, "{r}");
        }
        assert_eq!(
            v["env"],
            json!({"rid": rid, "name": "fn-under-test", "runtime": "nodejs", "greeting": "hello"})
        );
        assert_eq!(reply.outcome.stdout, format!("loaded\nhello from {rid}\n"));
        assert_eq!(reply.outcome.stderr, "to stderr\n");
        assert_eq!(reply.outcome.exit_code, Some(0));
        assert!(reply.outcome.max_rss_bytes > 10 << 20);
        assert!(reply.outcome.healthy);
        pids.push(v["pid"].as_i64().unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert!(agent.shutdown().success());
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
fn throws_and_rejections_are_errors() {
    let (mut agent, _) = agent_with(HANDLER);
    let reply = agent.invoke("t", 5000, r#"{"action": "throw", "value": "x"}"#);
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Error,
        "{:#?}",
        reply.outcome
    );
    let error = reply.outcome.error.unwrap();
    assert_eq!(error.kind, "TypeError");
    assert_eq!(error.message, "not a number: x");
    assert!(error.trace.contains("index.js"), "{}", error.trace);

    let reply = agent.invoke("r", 5000, r#"{"action": "reject"}"#);
    assert_eq!(reply.outcome.status, OutcomeStatus::Error);
    assert_eq!(reply.outcome.error.unwrap().kind, "RangeError");
}

#[test]
fn timeouts_and_leftovers_are_cleaned_up() {
    let (mut agent, _) = agent_with(HANDLER);
    let reply = agent.invoke("loop", 400, r#"{"action": "loop"}"#);
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Timeout,
        "{:#?}",
        reply.outcome
    );
    assert_eq!(reply.outcome.signal, Some(9), "{:#?}", reply.outcome);
    assert!(reply.outcome.healthy);

    let reply = agent.invoke("leave", 5000, r#"{"action": "leave"}"#);
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        reply.outcome
    );
    assert!(reply.outcome.leftovers_killed >= 1);
    let left = reply.value()["left"].as_i64().unwrap();
    assert!(!process_alive(left, "sleep"), "sleep {left} survived");

    let reply = agent.invoke("ok", 5000, "{}");
    assert_eq!(reply.outcome.status, OutcomeStatus::Success);
    assert_eq!(reply.outcome.leftovers_killed, 0);
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
