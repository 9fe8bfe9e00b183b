//! Output files, full logs and history, with fire-and-forget reporting that loses
//! nothing when the object store is down or hearth is killed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::gate::Gate;
use hearth_testkit::{eventually, Hearth};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::Duration;

const MB: u64 = 1024 * 1024;

fn deploy(hearth: &Hearth, name: &str, memory_mb: u64) {
    hearth.deploy_fixture(
        name,
        "py-outputs",
        json!({"runtime": "python", "memory_mb": memory_mb, "timeout_ms": 120000, "output_quota_mb": memory_mb}),
    );
}

/// One full log, once the reporter has uploaded it (`pending_upload` until then).
fn uploaded_log(hearth: &Hearth, id: &str, stream: &str) -> String {
    let url = format!("/v1/invocations/{id}/logs?stream={stream}");
    let mut text = String::new();
    eventually(Duration::from_secs(60), "the log to be uploaded", || {
        let response = hearth.request(Method::GET, &url).send().unwrap();
        let ok = response.status() == 200;
        text = response.text().unwrap();
        ok || !text.contains("pending_upload")
    })
    .unwrap();
    text
}

/// Downloads an output (waiting for the reporter) and returns its SHA-256.
fn download_sha(hearth: &Hearth, id: &str, path: &str) -> String {
    let url = format!("/v1/invocations/{id}/outputs/{path}");
    let mut response = None;
    eventually(
        // Past the reporter's call timeout (60 s), after which it retries a hung upload.
        Duration::from_secs(240),
        &format!("output {path} to be uploaded"),
        || {
            let r = hearth.request(Method::GET, &url).send().unwrap();
            if r.status() == 200 {
                response = Some(r);
                true
            } else {
                assert!(
                    [404, 503].contains(&r.status().as_u16()),
                    "only 404 (503 while the store is down) until uploaded"
                );
                false
            }
        },
    )
    .unwrap();
    let mut response = response.unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = response.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

fn listed(inv: &Value) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = inv["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["path"].as_str().unwrap().to_string(),
                o["size"].as_u64().unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn three_outputs_are_listed_and_download_with_the_same_sha256() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    deploy(&hearth, "writer", 256);
    let inv = hearth.invoke("writer", json!({"action": "three"}));
    assert_eq!(inv["status"], "success", "{inv}");
    assert_eq!(
        listed(&inv),
        [
            ("a.txt".to_string(), 14),
            ("big.bin".to_string(), 50 * MB),
            ("sub/dir/b.json".to_string(), 16)
        ]
    );
    let id = inv["id"].as_str().unwrap();
    for (path, sha) in inv["result"].as_object().unwrap() {
        assert_eq!(&download_sha(&hearth, id, path), sha, "{path}");
        let key = inv["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["path"] == path.as_str())
            .unwrap()["key"]
            .clone();
        assert_eq!(key, json!(format!("outputs/{id}/{path}")));
    }
    let next = hearth.invoke("writer", json!({"action": "look"}));
    assert_eq!(
        next["result"]["entries"],
        json!([]),
        "each invocation starts with an empty output dir"
    );
    assert_eq!(next["outputs"], json!([]));
}

#[test]
fn links_fifos_and_odd_names_write_nothing_outside_the_spool_and_are_reported() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    deploy(&hearth, "sneaky", 128);
    let inv = hearth.invoke("sneaky", json!({"action": "hostile"}));
    assert_eq!(inv["status"], "success", "{inv}");
    // real.txt and hard-link are one file: whichever name the walk meets first is
    // kept, the other is a hard-link entry and skipped.
    let files = listed(&inv);
    assert_eq!(files.len(), 2, "{inv}");
    assert_eq!(files[0], ("..dots..".to_string(), 11));
    let (kept, size) = &files[1];
    assert!(
        ["hard-link", "real.txt"].contains(&kept.as_str()) && *size == 4,
        "{files:?}"
    );
    let linked = if kept == "real.txt" {
        "hard-link"
    } else {
        "real.txt"
    };
    let mut skipped: Vec<&str> = inv["skipped_outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    skipped.sort();
    let mut expected = vec!["fifo", "passwd-link", linked];
    expected.sort();
    assert_eq!(skipped, expected, "{inv}");
    let id = inv["id"].as_str().unwrap();
    assert_eq!(
        download_sha(&hearth, id, kept),
        hex::encode(Sha256::digest(b"real"))
    );
    let passwd = hearth
        .request(
            Method::GET,
            &format!("/v1/invocations/{id}/outputs/passwd-link"),
        )
        .send()
        .unwrap();
    assert_eq!(
        passwd.status(),
        404,
        "a symlink is never followed nor stored"
    );
    // Nothing escaped: the only files under the data dir are hearth's own.
    let stray: Vec<_> = walk(hearth.data_dir())
        .into_iter()
        .filter(|p| p.ends_with("passwd-link") || p.ends_with("fifo"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Peak RSS of `pid` sampled every 20 ms while `work` runs.
fn peak_rss_during<T>(pid: u32, work: impl FnOnce() -> T) -> (T, u64) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(rss_bytes(pid))
        });
        let result = work();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (result, sampler.join().unwrap())
    })
}

#[test]
fn a_two_gigabyte_output_streams_through_with_flat_worker_memory() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    deploy(&hearth, "huge", 2600);
    hearth.invoke("huge", json!({"action": "look"}));
    let pid = hearth.pid();
    let before = rss_bytes(pid);
    // Sampled through the whole life of the output: the invocation writing it, the
    // reporter's background upload (download_sha waits for it), and the download
    // streamed back through hearth.
    let ((inv, downloaded), peak) = peak_rss_during(pid, || {
        let inv = hearth.invoke("huge", json!({"action": "huge", "mb": 2048}));
        assert_eq!(inv["status"], "success", "{}", inv["error"]);
        let id = inv["id"].as_str().unwrap().to_string();
        let downloaded = download_sha(&hearth, &id, "huge.bin");
        (inv, downloaded)
    });
    let growth = peak.saturating_sub(before);
    eprintln!(
        "worker RSS {} MB before, peak {} MB through a 2 GB output's write, upload and download",
        before / MB,
        peak / MB
    );
    assert!(
        growth < 32 * MB,
        "the worker's RSS grew by {} MB (the goal is under 32 MB)",
        growth / MB
    );
    assert_eq!(listed(&inv), [("huge.bin".to_string(), 2048 * MB)]);
    assert_eq!(downloaded, inv["result"]["huge.bin"].as_str().unwrap());
}

/// Makes the local object store unusable (a file where its directory was) and back.
struct Outage {
    objects: std::path::PathBuf,
    away: std::path::PathBuf,
}

impl Outage {
    fn start(hearth: &Hearth) -> Outage {
        let objects = hearth.data_dir().join("objects");
        let away = hearth.data_dir().join("objects.away");
        std::fs::rename(&objects, &away).unwrap();
        std::fs::write(&objects, b"the object store is down").unwrap();
        Outage { objects, away }
    }

    fn end(self) {
        std::fs::remove_file(&self.objects).unwrap();
        std::fs::rename(&self.away, &self.objects).unwrap();
    }
}

#[test]
fn an_unreachable_object_store_neither_slows_nor_loses_anything() {
    let mut hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    deploy(&hearth, "patient", 256);
    hearth.invoke("patient", json!({"action": "look"}));
    let outage = Outage::start(&hearth);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let inv = hearth.invoke("patient", json!({"action": "three"}));
        assert_eq!(inv["status"], "success", "{inv}");
        ids.push((
            inv["id"].as_str().unwrap().to_string(),
            inv["result"].clone(),
        ));
    }
    let pending = hearth
        .request(
            Method::GET,
            &format!("/v1/invocations/{}/outputs/a.txt", ids[0].0),
        )
        .send()
        .unwrap();
    assert_eq!(
        pending.status(),
        503,
        "the store is down, nothing can be read or uploaded"
    );
    let quick = hearth.invoke("patient", json!({"action": "look"}));
    assert_eq!(
        quick["status"], "success",
        "invocations keep answering during the outage"
    );

    // Killed with uploads pending, restarted after the store is back: all arrive.
    hearth.crash_and_restart_with(|| outage.end());
    for (id, shas) in &ids {
        for (path, sha) in shas.as_object().unwrap() {
            assert_eq!(&download_sha(&hearth, id, path), sha, "{id}/{path}");
        }
    }
}

/// A bucket of this test's own on the shared moto S3 (`scripts/services.sh`).
fn s3_bucket(endpoint: &str, prefix: &str) -> String {
    let bucket = format!("{prefix}-{}", std::process::id());
    let created = reqwest::blocking::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .unwrap_or_else(|e| panic!("moto's S3 at {endpoint} is not answering: {e}"));
    assert!(
        created.status().is_success(),
        "bucket: {}",
        created.status()
    );
    bucket
}

#[test]
fn a_hanging_object_store_neither_blocks_invocations_nor_needs_a_restart() {
    let endpoint = std::env::var("HEARTH_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("HEARTH_TEST_S3_ENDPOINT is not set: run eval \"$(scripts/services.sh --env)\"")
    });
    let bucket = s3_bucket(&endpoint, "hang");
    // hearth reaches S3 only through the gate, which can stop answering.
    let gate = Gate::start(&endpoint);
    let objects = format!("s3://{bucket}/hearth");
    let hearth = Hearth::start_with_env(
        env!("CARGO_BIN_EXE_hearth"),
        &["--objects", &objects],
        &[("AWS_ENDPOINT_URL", &gate.url), ("AWS_ALLOW_HTTP", "true")],
    );
    deploy(&hearth, "patient", 256);
    let warm = hearth.invoke("patient", json!({"action": "look"}));
    assert_eq!(warm["status"], "success", "{warm}");

    // The store hangs: every call to it (the reporter's uploads) waits for ever.
    gate.hang();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let inv = hearth.invoke("patient", json!({"action": "three"}));
        assert_eq!(inv["status"], "success", "{inv}");
        ids.push((
            inv["id"].as_str().unwrap().to_string(),
            inv["result"].clone(),
        ));
    }
    eventually(
        Duration::from_secs(60),
        "the reporter to be stuck on the hanging store",
        || gate.hung() > 0,
    )
    .unwrap();
    // With uploads stuck, calls still complete, one after another.
    for _ in 0..3 {
        let quick = hearth.invoke("patient", json!({"action": "look"}));
        assert_eq!(
            quick["status"], "success",
            "invocations keep answering while the store hangs: {quick}"
        );
    }

    // The store answers again; the connections it hung never will. The same hearth (no
    // restart) gives up on them and its reporter's retries deliver everything.
    gate.open();
    for (id, shas) in &ids {
        for (path, sha) in shas.as_object().unwrap() {
            assert_eq!(&download_sha(&hearth, id, path), sha, "{id}/{path}");
        }
    }
    let listing = reqwest::blocking::get(format!("{endpoint}/{bucket}?list-type=2&prefix=hearth/"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        listing.contains(&ids[2].0),
        "the last call's files are in S3: {listing}"
    );
}

#[test]
fn full_logs_history_and_stats_match_what_ran() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    deploy(&hearth, "talker", 256);
    let inv = hearth.invoke("talker", json!({"action": "print", "kb": 5 * 1024}));
    assert_eq!(inv["status"], "success", "{inv}");
    assert_eq!(inv["truncated"], true, "the inline copy is capped");
    let id = inv["id"].as_str().unwrap();
    let stdout = uploaded_log(&hearth, id, "stdout");
    assert_eq!(
        stdout.len() as u64,
        5 * 1024 * 1025,
        "the full 5 MB log is kept"
    );
    let stderr = uploaded_log(&hearth, id, "stderr");
    assert_eq!(stderr, "to stderr\n");

    for _ in 0..3 {
        assert_eq!(
            hearth.invoke("talker", json!({"action": "fail"}))["status"],
            "error"
        );
    }
    let history = hearth.get("/v1/functions/talker/invocations");
    let statuses: Vec<&str> = history["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["error", "error", "error", "success"],
        "newest first"
    );
    let errors = hearth.get("/v1/functions/talker/invocations?status=error");
    assert_eq!(errors["invocations"].as_array().unwrap().len(), 3);
    let stats = &hearth.get("/v1/functions/talker")["stats"];
    assert_eq!(stats["invocations"], 4, "{stats}");
    assert_eq!(stats["errors"], 3, "{stats}");
    assert!(stats["avg_duration_ms"].as_f64().unwrap() > 0.0);
    assert!(
        stats["p95_duration_ms"].as_f64().unwrap() >= stats["avg_duration_ms"].as_f64().unwrap()
    );
}
