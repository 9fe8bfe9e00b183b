//! Cluster mode end to end: `hearth controller` and `hearth worker` processes sharing
//! Redis, a metadata store and an object store (issue 9's "done when").
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::cluster::{Backing, Cluster, RedisServer};
use hearth_testkit::eventually;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

const WORKS: &str = r#"
import os, sys, time
def handler(event, context):
    print("stdout of", event.get("tag"))
    print("stderr of", event.get("tag"), file=sys.stderr)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    with open(os.path.join(os.environ["OUTPUT_DIR"], "report.txt"), "w") as f:
        f.write("report " + str(event.get("tag")))
    return {"tag": event.get("tag"), "attempt": os.environ.get("HEARTH_ATTEMPT")}
"#;

fn deploy(cluster: &Cluster, via: usize, name: &str, timeout_ms: u64) {
    let deployed = cluster.deploy_files(
        via,
        name,
        &[("main.py", WORKS)],
        json!({"runtime": "python", "timeout_ms": timeout_ms, "max_instances": 20}),
    );
    assert_eq!(deployed["name"], name, "{deployed}");
}

fn workers(status: &Value) -> Vec<Value> {
    status["workers"].as_array().cloned().unwrap_or_default()
}

fn final_invocation(cluster: &Cluster, via: usize, id: &str, within: Duration) -> Value {
    let text = cluster.poll(
        via,
        &format!("/v1/invocations/{id}"),
        within,
        |status, text| {
            status == 200
                && !matches!(
                    serde_json::from_str::<Value>(text).unwrap_or_default()["status"].as_str(),
                    Some("queued" | "running")
                )
        },
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn two_controllers_three_workers_serve_any_function_through_either() {
    let mut cluster = Cluster::start_on_services(HEARTH, 2, 3);

    // Both controllers see the three workers, freshly heard from.
    for via in 0..2 {
        let listed = workers(&cluster.get(via, "/v1/status"));
        assert_eq!(listed.len(), 3, "{listed:?}");
        for worker in &listed {
            assert!(
                worker["heartbeat_age_ms"].as_u64().unwrap() < 10_000,
                "{worker}"
            );
        }
    }

    // Deployed through one, invoked through the other, sync and async.
    deploy(&cluster, 0, "works", 10_000);
    let sync = cluster.invoke(1, "works", &json!({"tag": "sync"}));
    assert_eq!(sync["status"], "success", "{sync}");
    assert_eq!(sync["result"]["tag"], "sync");
    assert_eq!(sync["result"]["attempt"], "1", "{sync}");
    let async_id = cluster.invoke_async(1, "works", &json!({"tag": "async"}));
    let done = final_invocation(&cluster, 0, &async_id, Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(done["result"]["attempt"], "1", "{done}");

    // Logs and outputs come from the object store through either controller.
    for (id, tag) in [
        (sync["id"].as_str().unwrap(), "sync"),
        (async_id.as_str(), "async"),
    ] {
        for via in 0..2 {
            let logs = cluster.poll(
                via,
                &format!("/v1/invocations/{id}/logs"),
                Duration::from_secs(30),
                |s, _| s == 200,
            );
            assert!(
                logs.contains(&format!("stdout of {tag}"))
                    && logs.contains(&format!("stderr of {tag}")),
                "{logs}"
            );
            let report = cluster.poll(
                via,
                &format!("/v1/invocations/{id}/outputs/report.txt"),
                Duration::from_secs(30),
                |s, _| s == 200,
            );
            assert_eq!(report, format!("report {tag}"));
        }
    }

    // After warm-up, 200 sequential calls through both controllers start nothing cold.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let warm_through_both =
            (0..2).all(|via| cluster.invoke(via, "works", &json!({}))["cold_start"] == false);
        let pools_published = workers(&cluster.get(0, "/v1/status"))
            .iter()
            .any(|w| !w["pools"].as_array().unwrap().is_empty());
        if warm_through_both && pools_published {
            break;
        }
        assert!(Instant::now() < deadline, "never warm");
    }
    let mut cold = 0;
    let mut served_by = HashSet::new();
    for i in 0..200 {
        let invocation = cluster.invoke(i % 2, "works", &json!({"tag": i}));
        assert_eq!(invocation["status"], "success", "{invocation}");
        cold += usize::from(invocation["cold_start"] == true);
        served_by.insert(invocation["worker"].as_str().unwrap().to_string());
    }
    assert_eq!(
        cold, 0,
        "warm calls went to workers without a warm instance (served by {served_by:?})"
    );

    // A worker killed with SIGKILL leaves the status by itself (its key's TTL is 10 s).
    let victim = cluster.worker_id(2).to_string();
    cluster.kill_worker(2);
    let mut listed = Vec::new();
    eventually(
        Duration::from_secs(120),
        "the killed worker to leave the status",
        || {
            listed = workers(&cluster.get(1, "/v1/status"));
            listed.iter().all(|w| w["id"] != victim.as_str())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {victim} still listed: {listed:?}"));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let after = cluster.invoke(0, "works", &json!({"tag": "after"}));
    assert_eq!(
        after["status"], "success",
        "the remaining workers serve: {after}"
    );
}

#[test]
fn async_invocations_finish_elsewhere_when_their_worker_is_killed() {
    let mut cluster = Cluster::start_on_services(HEARTH, 1, 3);
    deploy(&cluster, 0, "slow", 20_000);
    let ids: Vec<String> = (0..30)
        .map(|i| cluster.invoke_async(0, "slow", &json!({"tag": i, "sleep": 2})))
        .collect();

    // Wait until one worker is running some, then kill it mid-run.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (victim, running_there) = loop {
        let listed = cluster.get(0, "/v1/functions/slow/invocations?status=running&limit=100");
        let running: Vec<Value> = listed["invocations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(first) = running.first() {
            let victim = first["worker"].as_str().unwrap().to_string();
            let there: HashSet<String> = running
                .iter()
                .filter(|r| r["worker"] == victim.as_str())
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
            break (victim, there);
        }
        assert!(Instant::now() < deadline, "nothing ever ran");
        std::thread::sleep(Duration::from_millis(50));
    };
    let index = cluster.worker_index(&victim);
    cluster.kill_worker(index);
    eprintln!(
        "killed {victim} while it ran {} invocations",
        running_there.len()
    );

    let mut retried = 0;
    for id in &ids {
        let done = final_invocation(&cluster, 0, id, Duration::from_secs(120));
        assert_eq!(done["status"], "success", "{done}");
        // The function itself saw the attempt the record shows (HEARTH_ATTEMPT).
        let attempt = done["attempt"].as_u64().unwrap().to_string();
        assert_eq!(done["result"]["attempt"], attempt.as_str(), "{done}");
        if running_there.contains(id) {
            assert_eq!(done["attempt"], 2, "ran on the killed worker: {done}");
            assert_eq!(done["result"]["attempt"], "2", "redelivered: {done}");
            assert_ne!(done["worker"], victim.as_str(), "{done}");
            retried += 1;
        }
    }
    assert!(retried > 0, "the killed worker ran none of them");
}

#[test]
fn a_sync_call_whose_worker_dies_answers_worker_lost_and_never_runs_again() {
    let mut cluster = Cluster::start_on_services(HEARTH, 1, 2);
    deploy(&cluster, 0, "doomed", 20_000);
    let url = format!("{}/v1/functions/doomed/invoke", cluster.url(0));
    let caller = std::thread::spawn(move || {
        let response = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
            .post(url)
            .bearer_auth(hearth_testkit::cluster::CLUSTER_KEY)
            .json(&json!({"tag": "doomed", "sleep": 10}))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap())
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let busy = workers(&cluster.get(0, "/v1/status"))
            .into_iter()
            .find(|w| {
                w["pools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["busy"].as_u64() > Some(0))
            });
        if let Some(worker) = busy {
            break worker["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the call never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let index = cluster.worker_index(&victim);
    cluster.kill_worker(index);
    // The caller gets an answer (its client gives up after 120 s, which would fail the
    // unwrap above): the lost worker is noticed, not waited on for ever.
    let (status, body) = caller.join().unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "worker_lost", "{body}");

    // Nobody ran it again: no record of it, and the other worker never ran the function.
    std::thread::sleep(Duration::from_secs(3));
    let listed = cluster.get(0, "/v1/functions/doomed/invocations");
    assert_eq!(listed["invocations"], json!([]), "{listed}");
    let survivors = workers(&cluster.get(0, "/v1/status"));
    assert!(
        survivors
            .iter()
            .all(|w| w["pools"].as_array().unwrap().is_empty()),
        "another worker ran it: {survivors:?}"
    );
}

#[test]
fn a_controller_killed_or_redis_restarted_is_survived() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let backing = Backing::services(dir.path()).with_redis(&redis.url());
    let mut cluster = Cluster::start(HEARTH, backing, 2, 1);
    deploy(&cluster, 0, "steady", 10_000);
    assert_eq!(cluster.invoke(1, "steady", &json!({}))["status"], "success");

    cluster.kill_controller(0);
    let served = cluster.invoke(1, "steady", &json!({"tag": "alone"}));
    assert_eq!(
        served["status"], "success",
        "the other controller keeps serving: {served}"
    );

    redis.stop();
    let down = cluster.poll(1, "/v1/status", Duration::from_secs(30), |s, _| s == 503);
    assert!(down.contains("dependency_unavailable"), "{down}");
    let invoked = cluster.invoke_raw(1, "steady", &json!({}));
    let status = invoked.status().as_u16();
    let text = invoked.text().unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("dependency_unavailable"), "{text}");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = cluster.invoke_raw(1, "steady", &json!({"tag": "back"}));
        if response.status() == 200 {
            let body: Value = response.json().unwrap();
            assert_eq!(body["status"], "success", "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {}",
            response.text().unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let async_id = cluster.invoke_async(1, "steady", &json!({"tag": "async after"}));
    let done = final_invocation(&cluster, 1, &async_id, Duration::from_secs(60));
    assert_eq!(done["status"], "success", "{done}");
}

#[test]
fn a_postgresql_restart_is_survived() {
    let postgres = hearth_testkit::cluster::PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let backing = Backing::services(dir.path()).with_database(&postgres.url());
    let cluster = Cluster::start(HEARTH, backing, 1, 1);
    deploy(&cluster, 0, "steady", 10_000);
    let first = cluster.invoke(0, "steady", &json!({}));
    assert_eq!(first["status"], "success", "{first}");

    postgres.stop();
    // Function records are cached for a second; then every call needs the database.
    let down = cluster.poll(
        0,
        "/v1/functions/steady",
        Duration::from_secs(30),
        |s, _| s == 503,
    );
    assert!(down.contains("dependency_unavailable"), "{down}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = cluster.invoke_raw(0, "steady", &json!({}));
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        if status == 503 {
            assert!(text.contains("dependency_unavailable"), "{text}");
            break;
        }
        assert_eq!(status, 200, "never a 500 or a hang: {text}");
        assert!(
            Instant::now() < deadline,
            "calls kept working without the database"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    postgres.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let response = cluster.invoke_raw(0, "steady", &json!({"tag": "back"}));
        if response.status() == 200 {
            let body: Value = response.json().unwrap();
            assert_eq!(body["status"], "success", "{body}");
            break body["id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {}",
            response.text().unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // The history written behind the answer arrives too.
    let recorded = final_invocation(&cluster, 0, &id, Duration::from_secs(60));
    assert_eq!(recorded["status"], "success", "{recorded}");
}
