//! Whose fault a failed cold start is: "the function's code failed to load" only when
//! the code did; a platform fault before the code is loaded is `system_error`, never
//! "fix main.py".
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{expect_error, runtimes, sandbox, Hearth};
use serde_json::json;
use std::path::{Path, PathBuf};

#[test]
fn a_syntax_error_is_the_codes_fault() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    for (runtime, prefix) in runtimes() {
        let (file, broken) = match runtime {
            "python" => ("main.py", "def handler(event, context)\n    return 1\n"),
            "nodejs" => ("index.js", "exports.handler = async (event) => {\n"),
            _ => continue, // a compiled runtime's syntax error fails its build (compiled.rs)
        };
        let name = format!("{prefix}-syntax");
        hearth.deploy_files(&name, &[(file, broken)], json!({"runtime": runtime}));
        let inv = hearth.invoke(&name, json!({}));
        assert_eq!(inv["status"], "error", "{runtime}: {inv}");
        assert_eq!(inv["error"]["type"], "InitError", "{runtime}: {inv}");
        let message = inv["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("failed to load") && message.contains(file),
            "{runtime}: {message}"
        );
        assert!(
            inv["error"]["trace"]
                .as_str()
                .unwrap()
                .contains("SyntaxError"),
            "{runtime}: the runtime's own message: {inv}"
        );
    }
}

/// The stored artifacts of `runtime` under a data dir.
fn artifacts(dir: &Path, runtime: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            artifacts(&path, runtime, found);
        } else if path.to_string_lossy().contains("artifacts/")
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&format!("-{runtime}-v")))
        {
            found.push(path);
        }
    }
}

/// A tar holding one file, `name`.
fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    builder.append_data(&mut header, name, content).unwrap();
    builder.into_inner().unwrap()
}

#[test]
fn a_broken_artifact_is_a_system_error_not_the_codes() {
    let compiled: Vec<_> = runtimes()
        .into_iter()
        .filter(|(runtime, _)| matches!(*runtime, "cpp" | "go"))
        .collect();
    assert!(
        !compiled.is_empty() || sandbox() != "native",
        "the native sandbox builds C++ and Go"
    );
    let mut hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    for (runtime, prefix) in &compiled {
        hearth.deploy_fixture(
            &format!("{prefix}-broken"),
            &format!("{prefix}-echo"),
            json!({"runtime": runtime}),
        );
    }
    // The platform's storage loses a piece of each built artifact (its manifest): the
    // agent cannot set the instance up, through no fault of the code.
    hearth.stop();
    for (runtime, _) in &compiled {
        let mut found = Vec::new();
        artifacts(hearth.data_dir(), runtime, &mut found);
        assert!(!found.is_empty(), "no stored {runtime} artifact");
        for path in found {
            std::fs::write(&path, tar_of("function", b"\x7fELF not really")).unwrap();
        }
    }
    hearth.restart();
    for (runtime, prefix) in &compiled {
        let name = format!("{prefix}-broken");
        let response = hearth.invoke_raw(&name, b"{}".to_vec());
        let message = expect_error(response, 500, "system_error");
        assert!(
            message.contains("not the function's code") && message.contains("function.json"),
            "{runtime}: {message}"
        );
        assert!(!message.contains("fix main"), "{runtime}: {message}");
    }
}
