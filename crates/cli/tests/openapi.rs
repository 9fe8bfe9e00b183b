//! `GET /v1/openapi.json` of a real `hearth up`: served without a key, and valid OpenAPI
//! 3.1 by `openapi-spec-validator` (from `target/venv`, made by `scripts/services.sh`).
//! That it covers every `/v1` route is checked against the router by the controller's
//! unit test; schemathesis fuzzes the API with it in `scripts/schemathesis.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{workspace_root, Hearth};
use std::process::Command;

#[test]
fn the_openapi_document_is_served_and_valid_openapi_3_1() {
    let validator = workspace_root().join("target/venv/bin/openapi-spec-validator");
    assert!(
        validator.is_file(),
        "{} is missing: run scripts/services.sh (scripts/python-requirements.txt)",
        validator.display()
    );
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    let response = reqwest::blocking::get(format!("{}/v1/openapi.json", hearth.url)).unwrap();
    assert_eq!(response.status(), 200);
    let doc: serde_json::Value = response.json().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/functions/{name}/invoke",
        "/v1/invocations/{id}",
        "/v1/status",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let output = Command::new(&validator).arg(&file).output().unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
