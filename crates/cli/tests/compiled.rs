//! The compiled runtimes (C++, Go) end to end: both ways of writing a function answer
//! every event; a build failure is a 422 with the compiler's message and leaves the
//! previous version serving; identical code is built once, and invocations (cold starts
//! included) never compile. Every case runs on both sandbox backends (`native::…`,
//! `docker::…`): the host's toolchains in a namespace, a builder image's in a container.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{expect_error, fixture, on_both_backends, zip_files, Hearth};
use serde_json::{json, Value};
use std::process::Command;

on_both_backends!(
    handler_only_and_full_programs_answer_every_event,
    a_compile_error_is_a_422_with_the_compilers_line_and_the_old_version_keeps_serving,
    identical_code_is_built_once_and_invocations_never_compile,
    the_cli_says_when_it_builds_and_when_the_code_was_already_built,
    compiled_functions_write_outputs_under_output_dir,
    hostile_code_at_build_time_is_stopped_and_sees_nothing_of_the_host,
);

/// The compiled runtimes, with their fixture prefix.
fn compiled() -> Vec<(&'static str, &'static str)> {
    vec![("cpp", "cpp"), ("go", "go")]
}

/// `hearth up` on `sandbox`.
fn start(sandbox: &str) -> Hearth {
    Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &["--sandbox", sandbox])
}

fn events() -> Vec<Value> {
    vec![
        json!({}),
        json!({"name": "you", "n": 3}),
        json!([1, 2, 3]),
        json!("just text"),
        json!({"nested": {"a": [true, null, 1.5]}, "unicode": "héllo ✓"}),
    ]
}

/// The sum of every `hearth_builds_total` series on `/metrics` (0 when none yet).
fn builds_total(hearth: &Hearth) -> f64 {
    let text = hearth
        .anonymous(reqwest::Method::GET, "/metrics")
        .send()
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    text.lines()
        .filter(|line| line.starts_with("hearth_builds_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn assert_fresh_build(function: &Value) {
    assert_eq!(function["build"]["cached"], false, "{function}");
    assert!(
        function["build"]["duration_ms"].as_f64().unwrap() > 0.0,
        "{function}"
    );
}

fn handler_only_and_full_programs_answer_every_event(sandbox: &str) {
    let hearth = start(sandbox);
    for (runtime, prefix) in compiled() {
        let handler = format!("{prefix}-handler");
        let program = format!("{prefix}-program");
        let deployed = hearth.deploy_fixture(
            &handler,
            &format!("{prefix}-echo"),
            json!({"runtime": runtime}),
        );
        assert_fresh_build(&deployed);
        let deployed = hearth.deploy_fixture(
            &program,
            &format!("{prefix}-program"),
            json!({"runtime": runtime}),
        );
        assert_fresh_build(&deployed);

        for event in events() {
            let inv = hearth.invoke(&handler, event.clone());
            assert_eq!(inv["status"], "success", "{runtime} handler: {inv}");
            let result = &inv["result"];
            assert_eq!(result["event"], event, "{runtime} handler: {inv}");
            assert_eq!(result["request_id"], inv["id"], "{runtime}");
            assert_eq!(result["runtime"], runtime);

            let inv = hearth.invoke(&program, event.clone());
            assert_eq!(inv["status"], "success", "{runtime} program: {inv}");
            assert_eq!(
                inv["result"],
                json!({"event": event, "source": "env"}),
                "{runtime} program: {inv}"
            );
            assert_eq!(inv["exit_code"], 0);
            assert!(
                inv["stdout"]
                    .as_str()
                    .unwrap()
                    .contains("\"source\":\"env\""),
                "the program's stdout is kept inline too: {inv}"
            );
            assert!(
                inv["stderr"].as_str().unwrap().starts_with("read "),
                "{inv}"
            );
        }

        // A large event does not fit an environment variable: it comes in a file.
        let big = json!({"blob": "x".repeat(300 * 1024)});
        let inv = hearth.invoke(&program, big.clone());
        assert_eq!(inv["status"], "success", "{runtime}: {}", inv["error"]);
        assert_eq!(inv["result"]["source"], "file", "{runtime}");
        assert_eq!(inv["result"]["event"], big, "{runtime}");

        // Each warm call is a fresh process.
        let pids: Vec<Value> = (0..3)
            .map(|_| hearth.invoke(&handler, json!({}))["result"]["pid"].clone())
            .collect();
        assert!(
            pids[0] != pids[1] && pids[1] != pids[2],
            "{runtime}: {pids:?}"
        );
    }
}

fn a_compile_error_is_a_422_with_the_compilers_line_and_the_old_version_keeps_serving(
    sandbox: &str,
) {
    let hearth = start(sandbox);
    for (runtime, prefix) in compiled() {
        let name = format!("{prefix}-broken");
        let v1 = hearth.deploy_fixture(
            &name,
            &format!("{prefix}-echo"),
            json!({"runtime": runtime}),
        );
        assert_eq!(v1["version"], 1);
        let (file, code, line) = match runtime {
            "cpp" => (
                "main.cpp",
                "#include <string>\nstd::string handler(const std::string& e) {\n  return e\n}\n",
                "main.cpp:3:",
            ),
            _ => (
                "main.go",
                "package main\n\nfunc Handler(e map[string]interface{}) (interface{}, error) {\n\treturn e, nil +\n}\n",
                "main.go:5:",
            ),
        };
        let response = hearth.deploy_zip(&name, zip_files(&[(file, code.as_bytes())]), json!({}));
        let message = expect_error(response, 422, "build_failed");
        assert!(
            message.contains(line),
            "{runtime}: the compiler's line-numbered error is in the message: {message}"
        );
        assert!(!message.contains("/tmp/hearth-build"), "{message}");

        let function = hearth.get(&format!("/v1/functions/{name}"));
        assert_eq!(function["version"], 1, "no version was made: {function}");
        let inv = hearth.invoke(&name, json!({"still": "here"}));
        assert_eq!(inv["status"], "success", "{inv}");
        assert_eq!(inv["version"], 1);
        assert_eq!(inv["result"]["event"], json!({"still": "here"}));
    }
}

fn identical_code_is_built_once_and_invocations_never_compile(sandbox: &str) {
    let mut hearth = start(sandbox);
    let cases = compiled();
    for (runtime, prefix) in &cases {
        let fixture_name = format!("{prefix}-echo");
        let name = format!("{prefix}-same");
        let before = builds_total(&hearth);
        let v1 = hearth.deploy_fixture(&name, &fixture_name, json!({"runtime": runtime}));
        assert_fresh_build(&v1);
        assert_eq!(builds_total(&hearth), before + 1.0, "one build");

        // The same code again, as a new version and as another function: no compiler.
        let v2 = hearth.deploy_fixture(&name, &fixture_name, json!({"memory_mb": 256}));
        assert_eq!(v2["version"], 2);
        assert_eq!(
            v2["build"],
            json!({"cached": true, "duration_ms": 0.0}),
            "{v2}"
        );
        let twin = hearth.deploy_fixture(
            &format!("{prefix}-twin"),
            &fixture_name,
            json!({"runtime": runtime}),
        );
        assert_eq!(twin["build"]["cached"], true, "{twin}");
        assert_eq!(builds_total(&hearth), before + 1.0, "still one build");

        // Invocations, the cold start of the new version included, run the stored program.
        for _ in 0..3 {
            let inv = hearth.invoke(&name, json!({"n": 1}));
            assert_eq!(inv["status"], "success", "{inv}");
            assert_eq!(inv["version"], 2);
        }
        assert_eq!(
            builds_total(&hearth),
            before + 1.0,
            "invocations never build"
        );
    }

    // A fresh worker (nothing in memory) cold-starts from the stored artifacts.
    hearth.restart();
    assert_eq!(builds_total(&hearth), 0.0);
    for (runtime, prefix) in &cases {
        let inv = hearth.invoke(&format!("{prefix}-same"), json!({"after": "restart"}));
        assert_eq!(inv["status"], "success", "{runtime}: {inv}");
        assert_eq!(inv["cold_start"], true);
        assert_eq!(inv["result"]["event"], json!({"after": "restart"}));
    }
    assert_eq!(builds_total(&hearth), 0.0, "cold starts never build");
    let artifacts = std::fs::read_dir(hearth.data_dir().join("objects/artifacts"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(artifacts, cases.len(), "one artifact per distinct code");
}

fn the_cli_says_when_it_builds_and_when_the_code_was_already_built(sandbox: &str) {
    let hearth = start(sandbox);
    for (runtime, prefix) in compiled() {
        let deploy = || {
            let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
                .args(["deploy", "--name", "cli-built", "--runtime", runtime])
                .arg(fixture(&format!("{prefix}-program")))
                .args(["--url", &hearth.url, "--api-key", &hearth.key])
                .output()
                .expect("run hearth deploy");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        // A runtime change is refused on update: start from a fresh name each time.
        let _ = hearth
            .request(reqwest::Method::DELETE, "/v1/functions/cli-built")
            .send();
        let first = deploy();
        assert!(first.contains("built in"), "{first}");
        let second = deploy();
        assert!(second.contains("already built"), "{second}");
    }
}

fn compiled_functions_write_outputs_under_output_dir(sandbox: &str) {
    let hearth = start(sandbox);
    let cpp_program = r#"
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
int main() {
  std::ofstream(std::string(std::getenv("OUTPUT_DIR")) + "/report.txt") << "from c++";
  std::cout << "{\"wrote\":true}" << std::endl;
}
"#;
    let go_handler = r#"package main

import "os"

func Handler(event map[string]interface{}) (interface{}, error) {
	err := os.WriteFile(os.Getenv("OUTPUT_DIR")+"/report.txt", []byte("from go"), 0o644)
	return map[string]bool{"wrote": err == nil}, err
}
"#;
    for (runtime, _) in compiled() {
        let (file, code) = match runtime {
            "cpp" => ("main.cpp", cpp_program),
            _ => ("main.go", go_handler),
        };
        let name = format!("{runtime}-writer");
        hearth.deploy_files(&name, &[(file, code)], json!({"runtime": runtime}));
        let inv = hearth.invoke(&name, json!({}));
        assert_eq!(inv["status"], "success", "{runtime}: {inv}");
        assert_eq!(inv["result"], json!({"wrote": true}));
        let outputs = inv["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), 1, "{runtime}: {inv}");
        assert_eq!(outputs[0]["path"], "report.txt");
        assert_eq!(outputs[0]["size"], 7 + u64::from(runtime == "cpp"));
    }
}

/// The compiler reads what the code names: a build sees nothing of the host's files and
/// one that never ends (reading `/dev/zero`) is stopped by its limits, a 422 like any
/// failed build, and the platform keeps building and serving.
fn hostile_code_at_build_time_is_stopped_and_sees_nothing_of_the_host(sandbox: &str) {
    let hearth = start(sandbox);
    let secret = hearth.data_dir().join("secret.h");
    std::fs::write(&secret, "int leaked = 1;\n").unwrap();
    let handler = "std::string handler(const std::string& e) { return e; }\n";
    let peek = format!(
        "#include <string>\n#include \"{}\"\n{handler}",
        secret.display()
    );
    let message = expect_error(
        hearth.deploy_zip(
            "peek",
            zip_files(&[("main.cpp", peek.as_bytes())]),
            json!({"runtime": "cpp"}),
        ),
        422,
        "build_failed",
    );
    assert!(
        message.contains("No such file or directory"),
        "{sandbox}: the host's data dir is not visible to a build: {message}"
    );

    let endless = format!("#include <string>\n#include \"/dev/zero\"\n{handler}");
    let message = expect_error(
        hearth.deploy_zip(
            "endless",
            zip_files(&[("main.cpp", endless.as_bytes())]),
            json!({"runtime": "cpp"}),
        ),
        422,
        "build_failed",
    );
    assert!(
        message.contains("out of memory") || message.contains("took longer"),
        "{sandbox}: stopped by its memory or its deadline: {message}"
    );

    let deployed = hearth.deploy_fixture("after", "cpp-echo", json!({"runtime": "cpp"}));
    assert_eq!(deployed["version"], 1, "{deployed}");
    let inv = hearth.invoke("after", json!({"still": "building"}));
    assert_eq!(inv["status"], "success", "{sandbox}: {inv}");
}
