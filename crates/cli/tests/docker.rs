//! The Docker backend against a real engine: what a function container really is, and
//! that no container or volume outlives the hearth that made it, even one killed with
//! SIGKILL.
//!
//! Needs a running engine and the runtime images of the agent under test
//! (`scripts/docker.sh` then `hearth images build`; `scripts/test.sh` does both). Without
//! them these tests fail, loudly: nothing here is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::backends::docker_cli as docker;
use hearth_testkit::{eventually, Hearth};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const MB: u64 = 1024 * 1024;

/// Whether `docker inspect` finds the container or volume.
fn exists(kind: &str, id: &str) -> bool {
    Command::new("docker")
        .args([kind, "inspect", id])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn start() -> Hearth {
    Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &["--sandbox", "docker"])
}

/// The ids of the containers serving function `name`.
fn containers_of(name: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=io.hearth.function={name}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

fn inspect(id: &str) -> Value {
    let text = docker(&["inspect", id]);
    let all: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    all[0].clone()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

#[test]
fn a_function_container_is_hardened_and_sees_nothing_of_the_host() {
    let hearth = start();
    assert_eq!(hearth.get("/v1/status")["workers"][0]["backend"], "docker");
    let name = unique("hardened");
    hearth.deploy_files(
        &name,
        &[(
            "main.py",
            "def handler(event, context):\n    \
                 fields = {}\n    \
                 for line in open('/proc/self/status'):\n        \
                     key, _, value = line.partition(':')\n        \
                     fields[key] = value.strip()\n    \
                 return {k: fields.get(k) for k in ('CapEff', 'CapBnd', 'CapPrm', 'NoNewPrivs', 'Uid')}\n",
        )],
        json!({"runtime": "python", "memory_mb": 256}),
    );
    let inv = hearth.invoke(&name, json!({}));
    assert_eq!(inv["status"], "success", "{inv}");
    let status = &inv["result"];
    assert_eq!(status["CapEff"], "0000000000000000", "{status}");
    assert_eq!(status["CapPrm"], "0000000000000000", "{status}");
    assert_eq!(status["CapBnd"], "0000000000000000", "{status}");
    assert_eq!(status["NoNewPrivs"], "1", "{status}");
    // The function's uid is the instance's own, from the reserved range (issue 10.6).
    let uid: u64 = status["Uid"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2_000_000..=2_065_535).contains(&uid), "{status}");

    let ids = containers_of(&name);
    assert_eq!(ids.len(), 1, "one warm container: {ids:?}");
    let c = inspect(&ids[0]);
    assert_eq!(c["State"]["Running"], true);
    let host = &c["HostConfig"];
    assert!(
        host["Binds"].is_null() || host["Binds"] == json!([]),
        "{host}"
    );
    for mount in c["Mounts"].as_array().unwrap() {
        assert_eq!(mount["Type"], "volume", "only the code volume: {mount}");
        assert_eq!(mount["Destination"], "/code", "{mount}");
    }
    assert_eq!(c["Mounts"].as_array().unwrap().len(), 1, "{}", c["Mounts"]);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["NetworkMode"], "none");
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    // The three the agent needs to leave root for the instance's uids (and empty its
    // bounding set), gone once it has: CapBnd above is empty.
    assert_eq!(
        host["CapAdd"],
        json!(["SETUID", "SETGID", "SETPCAP"]),
        "{host}"
    );
    assert!(
        host["SecurityOpt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o.as_str().unwrap().starts_with("no-new-privileges")),
        "{}",
        host["SecurityOpt"]
    );
    assert_eq!(c["Config"]["User"], "0:0");
    assert_eq!(host["Memory"], json!(256 * MB));
    assert_eq!(host["MemorySwap"], host["Memory"], "no swap");
    assert!(host["PidsLimit"].as_i64().unwrap() > 0, "{host}");
    assert!(host["CpuQuota"].as_i64().unwrap() > 0, "{host}");
    let ulimits = host["Ulimits"].as_array().unwrap();
    assert!(
        ulimits
            .iter()
            .any(|u| u["Name"] == "nofile" && u["Hard"].as_i64().unwrap() > 0),
        "{ulimits:?}"
    );
    assert!(
        host["Tmpfs"]["/tmp"].as_str().unwrap().contains("size="),
        "{host}"
    );
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["io.hearth.managed"], "true");
    assert_eq!(labels["io.hearth.function"], name.as_str());
    assert!(labels["io.hearth.owner"].as_str().unwrap().len() >= 8);
}

#[test]
fn killing_hearth_leaves_no_container_or_volume_behind() {
    let mut hearth = start();
    let name = unique("victim");
    hearth.deploy_fixture(&name, "py-counter", json!({"runtime": "python"}));
    assert_eq!(hearth.invoke(&name, json!({}))["status"], "success");
    let ids = containers_of(&name);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let warm = inspect(&ids[0]);
    let volume = warm["Mounts"][0]["Name"].as_str().unwrap().to_string();
    let image = warm["Config"]["Image"].as_str().unwrap().to_string();
    let owner = warm["Config"]["Labels"]["io.hearth.owner"]
        .as_str()
        .unwrap()
        .to_string();

    // A leftover that never ran (so the engine never auto-removes it) with a volume of
    // its own, as a hearth killed between create and start leaves; and a container of
    // another hearth, which must survive.
    let leftover = docker(&[
        "create",
        "--label",
        "io.hearth.managed=true",
        "--label",
        &format!("io.hearth.owner={owner}"),
        "-v",
        "/code",
        &image,
    ]);
    let leftover_volume = inspect(&leftover)["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    let other = docker(&[
        "create",
        "--label",
        "io.hearth.managed=true",
        "--label",
        "io.hearth.owner=another-hearth",
        &image,
    ]);

    hearth.crash_and_restart();
    let gone = |kind: &str, id: &str| !exists(kind, id);
    eventually(Duration::from_secs(60), "the warm container goes", || {
        gone("container", &ids[0])
    })
    .unwrap();
    eventually(
        Duration::from_secs(60),
        "the sweep removes the leftover",
        || gone("container", &leftover),
    )
    .unwrap();
    eventually(Duration::from_secs(60), "the volumes go", || {
        gone("volume", &volume) && gone("volume", &leftover_volume)
    })
    .unwrap();
    let survived = exists("container", &other);
    docker(&["rm", "-f", "-v", &other]);
    assert!(survived, "another hearth's container was swept");

    // The restarted hearth serves from a new container, and a clean stop removes it.
    let after = hearth.invoke(&name, json!({}));
    assert_eq!(after["status"], "success", "{after}");
    assert_eq!(after["cold_start"], true, "{after}");
    let ids = containers_of(&name);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let volume = inspect(&ids[0])["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    hearth.stop();
    eventually(
        Duration::from_secs(60),
        "a stopped hearth leaves no container",
        || gone("container", &ids[0]),
    )
    .unwrap();
    eventually(Duration::from_secs(60), "the volume goes", || {
        gone("volume", &volume)
    })
    .unwrap();
}

#[test]
fn memory_peaks_are_per_invocation_on_one_warm_container() {
    let hearth = start();
    let name = unique("peaks");
    hearth.deploy_fixture(
        &name,
        "py-fail",
        json!({"runtime": "python", "memory_mb": 512}),
    );
    hearth.invoke(&name, json!({"action": "none"}));
    let big = hearth.invoke(&name, json!({"action": "alloc", "mb": 100}));
    let small = hearth.invoke(&name, json!({"action": "alloc", "mb": 10}));
    assert_eq!(
        containers_of(&name).len(),
        1,
        "one warm container served all"
    );
    for inv in [&big, &small] {
        assert_eq!(inv["status"], "success", "{inv}");
        assert_eq!(inv["cold_start"], false, "{inv}");
    }
    let peak = |inv: &Value| inv["memory"]["peak_bytes"].as_u64().unwrap();
    assert!(
        (100 * MB..140 * MB).contains(&peak(&big)),
        "100 MB peaked at {} MB",
        peak(&big) / MB
    );
    assert!(
        (10 * MB..40 * MB).contains(&peak(&small)),
        "10 MB after 100 MB peaked at {} MB",
        peak(&small) / MB
    );
}
