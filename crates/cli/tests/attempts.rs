//! `HEARTH_ATTEMPT` end to end on `hearth up`, for every runtime: a sync call sees `1`;
//! an async invocation whose first attempt fails is retried and its second attempt sees
//! `2` (the agent's processes are started before their event, so the number travels
//! with the event, not with the process).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{eventually, runtimes, Hearth};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const PYTHON: &str = r#"import os


def handler(event, context):
    attempt = os.environ.get("HEARTH_ATTEMPT", "")
    if event.get("fail_first") and attempt == "1":
        raise RuntimeError("the first attempt fails")
    return {"attempt": attempt}
"#;

const NODE: &str = r#"exports.handler = async (event) => {
  const attempt = process.env.HEARTH_ATTEMPT || '';
  if (event.fail_first && attempt === '1') throw new Error('the first attempt fails');
  return { attempt };
};
"#;

const CPP: &str = r#"#include <cstdlib>
#include <stdexcept>
#include <string>

std::string handler(const std::string& event) {
  const char* value = std::getenv("HEARTH_ATTEMPT");
  std::string attempt = value ? value : "";
  if (event.find("\"fail_first\":true") != std::string::npos && attempt == "1") {
    throw std::runtime_error("the first attempt fails");
  }
  return "{\"attempt\":\"" + attempt + "\"}";
}
"#;

const GO: &str = r#"package main

import (
	"errors"
	"os"
)

type Event struct {
	FailFirst bool `json:"fail_first"`
}

func Handler(event Event) (interface{}, error) {
	attempt := os.Getenv("HEARTH_ATTEMPT")
	if event.FailFirst && attempt == "1" {
		return nil, errors.New("the first attempt fails")
	}
	return map[string]string{"attempt": attempt}, nil
}
"#;

fn source(runtime: &str) -> (&'static str, &'static str) {
    match runtime {
        "python" => ("main.py", PYTHON),
        "nodejs" => ("index.js", NODE),
        "cpp" => ("main.cpp", CPP),
        "go" => ("main.go", GO),
        other => panic!("no attempt function for {other}"),
    }
}

#[test]
fn every_runtime_sees_its_attempt_number() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    for (runtime, prefix) in runtimes() {
        let name = format!("{prefix}-attempt");
        hearth.deploy_files(
            &name,
            &[source(runtime)],
            json!({"runtime": runtime, "timeout_ms": 10000}),
        );

        let sync = hearth.invoke(&name, json!({}));
        assert_eq!(sync["status"], "success", "{runtime}: {sync}");
        assert_eq!(sync["result"], json!({"attempt": "1"}), "{runtime}: {sync}");
        // A sync call that fails is not retried: it saw attempt 1 and failed.
        let failed = hearth.invoke(&name, json!({"fail_first": true}));
        assert_eq!(failed["status"], "error", "{runtime}: {failed}");

        let response = hearth
            .request(Method::POST, &format!("/v1/functions/{name}/invoke"))
            .header("Prefer", "respond-async")
            .json(&json!({"fail_first": true}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 202, "{runtime}");
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let mut last = Value::Null;
        eventually(
            Duration::from_secs(90),
            "the retried invocation to end",
            || {
                last = hearth.get(&location);
                !matches!(last["status"].as_str(), Some("queued" | "running"))
            },
        )
        .unwrap_or_else(|e| panic!("{runtime}: {e}: {last}"));
        assert_eq!(last["status"], "success", "{runtime}: {last}");
        assert_eq!(last["attempt"], 2, "{runtime}: {last}");
        assert_eq!(
            last["result"],
            json!({"attempt": "2"}),
            "{runtime}: the function's own view of the retry: {last}"
        );
    }
}
