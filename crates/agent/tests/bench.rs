//! Round trip of warm invocations through the agent (Invoke frame out → Result frame in).
//! Prints figures, asserts none: run with
//! `cargo test --release -p hearth-agent --test bench -- --ignored --nocapture`
//! (`HEARTH_AGENT` picks another agent binary, e.g. the static release one;
//! `HEARTH_BENCH_OUTPUT_MB` the size of the output dir, default 16, 0 for none).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{is_root, native_command_for, spec, tar_of, Agent};
use hearth_core::protocol::{FromAgent, InitSpec, OutcomeStatus, RootSetup};
use hearth_core::Runtime;
use std::process::Command;
use std::time::{Duration, Instant};

const CALLS: usize = 200;
const GAPS: [Duration; 2] = [Duration::ZERO, Duration::from_millis(50)];

fn bench_agent() -> std::ffi::OsString {
    std::env::var_os("HEARTH_AGENT").unwrap_or_else(|| common::agent_path().into())
}

/// The init spec, with an output dir (every warm invocation pays its emptiness check).
fn bench_spec(runtime: Runtime, root: RootSetup) -> InitSpec {
    let mut init = spec(runtime, root);
    init.output_size_mb = std::env::var("HEARTH_BENCH_OUTPUT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    init
}

/// `CALLS` invocations, back to back or with `gap` between them (a gap lets the next
/// process get ready off the clock, as it does under real traffic).
fn measure(label: &str, agent: &mut Agent, gap: Duration) {
    for _ in 0..5 {
        agent.invoke("warmup", 5000, r#"{"x": 1}"#);
    }
    let mut ms: Vec<f64> = Vec::with_capacity(CALLS);
    let mut handler_ms: Vec<f64> = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        std::thread::sleep(gap);
        let t = Instant::now();
        let reply = agent.invoke(&format!("b{i}"), 5000, r#"{"x": 1}"#);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(reply.outcome.status, OutcomeStatus::Success);
        handler_ms.push(reply.outcome.handler_duration_ms);
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    let label = format!("{label}, gap {} ms", gap.as_millis());
    println!(
        "{label:<36} round trip p50 {:6.2} ms  p90 {:6.2} ms  p99 {:6.2} ms | handler p50 {:6.2} ms",
        pct(&mut ms, 0.5),
        pct(&mut ms, 0.9),
        pct(&mut ms, 0.99),
        pct(&mut handler_ms, 0.5),
    );
}

fn existing(runtime: Runtime, files: &[(&str, &str)]) -> Agent {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut cmd = Command::new(bench_agent());
    cmd.env("HEARTH_AGENT_ROOT", root.path());
    let mut agent = Agent::spawn(cmd);
    agent.root = Some(root);
    let first = agent.init(&bench_spec(runtime, RootSetup::Existing), &tar_of(files));
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    agent
}

const PY: &str = "def handler(event, context):\n    return {\"ok\": event[\"x\"]}\n";
const JS: &str = "exports.handler = async (event) => ({ ok: event.x });\n";

#[test]
#[ignore = "benchmark: prints timings, asserts none"]
fn warm_invocation_round_trips() {
    let mut python = existing(Runtime::Python, &[("main.py", PY)]);
    for gap in GAPS {
        measure("python (existing root)", &mut python, gap);
    }
    let mut node = existing(Runtime::Nodejs, &[("index.js", JS)]);
    for gap in GAPS {
        measure("nodejs (existing root)", &mut node, gap);
    }
    if is_root() {
        let mount_point = tempfile::tempdir().unwrap();
        let root = RootSetup::Native {
            mount_point: mount_point.path().to_string_lossy().into_owned(),
            read_only_dirs: ["/usr", "/lib", "/lib64", "/bin"]
                .map(String::from)
                .to_vec(),
            root_size_mb: 32,
            layer_dir: None,
        };
        for (runtime, files, label) in [
            (
                Runtime::Python,
                [("main.py", PY)],
                "python (native sandbox)",
            ),
            (
                Runtime::Nodejs,
                [("index.js", JS)],
                "nodejs (native sandbox)",
            ),
        ] {
            let mut agent = Agent::spawn(native_command_for(bench_agent()));
            let init = bench_spec(runtime, root.clone());
            let t = Instant::now();
            let first = agent.init(&init, &tar_of(&files));
            let cold = t.elapsed().as_secs_f64() * 1000.0;
            match first {
                FromAgent::Ready(ready) => println!(
                    "{label:<36} cold start (spawn → ready) {cold:.1} ms, agent init_ms {:.1}",
                    ready.init_ms
                ),
                other => panic!("{other:?}"),
            }
            for gap in GAPS {
                measure(label, &mut agent, gap);
            }
        }
    }
}
