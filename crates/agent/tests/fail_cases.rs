//! The failure cases of `tests/fixtures/cases/fail.json` through a real agent, for every
//! runtime: each runtime's `{prefix}-fail` fixture, each event, the result the table
//! expects, then a plain call on the same instance. The end-to-end suite
//! (`crates/cli/tests/failures.rs`) runs the same table through `hearth up`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{api_view, serve_fixture};
use hearth_core::protocol::OutcomeStatus;
use hearth_core::Runtime;
use hearth_testkit::cases::Cases;
use hearth_testkit::ALL_RUNTIMES;
use serde_json::json;

/// The agent's own timeout for a case that names none.
const DEFAULT_TIMEOUT_MS: u64 = 5000;

fn run_cases(runtime_name: &str, prefix: &str) {
    let runtime: Runtime = runtime_name.parse().unwrap();
    let cases = Cases::load("fail");
    let mut agent = serve_fixture(runtime, &cases.fixture_for(prefix));
    // Cases that need a memory limit run end to end only: an agent in Existing mode
    // has no cgroup.
    for case in cases.cases.iter().filter(|c| !c.needs_memory_limit()) {
        let timeout_ms = case.timeout_ms().unwrap_or(DEFAULT_TIMEOUT_MS);
        let reply = agent.invoke(&case.name, timeout_ms, &case.event.to_string());
        case.check(runtime_name, &api_view(&reply));
        if reply.outcome.status == OutcomeStatus::Timeout {
            // Killed by the agent's own timer (SIGKILL) after spinning on the CPU; the
            // handler's process is no leftover, and the instance stays healthy.
            assert_eq!(reply.outcome.signal, Some(9), "{:#?}", reply.outcome);
            assert!(reply.outcome.user_cpu_ms > 0.0, "{:#?}", reply.outcome);
            assert_eq!(reply.outcome.leftovers_killed, 0, "{:#?}", reply.outcome);
        }
        assert!(reply.outcome.healthy, "{}: {:#?}", case.name, reply.outcome);
        let next = agent.invoke("next", DEFAULT_TIMEOUT_MS, &json!({}).to_string());
        assert_eq!(
            next.outcome.status,
            OutcomeStatus::Success,
            "{runtime_name}: the call after case {} failed: {:#?}",
            case.name,
            next.outcome
        );
    }
    assert!(agent.shutdown().success());
}

/// One test per runtime, so that they run side by side.
fn runtime(name: &str) -> (&'static str, &'static str) {
    ALL_RUNTIMES
        .into_iter()
        .find(|(runtime, _)| *runtime == name)
        .unwrap()
}

#[test]
fn python_meets_every_failure_case() {
    let (runtime, prefix) = runtime("python");
    run_cases(runtime, prefix);
}

#[test]
fn nodejs_meets_every_failure_case() {
    let (runtime, prefix) = runtime("nodejs");
    run_cases(runtime, prefix);
}

#[test]
fn cpp_meets_every_failure_case() {
    let (runtime, prefix) = runtime("cpp");
    run_cases(runtime, prefix);
}

#[test]
fn go_meets_every_failure_case() {
    let (runtime, prefix) = runtime("go");
    run_cases(runtime, prefix);
}
