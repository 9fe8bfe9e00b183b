//! The Python runtime through a real agent in Existing mode: what only Python has (the
//! zygote, the SDK's script and main modes, its traces). What every runtime shares is
//! table-driven: `handler_cases.rs`, `fail_cases.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{existing_fixture, spec, Agent};
use hearth_core::protocol::{FailurePhase, FromAgent, OutcomeStatus, PROTOCOL_VERSION};
use hearth_core::Runtime;
use serde_json::json;

fn handler_agent(limit: u64) -> Agent {
    let mut init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    init.inline_output_limit = limit;
    let (agent, first) = existing_fixture(init, "py-agent");
    match first {
        FromAgent::Ready(ready) => assert_eq!(ready.protocol_version, PROTOCOL_VERSION),
        other => panic!("expected ready, got {other:?}"),
    }
    agent
}

#[test]
fn a_trace_shows_the_handler_not_the_bootstrap_and_unserialisable_results_are_errors() {
    // Type and message of a raise, for every runtime: handler_cases.rs and fail_cases.rs.
    let mut agent = handler_agent(64 * 1024);
    let reply = agent.invoke("r", 5000, r#"{"action": "raise", "why": "nope"}"#);
    assert_eq!(reply.outcome.status, OutcomeStatus::Error);
    let error = reply.outcome.error.clone().unwrap();
    assert!(error.trace.contains("in handler"), "{}", error.trace);
    assert!(!error.trace.contains("bootstrap.py"), "{}", error.trace);

    let reply = agent.invoke("r2", 5000, r#"{"action": "unserialisable"}"#);
    assert_eq!(reply.outcome.status, OutcomeStatus::Error);
    let error = reply.outcome.error.unwrap();
    assert_eq!(error.kind, "TypeError");
    assert!(
        error.message.contains("not JSON-serialisable"),
        "{}",
        error.message
    );
}

#[test]
fn output_past_the_cap_is_cut_and_flagged() {
    let mut agent = handler_agent(1000);
    let reply = agent.invoke("loud", 5000, r#"{"action": "shout", "n": 300000}"#);
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        reply.outcome.error
    );
    assert_eq!(reply.outcome.output.stdout.len(), 1000);
    assert_eq!(reply.outcome.output.stderr.len(), 1000);
    assert!(reply.outcome.output.truncated);
    assert_eq!(reply.value(), json!("shouted"));
    let reply = agent.invoke("quiet", 5000, "{}");
    assert!(!reply.outcome.output.truncated);
}

#[test]
fn exits_and_signals_are_crashes_and_a_dead_zygote_comes_back() {
    let mut agent = handler_agent(64 * 1024);
    let reply = agent.invoke("exit", 5000, r#"{"action": "exit"}"#);
    assert_eq!(reply.outcome.status, OutcomeStatus::Crashed);
    assert_eq!(reply.outcome.exit_code, Some(3));
    assert!(reply.outcome.error.unwrap().message.contains("code 3"));

    let reply = agent.invoke("sig", 5000, r#"{"action": "signal"}"#);
    assert_eq!(reply.outcome.status, OutcomeStatus::Crashed);
    assert_eq!(reply.outcome.signal, Some(9));
    let error = reply.outcome.error.unwrap();
    assert_eq!(error.kind, "Killed");
    assert_eq!(error.message, "process killed by signal 9 (SIGKILL)");

    let reply = agent.invoke("kz", 5000, r#"{"action": "kill-zygote"}"#);
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Crashed,
        "{:#?}",
        reply.outcome
    );
    assert!(reply.outcome.healthy, "the zygote was restarted");
    let reply = agent.invoke("after", 5000, "{}");
    assert_eq!(reply.outcome.status, OutcomeStatus::Success);
}

#[test]
fn the_seccomp_filter_refuses_namespaces_and_mounts() {
    let mut agent = handler_agent(64 * 1024);
    let reply = agent.invoke("f", 5000, r#"{"action": "forbidden"}"#);
    let v = reply.value();
    assert_eq!(v["unshare"], json!([-1, 1]));
    assert_eq!(v["mount"], json!([-1, 1]));
}

#[test]
fn script_mode_uses_the_sdk() {
    let script = r#"
import sdk
ev = sdk.get_input()
ctx = sdk.get_context()
print("script sees", ev)
sdk.return_output({"doubled": ev["n"] * 2, "rid": ctx.request_id, "dict_rid": ctx["request_id"]})
"#;
    let init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    let (mut agent, first) = Agent::existing(init, &[("main.py", script)]);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    for i in 0..2 {
        let reply = agent.invoke("s1", 5000, &json!({"n": 21 + i}).to_string());
        assert_eq!(
            reply.outcome.status,
            OutcomeStatus::Success,
            "{:#?}",
            reply.outcome
        );
        assert_eq!(
            reply.value(),
            json!({"doubled": 42 + 2 * i, "rid": "s1", "dict_rid": "s1"})
        );
        assert!(reply.outcome.output.stdout.starts_with("script sees"));
    }
}

#[test]
fn main_mode_takes_as_many_arguments_as_it_declares() {
    let code = r#"
import sdk
def main(event):
    return {"got": event, "ctx": sdk.get_context().function_name}
"#;
    let init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    let (mut agent, first) = Agent::existing(init, &[("main.py", code)]);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    let reply = agent.invoke("m", 5000, "[1, 2]");
    assert_eq!(
        reply.value(),
        json!({"got": [1, 2], "ctx": "fn-under-test"})
    );
}

#[test]
fn an_import_error_fails_init_with_the_traceback() {
    let init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    let code = "import no_such_module_anywhere\ndef handler(e, c):\n    return 1\n";
    let (mut agent, first) = Agent::existing(init, &[("main.py", code)]);
    match first {
        FromAgent::Failed(f) => {
            assert_eq!(f.phase, FailurePhase::CodeLoad);
            assert!(f.message.contains("ModuleNotFoundError"), "{}", f.message);
            assert!(
                f.message.contains("no_such_module_anywhere"),
                "{}",
                f.message
            );
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(agent.wait().code(), Some(1));
}

#[test]
fn a_protocol_mismatch_fails_init() {
    let mut init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    init.protocol_version = 99;
    let (mut agent, first) = existing_fixture(init, "py-agent");
    match first {
        FromAgent::Failed(f) => assert!(f.message.contains("protocol version"), "{}", f.message),
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(agent.wait().code(), Some(1));
}

#[test]
fn large_events_and_results_pass_whole() {
    let code = "def handler(event, context):\n    return {'len': len(event['blob']), 'back': event['blob']}\n";
    let init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    let (mut agent, first) = Agent::existing(init, &[("main.py", code)]);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    let blob = "q".repeat(3 << 20);
    let reply = agent.invoke("big", 10_000, &json!({ "blob": blob }).to_string());
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        reply.outcome
    );
    let v = reply.value();
    assert_eq!(v["len"], 3 << 20);
    assert_eq!(v["back"].as_str().unwrap().len(), 3 << 20);
}

#[test]
fn a_syntax_error_is_the_codes_fault_and_a_missing_interpreter_the_platforms() {
    let init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    let (mut agent, first) =
        Agent::existing(init, &[("main.py", "def handler(e, c)\n    return 1\n")]);
    match first {
        FromAgent::Failed(f) => {
            assert_eq!(f.phase, FailurePhase::CodeLoad);
            assert!(f.message.contains("SyntaxError"), "{}", f.message);
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(agent.wait().code(), Some(1));

    // The same good code with an interpreter the platform failed to provide.
    let mut init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    init.interpreter = "/nonexistent/hearth-test/python3".into();
    let code = "def handler(e, c):\n    return 1\n";
    let (mut agent, first) = Agent::existing(init, &[("main.py", code)]);
    match first {
        FromAgent::Failed(f) => {
            assert_eq!(f.phase, FailurePhase::Setup, "{}", f.message);
            assert!(
                f.message.contains("/nonexistent/hearth-test/python3"),
                "{}",
                f.message
            );
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(agent.wait().code(), Some(1));
}

/// A process answered while it still runs (here it burns CPU on its way out) is
/// followed by a `Settled` frame once it has ended; the next call is answered only
/// after that, and settles too.
#[test]
fn an_early_answer_is_followed_by_its_settle() {
    let code = r#"
import os, time
def handler(event, context):
    real_exit = os._exit
    def burn_then_exit(code):
        start = time.process_time()
        while time.process_time() - start < event["burn_s"]:
            pass
        real_exit(code)
    os._exit = burn_then_exit
    return {"pid": os.getpid()}
"#;
    let init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    let (mut agent, first) = Agent::existing(init, &[("main.py", code)]);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    for (i, burn_s) in [0.05, 0.0].into_iter().enumerate() {
        let rid = format!("e{i}");
        let reply = agent.invoke(&rid, 5000, &json!({ "burn_s": burn_s }).to_string());
        assert_eq!(
            reply.outcome.status,
            OutcomeStatus::Success,
            "{:#?}",
            reply.outcome
        );
        assert!(
            reply.outcome.settles,
            "answered before its exit: {:#?}",
            reply.outcome
        );
        let settled = reply.settled.clone().expect("a Settled frame follows");
        assert!(settled.healthy, "{settled:?}");
        assert_eq!(settled.problem, None);
        let pid = reply.value()["pid"].as_i64().unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the process {pid} has ended once settled"
        );
    }
}
