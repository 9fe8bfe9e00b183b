//! Bad input gets a 4xx with a message that says what to fix, and stores nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{expect_error, zip_files, Hearth};
use reqwest::Method;
use serde_json::json;
use std::io::Write;

const GOOD: &[(&str, &[u8])] = &[("main.py", b"def handler(e, c):\n    return e\n")];

fn assert_nothing_stored(hearth: &Hearth, name: &str) {
    expect_error(
        hearth
            .request(Method::GET, &format!("/v1/functions/{name}"))
            .send()
            .unwrap(),
        404,
        "function_not_found",
    );
}

fn zip_bomb() -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .start_file("main.py", zip::write::SimpleFileOptions::default())
        .unwrap();
    writer
        .write_all(b"def handler(e, c):\n    return e\n")
        .unwrap();
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    writer.start_file("zeros.bin", options).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..300 {
        writer.write_all(&chunk).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn bad_code_packages_are_refused() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    let python = json!({"runtime": "python"});
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not a zip", b"this is not a zip".to_vec(), "zip"),
        (
            "dot-dot path",
            zip_files(&[("main.py", b"x"), ("../evil.py", b"x")]),
            "..",
        ),
        ("zip bomb", zip_bomb(), "250"),
        ("no main.py", zip_files(&[("app.py", b"x")]), "main.py"),
    ];
    for (what, zip, hint) in cases {
        let response = hearth.deploy_zip("bad-code", zip, python.clone());
        let message = expect_error(response, 400, "invalid_code");
        assert!(message.contains(hint), "{what}: {message}");
        assert_nothing_stored(&hearth, "bad-code");
    }
    let message = expect_error(
        hearth.deploy_zip(
            "bad-code",
            zip_files(&[("main.py", b"x")]),
            json!({"runtime": "nodejs"}),
        ),
        400,
        "invalid_code",
    );
    assert!(message.contains("index.js"), "{message}");
    let objects = hearth.data_dir().join("objects");
    let stored = walk_files(&objects);
    assert!(stored.is_empty(), "refused code was stored: {stored:?}");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk_files(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn bad_names_runtimes_and_configs_are_refused() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    let zip = || zip_files(GOOD);
    expect_error(
        hearth.deploy_zip("Bad_Name", zip(), json!({"runtime": "python"})),
        400,
        "invalid_name",
    );
    expect_error(
        hearth.deploy_zip("ok-name", zip(), json!({"runtime": "cobol"})),
        400,
        "unknown_runtime",
    );
    expect_error(
        hearth.deploy_zip("ok-name", zip(), json!({})),
        400,
        "invalid_config",
    );
    expect_error(
        hearth.deploy_zip(
            "ok-name",
            zip(),
            json!({"runtime": "python", "memory_mb": 1}),
        ),
        400,
        "invalid_config",
    );
    expect_error(
        hearth.deploy_zip("ok-name", zip(), json!({"runtime": "python", "nope": 1})),
        400,
        "invalid_config",
    );
    assert_nothing_stored(&hearth, "ok-name");
}

#[test]
fn bad_events_and_keys_are_refused() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_files(
        "echo",
        &[("main.py", "def handler(e, c):\n    return e\n")],
        json!({"runtime": "python"}),
    );
    expect_error(
        hearth.invoke_raw("echo", b"{not json".to_vec()),
        400,
        "invalid_event",
    );
    let big = format!("\"{}\"", "a".repeat(6 * 1024 * 1024 + 10));
    expect_error(
        hearth.invoke_raw("echo", big.into_bytes()),
        413,
        "event_too_large",
    );
    let ok = hearth.invoke("echo", json!({"fine": true}));
    assert_eq!(ok["result"], json!({"fine": true}));

    let wrong = hearth
        .anonymous(Method::GET, "/v1/functions")
        .bearer_auth("hk_wrong")
        .send()
        .unwrap();
    expect_error(wrong, 401, "unauthorized");
    expect_error(
        hearth
            .anonymous(Method::GET, "/v1/functions")
            .send()
            .unwrap(),
        401,
        "unauthorized",
    );
    let health = hearth.anonymous(Method::GET, "/healthz").send().unwrap();
    assert_eq!(health.status(), 200);
    let history = hearth.get("/v1/functions/echo/invocations");
    assert_eq!(
        history["invocations"].as_array().map(Vec::len),
        Some(1),
        "refused events made no invocation"
    );
}
