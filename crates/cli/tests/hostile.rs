//! Hostile code stays inside its sandbox.
//!
//! One suite for every runtime: each has a `{prefix}-hostile` fixture (Python, Node.js,
//! C++, Go) that tries the same things, picked by the event's action; see
//! `hearth_testkit::runtimes`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{runtimes, Hearth, RuntimeCase};
use serde_json::{json, Value};
use std::time::Duration;

/// Every runtime has a hostile fixture.
fn cases() -> Vec<RuntimeCase> {
    runtimes()
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
        "nodejs" => json!(["index.js"]),
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
            "/var/lib",
            "/etc/shadow"
        ]);
        let looked = act(&hearth, &name, json!({"action": "look", "paths": paths}));
        let visible = looked["visible"].as_object().unwrap();
        assert_eq!(visible.len(), 7, "{runtime}: every path probed: {looked}");
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
        if runtime == "python" {
            // HOME: an empty dir of the sandbox's own, never the host's /home.
            assert_eq!(looked["home"], json!([]), "{runtime}: {looked}");
        }
        // The handler's own process runs under the seccomp filter (mode 2), whatever
        // the runtime, not only the agent or the zygote.
        assert_eq!(
            looked["seccomp"], 2,
            "{runtime}: no seccomp filter: {looked}"
        );
        // A uid of the instance's own, from the reserved range (issue 10.6).
        let uid = looked["uid"].as_u64().unwrap();
        assert!(in_sandbox_range(uid), "{runtime}: uid {uid}");
        assert_eq!(looked["gid"], looked["uid"], "{runtime}");
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

/// How a fork bomb's call ended; both keep isolation.
#[derive(Debug)]
enum BombEnd {
    /// The bomb's own report: `clone` refused with EAGAIN after `forked` children.
    Reported { forked: u64 },
    /// The bomb's language runtime needed a thread of its own while the bomb's children
    /// held every pid left (Go's scheduler starts OS threads whenever it likes), was
    /// refused with EAGAIN too, and died with the message its runtime prints for that.
    RuntimeStarved,
}

/// What a runtime prints when it cannot make a thread because of EAGAIN at the pids
/// limit: Go's own thread start, or a cgo build's pthread_create.
fn runtime_starved_at_the_limit(stderr: &str) -> bool {
    (stderr.contains("failed to create new OS thread") && stderr.contains("errno=11"))
        || stderr.contains("pthread_create failed: Resource temporarily unavailable")
}

/// Sets a fork bomb off in `name` and says how it ended; anything but the two endings
/// that show the pids limit stopping it fails the test.
fn set_off_bomb(hearth: &Hearth, name: &str, runtime: &str, action: &str) -> BombEnd {
    let inv = hearth.invoke(name, json!({ "action": action }));
    match inv["status"].as_str() {
        Some("success") => {
            let bombed = &inv["result"];
            assert_eq!(bombed["error"], "EAGAIN", "{runtime}: {bombed}");
            BombEnd::Reported {
                forked: bombed["forked"].as_u64().unwrap(),
            }
        }
        Some("crashed") if runtime == "go" => {
            let stderr = inv["stderr"].as_str().unwrap_or_default();
            assert!(
                runtime_starved_at_the_limit(stderr),
                "{runtime}: the bomb crashed, and not for want of a thread at the pids limit: {inv}"
            );
            BombEnd::RuntimeStarved
        }
        _ => panic!("{runtime}: the bomb neither reported EAGAIN nor starved its runtime at the limit: {inv}"),
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
        match set_off_bomb(&hearth, &name, runtime, "forkbomb") {
            BombEnd::Reported { forked } => {
                // Both backends allow 64 pids; the sandbox's own processes and threads
                // hold some, the bomb gets the rest and not one more.
                assert!(
                    (32..64).contains(&forked),
                    "{runtime}: the bomb stopped at the pids limit of 64: forked {forked}"
                );
            }
            BombEnd::RuntimeStarved => {
                eprintln!("{runtime}: the bomb's runtime could not start a thread at the pids limit and died (accepted: the limit held)");
            }
        }
        after_the_bomb(&hearth, &name, runtime);
    }
}

/// Whatever way the bomb ended: the platform serves others, every child of the bomb is
/// gone, and the function serves again (on its instance, or on a new one).
fn after_the_bomb(hearth: &Hearth, name: &str, runtime: &str) {
    let by = hearth.invoke("bystander", json!({}));
    assert_eq!(by["status"], "success", "{by}");
    let again = hearth.invoke(name, json!({"action": "look"}));
    assert_eq!(again["status"], "success", "{runtime}: {again}");
    assert!(
        again["result"]["pids"].as_array().unwrap().len() <= 4,
        "{runtime}: the bomb's children are gone: {again}"
    );
}

/// The ending the plain bomb reaches only sometimes (under load), made certain: Go's
/// runtime dies for want of a thread at the limit, and isolation holds all the same.
#[test]
fn a_go_runtime_starved_of_threads_by_a_fork_bomb_dies_and_its_children_with_it() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    hearth.deploy_fixture("bystander", "py-counter", json!({"runtime": "python"}));
    let case = ("go", "go");
    hostile(&hearth, "go-starved", case);
    let end = set_off_bomb(&hearth, "go-starved", "go", "forkbomb_starving");
    assert!(
        matches!(end, BombEnd::RuntimeStarved),
        "32 goroutines in blocking syscalls found threads at the pids limit: {end:?}"
    );
    after_the_bomb(&hearth, "go-starved", "go");
}

#[test]
fn a_go_runtime_starved_of_threads_is_told_from_other_crashes() {
    let starved = "runtime: failed to create new OS thread (have 9 already; errno=11)\nruntime: may need to increase max user processes (ulimit -u)\nfatal error: newosproc\n";
    assert!(runtime_starved_at_the_limit(starved));
    let cgo =
        "runtime/cgo: pthread_create failed: Resource temporarily unavailable\nSIGABRT: abort\n";
    assert!(runtime_starved_at_the_limit(cgo));
    // Out of memory is another errno, and a panic is the bomb's own fault: neither passes.
    let enomem = "runtime: failed to create new OS thread (have 9 already; errno=12)\n";
    assert!(!runtime_starved_at_the_limit(enomem));
    assert!(!runtime_starved_at_the_limit(
        "panic: boom\n\ngoroutine 1 [running]:\n"
    ));
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

/// A process that holds none of the invocation's pipes lets the invocation be answered
/// before its process has exited; the sweep after the answer still kills it before the
/// next call.
#[test]
fn a_detached_process_does_not_outlive_an_early_answer() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    python_hostile(&hearth, "detached");
    for _ in 0..3 {
        let spawned = act(&hearth, "detached", json!({"action": "spawn_detached"}));
        let pid = spawned["pid"].as_u64().unwrap();
        let alive = act(&hearth, "detached", json!({"action": "alive", "pid": pid}));
        assert_eq!(alive["alive"], false, "sleep 1000 survived: {alive}");
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

// The walls between invocations of one warm instance, and the agent itself (issue 10).
// The attacks live in the Python fixture, which runs on both backends.

/// The Python hostile fixture, deployed as `name`.
fn python_hostile(hearth: &Hearth, name: &str) {
    hostile(hearth, name, ("python", "py"));
}

/// The default `--sandbox-uids` range.
fn in_sandbox_range(uid: u64) -> bool {
    (2_000_000..=2_065_535).contains(&uid)
}

#[test]
fn the_function_cannot_write_into_signal_or_trace_the_agent() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    python_hostile(&hearth, "hijacker");
    let tried = act(&hearth, "hijacker", json!({"action": "take_over_agent"}));
    for path in ["/proc/1/mem", "/proc/1/environ"] {
        assert!(
            ["EACCES", "EPERM"].contains(&tried[path].as_str().unwrap_or("")),
            "the agent's {path} is open to the function: {tried}"
        );
    }
    // The agent runs under a uid other than the function's (issue 10.2): the kernel
    // refuses the function a signal to it (and ptrace, which needs the same uid).
    assert_ne!(tried["agent_uid"], tried["uid"], "{tried}");
    for name in ["kill_pid1", "stop_pid1"] {
        assert_eq!(
            tried[name], "EPERM",
            "the function may signal the agent: {tried}"
        );
    }
}

#[test]
fn no_two_instances_share_a_uid_so_one_cannot_starve_another_of_a_per_uid_limit() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    python_hostile(&hearth, "hog");
    python_hostile(&hearth, "bystander");
    // Warm the bystander first, so that it answers at once later.
    let before = act(&hearth, "bystander", json!({"action": "count_inotify"}));
    assert_eq!(before["opened"], 64, "{before}");
    std::thread::scope(|scope| {
        let hog = scope.spawn(|| {
            act(
                &hearth,
                "hog",
                json!({"action": "hog_inotify", "hold_s": 8}),
            )
        });
        // The hog holds every inotify instance its uid may have: wait until the host
        // sees it do so (its process's fds), then ask the bystander.
        hearth_testkit::eventually(
            Duration::from_secs(60),
            "the hog holds its inotify instances",
            || !processes_holding_inotify(100).is_empty(),
        )
        .unwrap();
        let during = act(&hearth, "bystander", json!({"action": "count_inotify"}));
        assert_eq!(
            during["opened"], 64,
            "another tenant's function starved this one of inotify instances: {during}"
        );
        let hog = hog.join().unwrap();
        assert!(hog["held"].as_u64().unwrap() >= 100, "{hog}");
        assert_ne!(during["uid"], json!(null));
        assert!(
            in_sandbox_range(during["uid"].as_u64().unwrap()),
            "{during}"
        );
    });
}

/// Host pids of processes holding at least `at_least` inotify instances.
fn processes_holding_inotify(at_least: usize) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let inotify = fds
            .flatten()
            .filter(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.to_string_lossy() == "anon_inode:inotify")
            })
            .count();
        if inotify >= at_least {
            found.push(pid);
        }
    }
    found
}

#[test]
fn the_code_is_not_unpacked_by_root() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    python_hostile(&hearth, "unpacked");
    let owners = act(&hearth, "unpacked", json!({"action": "code_owner"}));
    let look = act(&hearth, "unpacked", json!({"action": "look"}));
    if hearth_testkit::sandbox() == "docker" {
        // The engine unpacks the code (chrooted into the container) through its
        // archive API; the agent never does there.
        return;
    }
    for (path, owner) in owners.as_object().unwrap() {
        let owner = owner.as_u64().unwrap();
        // The native agent unpacks it after the pivot, in a child that left root for
        // the agent's own uid (issue 10.9): not root, and not the function either.
        assert!(
            in_sandbox_range(owner),
            "/code/{path} belongs to {owner}: {owners}"
        );
        assert_ne!(json!(owner), look["uid"], "/code/{path}: {owners}");
    }
}

#[test]
fn nothing_a_caller_leaves_behind_reaches_the_next_one() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    python_hostile(&hearth, "planter");
    let planted = hearth.invoke(
        "planter",
        json!({"action": "plant", "secret": "s3cret", "kill_zygote": true}),
    );
    eprintln!("planted: {planted}");
    let found = act(&hearth, "planter", json!({"action": "harvest"}));
    assert_eq!(
        found["planted"],
        Value::Null,
        "usercustomize.py ran: {found}"
    );
    assert_eq!(found["tmp"], json!([]), "/tmp is not empty: {found}");
    for path in [
        "/tmp/left-behind",
        "/dev/shm/left-behind",
        "/tmp/.node_modules/x.js",
    ] {
        assert_eq!(found[path], false, "{path} survived: {found}");
    }
    // And without a zygote restart: the next call still starts clean.
    act(&hearth, "planter", json!({"action": "plant"}));
    let found = act(&hearth, "planter", json!({"action": "harvest"}));
    assert_eq!(found["tmp"], json!([]), "/tmp is not empty: {found}");
    assert_eq!(found["/dev/shm/left-behind"], false, "{found}");
    let planted = act(&hearth, "planter", json!({"action": "plant"}));
    assert_eq!(
        planted["no_user_site"], 1,
        "python starts with -s: {planted}"
    );
    assert_ne!(
        planted["usercustomize"], "ok",
        "HOME is writable: {planted}"
    );
}

#[test]
fn a_background_child_cannot_blind_the_sweep() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    python_hostile(&hearth, "blinder");
    let tried = hearth.invoke("blinder", json!({"action": "starve_the_sweep"}));
    eprintln!("tried: {tried}");
    if tried["status"] == "success" {
        for call in ["prlimit", "setpriority", "sched_setaffinity"] {
            assert_eq!(tried["result"][call], "EPERM", "{call}: {tried}");
        }
    }
    let pid = tried["result"]["pid"].as_u64();
    // Whatever happened, no later call sees the child.
    let alive = act(
        &hearth,
        "blinder",
        json!({"action": "alive", "pid": pid.unwrap_or(0)}),
    );
    assert_eq!(alive["alive"], false, "the child survived: {alive}");
}

#[test]
fn an_earlier_callers_event_is_not_in_the_next_process() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    python_hostile(&hearth, "scanner");
    // The victim's call: its event carries the secret (an unknown action fails, which
    // does not matter: the event went through the zygote).
    let scan = json!({"action": "scan_memory", "prefix": "MARKER-5b1c-", "tail_reversed": "f2e7-tercespot", "control": true});
    let control = act(&hearth, "scanner", scan);
    assert!(
        control["found"].as_u64().unwrap() >= 1,
        "the scan cannot find a needle in its own memory: {control}"
    );
    let victim = hearth.invoke(
        "scanner",
        json!({"action": "look", "paths": ["MARKER-5b1c-topsecret-7e2f"], "padding": "p".repeat(20_000)}),
    );
    assert_eq!(victim["status"], "success", "{victim}");
    for _ in 0..2 {
        let found = act(
            &hearth,
            "scanner",
            json!({"action": "scan_memory", "prefix": "MARKER-5b1c-", "tail_reversed": "f2e7-tercespot"}),
        );
        assert_eq!(
            found["found"], 0,
            "the earlier caller's event is in this process's memory"
        );
    }
}

#[test]
fn system_calls_an_unprivileged_process_may_make_are_closed() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    python_hostile(&hearth, "prober");
    let calls = act(&hearth, "prober", json!({"action": "open_calls"}));
    assert_eq!(calls["seccomp_mode"], 2, "no seccomp filter: {calls}");
    for (name, result) in calls.as_object().unwrap() {
        if name != "seccomp_mode" {
            assert_eq!(result, "EPERM", "{name}: {calls}");
        }
    }
}

#[test]
fn resource_limits_and_proc_masks_are_set() {
    let hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    python_hostile(&hearth, "limited");
    let seen = act(&hearth, "limited", json!({"action": "limits"}));
    assert_eq!(seen["RLIMIT_CORE"], json!([0, 0]), "{seen}");
    let nofile = seen["RLIMIT_NOFILE"][1].as_u64().unwrap();
    assert!(nofile <= 1024, "{seen}");
    for (path, read) in seen["masked"].as_object().unwrap() {
        assert!(
            read == &json!(0) || read == "ENOENT" || read == "EACCES" || read == "EPERM",
            "{path} is readable: {seen}"
        );
    }
    for (path, wrote) in seen["writable"].as_object().unwrap() {
        assert_ne!(wrote, "ok", "{path} is writable: {seen}");
    }
}

// The host's disk (issue 10, item 1): a handler that prints in a loop for its whole
// timeout never writes more than the log cap, to the spool or the object store.

/// Prints 1 KiB lines to stdout and stderr until it is killed at its timeout.
const LOG_BOMB: &str = r#"
import sys
def handler(event, context):
    line = "x" * 1023 + "\n"
    while True:
        sys.stdout.write(line)
        sys.stderr.write(line)
"#;

#[test]
fn a_log_bomb_is_cut_at_the_log_cap_on_disk_and_in_the_object_store() {
    let cap: u64 = 1 << 20;
    let hearth = Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &["--log-limit-mb", "1"]);
    hearth.deploy_files(
        "log-bomb",
        &[("main.py", LOG_BOMB)],
        json!({"runtime": "python", "timeout_ms": 3000}),
    );
    let inv = hearth.invoke("log-bomb", json!({}));
    assert_eq!(inv["status"], "timeout", "{inv}");
    assert_eq!(inv["truncated"], true, "{inv}");
    let id = inv["id"].as_str().unwrap();
    // Room for the marker the agent adds at the cut.
    let most = cap + 1024;
    let logs = hearth
        .request(reqwest::Method::GET, &format!("/v1/invocations/{id}/logs"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        (logs.len() as u64) <= most + 256,
        "the full log is {} bytes, past the cap of {cap}",
        logs.len()
    );
    assert!(
        logs.contains("[hearth: log truncated"),
        "the cut is not marked: ...{}",
        &logs[logs.len().saturating_sub(300)..]
    );
    let objects = hearth.data_dir().join("objects/logs").join(id);
    hearth_testkit::eventually(
        std::time::Duration::from_secs(60),
        "the logs reach the object store",
        || objects.join("stdout").is_file() && objects.join("stderr").is_file(),
    )
    .unwrap();
    let stored: u64 = ["stdout", "stderr"]
        .iter()
        .map(|s| std::fs::metadata(objects.join(s)).unwrap().len())
        .sum();
    assert!(
        stored <= most,
        "{stored} bytes of log in the object store, past the cap of {cap}"
    );
    assert!(stored >= cap, "the log is kept up to the cap: {stored}");
    // The instance was healthy and the platform keeps serving.
    let again = hearth.invoke("log-bomb", json!({}));
    assert_eq!(again["status"], "timeout", "{again}");
}
