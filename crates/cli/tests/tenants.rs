//! Tenants on a real `hearth up`: keys with roles and namespaces (another namespace's
//! function, invocation, logs and outputs answer 404 exactly as missing ones), revoked
//! keys refused at once, a key's token bucket, a namespace's concurrency quota, and
//! secrets that never reach the database in clear.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{eventually, expect_error, expect_ok, zip_fixture, Hearth};
use reqwest::blocking::{multipart, Client, Response};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn hearth() -> Hearth {
    Hearth::start(env!("CARGO_BIN_EXE_hearth"))
}

/// A key as a client holds it.
struct Key {
    id: String,
    secret: String,
    url: String,
    http: Client,
}

impl Key {
    fn request(&self, method: Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.secret)
    }

    fn send(&self, method: Method, path: &str) -> Response {
        self.request(method, path).send().unwrap()
    }

    fn get(&self, path: &str) -> Value {
        expect_ok(self.send(Method::GET, path), &format!("GET {path}"))
    }

    fn deploy(&self, name: &str, fixture: &str, config: Value) -> Response {
        let form = multipart::Form::new()
            .part(
                "code",
                multipart::Part::bytes(zip_fixture(fixture)).file_name("code.zip"),
            )
            .text("config", config.to_string());
        self.request(Method::PUT, &format!("/v1/functions/{name}"))
            .multipart(form)
            .send()
            .unwrap()
    }

    fn invoke(&self, name: &str, event: Value) -> Response {
        self.request(Method::POST, &format!("/v1/functions/{name}/invoke"))
            .json(&event)
            .send()
            .unwrap()
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn create_key(hearth: &Hearth, body: Value) -> Key {
    let made = expect_ok(
        hearth
            .request(Method::POST, "/v1/keys")
            .json(&body)
            .send()
            .unwrap(),
        "create key",
    );
    Key {
        id: made["id"].as_str().unwrap().to_string(),
        secret: made["secret"].as_str().unwrap().to_string(),
        url: hearth.url.clone(),
        http: client(),
    }
}

fn developer(hearth: &Hearth, namespace: &str) -> Key {
    create_key(
        hearth,
        json!({"name": format!("dev {namespace}"), "namespace": namespace, "role": "developer"}),
    )
}

/// Status and code of an error answer.
fn status_and_code(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn namespaces_keep_each_developer_to_its_own_functions() {
    let hearth = hearth();
    let a = developer(&hearth, "a");
    let b = developer(&hearth, "b");
    let created = expect_ok(
        a.deploy("only-a", "py-echo", json!({"runtime": "python"})),
        "a deploys",
    );
    assert_eq!(created["namespace"], "a");
    assert_eq!(created["name"], "only-a");
    let run = expect_ok(a.invoke("only-a", json!({"n": 1})), "a invokes");
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["function"], "only-a");
    assert_eq!(run["namespace"], "a");
    let id = run["id"].as_str().unwrap().to_string();
    // a reads its own invocation, logs and listing.
    a.get(&format!("/v1/invocations/{id}"));
    eventually(Duration::from_secs(30), "a's logs are uploaded", || {
        a.send(Method::GET, &format!("/v1/invocations/{id}/logs"))
            .status()
            .is_success()
    })
    .unwrap();

    // b sees none of it: each answer is what a missing one gets.
    assert_eq!(b.get("/v1/functions")["functions"], json!([]));
    for (method, path) in [
        (Method::GET, "/v1/functions/only-a"),
        (Method::DELETE, "/v1/functions/only-a"),
        (Method::GET, "/v1/functions/only-a/invocations"),
        (Method::GET, "/v1/functions/only-a/tuning"),
    ] {
        let missing = path.replace("only-a", "never-made");
        assert_eq!(
            status_and_code(b.send(method.clone(), path)),
            (404, "function_not_found".into()),
            "{method} {path}"
        );
        assert_eq!(
            status_and_code(b.send(method.clone(), &missing)),
            (404, "function_not_found".into())
        );
    }
    expect_error(b.invoke("only-a", json!({})), 404, "function_not_found");
    let never = "01JDZ5T8Q3V7J8K2M4N6P8R0S2";
    for suffix in ["", "/logs", "/outputs/report.csv"] {
        let theirs = status_and_code(b.send(Method::GET, &format!("/v1/invocations/{id}{suffix}")));
        let missing =
            status_and_code(b.send(Method::GET, &format!("/v1/invocations/{never}{suffix}")));
        assert_eq!(theirs, missing, "invocation{suffix}");
        assert_eq!(theirs.0, 404, "invocation{suffix}");
    }
    // b's name is in no conflict with a's, and never touches a's function.
    let theirs = expect_ok(
        b.deploy("only-a", "py-counter", json!({"runtime": "python"})),
        "b deploys the same name",
    );
    assert_eq!(theirs["version"], 1, "a new function in b: {theirs}");
    assert_eq!(theirs["namespace"], "b");
    let mine = a.get("/v1/functions/only-a");
    assert_eq!(mine["version"], 1);
    assert_eq!(mine["code_sha256"], created["code_sha256"]);
    assert_ne!(mine["code_sha256"], theirs["code_sha256"]);
    let b_run = expect_ok(b.invoke("only-a", json!({})), "b invokes its own");
    assert_eq!(
        b_run["result"],
        json!({"calls": 1}),
        "b's code ran: {b_run}"
    );
    let a_run = expect_ok(a.invoke("only-a", json!({"n": 2})), "a invokes its own");
    assert_eq!(a_run["result"]["event"], json!({"n": 2}), "a's code ran");
    // b deletes its own; a's stays.
    assert_eq!(b.send(Method::DELETE, "/v1/functions/only-a").status(), 204);
    a.get("/v1/functions/only-a");
    // A name with a dot (how namespaces are kept apart below the API) is no way in.
    expect_error(
        b.send(Method::GET, "/v1/functions/a.only-a"),
        400,
        "invalid_name",
    );
    // The admin lists a namespace, or all of them, with ?namespace=.
    let in_a = hearth.get("/v1/functions?namespace=a");
    assert_eq!(in_a["functions"].as_array().unwrap().len(), 1, "{in_a}");
    assert_eq!(hearth.get("/v1/functions")["functions"], json!([]));
    let all = hearth.get("/v1/functions?namespace=*");
    assert_eq!(all["functions"][0]["namespace"], "a", "{all}");
}

#[test]
fn invokers_cannot_change_functions_and_revoked_keys_are_refused() {
    let hearth = hearth();
    let dev = developer(&hearth, "team");
    expect_ok(
        dev.deploy("echo", "py-echo", json!({"runtime": "python"})),
        "deploy",
    );
    // The invoker key is made, listed and revoked with the CLI.
    let cli = |args: &[&str]| -> Value {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args([
                "--url",
                &hearth.url,
                "--api-key",
                &hearth.key,
                "--json",
                "keys",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "hearth keys {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let made = cli(&[
        "create",
        "--namespace",
        "team",
        "--role",
        "invoker",
        "--name",
        "ci",
    ]);
    assert_eq!(made["role"], "invoker");
    let invoker = Key {
        id: made["id"].as_str().unwrap().into(),
        secret: made["secret"].as_str().unwrap().into(),
        url: hearth.url.clone(),
        http: client(),
    };
    let listed = cli(&["ls"]);
    let row = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == invoker.id.as_str())
        .cloned()
        .expect("the new key is listed");
    assert_eq!(row["namespace"], "team");
    assert!(
        row.get("secret").is_none(),
        "a listing shows no secret: {row}"
    );

    let run = expect_ok(invoker.invoke("echo", json!({"x": 1})), "invoker invokes");
    assert_eq!(run["status"], "success", "{run}");
    invoker.get(&format!("/v1/invocations/{}", run["id"].as_str().unwrap()));
    invoker.get("/v1/functions/echo");
    expect_error(
        invoker.deploy("echo", "py-counter", json!({})),
        403,
        "forbidden",
    );
    expect_error(
        invoker.send(Method::DELETE, "/v1/functions/echo"),
        403,
        "forbidden",
    );
    expect_error(invoker.send(Method::GET, "/v1/keys"), 403, "forbidden");
    expect_error(dev.send(Method::GET, "/v1/keys"), 403, "forbidden");
    assert_eq!(
        dev.get("/v1/functions/echo")["version"],
        1,
        "nothing changed"
    );

    cli(&["rm", &invoker.id]);
    expect_error(invoker.invoke("echo", json!({})), 401, "unauthorized");
    expect_error(
        invoker.send(Method::GET, "/v1/functions"),
        401,
        "unauthorized",
    );
    // The admin key and other keys go on working.
    hearth.get("/v1/functions?namespace=team");
    dev.get("/v1/functions/echo");
    let metrics = hearth
        .anonymous(Method::GET, "/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    for reason in ["forbidden", "unauthorized"] {
        assert!(
            metrics.contains(&format!("hearth_denied_total{{reason=\"{reason}\"}}")),
            "{reason} is counted: {metrics}"
        );
    }
}

#[test]
fn a_key_over_its_rate_is_refused_and_others_are_not() {
    let hearth = hearth();
    let limits = json!({"rate_per_s": 10, "burst": 10});
    let limited = Arc::new(create_key(
        &hearth,
        json!({"namespace": "r", "role": "invoker", "limits": limits}),
    ));
    let other = create_key(
        &hearth,
        json!({"namespace": "r", "role": "invoker", "limits": limits}),
    );
    // 50 requests at once: each thread holds an open connection (made on /healthz,
    // which takes no token) and sends when all are ready.
    let ready = Arc::new(Barrier::new(51));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (key, ready) = (limited.clone(), ready.clone());
            std::thread::spawn(move || {
                let http = client();
                http.get(format!("{}/healthz", key.url)).send().unwrap();
                ready.wait();
                let response = http
                    .get(format!("{}/v1/functions", key.url))
                    .bearer_auth(&key.secret)
                    .send()
                    .unwrap();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
                let (status, code) = status_and_code(response);
                (status, code, retry_after, Instant::now())
            })
        })
        .collect();
    ready.wait();
    let sent = Instant::now();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let last = answers.iter().map(|a| a.3).max().unwrap();
    let passed = answers.iter().filter(|a| a.0 == 200).count();
    let limited_answers: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(passed + limited_answers.len(), 50, "{answers:?}");
    for (_, code, retry_after, _) in &limited_answers {
        assert_eq!(code, "rate_limited");
        assert!(
            retry_after.is_some_and(|s| s >= 1),
            "Retry-After: {retry_after:?}"
        );
    }
    // The bucket refills 10 tokens a second: a slow machine that took longer than
    // 100 ms to deliver the 50 lets that many more through, never more.
    let refilled = (last - sent).as_secs_f64() * 10.0;
    eprintln!(
        "rate limit: {passed} passed, {} refused, in {:?}",
        limited_answers.len(),
        last - sent
    );
    assert!(
        passed >= 10 && passed as f64 <= 10.0 + refilled.floor(),
        "{passed} passed in {:?}",
        last - sent
    );
    // Another key with the same limits is unaffected.
    other.get("/v1/functions");
    // And the limited key gets a token back once the bucket refills.
    eventually(Duration::from_secs(10), "the bucket refills", || {
        limited.send(Method::GET, "/v1/functions").status() == 200
    })
    .unwrap();
}

#[test]
fn a_namespace_at_its_concurrency_quota_refuses_at_once() {
    let hearth = hearth();
    let quotas = expect_ok(
        hearth
            .request(Method::PUT, "/v1/namespaces/q")
            .json(&json!({"max_concurrency": 2}))
            .send()
            .unwrap(),
        "set quotas",
    );
    assert_eq!(quotas["quotas"]["max_concurrency"], 2);
    let dev = developer(&hearth, "q");
    expect_ok(
        dev.deploy(
            "sleepy",
            "py-sleep",
            json!({"runtime": "python", "timeout_ms": 60000, "max_instances": 4}),
        ),
        "deploy",
    );
    let busy = || -> u64 {
        dev.get("/v1/status")["workers"][0]["pools"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["function"] == "sleepy")
            .filter_map(|p| p["busy"].as_u64())
            .sum()
    };
    std::thread::scope(|s| {
        let long: Vec<_> = (0..2)
            .map(|_| s.spawn(|| dev.invoke("sleepy", json!({"seconds": 15}))))
            .collect();
        eventually(Duration::from_secs(60), "two calls run", || busy() == 2).unwrap();
        let third = dev.invoke("sleepy", json!({"seconds": 0}));
        assert!(third.headers().get("retry-after").is_some(), "Retry-After");
        let message = expect_error(third, 429, "quota_exceeded");
        assert!(message.contains("namespace q"), "{message}");
        assert_eq!(busy(), 2, "the third call was refused while two ran");
        // Another namespace is not held back.
        let other = developer(&hearth, "other");
        expect_ok(
            other.deploy("quick", "py-echo", json!({"runtime": "python"})),
            "deploy elsewhere",
        );
        expect_ok(other.invoke("quick", json!({})), "invoke elsewhere");
        for call in long {
            let run = expect_ok(call.join().unwrap(), "a long call");
            assert_eq!(run["status"], "success", "{run}");
        }
    });
    // Their slots are free again.
    eventually(Duration::from_secs(10), "the quota frees", || {
        dev.invoke("sleepy", json!({"seconds": 0})).status() == 200
    })
    .unwrap();
}

#[test]
fn a_namespace_at_its_warm_instance_quota_starts_no_more() {
    let hearth = hearth();
    expect_ok(
        hearth
            .request(Method::PUT, "/v1/namespaces/w")
            .json(&json!({"max_warm_instances": 1}))
            .send()
            .unwrap(),
        "set quotas",
    );
    let dev = developer(&hearth, "w");
    for name in ["first", "second"] {
        expect_ok(
            dev.deploy(name, "py-echo", json!({"runtime": "python"})),
            "deploy",
        );
    }
    expect_ok(dev.invoke("first", json!({})), "the first instance starts");
    // Its idle instance stays warm (10 minutes), so the namespace is at its quota: a
    // function with no instance of its own is refused, the warm one still answers.
    let refused = dev.invoke("second", json!({}));
    assert!(
        refused.headers().get("retry-after").is_some(),
        "Retry-After"
    );
    let message = expect_error(refused, 429, "quota_exceeded");
    assert!(message.contains("warm instances"), "{message}");
    expect_ok(dev.invoke("first", json!({})), "the warm instance serves");
    // Once it is gone (the function deleted), the other may start one.
    assert_eq!(
        dev.send(Method::DELETE, "/v1/functions/first").status(),
        204
    );
    eventually(Duration::from_secs(30), "the quota frees", || {
        dev.invoke("second", json!({})).status() == 200
    })
    .unwrap();
}

#[test]
fn a_dashboard_session_of_a_key_sees_its_namespace_until_the_key_is_revoked() {
    let hearth = hearth();
    let a = developer(&hearth, "a");
    expect_ok(
        a.deploy("mine", "py-echo", json!({"runtime": "python"})),
        "deploy",
    );
    hearth.deploy_fixture("admins", "py-echo", json!({"runtime": "python"}));
    let signed_in = hearth
        .anonymous(Method::POST, "/ui/session")
        .json(&json!({"api_key": a.secret}))
        .send()
        .unwrap();
    let cookie = hearth_testkit::session_cookie(&signed_in);
    expect_ok(signed_in, "sign in with a developer key");
    let with_cookie = |path: &str| {
        hearth
            .anonymous(Method::GET, path)
            .header("cookie", &cookie)
            .send()
            .unwrap()
    };
    let listed = expect_ok(with_cookie("/v1/functions"), "list with the session");
    let names: Vec<&str> = listed["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"], "{listed}");
    let stats = expect_ok(with_cookie("/v1/stats/functions"), "stats");
    assert_eq!(stats["functions"].as_array().unwrap().len(), 1, "{stats}");
    expect_error(
        with_cookie("/v1/functions/admins"),
        404,
        "function_not_found",
    );
    let revoked = hearth
        .request(Method::DELETE, &format!("/v1/keys/{}", a.id))
        .send()
        .unwrap();
    assert_eq!(revoked.status(), 204);
    expect_error(with_cookie("/v1/functions"), 401, "unauthorized");
}

#[test]
fn secrets_are_never_stored_in_clear() {
    let hearth = hearth();
    let key = developer(&hearth, "s");
    key.get("/v1/functions");
    let listed = hearth.get("/v1/keys");
    assert!(
        !listed.to_string().contains(&key.secret),
        "a listing shows no secret"
    );
    let db = hearth.data_dir().join("hearth.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (hash, namespace, role): (String, String, String) = conn
        .query_row(
            "SELECT secret_sha256, namespace, role FROM api_keys WHERE id = ?1",
            [&key.id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(hash, hex(&Sha256::digest(key.secret.as_bytes())));
    assert_eq!((namespace.as_str(), role.as_str()), ("s", "developer"));
    // No column of any row holds the secret, and neither do the raw files (the
    // database and its write-ahead log).
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('api_keys')")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(columns.len() >= 6, "{columns:?}");
    for column in &columns {
        let found: i64 = conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM api_keys WHERE instr(CAST({column} AS TEXT), ?1) > 0"
                ),
                [&key.secret],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(found, 0, "column {column} holds the secret");
    }
    drop(conn);
    let secret = key.secret.as_bytes();
    for file in ["hearth.db", "hearth.db-wal"] {
        let path = hearth.data_dir().join(file);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "{file} holds the secret in clear"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
