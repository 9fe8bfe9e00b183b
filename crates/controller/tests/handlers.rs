//! The controller's HTTP handlers on a port-0 listener, against the in-process fleet
//! (one real worker on the native sandbox): the same controller code a cluster runs
//! against Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_controller::AppState;
use hearth_sandbox::native::{NativeBackend, NativeConfig};
use hearth_store::{CodeStore, SqliteMetadataStore};
use hearth_worker::local::LocalFleet;
use hearth_worker::spool::Spool;
use hearth_worker::{Worker, WorkerConfig};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "hk_test_key";

struct Api {
    url: String,
    http: Client,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let metadata = Arc::new(SqliteMetadataStore::open(&dir.path().join("m.db")).unwrap());
        let code = CodeStore::local(&dir.path().join("objects")).unwrap();
        let mut config = NativeConfig::new(hearth_testkit::agent_path(), dir.path());
        config.cgroup.group = format!("hearth-ctl-{}", hex::encode(rand_bytes()));
        let backend = Arc::new(NativeBackend::new(config).expect("the native sandbox needs root"));
        let worker = Worker::start(
            WorkerConfig::default(),
            backend,
            code.clone(),
            metadata.clone(),
            Spool::open(&dir.path().join("spool")).unwrap(),
        );
        let fleet = LocalFleet::start(worker, metadata.clone(), metadata.clone());
        let state = AppState::new(metadata, code, fleet, KEY.into(), None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(hearth_controller::serve(
            listener,
            state,
            std::future::pending(),
        ));
        Api {
            url,
            http: Client::new(),
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn deploy(&self, name: &str, main_py: &str) -> (StatusCode, Value) {
        self.deploy_with(name, main_py, json!({"runtime": "python"}))
            .await
    }

    async fn deploy_with(&self, name: &str, main_py: &str, config: Value) -> (StatusCode, Value) {
        let zip = hearth_testkit::zip_files(&[("main.py", main_py.as_bytes())]);
        let form = reqwest::multipart::Form::new()
            .part(
                "code",
                reqwest::multipart::Part::bytes(zip).file_name("code.zip"),
            )
            .text("config", config.to_string());
        let response = self
            .http
            .put(format!("{}/v1/functions/{name}", self.url))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn invoke(&self, name: &str, event: Value) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/invoke"),
            Some(event),
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Polls `path` until `done` holds for its answer, for at most a minute.
    async fn until(&self, path: &str, done: impl Fn(StatusCode, &Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get(path).await;
            if done(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never got there: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn rand_bytes() -> [u8; 6] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mixed = nanos ^ (u128::from(std::process::id()) << 64);
    let bytes = mixed.to_le_bytes();
    [bytes[0], bytes[1], bytes[2], bytes[3], bytes[8], bytes[9]]
}

const ECHO: &str = r#"
import os, sys
def handler(event, context):
    print("out:" + str(event.get("n")))
    print("err:" + str(event.get("n")), file=sys.stderr)
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"n": event.get("n"), "attempt": os.environ.get("HEARTH_ATTEMPT")}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_invoke_read_back_and_delete() {
    let api = Api::start().await;
    let (status, body) = api.deploy("echo", ECHO).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], 1);

    let (status, invocation) = api.invoke("echo", json!({"n": 7})).await;
    assert_eq!(status, StatusCode::OK, "{invocation}");
    assert_eq!(invocation["status"], "success", "{invocation}");
    assert_eq!(invocation["result"]["n"], 7);
    assert_eq!(invocation["attempt"], 1);
    let id = invocation["id"].as_str().unwrap().to_string();

    let (status, read) = api.get(&format!("/v1/invocations/{id}")).await;
    assert_eq!((status, &read["id"]), (StatusCode::OK, &json!(id)));

    let logs = api
        .until(
            &format!("/v1/invocations/{id}/logs?stream=stderr"),
            |s, _| s == StatusCode::OK,
        )
        .await;
    assert_eq!(logs, json!("err:7\n"), "logs come from the object store");

    let (_, listed) = api.get("/v1/functions/echo/invocations").await;
    assert_eq!(listed["invocations"][0]["id"], json!(id), "{listed}");

    let (status, fleet) = api.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fleet["totals"]["workers"], 1, "{fleet}");
    assert_eq!(fleet["workers"][0]["address"], "in-process");
    assert_eq!(
        fleet["workers"][0]["pools"][0]["function"], "echo",
        "{fleet}"
    );

    let (status, _) = api
        .call(reqwest::Method::DELETE, "/v1/functions/echo", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.invoke("echo", json!({})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("function_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_invocations_are_queued_retried_and_recorded_by_the_worker() {
    let api = Api::start().await;
    api.deploy("echo", ECHO).await;
    let response = api
        .http
        .post(format!("{}/v1/functions/echo/invoke?async=true", api.url))
        .bearer_auth(KEY)
        .json(&json!({"n": 1, "fail": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    let (status, queued) = api.get(&location).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the queued record is readable at once: {queued}"
    );
    let failed = api
        .until(&location, |_, body| body["status"] == "failed")
        .await;
    assert_eq!(failed["attempt"], 3, "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("3 attempts") && message.contains("asked to fail"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let api = Api::start().await;
    let response = api
        .http
        .get(format!("{}/v1/status", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (status, body) = api.invoke("nothing-here", json!({})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("function_not_found"))
    );

    api.deploy("echo", ECHO).await;
    let response = api
        .http
        .post(format!("{}/v1/functions/echo/invoke", api.url))
        .bearer_auth(KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_event");

    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/v1/functions/echo/invoke?async=true&callback_url=ftp://x/y",
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_callback_url"))
    );

    let (status, body) = api.get("/v1/invocations/01NOSUCHID/logs").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("invocation_not_found"))
    );

    let (status, body) = api.get("/v1/functions/echo/invocations?status=bogus").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_query"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_env_names_are_refused_saying_which_and_why() {
    let api = Api::start().await;
    for name in ["PATH", "HEARTH_ATTEMPT", "LD_PRELOAD"] {
        let config = json!({"runtime": "python", "env": {name: "/tmp/x", "GREETING": "hi"}});
        let (status, body) = api.deploy_with("reserved", ECHO, config).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_config", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        let why = hearth_core::env::reserved_env_reason(name).unwrap();
        assert!(
            message.contains(name) && message.contains(why),
            "{name}: {message}"
        );
    }
    let (status, _) = api.get("/v1/functions/reserved").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was created");
}
