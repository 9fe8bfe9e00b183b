//! Events no function may be handed (issue 10.11): one nested 100,000 deep (which would
//! overflow a runtime's parser) and one that is not UTF-8, on the hearth API and on the
//! Lambda-compatible invoke route (through boto3, `tests/lambda/bad_events.py`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{expect_error, workspace_root, Hearth};
use serde_json::json;
use std::process::Command;

/// `[[[…]]]`, `depth` deep.
fn nested(depth: usize) -> Vec<u8> {
    let mut event = vec![b'['; depth];
    event.extend(std::iter::repeat_n(b']', depth));
    event
}

#[test]
fn a_deep_or_non_utf8_event_is_a_400_and_the_function_keeps_serving() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture("echo", "py-hostile", json!({"runtime": "python"}));
    for (what, body) in [
        ("nested 100,000 deep", nested(100_000)),
        (
            "a string that is not UTF-8",
            b"{\"action\": \"look\", \"x\": \"\xff\xfe\"}".to_vec(),
        ),
        ("a lone surrogate half", b"\"\xed\xa0\x80\"".to_vec()),
    ] {
        let message = expect_error(hearth.invoke_raw("echo", body), 400, "invalid_event");
        assert!(!message.is_empty(), "{what}");
    }
    // A reasonable depth still goes through, and the instance still serves.
    let mut deep = b"{\"action\": \"look\", \"x\": ".to_vec();
    deep.extend(nested(100));
    deep.push(b'}');
    let ok = hearth.invoke_raw("echo", deep);
    assert_eq!(ok.status(), 200);

    let root = workspace_root();
    let python = root.join("target/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/services.sh",
        python.display()
    );
    let status = Command::new(&python)
        .arg(root.join("tests/lambda/bad_events.py"))
        .env("HEARTH_URL", &hearth.url)
        .env("HEARTH_API_KEY", &hearth.key)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .status()
        .expect("running the boto3 check");
    assert!(
        status.success(),
        "the Lambda route took a bad event: {status}"
    );
}
