//! The Docker backend's function CPU group against a real engine: every process of a
//! function (Node.js and Python) runs in the container's child group `fn` with the
//! function's quota, the agent stays above it under the container's ceiling, and
//! nothing of the host is mounted for that.
//!
//! Needs a running engine and the runtime images of the agent under test (as
//! `tests/docker.rs`); fails loudly without them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::backends::docker_cli as docker;
use hearth_testkit::Hearth;
use serde_json::{json, Value};
use std::path::PathBuf;

/// The host pid of the one container serving `name`, and its inspect document.
fn container_of(name: &str) -> (u32, Value) {
    let ids = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=io.hearth.function={name}"),
    ]);
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 1, "one warm container: {ids:?}");
    let all: Value = serde_json::from_str(&docker(&["inspect", ids[0]])).unwrap();
    let pid = all[0]["State"]["Pid"].as_u64().unwrap() as u32;
    (pid, all[0].clone())
}

/// The host directory of `pid`'s cgroup carrying the cpu controller, and whether v2.
fn cpu_dir(pid: u32) -> (PathBuf, bool) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == "cpu") {
            let mount = std::fs::read_dir("/sys/fs/cgroup")
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().to_string();
                    name.split(',').any(|c| c == "cpu")
                })
                .unwrap();
            return (mount.join(path.trim_start_matches('/')), false);
        }
    }
    let line = text.lines().find(|l| l.starts_with("0::")).unwrap();
    (
        PathBuf::from("/sys/fs/cgroup").join(line[3..].trim_start_matches('/')),
        true,
    )
}

/// The function's handler reports the cpu line of its own `/proc/self/cgroup`.
const NODE_CODE: &str = "const fs = require('fs');\n\
exports.handler = () => ({ cgroup: fs.readFileSync('/proc/self/cgroup', 'utf8') });\n";
const PYTHON_CODE: &str =
    "def handler(event, context):\n    return {'cgroup': open('/proc/self/cgroup').read()}\n";

/// Whether the cgroup file's cpu line (v1) or unified line (v2) names a group `fn`.
fn in_function_group(cgroup: &str) -> bool {
    cgroup.lines().any(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let cpu = controllers.is_some_and(|c| c.is_empty() || c.split(',').any(|c| c == "cpu"));
        cpu && path.is_some_and(|p| p.ends_with("/fn"))
    })
}

#[test]
fn a_functions_processes_and_only_they_run_under_its_quota_in_a_child_group() {
    let hearth = Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &["--sandbox", "docker"]);
    for (runtime, file, code) in [
        ("nodejs", "index.js", NODE_CODE),
        ("python", "main.py", PYTHON_CODE),
    ] {
        let name = format!("cpugroup-{runtime}-{}", std::process::id());
        hearth.deploy_files(
            &name,
            &[(file, code)],
            json!({"runtime": runtime, "memory_mb": 128}),
        );
        for _ in 0..2 {
            let inv = hearth.invoke(&name, json!({}));
            assert_eq!(inv["status"], "success", "{inv}");
            let cgroup = inv["result"]["cgroup"].as_str().unwrap();
            assert!(in_function_group(cgroup), "{runtime}: not in fn: {cgroup}");
        }
        let (pid, inspected) = container_of(&name);
        let (dir, v2) = cpu_dir(pid);
        assert!(
            !dir.ends_with("fn"),
            "the agent is outside fn: {}",
            dir.display()
        );
        let function = if v2 {
            dir.parent().unwrap().join("fn")
        } else {
            dir.join("fn")
        };
        let host = &inspected["HostConfig"];
        // 128 MB gets 0.25 CPU: the function's quota on fn, the ceiling above it.
        if v2 {
            let max = std::fs::read_to_string(function.join("cpu.max")).unwrap();
            assert_eq!(max.trim(), "25000 100000", "{runtime}");
        } else {
            let quota = std::fs::read_to_string(function.join("cpu.cfs_quota_us")).unwrap();
            assert_eq!(quota.trim(), "25000", "{runtime}");
        }
        assert!(
            host["CpuQuota"].as_i64().unwrap() >= 25_000,
            "the ceiling is never below the function's quota: {host}"
        );
        assert!(
            host["Binds"].is_null() || host["Binds"] == json!([]),
            "{host}"
        );
        assert_eq!(
            inspected["Mounts"].as_array().unwrap().len(),
            1,
            "only the code volume: {}",
            inspected["Mounts"]
        );
    }
}
