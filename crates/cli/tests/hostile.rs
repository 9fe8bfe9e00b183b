//! Hostile code stays inside its sandbox.
//!
//! One suite for every runtime with a `{prefix}-hostile` fixture (Python, C++, Go: each
//! tries the same things, picked by the event's action; see
//! `hearth_testkit::runtimes`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{runtimes_except, Hearth, RuntimeCase};
use serde_json::{json, Value};

/// The runtimes with a hostile fixture.
fn cases() -> Vec<RuntimeCase> {
    runtimes_except(&["nodejs"])
}

fn hostile(hearth: &Hearth, name: &str, (runtime, prefix): RuntimeCase) {
    hearth.deploy_fixture(
        name,
        &format!("{prefix}-hostile"),
        json!({"runtime": runtime, "timeout_ms": 10000}),
    );
}

fn act(hearth: &Hearth, name: &str, event: Value) -> Value {
    let inv = hearth.invoke(name, event);
    assert_eq!(inv["status"], "success", "{name}: {inv}");
    inv["result"].clone()
}

/// What the function's code dir holds: the source of an interpreted runtime, the built
/// program and its manifest (never the source) of a compiled one.
fn expected_code(runtime: &str) -> Value {
    match runtime {
        "python" => json!(["main.py"]),
        _ => json!(["function", "function.json"]),
    }
}

#[test]
fn cannot_see_other_code_or_the_host_data_dir() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture("victim", "py-counter", json!({"runtime": "python"}));
    hearth.invoke("victim", json!({}));
    for case in cases() {
        let (runtime, prefix) = case;
        let name = format!("{prefix}-intruder");
        hostile(&hearth, &name, case);
        let data_dir = hearth.data_dir().to_string_lossy().into_owned();
        let objects = format!("{data_dir}/objects");
        // Through PID 1's root too: were /proc/1 the host's init (no pid namespace),
        // the host's data dir would show there.
        let through_pid1 = format!("/proc/1/root{data_dir}");
        let paths = json!([
            data_dir,
            objects,
            through_pid1,
            "/root",
            "/work",
            "/home",
            "/var/lib",
            "/etc/shadow"
        ]);
        let looked = act(&hearth, &name, json!({"action": "look", "paths": paths}));
        let visible = looked["visible"].as_object().unwrap();
        assert_eq!(visible.len(), 8, "{runtime}: every path probed: {looked}");
        for (path, visible) in visible {
            assert_eq!(
                visible,
                &json!(false),
                "{runtime}: {path} is visible inside the sandbox"
            );
        }
        assert_eq!(
            looked["code"],
            expected_code(runtime),
            "{runtime}: only its own code is in /code"
        );
        assert_eq!(looked["uid"], 65534, "{runtime}");
        assert_eq!(looked["gid"], 65534, "{runtime}");
        let pids = looked["pids"].as_array().unwrap();
        assert!(
            pids.len() <= 4,
            "{runtime}: only the sandbox's own processes are visible: {pids:?}"
        );
        assert!(
            looked["pid"].as_u64().unwrap() < 100,
            "{runtime}: own pid namespace"
        );
    }
}

#[test]
fn cannot_write_outside_its_own_dirs() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    for case in cases() {
        let (runtime, prefix) = case;
        let name = format!("{prefix}-writer");
        hostile(&hearth, &name, case);
        let wrote = act(&hearth, &name, json!({"action": "write"}));
        for (path, result) in wrote.as_object().unwrap() {
            if path == "/tmp/x" {
                assert_eq!(result, "ok", "{runtime}: /tmp is writable");
            } else {
                assert!(
                    ["EROFS", "EACCES", "EPERM"].contains(&result.as_str().unwrap()),
                    "{runtime}: {path}: {result}"
                );
            }
        }
    }
}

#[test]
fn cannot_connect_to_the_controller_or_anywhere() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    let port: u16 = hearth.url.rsplit(':').next().unwrap().parse().unwrap();
    for case in cases() {
        let (runtime, prefix) = case;
        let name = format!("{prefix}-caller");
        hostile(&hearth, &name, case);
        let tried = act(
            &hearth,
            &name,
            json!({"action": "connect", "targets": [["127.0.0.1", port], ["10.0.2.2", 80], ["1.1.1.1", 53]]}),
        );
        assert_eq!(tried.as_object().unwrap().len(), 3, "{runtime}: {tried}");
        for (target, result) in tried.as_object().unwrap() {
            assert_ne!(result, "ok", "{runtime}: connected to {target}");
        }
    }
}

#[test]
fn a_fork_bomb_is_stopped_by_the_pids_limit_and_the_platform_keeps_serving() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture("bystander", "py-counter", json!({"runtime": "python"}));
    for case in cases() {
        let (runtime, prefix) = case;
        let name = format!("{prefix}-bomber");
        hostile(&hearth, &name, case);
        let bombed = act(&hearth, &name, json!({"action": "forkbomb"}));
        assert_eq!(bombed["error"], "EAGAIN", "{runtime}: {bombed}");
        // Both backends allow 64 pids; the sandbox's own processes and threads hold
        // some, the bomb gets the rest and not one more.
        let forked = bombed["forked"].as_u64().unwrap();
        assert!(
            (32..64).contains(&forked),
            "{runtime}: the bomb stopped at the pids limit of 64: {bombed}"
        );
        let by = hearth.invoke("bystander", json!({}));
        assert_eq!(by["status"], "success", "{by}");
        let again = hearth.invoke(&name, json!({"action": "look"}));
        assert_eq!(again["status"], "success", "{runtime}: {again}");
        assert!(
            again["result"]["pids"].as_array().unwrap().len() <= 4,
            "{runtime}: the bomb's children are gone: {again}"
        );
    }
}

#[test]
fn a_background_process_does_not_outlive_its_invocation() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    for case in cases() {
        let (runtime, prefix) = case;
        let name = format!("{prefix}-daemon");
        hostile(&hearth, &name, case);
        let spawned = act(&hearth, &name, json!({"action": "spawn_sleep"}));
        let pid = spawned["pid"].as_u64().unwrap();
        let alive = act(&hearth, &name, json!({"action": "alive", "pid": pid}));
        assert_eq!(
            alive["alive"], false,
            "{runtime}: sleep 1000 survived its invocation: {alive}"
        );
    }
}

#[test]
fn denied_system_calls_fail_with_eperm() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    for case in cases() {
        let (runtime, prefix) = case;
        let name = format!("{prefix}-syscaller");
        hostile(&hearth, &name, case);
        let calls = act(&hearth, &name, json!({"action": "seccomp"}));
        let calls = calls.as_object().unwrap();
        assert_eq!(calls.len(), 13, "{runtime}");
        for (name, result) in calls {
            assert_eq!(result, "EPERM", "{runtime}: {name}");
        }
    }
}
