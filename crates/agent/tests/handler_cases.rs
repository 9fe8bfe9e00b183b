//! What every interpreted runtime's handler gets and how its calls end, through a real
//! agent: the cases of `tests/fixtures/cases/agent.json` on the `py-agent` and
//! `node-agent` fixtures, one table for both runtimes. What only one runtime has (the
//! Python zygote and SDK, Node.js's ES modules) stays in `python.rs` and `nodejs.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{api_view, process_alive, serve_fixture, Agent};
use hearth_core::protocol::OutcomeStatus;
use hearth_core::Runtime;
use hearth_testkit::cases::{Case, Cases};
use serde_json::Value;

const TIMEOUT_MS: u64 = 5000;

/// The interpreted runtimes and their fixture prefixes.
const INTERPRETED: [(&str, &str); 2] = [("python", "py"), ("nodejs", "node")];

fn each_runtime(mut test: impl FnMut(&str, &Case, &mut Agent), case: &str) {
    let cases = Cases::load("agent");
    for (runtime, prefix) in INTERPRETED {
        let mut agent = serve_fixture(
            runtime.parse::<Runtime>().unwrap(),
            &cases.fixture_for(prefix),
        );
        test(runtime, cases.case(case), &mut agent);
        assert!(agent.shutdown().success(), "{runtime}");
    }
}

fn call(agent: &mut Agent, runtime: &str, case: &Case) -> (Value, common::Reply) {
    let reply = agent.invoke(&case.name, TIMEOUT_MS, &case.event.to_string());
    let view = api_view(&reply);
    case.check(runtime, &view);
    (view, reply)
}

#[test]
fn each_call_gets_event_context_and_env_in_a_fresh_process() {
    each_runtime(
        |runtime, case, agent| {
            let mut pids = Vec::new();
            for _ in 0..3 {
                let (view, reply) = call(agent, runtime, case);
                let result = &view["result"];
                // The function's own clock: its deadline lies ahead, within the timeout.
                let remaining = match &result["remaining"] {
                    Value::Array(readings) => readings.clone(),
                    _ => vec![result["remaining_ms"].clone()],
                };
                for reading in remaining {
                    let reading = reading.as_i64().unwrap();
                    assert!(
                        reading > 0 && reading <= TIMEOUT_MS as i64,
                        "{runtime}: {reading}"
                    );
                }
                assert_eq!(reply.outcome.exit_code, Some(0), "{runtime}");
                assert!(reply.outcome.max_rss_bytes > 1 << 20, "{runtime}");
                assert!(reply.outcome.healthy, "{runtime}");
                assert_eq!(reply.outcome.leftovers_killed, 0, "{runtime}");
                pids.push(result["pid"].as_i64().unwrap());
            }
            pids.sort_unstable();
            pids.dedup();
            assert_eq!(
                pids.len(),
                3,
                "{runtime}: every call runs in a new process: {pids:?}"
            );
        },
        "context",
    );
}

#[test]
fn processes_left_behind_are_killed_before_the_result() {
    each_runtime(
        |runtime, case, agent| {
            let (view, reply) = call(agent, runtime, case);
            assert!(
                reply.outcome.leftovers_killed >= 1,
                "{runtime}: {:#?}",
                reply.outcome
            );
            assert!(reply.outcome.healthy, "{runtime}");
            let left = view["result"]["left"].as_i64().unwrap();
            assert!(
                !process_alive(left, "sleep"),
                "{runtime}: sleep {left} survived the invocation"
            );
            let after = agent.invoke("after", TIMEOUT_MS, "{}");
            assert_eq!(after.outcome.status, OutcomeStatus::Success, "{runtime}");
            assert_eq!(after.outcome.leftovers_killed, 0, "{runtime}");
        },
        "leaves_a_process",
    );
}

#[test]
fn a_raising_handler_is_an_error_with_type_message_and_trace() {
    each_runtime(
        |runtime, case, agent| {
            let (_, reply) = call(agent, runtime, case);
            assert!(
                reply.payload.is_empty(),
                "{runtime}: no result beside the error"
            );
        },
        "raises",
    );
}
