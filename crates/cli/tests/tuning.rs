//! The AutoTuner and the metrics, end to end against a real `hearth up`: advice from
//! history, apply (409 when stale, reverted when the size fails), classes, `hearth tune
//! --explore`, and `/metrics` read by Prometheus' own text parser.
//!
//! Nothing here asserts wall-clock time: classes come from CPU/duration ratios and I/O
//! bytes that hearth measures itself, and exploration's picks from relative speeds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{eventually, expect_error, expect_ok, workspace_root, zip_fixture, Hearth};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

fn hearth() -> Hearth {
    Hearth::start(env!("CARGO_BIN_EXE_hearth"))
}

fn deploy(hearth: &Hearth, name: &str, memory_mb: u64) -> Value {
    expect_ok(
        hearth.deploy_zip(
            name,
            zip_fixture("py-tune"),
            json!({"runtime": "python", "memory_mb": memory_mb}),
        ),
        &format!("deploy {name}"),
    )
}

fn call(hearth: &Hearth, name: &str, times: usize, event: Value) -> Vec<Value> {
    (0..times)
        .map(|_| hearth.invoke(name, event.clone()))
        .collect()
}

fn advice(hearth: &Hearth, name: &str) -> Value {
    hearth.get(&format!("/v1/functions/{name}/tuning"))
}

fn apply(hearth: &Hearth, name: &str, body: Value) -> reqwest::blocking::Response {
    hearth
        .request(Method::POST, &format!("/v1/functions/{name}/tuning/apply"))
        .json(&body)
        .send()
        .unwrap()
}

fn hold(mb: u64) -> Value {
    json!({"action": "hold", "mb": mb})
}

#[test]
fn an_oversized_function_is_advised_down_and_applied() {
    let hearth = hearth();
    let v1 = deploy(&hearth, "roomy", 512);
    for inv in call(&hearth, "roomy", 5, hold(20)) {
        assert_eq!(inv["status"], "success", "{inv}");
        assert_eq!(
            inv["advice"],
            Value::Null,
            "20 MB of 512 needs no advice: {inv}"
        );
    }
    let early = advice(&hearth, "roomy");
    assert_eq!(early["confidence"], "insufficient_data", "{early}");
    assert_eq!(early["recommended_memory_mb"], Value::Null, "{early}");
    assert_eq!(early["stats"]["n"], 5, "{early}");

    call(&hearth, "roomy", 20, hold(20));
    let advice = advice(&hearth, "roomy");
    let stats = &advice["stats"];
    assert_eq!(advice["function"], "roomy");
    assert_eq!(advice["version"], v1["version"]);
    assert_eq!(advice["current_memory_mb"], 512);
    assert_eq!(stats["n"], 25, "{advice}");
    assert!(
        ["low", "high"].contains(&advice["confidence"].as_str().unwrap()),
        "{advice}"
    );
    let p99 = stats["peak_mb"]["p99"].as_u64().unwrap();
    assert!(p99 >= 20, "the peak includes the 20 MB held: {advice}");
    let recommended = advice["recommended_memory_mb"].as_u64().unwrap();
    assert!(
        recommended > p99 && recommended <= 128,
        "recommended {recommended} MB for a p99 peak of {p99} MB: {advice}"
    );
    assert!(
        advice["reason"].as_str().unwrap().contains("p99 peak"),
        "{advice}"
    );
    assert!(advice["saving_gb_s_per_1000"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["oom_kills"], 0);
    assert_eq!(stats["window_days"], 14);

    let printed = tune(&hearth, &["roomy"]);
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains(&format!("512 MB -> {recommended} MB")) && printed.contains("p99 peak"),
        "hearth tune prints the advice: {printed}"
    );

    let applied = expect_ok(apply(&hearth, "roomy", json!({"memory_mb": 512})), "apply");
    assert_eq!(applied["memory_mb"], recommended, "{applied}");
    assert_eq!(
        applied["version"].as_u64(),
        Some(v1["version"].as_u64().unwrap() + 1)
    );
    let function = hearth.get("/v1/functions/roomy");
    assert_eq!(function["memory_mb"], recommended);
    for inv in call(&hearth, "roomy", 5, hold(20)) {
        assert_eq!(inv["status"], "success", "{inv}");
        assert_eq!(inv["memory"]["limit_mb"], recommended);
    }
    // The caller saw 512 MB; the function is at the recommended size now.
    let message = expect_error(
        apply(&hearth, "roomy", json!({"memory_mb": 512})),
        409,
        "conflict",
    );
    assert!(message.contains("512"), "{message}");
    expect_error(
        apply(&hearth, "roomy", json!({"memory": 512})),
        400,
        "invalid_request",
    );
}

#[test]
fn an_oom_killed_function_is_grown_and_then_succeeds() {
    let hearth = hearth();
    deploy(&hearth, "cramped", 64);
    for inv in call(&hearth, "cramped", 3, hold(100)) {
        assert_eq!(inv["status"], "oom", "{inv}");
        let own = inv["advice"]["recommended_memory_mb"].as_u64().unwrap();
        assert!(own > 64, "the invocation's own advice grows it: {inv}");
    }
    let advice = advice(&hearth, "cramped");
    assert_eq!(advice["stats"]["oom_kills"], 3, "{advice}");
    assert_ne!(
        advice["confidence"], "insufficient_data",
        "an OOM kill is enough: {advice}"
    );
    let recommended = advice["recommended_memory_mb"].as_u64().unwrap();
    assert!(recommended >= 164, "at least +100 MB: {advice}");
    assert!(
        advice["reason"].as_str().unwrap().contains("OOM"),
        "{advice}"
    );
    let applied = expect_ok(apply(&hearth, "cramped", json!({"memory_mb": 64})), "apply");
    assert_eq!(applied["memory_mb"], recommended);
    for inv in call(&hearth, "cramped", 3, hold(100)) {
        assert_eq!(inv["status"], "success", "{inv}");
    }
}

#[test]
fn classes_follow_cpu_share_waiting_and_io() {
    let hearth = hearth();
    let cases = [
        (
            "spinner",
            128,
            json!({"action": "busy", "ms": 600}),
            "cpu_bound",
        ),
        (
            "sleeper",
            128,
            json!({"action": "sleep", "ms": 600}),
            "waiting",
        ),
        (
            "writer",
            256,
            json!({"action": "write", "mb": 50}),
            "io_bound",
        ),
    ];
    for (name, memory_mb, event, class) in cases {
        deploy(&hearth, name, memory_mb);
        for inv in call(&hearth, name, 4, event) {
            assert_eq!(inv["status"], "success", "{inv}");
        }
        let advice = advice(&hearth, name);
        assert_eq!(advice["class"], class, "{name}: {advice}");
    }
}

#[test]
fn a_size_that_oom_kills_after_apply_is_reverted() {
    let hearth = hearth();
    deploy(&hearth, "fickle", 512);
    call(&hearth, "fickle", 20, hold(10));
    let applied = expect_ok(apply(&hearth, "fickle", json!({"memory_mb": 512})), "apply");
    let small = applied["memory_mb"].as_u64().unwrap();
    assert!(small < 512, "{applied}");
    // A heavier event than any the advice saw: the small size is OOM-killed.
    let inv = hearth.invoke("fickle", hold(200));
    assert_eq!(inv["status"], "oom", "{inv}");
    let mut function = Value::Null;
    eventually(
        Duration::from_secs(60),
        "the tuner reverts the size",
        || {
            function = hearth.get("/v1/functions/fickle");
            function["memory_mb"] == 512
        },
    )
    .unwrap();
    assert_eq!(
        function["version"].as_u64(),
        Some(applied["version"].as_u64().unwrap() + 1),
        "{function}"
    );
    let advice = advice(&hearth, "fickle");
    assert_eq!(advice["reverted"]["failed_memory_mb"], small, "{advice}");
    assert!(
        advice["reason"].as_str().unwrap().starts_with("reverted"),
        "{advice}"
    );
    assert_eq!(hearth.invoke("fickle", hold(200))["status"], "success");
}

fn tune(hearth: &Hearth, args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["--url", &hearth.url, "--api-key", &hearth.key, "tune"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "hearth tune {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn explore_prints_a_table_and_speed_picks_more_memory_than_cost_for_cpu_work() {
    let hearth = hearth();
    deploy(&hearth, "cruncher", 128);
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(&event, r#"{"action": "work", "rounds": 100}"#).unwrap();
    let event = event.to_str().unwrap();
    let common = [
        "cruncher",
        "--explore",
        "--event",
        event,
        "--sizes",
        "128,256,512,1024",
        "--runs",
        "5",
    ];
    let text = tune(&hearth, &[&common[..], &["--strategy", "cost"]].concat());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("memory_mb"), "a table: {text}");
    for size in ["128", "256", "512", "1024"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(size)),
            "a row for {size}: {text}"
        );
    }
    let cost_pick: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pick (cost): "))
        .and_then(|l| l.trim_end_matches(" MB").parse().ok())
        .unwrap_or_else(|| panic!("no cost pick: {text}"));
    let json = tune(
        &hearth,
        &[&["--json"][..], &common[..], &["--strategy", "speed"]].concat(),
    );
    let result: Value = serde_json::from_slice(&json.stdout).unwrap();
    let speed_pick = result["pick"].as_u64().unwrap();
    assert!(
        speed_pick > cost_pick,
        "speed picked {speed_pick} MB, cost {cost_pick} MB: {result}"
    );
    let rows = result["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter().all(|r| r["status"] == "ok" && r["runs"] == 5),
        "{result}"
    );
    // The function itself was not changed, and no exploration call is in its history.
    assert_eq!(hearth.get("/v1/functions/cruncher")["version"], 1);
    assert_eq!(advice(&hearth, "cruncher")["stats"]["n"], 0);
}

#[test]
fn a_size_that_fails_during_exploration_is_a_row() {
    let hearth = hearth();
    deploy(&hearth, "greedy", 128);
    let answer = expect_ok(
        hearth
            .request(Method::POST, "/v1/functions/greedy/tuning/explore")
            .json(&json!({"event": hold(100), "sizes": [64, 256], "runs": 2, "strategy": "cost"}))
            .send()
            .unwrap(),
        "explore",
    );
    let rows = answer["rows"].as_array().unwrap();
    assert_eq!(rows[0]["memory_mb"], 64);
    assert_eq!(rows[0]["status"], "oom", "{answer}");
    assert_eq!(rows[1]["status"], "ok", "{answer}");
    assert_eq!(answer["pick"], 256, "{answer}");
    expect_error(
        hearth
            .request(Method::POST, "/v1/functions/greedy/tuning/explore")
            .json(&json!({"sizes": [1]}))
            .send()
            .unwrap(),
        400,
        "invalid_size",
    );
}

/// Families as Prometheus' own Python parser reads them: name → (type, samples).
fn parse_with_prometheus_client(text: &str) -> Value {
    let venv = std::env::var_os("HEARTH_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/services.sh (it installs prometheus_client)",
        python.display()
    );
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "help": family.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples],
    }
print(json.dumps(families))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn metrics_parse_with_prometheus_and_carry_function_labels() {
    let hearth = hearth();
    deploy(&hearth, "metered", 64);
    call(&hearth, "metered", 3, hold(1));
    assert_eq!(hearth.invoke("metered", hold(100))["status"], "oom");
    // An async call that is OOM-killed on every attempt: retries, then a dead letter.
    let queued = hearth
        .request(Method::POST, "/v1/functions/metered/invoke?async=true")
        .json(&hold(100))
        .send()
        .unwrap();
    assert_eq!(queued.status(), 202);
    let id = queued.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(Duration::from_secs(60), "the async call gives up", || {
        hearth.get(&format!("/v1/invocations/{id}"))["status"] == "failed"
    })
    .unwrap();

    let text = hearth
        .anonymous(Method::GET, "/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let families = parse_with_prometheus_client(&text);
    let expect = [
        ("hearth_invocations", "counter"),
        ("hearth_invocation_duration_seconds", "histogram"),
        ("hearth_invocation_peak_memory_bytes", "histogram"),
        ("hearth_cold_starts", "counter"),
        ("hearth_cold_start_seconds", "histogram"),
        ("hearth_oom_kills", "counter"),
        ("hearth_warm_instances", "gauge"),
        ("hearth_async_retries", "counter"),
        ("hearth_async_dead_letters", "counter"),
        ("hearth_queue_depth", "gauge"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ];
    for (name, kind) in expect {
        let family = &families[name];
        assert_eq!(family["type"], kind, "{name} in:\n{text}");
        assert!(
            !family["help"].as_str().unwrap_or_default().is_empty(),
            "{name} has HELP"
        );
        let samples = family["samples"].as_array().unwrap();
        assert!(!samples.is_empty(), "{name} has samples");
        if name.starts_with("hearth_") && name != "hearth_queue_depth" {
            assert!(
                samples.iter().any(|s| s["labels"]["function"] == "metered"),
                "{name} is labelled by function: {family}"
            );
        }
    }
    let invocations = families["hearth_invocations"]["samples"]
        .as_array()
        .unwrap();
    let count = |status: &str| {
        invocations
            .iter()
            .find(|s| s["labels"]["function"] == "metered" && s["labels"]["status"] == status)
            .map(|s| s["value"].as_f64().unwrap())
    };
    assert_eq!(count("success"), Some(3.0), "{text}");
    assert!(
        count("oom").unwrap() >= 4.0,
        "one sync OOM and the async attempts: {text}"
    );
    let dead = &families["hearth_async_dead_letters"]["samples"][0]["value"];
    assert_eq!(dead.as_f64(), Some(1.0), "{text}");
    for family in families.as_object().unwrap().values() {
        for sample in family["samples"].as_array().unwrap() {
            assert!(
                sample["labels"].get("id").is_none(),
                "no invocation ids in labels: {sample}"
            );
        }
    }
}
