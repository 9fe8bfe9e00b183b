//! The AWS Lambda API with the real AWS SDK for Python: `tests/lambda/boto3_lambda.py`
//! (boto3 from `target/venv`, made by `scripts/services.sh`) against a real `hearth up`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{workspace_root, Hearth};
use std::process::Command;

#[test]
fn boto3_creates_invokes_updates_lists_and_deletes() {
    let root = workspace_root();
    let python = root.join("target/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/services.sh (it installs boto3 from scripts/python-requirements.txt)",
        python.display()
    );
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    let status = Command::new(&python)
        .arg(root.join("tests/lambda/boto3_lambda.py"))
        .env("HEARTH_URL", &hearth.url)
        .env("HEARTH_API_KEY", &hearth.key)
        // The SDK must not find other credentials or endpoints of the machine.
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .status()
        .expect("running the boto3 suite");
    assert!(status.success(), "the boto3 suite failed: {status}");
}
