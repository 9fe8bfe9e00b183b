//! `hearth up --database postgres://… --objects s3://…`: the same hearth on PostgreSQL
//! and S3 (moto) instead of its embedded SQLite file and object dir. A function
//! deployed through one process is invoked through a second one on another data dir,
//! which can only find it, its code and its history in the shared stores.
//! Needs `eval "$(scripts/services.sh --env)"`; fails loudly without it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::Hearth;
use serde_json::json;
use std::process::Command;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the services with eval \"$(scripts/services.sh --env)\"")
    })
}

fn psql(url: &str, sql: &str) {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql: {e}"));
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh database on the test server, dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Self {
        let admin_url = env("HEARTH_TEST_DATABASE_URL");
        let name = format!("e2e_{}", std::process::id());
        psql(
            &admin_url,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let base = admin_url.rsplit_once('/').unwrap().0;
        let url = format!("{base}/{name}");
        Database {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

#[test]
fn hearth_up_deploys_and_invokes_on_postgres_and_s3() {
    let database = Database::create();
    let endpoint = env("HEARTH_TEST_S3_ENDPOINT");
    let bucket = format!("e2e-{}", std::process::id());
    let http = reqwest::blocking::Client::new();
    let created = http.put(format!("{endpoint}/{bucket}")).send().unwrap();
    assert!(
        created.status().is_success(),
        "bucket: {}",
        created.status()
    );
    let objects = format!("s3://{bucket}/e2e");
    let args = ["--database", &database.url, "--objects", &objects];

    let first = Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &args);
    first.deploy_files(
        "echo",
        &[(
            "main.py",
            "def handler(event, context):\n    return {'echo': event}\n",
        )],
        json!({"runtime": "python"}),
    );
    let one = first.invoke("echo", json!({"n": 1}));
    assert_eq!(one["status"], "success", "{one}");
    assert_eq!(one["result"], json!({"echo": {"n": 1}}));
    // Nothing went to the embedded stores.
    assert!(!first.data_dir().join("hearth.db").exists());
    assert!(!first.data_dir().join("objects").exists());

    // A second hearth, its own data dir, the same stores: the function, its code (from
    // S3) and the first call's history are all there.
    let second = Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &args);
    let two = second.invoke("echo", json!({"n": 2}));
    assert_eq!(two["status"], "success", "{two}");
    assert_eq!(two["result"], json!({"echo": {"n": 2}}));
    let id = one["id"].as_str().unwrap();
    hearth_testkit::eventually(
        std::time::Duration::from_secs(60),
        "the first call's history to reach PostgreSQL",
        || {
            second
                .request(reqwest::Method::GET, &format!("/v1/invocations/{id}"))
                .send()
                .unwrap()
                .status()
                == 200
        },
    )
    .unwrap();
    let listing = http
        .get(format!("{endpoint}/{bucket}?list-type=2&prefix=e2e/code/"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(listing.contains(".zip</Key>"), "no code in S3: {listing}");
}
