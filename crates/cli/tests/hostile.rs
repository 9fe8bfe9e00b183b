//! Hostile code stays inside its sandbox.

use hearth_testkit::Hearth;
use serde_json::{json, Value};

fn hostile(hearth: &Hearth, name: &str) {
    hearth.deploy_fixture(
        name,
        "py-hostile",
        json!({"runtime": "python", "timeout_ms": 10000}),
    );
}

fn act(hearth: &Hearth, name: &str, event: Value) -> Value {
    let inv = hearth.invoke(name, event);
    assert_eq!(inv["status"], "success", "{inv}");
    inv["result"].clone()
}

#[test]
fn cannot_see_other_code_or_the_host_data_dir() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture("victim", "py-counter", json!({"runtime": "python"}));
    hearth.invoke("victim", json!({}));
    hostile(&hearth, "intruder");
    let data_dir = hearth.data_dir().to_string_lossy().into_owned();
    let objects = format!("{data_dir}/objects");
    let looked = act(
        &hearth,
        "intruder",
        json!({"action": "look", "paths": [data_dir, objects, "/root", "/work", "/home", "/var/lib", "/etc/shadow", "/proc/1/root/code/main.py"]}),
    );
    for (path, visible) in looked["visible"].as_object().unwrap() {
        if path != "/proc/1/root/code/main.py" {
            assert_eq!(
                visible,
                &json!(false),
                "{path} is visible inside the sandbox"
            );
        }
    }
    assert_eq!(
        looked["code"],
        json!(["main.py"]),
        "only its own code is in /code"
    );
    assert_eq!(looked["uid"], 65534);
    assert_eq!(looked["gid"], 65534);
    let pids = looked["pids"].as_array().unwrap();
    assert!(
        pids.len() <= 4,
        "only the sandbox's own processes are visible: {pids:?}"
    );
    assert!(looked["pid"].as_u64().unwrap() < 100, "own pid namespace");
}

#[test]
fn cannot_write_outside_its_own_dirs() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hostile(&hearth, "writer");
    let wrote = act(&hearth, "writer", json!({"action": "write"}));
    for (path, result) in wrote.as_object().unwrap() {
        if path == "/tmp/x" {
            assert_eq!(result, "ok", "/tmp is writable");
        } else {
            assert!(
                ["EROFS", "EACCES", "EPERM"].contains(&result.as_str().unwrap()),
                "{path}: {result}"
            );
        }
    }
}

#[test]
fn cannot_connect_to_the_controller_or_anywhere() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hostile(&hearth, "caller");
    let port: u16 = hearth.url.rsplit(':').next().unwrap().parse().unwrap();
    let tried = act(
        &hearth,
        "caller",
        json!({"action": "connect", "targets": [["127.0.0.1", port], ["10.0.2.2", 80], ["1.1.1.1", 53]]}),
    );
    for (target, result) in tried.as_object().unwrap() {
        assert_ne!(result, "ok", "connected to {target}");
    }
}

#[test]
fn a_fork_bomb_is_stopped_by_the_pids_limit_and_the_platform_keeps_serving() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hostile(&hearth, "bomber");
    hearth.deploy_fixture("bystander", "py-counter", json!({"runtime": "python"}));
    let bombed = act(&hearth, "bomber", json!({"action": "forkbomb"}));
    assert_eq!(bombed["error"], "EAGAIN", "{bombed}");
    assert!(bombed["forked"].as_u64().unwrap() < 200, "{bombed}");
    let by = hearth.invoke("bystander", json!({}));
    assert_eq!(by["status"], "success", "{by}");
    let again = hearth.invoke("bomber", json!({"action": "look"}));
    assert_eq!(again["status"], "success", "{again}");
    assert!(
        again["result"]["pids"].as_array().unwrap().len() <= 4,
        "the bomb's children are gone: {again}"
    );
}

#[test]
fn a_background_process_does_not_outlive_its_invocation() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hostile(&hearth, "daemon");
    let spawned = act(&hearth, "daemon", json!({"action": "spawn_sleep"}));
    let pid = spawned["pid"].as_u64().unwrap();
    let alive = act(&hearth, "daemon", json!({"action": "alive", "pid": pid}));
    assert_eq!(
        alive["alive"], false,
        "sleep 1000 survived its invocation: {alive}"
    );
}

#[test]
fn denied_system_calls_fail_with_eperm() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hostile(&hearth, "syscaller");
    let calls = act(&hearth, "syscaller", json!({"action": "seccomp"}));
    let calls = calls.as_object().unwrap();
    assert_eq!(calls.len(), 13);
    for (name, result) in calls {
        assert_eq!(result, "EPERM", "{name}");
    }
}
