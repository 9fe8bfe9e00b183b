//! The native sandbox: the agent in fresh namespaces builds its own root and drops
//! privileges. Needs root (as the native worker does).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{is_root, native_command, spec, tar_of, Agent, FRAME_WAIT};
use hearth_core::protocol::{FromAgent, OutcomeStatus, RootSetup};
use hearth_core::Runtime;
use serde_json::json;
use std::fs;

const PROBE: &str = r#"
import ctypes, errno, os, socket, subprocess

def attempt_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def handler(event, context):
    if event.get("action") == "leave":
        return {"left": subprocess.Popen(["sleep", "1000"]).pid}
    libc = ctypes.CDLL(None, use_errno=True)
    unshare = libc.unshare(0x10000000)
    unshare_errno = ctypes.get_errno()
    mount = libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)
    mount_errno = ctypes.get_errno()
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "host_paths": [p for p in ["/work", "/root", "/var", "/srv", "/opt"] if os.path.exists(p)],
        "home": sorted(os.listdir("/home")),
        "root": sorted(os.listdir("/")),
        "etc": sorted(os.listdir("/etc")),
        "dev": sorted(os.listdir("/dev")),
        "write_code": attempt_write("/code/x"),
        "write_usr": attempt_write("/usr/x"),
        "write_root": attempt_write("/x"),
        "write_etc": attempt_write("/etc/passwd"),
        "write_tmp": attempt_write("/tmp/x"),
        "write_shm": attempt_write("/dev/shm/x"),
        "urandom": len(open("/dev/urandom", "rb").read(8)),
        "unshare": [unshare, unshare_errno],
        "mount": [mount, mount_errno],
        "caps": [l.split()[1] for l in open("/proc/self/status") if l.startswith("Cap")],
        "no_new_privs": [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")],
        "seccomp": [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")],
        "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }
"#;

/// The native root setup every test here uses: the runtime dirs read-only over a tmpfs
/// on `mount_point`. These tests need root; without it they fail, never skip.
fn native_root(mount_point: &tempfile::TempDir) -> RootSetup {
    assert!(
        is_root(),
        "the native sandbox tests need root (namespaces, mounts)"
    );
    RootSetup::Native {
        mount_point: mount_point.path().to_string_lossy().into_owned(),
        read_only_dirs: ["/usr", "/lib", "/lib64", "/bin"]
            .map(String::from)
            .to_vec(),
        root_size_mb: 32,
        layer_dir: None,
    }
}

#[test]
fn the_native_sandbox_is_sealed() {
    let mount_point = tempfile::tempdir().unwrap();
    let root = native_root(&mount_point);
    let init = spec(Runtime::Python, root);
    let mut agent = Agent::spawn(native_command());
    match agent.init(&init, &tar_of(&[("main.py", PROBE)])) {
        FromAgent::Ready(ready) => assert!(ready.init_ms > 0.0),
        other => panic!("expected ready, got {other:?}"),
    }
    let reply = agent.invoke("probe", 10_000, "{}");
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        reply.outcome
    );
    let v = reply.value();
    assert_eq!(v["uid"], 65534);
    assert_eq!(v["gid"], 65534);
    assert_eq!(v["groups"], json!([]));
    assert!(
        v["pid"].as_i64().unwrap() < 20,
        "pid {} is not small",
        v["pid"]
    );
    assert_eq!(v["hostname"], "hearth");
    assert_eq!(v["home"], json!([]), "HOME is the sandbox's own, empty");
    assert_eq!(
        v["host_paths"],
        json!([]),
        "host dirs leak in: {}",
        v["root"]
    );
    assert_eq!(
        v["root"],
        json!([
            "bin", "code", "dev", "etc", "home", "lib", "lib64", "proc", "runtime", "tmp", "usr"
        ])
    );
    assert_eq!(
        v["etc"],
        json!(["group", "hostname", "hosts", "nsswitch.conf", "passwd"])
    );
    assert_eq!(
        v["dev"],
        json!([
            "fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"
        ])
    );
    for path in ["write_code", "write_usr", "write_root", "write_etc"] {
        assert!(
            v[path] == "EROFS" || v[path] == "EACCES",
            "{path}: {}",
            v[path]
        );
    }
    assert_eq!(v["write_tmp"], "ok");
    assert_eq!(v["write_shm"], "ok");
    assert_eq!(v["urandom"], 8);
    assert_eq!(v["unshare"], json!([-1, 1]), "unshare must fail with EPERM");
    assert_eq!(v["mount"], json!([-1, 1]), "mount must fail with EPERM");
    for cap in v["caps"].as_array().unwrap() {
        assert_eq!(cap, "0000000000000000", "capabilities left: {}", v["caps"]);
    }
    assert_eq!(v["no_new_privs"], json!(["1"]));
    assert_eq!(v["seccomp"], json!(["2"]));
    // The agent (1), the zygote and this process; nothing of the host.
    assert!(
        v["visible_pids"].as_array().unwrap().len() <= 3,
        "{}",
        v["visible_pids"]
    );

    let reply = agent.invoke("leave", 10_000, r#"{"action": "leave"}"#);
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        reply.outcome
    );
    assert!(reply.outcome.leftovers_killed >= 1, "{:#?}", reply.outcome);
    assert!(reply.outcome.healthy);

    // The host sees nothing of the sandbox's mounts.
    assert_eq!(fs::read_dir(mount_point.path()).unwrap().count(), 0);
    assert!(agent.shutdown().success());
}

#[test]
fn node_runs_in_the_native_sandbox_too() {
    let mount_point = tempfile::tempdir().unwrap();
    let root = native_root(&mount_point);
    let code = "exports.handler = async (e) => ({ uid: process.getuid(), pid: process.pid, e });";
    let mut agent = Agent::spawn(native_command());
    match agent.init(&spec(Runtime::Nodejs, root), &tar_of(&[("index.js", code)])) {
        FromAgent::Ready(_) => {}
        other => panic!("expected ready, got {other:?}"),
    }
    for i in 0..2 {
        let reply = agent.invoke("n", 10_000, &json!({"i": i}).to_string());
        assert_eq!(
            reply.outcome.status,
            OutcomeStatus::Success,
            "{:#?}",
            reply.outcome
        );
        let v = reply.value();
        assert_eq!(v["uid"], 65534);
        assert_eq!(v["e"], json!({"i": i}));
    }
    assert!(agent.shutdown().success());
}

const OUTPUTS: &str = r#"
import errno, os

def handler(event, context):
    out = os.environ["OUTPUT_DIR"]
    st = os.stat(out)
    listing = sorted(os.listdir(out))
    mount = [l.split() for l in open("/proc/self/mountinfo") if l.split()[4] == out]
    written, error = 0, None
    try:
        with open(os.path.join(out, "big.bin"), "wb") as f:
            for _ in range(3 * 16):
                f.write(b"z" * 65536)
                written += 65536
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
    return {
        "dir": out,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mode": oct(st.st_mode & 0o7777),
        "listing": listing,
        "mount": mount[0] if mount else None,
        "written": written,
        "error": error,
        "size": os.stat(os.path.join(out, "big.bin")).st_size,
    }
"#;

#[test]
fn the_output_dir_is_a_tmpfs_of_the_quota_owned_by_the_function() {
    let mount_point = tempfile::tempdir().unwrap();
    let root = native_root(&mount_point);
    let mut init = spec(Runtime::Python, root);
    init.output_size_mb = 1;
    let mut agent = Agent::spawn(native_command());
    match agent.init(&init, &tar_of(&[("main.py", OUTPUTS)])) {
        FromAgent::Ready(_) => {}
        other => panic!("expected ready, got {other:?}"),
    }
    for i in 0..2 {
        let reply = agent.invoke(&format!("o{i}"), 10_000, "{}");
        assert_eq!(
            reply.outcome.status,
            OutcomeStatus::Success,
            "{:#?}",
            reply.outcome
        );
        let v = reply.value();
        assert_eq!(v["dir"], "/output");
        assert_eq!(v["uid"], 65534);
        assert_eq!(v["gid"], 65534);
        assert_eq!(v["mode"], "0o755");
        assert_eq!(v["listing"], json!([]), "every invocation starts empty");
        let mount = v["mount"].as_array().expect("/output is a mount");
        let options = mount[5].as_str().unwrap();
        for flag in ["rw", "nosuid", "nodev", "noexec"] {
            assert!(options.split(',').any(|o| o == flag), "{flag} in {options}");
        }
        let sep = mount.iter().position(|f| f == "-").unwrap();
        assert_eq!(mount[sep + 1], "tmpfs");
        assert_eq!(v["error"], "ENOSPC", "the quota is 1 MB: {v}");
        let size = v["size"].as_u64().unwrap();
        assert!(size <= 1 << 20 && size > 0, "{size}");
        assert!(reply.outcome.output_quota_exceeded, "{:#?}", reply.outcome);
        assert_eq!(reply.outcome.output_bytes, size);
        let file = reply.output("big.bin");
        assert_eq!(file.data.len() as u64, size);
        assert!(file.data.iter().all(|b| *b == b'z'));
        assert!(reply.outcome.healthy);
    }
    assert!(agent.shutdown().success());
}

#[test]
fn the_sandbox_dies_with_the_agent() {
    let mount_point = tempfile::tempdir().unwrap();
    let root = native_root(&mount_point);
    let mut agent = Agent::spawn(native_command());
    let code = "def handler(e, c):\n    return 1\n";
    assert!(matches!(
        agent.init(&spec(Runtime::Python, root), &tar_of(&[("main.py", code)])),
        FromAgent::Ready(_)
    ));
    let parent = agent.pid();
    let children = |pid: u32| -> Vec<u32> {
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let pid1 = children(parent);
    assert_eq!(pid1.len(), 1, "the agent forks one PID 1");
    let zygote = children(pid1[0]);
    assert_eq!(zygote.len(), 1, "PID 1 runs the zygote");
    // SAFETY: kill with plain integers, on the agent process this test started.
    unsafe { libc::kill(parent as i32, libc::SIGKILL) };
    agent.wait();
    // The kernel kills a pid namespace's processes when its PID 1 dies, and their
    // reaping takes a moment: poll until both are gone (or zombies).
    let alive = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    };
    hearth_testkit::eventually(
        FRAME_WAIT,
        "PID 1 and the zygote die with the agent",
        || !alive(pid1[0]) && !alive(zygote[0]),
    )
    .unwrap();
}
