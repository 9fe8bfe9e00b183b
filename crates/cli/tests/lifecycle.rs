//! Deploy, invoke, update, list, delete and restart, for every interpreted runtime,
//! against a real `hearth up`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{expect_error, Hearth};
use reqwest::Method;
use serde_json::json;

const RUNTIMES: [(&str, &str); 2] = [("python", "py"), ("nodejs", "node")];

fn hearth() -> Hearth {
    Hearth::start(env!("CARGO_BIN_EXE_hearth"))
}

#[test]
fn deploy_invoke_update_list_delete_and_restart() {
    let mut hearth = hearth();
    for (runtime, prefix) in RUNTIMES {
        let name = format!("{prefix}-life");
        let created = hearth.deploy_fixture(
            &name,
            &format!("{prefix}-echo"),
            json!({"runtime": runtime, "env": {"GREETING": "hi"}}),
        );
        assert_eq!(created["version"], 1);
        assert_eq!(created["runtime"], runtime);
        assert_eq!(created["memory_mb"], 128);
        assert_eq!(created["timeout_ms"], 3000);
        assert_eq!(created["code_sha256"].as_str().map(str::len), Some(64));

        let first = hearth.invoke(&name, json!({"n": 1}));
        assert_eq!(first["status"], "success", "{first}");
        assert_eq!(first["result"]["event"], json!({"n": 1}));
        assert_eq!(first["version"], 1);
        assert_eq!(first["cold_start"], true);

        // An update makes version 2, which answers; v1's instances are gone.
        let updated = hearth.deploy_fixture(&name, &format!("{prefix}-counter"), json!({}));
        assert_eq!(updated["version"], 2);
        assert_eq!(
            updated["env"],
            json!({"GREETING": "hi"}),
            "omitted fields keep their values"
        );
        let second = hearth.invoke(&name, json!({}));
        assert_eq!(second["status"], "success", "{second}");
        assert_eq!(second["version"], 2);
        assert_eq!(second["result"], json!({"calls": 1}));
        let status = hearth.get("/v1/status");
        let pools: Vec<_> = status["workers"][0]["pools"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["function"] == name.as_str())
            .cloned()
            .collect();
        assert_eq!(pools.len(), 1, "only the new version has a pool: {status}");
        assert_eq!(pools[0]["version"], 2);

        let got = hearth.get(&format!("/v1/functions/{name}"));
        assert_eq!(got["version"], 2);
        assert!(got["stats"].is_object(), "{got}");
        let fetched = hearth.get(&format!(
            "/v1/invocations/{}",
            second["id"].as_str().unwrap()
        ));
        assert_eq!(fetched["id"], second["id"]);
    }

    let listed = hearth.get("/v1/functions");
    let names: Vec<&str> = listed["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["node-life", "py-life"]);

    hearth.restart();
    for (_, prefix) in RUNTIMES {
        let name = format!("{prefix}-life");
        let got = hearth.get(&format!("/v1/functions/{name}"));
        assert_eq!(got["version"], 2, "versions survive a restart");
        let after = hearth.invoke(&name, json!({}));
        assert_eq!(after["status"], "success", "{after}");
        assert_eq!(after["result"], json!({"calls": 1}));
    }

    for (_, prefix) in RUNTIMES {
        let name = format!("{prefix}-life");
        let response = hearth
            .request(Method::DELETE, &format!("/v1/functions/{name}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 204);
        expect_error(
            hearth.invoke_raw(&name, b"{}".to_vec()),
            404,
            "function_not_found",
        );
        expect_error(
            hearth
                .request(Method::GET, &format!("/v1/functions/{name}"))
                .send()
                .unwrap(),
            404,
            "function_not_found",
        );
    }
    let status = hearth.get("/v1/status");
    assert_eq!(
        status["totals"]["warm_instances"], 0,
        "delete destroys instances: {status}"
    );
}

#[test]
fn every_call_is_a_fresh_process_on_a_warm_instance() {
    let hearth = hearth();
    for (runtime, prefix) in RUNTIMES {
        let name = format!("{prefix}-count");
        hearth.deploy_fixture(
            &name,
            &format!("{prefix}-counter"),
            json!({"runtime": runtime}),
        );
        for call in 0..5 {
            let inv = hearth.invoke(&name, json!({}));
            assert_eq!(inv["status"], "success", "{inv}");
            assert_eq!(
                inv["result"],
                json!({"calls": 1}),
                "call {call}: module state must not survive"
            );
            assert_eq!(inv["cold_start"], call == 0, "call {call}: {inv}");
        }
    }
}

#[test]
fn env_and_context_reach_the_handler() {
    let hearth = hearth();
    for (runtime, prefix) in RUNTIMES {
        let name = format!("{prefix}-ctx");
        hearth.deploy_fixture(
            &name,
            &format!("{prefix}-echo"),
            json!({"runtime": runtime, "memory_mb": 256, "timeout_ms": 5000, "env": {"COLOR": "blue", "EMPTY": ""}}),
        );
        let inv = hearth.invoke(&name, json!({"x": [1, 2]}));
        assert_eq!(inv["status"], "success", "{inv}");
        let result = &inv["result"];
        assert_eq!(result["event"], json!({"x": [1, 2]}));
        let ctx = &result["context"];
        assert_eq!(ctx["request_id"], inv["id"]);
        assert_eq!(ctx["function_name"], name.as_str());
        assert_eq!(ctx["version"], 1);
        assert_eq!(ctx["memory_limit_mb"], 256);
        let remaining = ctx["remaining_time_ms"].as_i64().unwrap();
        assert!(
            remaining > 0 && remaining <= 5000,
            "remaining_time_ms {remaining}"
        );
        let env = &result["env"];
        assert_eq!(env["COLOR"], "blue");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env["HEARTH_FUNCTION_NAME"], name.as_str());
        assert_eq!(env["HEARTH_FUNCTION_VERSION"], "1");
        assert_eq!(env["HEARTH_REQUEST_ID"], inv["id"]);

        // A user env var may not take a platform name.
        for reserved in ["HEARTH_FUNCTION_NAME", "HEARTH_REQUEST_ID", "PATH"] {
            let response = hearth.deploy_zip(
                &name,
                hearth_testkit::zip_fixture(&format!("{prefix}-echo")),
                json!({"env": {reserved: "evil"}}),
            );
            let message = expect_error(response, 400, "invalid_config");
            assert!(message.contains(reserved), "{message}");
        }
        let inv = hearth.invoke(&name, json!({}));
        assert_eq!(inv["version"], 1, "a refused update makes no version");
        assert_eq!(inv["result"]["env"]["HEARTH_FUNCTION_NAME"], name.as_str());
    }
}

#[test]
fn python_sdk_scripts_and_main_functions_run_unchanged() {
    let hearth = hearth();
    hearth.deploy_fixture("sdk-script", "py-sdk", json!({"runtime": "python"}));
    for _ in 0..2 {
        let inv = hearth.invoke("sdk-script", json!({"numbers": [1, 2, 3]}));
        assert_eq!(inv["status"], "success", "{inv}");
        assert_eq!(
            inv["result"],
            json!({"doubled": [2, 4, 6], "function": "sdk-script"})
        );
        assert!(inv["stdout"]
            .as_str()
            .unwrap()
            .contains(inv["id"].as_str().unwrap()));
    }
    hearth.deploy_fixture("py-main", "py-main", json!({"runtime": "python"}));
    let inv = hearth.invoke("py-main", json!({"k": "v"}));
    assert_eq!(
        inv["result"],
        json!({"via": "main", "event": {"k": "v"}}),
        "{inv}"
    );
}
