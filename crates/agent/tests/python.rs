//! The Python runtime through a real agent in Existing mode.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{process_alive, spec, Agent};
use hearth_core::protocol::{FailurePhase, FromAgent, OutcomeStatus, PROTOCOL_VERSION};
use hearth_core::Runtime;
use serde_json::json;

const HANDLER: &str = r#"
import os, subprocess, sys, time

count = 0
print("imported once, in the zygote")

def handler(event, context):
    global count
    count += 1
    action = (event or {}).get("action")
    if action == "loop":
        while True:
            pass
    if action == "raise":
        raise ValueError("bad input: %s" % event.get("why"))
    if action == "leave":
        child = subprocess.Popen(["sleep", "1000"])
        return {"left": child.pid}
    if action == "shout":
        print("x" * event["n"])
        sys.stderr.write("y" * event["n"])
        return "shouted"
    if action == "unserialisable":
        return {1, 2}
    if action == "exit":
        sys.exit(3)
    if action == "signal":
        os.kill(os.getpid(), 9)
    if action == "kill-zygote":
        os.kill(os.getppid(), 9)
        return "zygote gone"
    if action == "forbidden":
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        unshare = libc.unshare(0x10000000)
        unshare_errno = ctypes.get_errno()
        mount = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
        mount_errno = ctypes.get_errno()
        return {"unshare": [unshare, unshare_errno], "mount": [mount, mount_errno]}
    print("hello from", context.request_id)
    return {
        "echo": event,
        "count": count,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "request_id": context.request_id,
        "request_id_by_key": context["request_id"],
        "function_name": context.function_name,
        "version": context.version,
        "memory_limit_mb": context.get("memory_limit_mb"),
        "remaining_ms": context.remaining_time_ms(),
        "env": {k: os.environ.get(k) for k in [
            "HEARTH_REQUEST_ID", "HEARTH_DEADLINE_MS", "HEARTH_FUNCTION_NAME",
            "HEARTH_FUNCTION_VERSION", "HEARTH_MEMORY_LIMIT_MB", "HEARTH_RUNTIME",
            "GREETING", "LANG", "PYTHONDONTWRITEBYTECODE", "HOME",
        ]},
    }
"#;

fn handler_agent(limit: u64) -> Agent {
    let mut init = spec(Runtime::Python, hearth_core::protocol::RootSetup::Existing);
    init.inline_output_limit = limit;
    let (agent, first) = Agent::existing(init, &[("main.py", HANDLER)]);
    match first {
        FromAgent::Ready(ready) => assert_eq!(ready.protocol_version, PROTOCOL_VERSION),
        other => panic!("expected ready, got {other:?}"),
    }
    agent
}

#[test]
fn handler_mode_gets_event_context_and_env_in_a_fresh_process_each_time() {
    let mut agent = handler_agent(64 * 1024);
    let mut pids = Vec::new();
    for i in 0..3 {
        let rid = format!("req-{i}");
        let reply = agent.invoke(&rid, 5000, &json!({"n": i}).to_string());
        assert_eq!(
            reply.outcome.status,
            OutcomeStatus::Success,
            "{:#?}",
            reply.outcome
        );
        let v = reply.value();
        assert_eq!(v["echo"], json!({"n": i}));
        assert_eq!(v["count"], 1, "module state must not leak between calls");
        assert_eq!(v["request_id"], rid);
        assert_eq!(v["request_id_by_key"], rid);
        assert_eq!(v["function_name"], "fn-under-test");
        assert_eq!(v["version"], 7);
        assert_eq!(v["memory_limit_mb"], 256);
        let remaining = v["remaining_ms"].as_i64().unwrap();
        assert!(remaining > 0 && remaining <= 5000, "{remaining}");
        assert_eq!(v["uid"], 65534);
        assert!(v["cwd"].as_str().unwrap().ends_with("/code"));
        let env = &v["env"];
        assert_eq!(env["HEARTH_REQUEST_ID"], rid);
        assert!(env["HEARTH_DEADLINE_MS"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok());
        assert_eq!(
            env["HEARTH_FUNCTION_NAME"], "fn-under-test",
            "platform vars win"
        );
        assert_eq!(env["HEARTH_FUNCTION_VERSION"], "7");
        assert_eq!(env["HEARTH_MEMORY_LIMIT_MB"], "256");
        assert_eq!(env["HEARTH_RUNTIME"], "python");
        assert_eq!(env["GREETING"], "hello");
        assert_eq!(env["LANG"], "C.UTF-8");
        assert_eq!(env["PYTHONDONTWRITEBYTECODE"], "1");
        assert!(env["HOME"].as_str().unwrap().ends_with("/home"));
        assert_eq!(reply.outcome.stdout, format!("hello from {rid}\n"));
        assert_eq!(reply.outcome.exit_code, Some(0));
        assert!(reply.outcome.max_rss_bytes > 1 << 20);
        assert!(reply.outcome.healthy);
        assert_eq!(reply.outcome.leftovers_killed, 0);
        pids.push(v["pid"].as_i64().unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "every call runs in a new process: {pids:?}");
    assert!(agent.shutdown().success());
}

#[test]
fn a_raising_handler_is_an_error_with_type_message_and_trace() {
    let mut agent = handler_agent(64 * 1024);
    let reply = agent.invoke("r", 5000, r#"{"action": "raise", "why": "nope"}"#);
    assert_eq!(reply.outcome.status, OutcomeStatus::Error);
    let error = reply.outcome.error.clone().unwrap();
    assert_eq!(error.kind, "ValueError");
    assert_eq!(error.message, "bad input: nope");
    assert!(error.trace.contains("main.py"), "{}", error.trace);
    assert!(error.trace.contains("in handler"), "{}", error.trace);
    assert!(!error.trace.contains("bootstrap.py"), "{}", error.trace);
    assert!(reply.payload.is_empty());

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
fn a_timeout_kills_the_process_and_the_next_call_works() {
    let mut agent = handler_agent(64 * 1024);
    let reply = agent.invoke("slow", 300, r#"{"action": "loop"}"#);
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Timeout,
        "{:#?}",
        reply.outcome
    );
    // Killed by the agent's own timer (SIGKILL), which says which timeout fired.
    assert_eq!(reply.outcome.signal, Some(9));
    let error = reply.outcome.error.clone().unwrap();
    assert_eq!(error.kind, "Timeout");
    assert_eq!(error.message, "invocation timed out after 300 ms");
    assert!(reply.outcome.user_cpu_ms > 0.0, "{:#?}", reply.outcome);
    assert!(reply.outcome.healthy);
    assert_eq!(
        reply.outcome.leftovers_killed, 0,
        "the main process is no leftover"
    );
    let reply = agent.invoke("next", 5000, "{}");
    assert_eq!(reply.outcome.status, OutcomeStatus::Success);
    assert_eq!(reply.value()["count"], 1);
}

#[test]
fn processes_left_behind_are_killed_before_the_result() {
    let mut agent = handler_agent(64 * 1024);
    let reply = agent.invoke("leave", 5000, r#"{"action": "leave"}"#);
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        reply.outcome
    );
    assert!(reply.outcome.leftovers_killed >= 1, "{:#?}", reply.outcome);
    assert!(reply.outcome.healthy);
    let left = reply.value()["left"].as_i64().unwrap();
    assert!(
        !process_alive(left, "sleep"),
        "sleep {left} survived the invocation"
    );
    let reply = agent.invoke("after", 5000, "{}");
    assert_eq!(reply.outcome.status, OutcomeStatus::Success);
    assert_eq!(reply.outcome.leftovers_killed, 0);
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
    assert_eq!(reply.outcome.stdout.len(), 1000);
    assert_eq!(reply.outcome.stderr.len(), 1000);
    assert!(reply.outcome.truncated);
    assert_eq!(reply.value(), json!("shouted"));
    let reply = agent.invoke("quiet", 5000, "{}");
    assert!(!reply.outcome.truncated);
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
        assert!(reply.outcome.stdout.starts_with("script sees"));
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
    let (mut agent, first) = Agent::existing(init, &[("main.py", HANDLER)]);
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
