//! The host's disk through a real `hearth up`: the spool's quota answers 503
//! `spool_full` while logs and outputs cannot be uploaded, and deleting a function frees
//! its code and its invocations' objects (listed in the data dir's object store; the
//! same on S3 is `crates/store/tests/cleanup.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{eventually, expect_error, Hearth};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Prints `event["bytes"]` bytes to stdout.
const CHATTY: &str = r#"
import sys
def handler(event, context):
    sys.stdout.write("x" * event["bytes"])
    return {"printed": event["bytes"]}
"#;

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap();
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_full_spool_answers_503_until_the_object_store_takes_its_logs() {
    let hearth = Hearth::start_with(
        env!("CARGO_BIN_EXE_hearth"),
        &["--spool-quota-mb", "1", "--log-limit-mb", "1"],
    );
    hearth.deploy_files(
        "chatty",
        &[("main.py", CHATTY)],
        json!({"runtime": "python"}),
    );
    // The object store refuses logs: a file stands where their directory goes.
    let logs = hearth.data_dir().join("objects/logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::write(&logs, b"in the way").unwrap();

    let first = hearth.invoke("chatty", json!({"bytes": 400_000}));
    assert_eq!(first["status"], "success", "{first}");
    let full = hearth.invoke_raw("chatty", json!({"bytes": 400_000}).to_string().into_bytes());
    assert_eq!(
        full.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("5".to_string())
    );
    let message = expect_error(full, 503, "spool_full");
    assert!(message.contains("--spool-quota-mb"), "{message}");
    // The spool holds the first invocation only (its log, and its record with the inline
    // copy): the refused one left nothing behind.
    let spool = hearth.data_dir().join("spool");
    let held: u64 = files_under(&spool)
        .iter()
        .map(|f| std::fs::metadata(spool.join(f)).unwrap().len())
        .sum();
    assert!(
        (800_000..900_000).contains(&held),
        "the spool holds {held} bytes: {:?}",
        files_under(&spool)
    );

    // The object store comes back: the reporter uploads, the spool empties, calls run.
    std::fs::remove_file(&logs).unwrap();
    eventually(Duration::from_secs(60), "the spool is reported", || {
        files_under(&spool.join("ready")).is_empty()
    })
    .unwrap();
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        std::fs::metadata(logs.join(id).join("stdout"))
            .unwrap()
            .len(),
        400_000
    );
    let after = hearth.invoke("chatty", json!({"bytes": 400_000}));
    assert_eq!(after["status"], "success", "{after}");
}

#[test]
fn deleting_a_function_frees_its_code_and_its_invocations_objects() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    let gone = hearth.deploy_files("gone", &[("main.py", CHATTY)], json!({"runtime": "python"}));
    let kept = hearth.deploy_files(
        "kept",
        &[("main.py", &format!("{CHATTY}\n# another package\n"))],
        json!({"runtime": "python"}),
    );
    let twin = hearth.deploy_files("twin", &[("main.py", CHATTY)], json!({"runtime": "python"}));
    assert_eq!(
        gone["code_sha256"], twin["code_sha256"],
        "one package, shared"
    );
    let ran = hearth.invoke("gone", json!({"bytes": 10}));
    let id = ran["id"].as_str().unwrap();
    let other = hearth.invoke("kept", json!({"bytes": 10}));
    let other_id = other["id"].as_str().unwrap();
    let objects = hearth.data_dir().join("objects");
    let log = format!("logs/{id}/stdout");
    eventually(Duration::from_secs(60), "the logs are uploaded", || {
        let files = files_under(&objects);
        files.contains(&log) && files.contains(&format!("logs/{other_id}/stdout"))
    })
    .unwrap();

    let code = |f: &serde_json::Value| format!("code/{}.zip", f["code_sha256"].as_str().unwrap());
    let delete = |name: &str| {
        let response = hearth
            .request(reqwest::Method::DELETE, &format!("/v1/functions/{name}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 204, "delete {name}");
    };
    delete("gone");
    let files = files_under(&objects);
    assert!(
        !files.contains(&log),
        "the deleted function's log is left: {files:?}"
    );
    assert!(
        files.contains(&code(&gone)),
        "twin still uses the package: {files:?}"
    );
    assert!(files.contains(&code(&kept)), "{files:?}");
    delete("twin");
    let files = files_under(&objects);
    assert!(
        !files.contains(&code(&gone)),
        "no version uses it now: {files:?}"
    );
    assert!(files.contains(&code(&kept)), "{files:?}");
    assert!(
        files.contains(&format!("logs/{other_id}/stdout")),
        "another function's logs stay: {files:?}"
    );
    assert!(
        !objects.join("logs").join(id).exists(),
        "an emptied directory is left"
    );
}
