//! Tenants in a cluster of two controllers (Redis, PostgreSQL, S3 of
//! `scripts/services.sh`): a key's token bucket and a namespace's concurrency slots are
//! shared by the controllers (one Lua script on Redis's clock), and a key revoked on one
//! controller is refused by the other on its next request.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::cluster::Cluster;
use hearth_testkit::{eventually, expect_error, expect_ok, zip_fixture};
use reqwest::blocking::{multipart, Client};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn create_key(cluster: &Cluster, controller: usize, body: Value) -> (String, String) {
    let made = expect_ok(
        cluster
            .request(controller, Method::POST, "/v1/keys")
            .json(&body)
            .send()
            .unwrap(),
        "create key",
    );
    (
        made["id"].as_str().unwrap().to_string(),
        made["secret"].as_str().unwrap().to_string(),
    )
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

#[test]
fn buckets_and_revocations_hold_across_controllers() {
    let cluster = Cluster::start_on_services(env!("CARGO_BIN_EXE_hearth"), 2, 0);
    let urls = [cluster.url(0).to_string(), cluster.url(1).to_string()];
    // Burst 10 refilling at 1/s: 20 requests at once, half on each controller. Buckets
    // of their own would pass 10 on each; the shared one passes 10 in all (plus one a
    // second of however long delivery took).
    let (_, secret) = create_key(
        &cluster,
        0,
        json!({"namespace": "r", "role": "invoker", "limits": {"rate_per_s": 1, "burst": 10}}),
    );
    let ready = Arc::new(Barrier::new(21));
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let (url, secret, ready) = (urls[i % 2].clone(), secret.clone(), ready.clone());
            std::thread::spawn(move || {
                let http = client();
                http.get(format!("{url}/healthz")).send().unwrap();
                ready.wait();
                let response = http
                    .get(format!("{url}/v1/functions"))
                    .bearer_auth(&secret)
                    .send()
                    .unwrap();
                let retry_after = response.headers().contains_key("retry-after");
                (
                    i % 2,
                    response.status().as_u16(),
                    retry_after,
                    Instant::now(),
                )
            })
        })
        .collect();
    ready.wait();
    let sent = Instant::now();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let elapsed = answers.iter().map(|a| a.3).max().unwrap() - sent;
    let passed = answers.iter().filter(|a| a.1 == 200).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.1 == 429).collect();
    eprintln!(
        "cluster rate limit: {passed} passed, {} refused, in {elapsed:?}",
        refused.len()
    );
    assert_eq!(passed + refused.len(), 20, "{answers:?}");
    assert!(refused.iter().all(|a| a.2), "every 429 has Retry-After");
    assert!(
        passed >= 10 && passed as f64 <= 10.0 + elapsed.as_secs_f64().floor(),
        "{passed} passed in {elapsed:?}: the controllers do not share the bucket"
    );

    // A key revoked on controller 0 is refused by controller 1 at once.
    let (id, secret) = create_key(&cluster, 0, json!({"namespace": "v", "role": "developer"}));
    let on_one = |secret: &str| {
        client()
            .get(format!("{}/v1/functions", urls[1]))
            .bearer_auth(secret)
            .send()
            .unwrap()
    };
    assert_eq!(on_one(&secret).status(), 200);
    let revoked = cluster
        .request(0, Method::DELETE, &format!("/v1/keys/{id}"))
        .send()
        .unwrap();
    assert_eq!(revoked.status(), 204);
    expect_error(on_one(&secret), 401, "unauthorized");
}

#[test]
fn a_namespace_quota_counts_calls_on_every_controller() {
    let cluster = Cluster::start_on_services(env!("CARGO_BIN_EXE_hearth"), 2, 1);
    let quotas = cluster
        .request(0, Method::PUT, "/v1/namespaces/q")
        .json(&json!({"max_concurrency": 1}))
        .send()
        .unwrap();
    assert_eq!(quotas.status(), 200);
    let (_, secret) = create_key(&cluster, 0, json!({"namespace": "q", "role": "developer"}));
    let http = client();
    let form = multipart::Form::new()
        .part(
            "code",
            multipart::Part::bytes(zip_fixture("py-sleep")).file_name("code.zip"),
        )
        .text(
            "config",
            json!({"runtime": "python", "timeout_ms": 60000}).to_string(),
        );
    expect_ok(
        http.put(format!("{}/v1/functions/sleepy", cluster.url(0)))
            .bearer_auth(&secret)
            .multipart(form)
            .send()
            .unwrap(),
        "deploy",
    );
    let invoke = |controller: usize, seconds: u64| {
        client()
            .post(format!(
                "{}/v1/functions/sleepy/invoke",
                cluster.url(controller)
            ))
            .bearer_auth(&secret)
            .json(&json!({"seconds": seconds}))
            .send()
            .unwrap()
    };
    let busy = || -> u64 {
        let status: Value = client()
            .get(format!("{}/v1/status", cluster.url(1)))
            .bearer_auth(&secret)
            .send()
            .unwrap()
            .json()
            .unwrap();
        status["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|w| w["pools"].as_array().cloned().unwrap_or_default())
            .filter(|p| p["function"] == "sleepy")
            .filter_map(|p| p["busy"].as_u64())
            .sum()
    };
    std::thread::scope(|s| {
        let long = s.spawn(|| invoke(0, 15));
        eventually(Duration::from_secs(60), "the long call runs", || {
            busy() == 1
        })
        .unwrap();
        // Controller 1 has no call of its own running, yet the namespace is full.
        let second = invoke(1, 0);
        assert!(second.headers().contains_key("retry-after"));
        expect_error(second, 429, "quota_exceeded");
        let run = expect_ok(long.join().unwrap(), "the long call");
        assert_eq!(run["status"], "success", "{run}");
    });
    eventually(Duration::from_secs(10), "the slot frees", || {
        invoke(1, 0).status() == 200
    })
    .unwrap();
}
