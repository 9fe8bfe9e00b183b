//! Every command of the README's "Using it" section, run as a user runs it: the real
//! `hearth` binary against a real `hearth up`, text and `--json` output, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{eventually, fixture, Hearth};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `hearth <args>` against `hearth`, with its URL and key in the environment.
fn cli(hearth: &Hearth) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hearth"));
    command
        .env("HEARTH_URL", &hearth.url)
        .env("HEARTH_API_KEY", &hearth.key)
        .env("HEARTH_DATA_DIR", "/nonexistent-hearth-data-dir");
    command
}

fn run(hearth: &Hearth, args: &[&str]) -> Output {
    cli(hearth).args(args).output().unwrap()
}

/// Runs and asserts success; returns stdout.
fn ok(hearth: &Hearth, args: &[&str]) -> String {
    let output = run(hearth, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "hearth {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn ok_json(hearth: &Hearth, args: &[&str]) -> Value {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let stdout = ok(hearth, &with_json);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("hearth {args:?}: {e}: {stdout}"))
}

#[test]
fn deploy_invoke_ls_status_logs_and_rm_from_the_command_line() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    let dir = fixture("py-echo");
    let deployed = ok_json(
        &hearth,
        &[
            "deploy",
            dir.to_str().unwrap(),
            "--name",
            "cli-fn",
            "--runtime",
            "python",
            "--memory",
            "256",
            "--env",
            "GREETING=hi",
        ],
    );
    assert_eq!(deployed["version"], 1, "{deployed}");
    assert_eq!(deployed["memory_mb"], 256, "{deployed}");

    // invoke: an argument, then stdin (`-`).
    let inv = ok_json(&hearth, &["invoke", "cli-fn", r#"{"name": "you"}"#]);
    assert_eq!(inv["status"], "success", "{inv}");
    assert_eq!(inv["result"]["event"], json!({"name": "you"}));
    assert_eq!(inv["result"]["env"]["GREETING"], "hi");
    let mut child = cli(&hearth)
        .args(["--json", "invoke", "cli-fn", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"from": "stdin"}"#)
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success());
    let piped: Value = serde_json::from_slice(&piped.stdout).unwrap();
    assert_eq!(piped["result"]["event"], json!({"from": "stdin"}));
    let text = ok(&hearth, &["invoke", "cli-fn", "{}"]);
    assert!(
        text.contains("success"),
        "text output names the status: {text}"
    );

    // ls: text and JSON.
    let listed = ok(&hearth, &["ls"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("cli-fn") || l.contains(" cli-fn ")),
        "{listed}"
    );
    let listed = ok_json(&hearth, &["ls"]);
    assert!(
        listed.to_string().contains("\"cli-fn\""),
        "ls --json lists the function: {listed}"
    );

    // status: the warm pool of the function.
    let status = ok_json(&hearth, &["status"]);
    let pools = status["workers"][0]["pools"].as_array().unwrap();
    assert!(pools.iter().any(|p| p["function"] == "cli-fn"), "{status}");
    assert!(!ok(&hearth, &["status"]).trim().is_empty());

    // logs: the full logs of the recent invocations.
    let logs = ok(&hearth, &["logs", "cli-fn", "--last", "3"]);
    assert_eq!(
        logs.matches("=== ").count(),
        3,
        "one header per invocation: {logs}"
    );
    assert!(logs.contains(inv["id"].as_str().unwrap()), "{logs}");

    // rm: gone for the CLI and the API; a second rm fails with a readable line.
    let removed = ok_json(&hearth, &["rm", "cli-fn"]);
    assert_eq!(removed["deleted"], "cli-fn");
    let again = run(&hearth, &["rm", "cli-fn"]);
    assert!(!again.status.success(), "removing a missing function fails");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("cli-fn"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let missing = run(&hearth, &["invoke", "cli-fn", "{}"]);
    assert!(!missing.status.success());
}

#[test]
fn logs_follow_prints_each_new_invocation_as_it_finishes() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture("followed", "py-echo", json!({"runtime": "python"}));
    let mut child = cli(&hearth)
        .args(["logs", "followed", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    for n in 0..2 {
        let inv = hearth.invoke("followed", json!({"n": n}));
        let id = inv["id"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(60), "logs --follow prints it", || {
            while let Ok(line) = rx.try_recv() {
                seen.push(line);
            }
            seen.iter()
                .any(|l| l.starts_with("=== ") && l.contains(&id))
        })
        .unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "--follow keeps running"
    );
    let _ = child.kill();
    let _ = child.wait();
    let headers = seen.iter().filter(|l| l.starts_with("=== ")).count();
    assert_eq!(headers, 2, "each invocation printed once: {seen:?}");
}

#[test]
fn a_fresh_hearth_up_deploys_the_sample_and_invokes_it_cold_then_warm() {
    let hearth = Hearth::start_with_sample(env!("CARGO_BIN_EXE_hearth"));
    let mut history = Value::Null;
    eventually(
        Duration::from_secs(120),
        "the sample is invoked twice",
        || {
            let response = hearth
                .request(reqwest::Method::GET, "/v1/functions/hello/invocations")
                .send()
                .unwrap();
            if response.status() != 200 {
                return false;
            }
            history = response.json().unwrap();
            history["invocations"].as_array().map_or(0, Vec::len) == 2
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {history}"));
    let calls = history["invocations"].as_array().unwrap();
    // Newest first: the warm call, then the cold one.
    assert_eq!(calls[0]["cold_start"], false, "{history}");
    assert_eq!(calls[1]["cold_start"], true, "{history}");
    for call in calls {
        assert_eq!(call["status"], "success", "{call}");
    }
    let again = hearth.invoke("hello", json!({"name": "you"}));
    assert_eq!(again["status"], "success", "{again}");
    assert!(
        again["result"].to_string().contains("you"),
        "the sample greets its caller: {again}"
    );
}
