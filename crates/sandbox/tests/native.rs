//! The native backend against the real kernel and the real agent.
//!
//! Needs root and the static agent binary: `$HEARTH_AGENT`, else
//! `<workspace>/target/agent/x86_64-unknown-linux-gnu/release/hearth-agent`. A missing
//! agent fails every test with the command that builds it; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use bytes::Bytes;
use hearth_core::protocol::{InvokeSpec, OutcomeStatus};
use hearth_core::Runtime;
use hearth_sandbox::cgroup::{CgroupConfig, CgroupHost};
use hearth_sandbox::native::{NativeBackend, NativeConfig, NativeInstance};
use hearth_sandbox::{
    DiscardSink, Instance, InstanceRun, InstanceSpec, SandboxBackend, SandboxError, TypedBackend,
};
use hearth_testkit::eventually;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use tempfile::TempDir;

const MIB: u64 = 1 << 20;
/// How long processes killed by the platform may take to be reaped (a deadline for
/// polling, never a measured duration).
const GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

const BUILD_AGENT: &str = "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release \
     -p hearth-agent --target x86_64-unknown-linux-gnu --target-dir target/agent";

fn agent_path() -> PathBuf {
    let path = std::env::var_os("HEARTH_AGENT").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/agent/x86_64-unknown-linux-gnu/release/hearth-agent")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the agent binary {} is missing: build it from the workspace root with\n  {BUILD_AGENT}\n\
         or point HEARTH_AGENT at it",
        path.display()
    );
    path
}

/// A backend with its own data dir (kept alive by the returned guard).
fn backend() -> (NativeBackend, TempDir) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the native sandbox tests need root");
    let data = tempfile::tempdir().expect("temp dir");
    let backend =
        NativeBackend::new(NativeConfig::new(agent_path(), data.path())).expect("native backend");
    (backend, data)
}

/// A code package with one `main.py`.
fn python(source: &str) -> Bytes {
    package("main.py", source)
}

/// A code package (uncompressed tar) with one file.
fn package(file: &str, source: &str) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(source.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, file, source.as_bytes())
        .expect("tar entry");
    Bytes::from(builder.into_inner().expect("tar"))
}

fn unique_id(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn spec(name: &str, code: Bytes, memory_mb: u64) -> InstanceSpec {
    InstanceSpec {
        instance_id: unique_id(name),
        function_name: name.to_string(),
        version: 1,
        runtime: Runtime::Python,
        memory_mb,
        cpus: None,
        output_quota_mb: 16,
        env: BTreeMap::new(),
        code_tar: code,
        layer: None,
    }
}

async fn invoke(instance: &mut NativeInstance, event: &str) -> InstanceRun {
    invoke_with_timeout(instance, event, 10_000).await
}

async fn invoke_with_timeout(
    instance: &mut NativeInstance,
    event: &str,
    timeout_ms: u64,
) -> InstanceRun {
    let spec = InvokeSpec {
        request_id: unique_id("req"),
        timeout_ms,
        log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
        attempt: 1,
    };
    instance
        .run_event(
            spec,
            Bytes::copy_from_slice(event.as_bytes()),
            &mut DiscardSink,
        )
        .await
        .expect("invoke")
}

fn assert_success(run: &InstanceRun) {
    assert_eq!(
        run.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        run.outcome
    );
}

/// The pids in the instance's cgroups, read from the files.
fn cgroup_pids(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids: Vec<i32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

const ECHO: &str = "def handler(event, context):\n    return event\n";

#[tokio::test]
async fn a_trivial_handler_returns_its_event() {
    let (backend, _data) = backend();
    let mut instance = backend
        .create_instance(spec("echo", python(ECHO), 128))
        .await
        .expect("create");
    let run = invoke(&mut instance, r#"{"hello":"world","n":[1,2,3]}"#).await;
    assert_success(&run);
    let value: serde_json::Value = serde_json::from_slice(&run.result).expect("json result");
    assert_eq!(value, serde_json::json!({"hello": "world", "n": [1, 2, 3]}));
    // A second call on the same instance works too.
    let run = invoke(&mut instance, "42").await;
    assert_success(&run);
    assert_eq!(run.result, b"42");
    Box::new(instance).destroy().await;
}

#[tokio::test]
async fn the_memory_peak_is_per_invocation() {
    let (backend, _data) = backend();
    let code = python(
        "def handler(event, context):\n\
        \x20   b = bytearray(event['mb'] * 1024 * 1024)\n\
        \x20   for i in range(0, len(b), 4096):\n\
        \x20       b[i] = 1\n\
        \x20   return len(b)\n",
    );
    let mut instance = backend
        .create_instance(spec("memory", code, 256))
        .await
        .expect("create");
    let big = invoke(&mut instance, r#"{"mb":100}"#).await;
    assert_success(&big);
    let peak = big.usage.peak_bytes;
    assert!(
        (100 * MIB..140 * MIB).contains(&peak),
        "100 MB allocation peaked at {} MB",
        peak / MIB
    );
    assert!(!big.usage.oom_killed);
    let small = invoke(&mut instance, r#"{"mb":10}"#).await;
    assert_success(&small);
    eprintln!(
        "peaks: 100 MB call {} MB, 10 MB call {} MB",
        peak / MIB,
        small.usage.peak_bytes / MIB
    );
    assert!(
        small.usage.peak_bytes < 40 * MIB,
        "10 MB allocation after a 100 MB one peaked at {} MB: the peak was not reset",
        small.usage.peak_bytes / MIB
    );
    Box::new(instance).destroy().await;
}

#[tokio::test]
async fn an_oom_kill_is_reported_and_the_instance_still_serves() {
    let (backend, _data) = backend();
    let code = python(
        "def handler(event, context):\n\
        \x20   if event.get('mb'):\n\
        \x20       b = bytearray(event['mb'] * 1024 * 1024)\n\
        \x20       for i in range(0, len(b), 4096):\n\
        \x20           b[i] = 1\n\
        \x20   return 'ok'\n",
    );
    let mut instance = backend
        .create_instance(spec("oom", code, 128))
        .await
        .expect("create");
    let run = invoke(&mut instance, r#"{"mb":200}"#).await;
    eprintln!(
        "OOM call: {:?}, healthy {}, peak {} MB",
        run.outcome.status,
        run.outcome.healthy,
        run.usage.peak_bytes / MIB
    );
    assert!(run.usage.oom_killed, "{:#?}", run);
    assert_ne!(
        run.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        run.outcome
    );
    // Only the handler's process was killed: the agent says the instance can serve,
    // and the same instance does serve the next call.
    assert!(run.outcome.healthy, "{:#?}", run.outcome);
    let next = invoke(&mut instance, "{}").await;
    assert_success(&next);
    assert_eq!(next.result, b"\"ok\"");
    assert!(!next.usage.oom_killed);
    Box::new(instance).destroy().await;
    let code = python("def handler(event, context):\n    return 'ok'\n");
    let mut fresh = backend
        .create_instance(spec("oom-after", code, 128))
        .await
        .expect("create");
    assert_success(&invoke(&mut fresh, "{}").await);
    Box::new(fresh).destroy().await;
}

#[tokio::test]
async fn a_busy_loop_uses_cpu_time() {
    let (backend, _data) = backend();
    let code = python(
        "import time\n\
        def handler(event, context):\n\
        \x20   end = time.process_time() + 0.2\n\
        \x20   n = 0\n\
        \x20   while time.process_time() < end:\n\
        \x20       n += 1\n\
        \x20   return n\n",
    );
    let mut instance = backend
        .create_instance(spec("cpu", code, 128))
        .await
        .expect("create");
    let run = invoke(&mut instance, "{}").await;
    assert_success(&run);
    let cpu_ns = run.usage.cpu_user_ns + run.usage.cpu_system_ns;
    // The loop runs until it has used 200 ms of CPU by its own process clock (not
    // the wall clock: a loaded machine gives it less CPU per second), so the cgroup's
    // reading covers at least that.
    assert!(
        cpu_ns >= 190_000_000,
        "a loop that used 200 ms of CPU was charged {cpu_ns} ns"
    );
    Box::new(instance).destroy().await;
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_by_the_pids_limit() {
    let (backend, _data) = backend();
    // The handler forks until fork fails, counting its children (each sleeps), and
    // reports how many it made and why it stopped.
    let code = python(
        "import errno, os, time\n\
        def handler(event, context):\n\
        \x20   if not event.get('bomb'):\n\
        \x20       return 'calm'\n\
        \x20   forked = 0\n\
        \x20   try:\n\
        \x20       while forked < 10000:\n\
        \x20           if os.fork() == 0:\n\
        \x20               time.sleep(3600)\n\
        \x20               os._exit(0)\n\
        \x20           forked += 1\n\
        \x20   except OSError as e:\n\
        \x20       return {'forked': forked, 'error': errno.errorcode.get(e.errno)}\n\
        \x20   return {'forked': forked, 'error': None}\n",
    );
    let mut instance = backend
        .create_instance(spec("forkbomb", code, 256))
        .await
        .expect("create");
    let dirs = instance.cgroup_dirs();
    // At rest the sandbox holds the agent, its PID 1, the zygote and the spare the zygote
    // forks for the next call (at start, and again after every call). The spare may come
    // after `Ready`: wait for it, or the count taken before the bomb misses it.
    const AT_REST: usize = 4;
    eventually(GONE_WITHIN, "the zygote's spare is forked", || {
        cgroup_pids(&dirs).len() >= AT_REST
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", cgroup_pids(&dirs)));
    let before = cgroup_pids(&dirs);
    let bomb = invoke(&mut instance, r#"{"bomb":true}"#).await;
    assert_success(&bomb);
    let result: serde_json::Value = serde_json::from_slice(&bomb.result).unwrap();
    let limit = NativeConfig::DEFAULT_PIDS_MAX;
    assert_eq!(
        result["error"], "EAGAIN",
        "fork failed on the pids limit: {result}"
    );
    let forked = result["forked"].as_u64().unwrap();
    // The sandbox's own processes (agent, PID 1, zygote, the handler) hold a few of
    // the limit's pids; the bomb got the rest and not one more.
    assert!(
        forked < limit && forked + 8 >= limit,
        "{forked} children under a pids limit of {limit}"
    );
    assert!(
        u64::from(bomb.outcome.leftovers_killed) >= forked,
        "every child was killed after the call: {:#?}",
        bomb.outcome
    );
    let mut left = cgroup_pids(&dirs);
    eventually(GONE_WITHIN, "the bomb's children are reaped", || {
        left = cgroup_pids(&dirs);
        left.len() <= before.len()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {} processes, {} before the bomb",
            left.len(),
            before.len()
        )
    });
    let calm = invoke(&mut instance, "{}").await;
    assert_success(&calm);
    assert_eq!(calm.result, b"\"calm\"");
    Box::new(instance).destroy().await;
}

#[tokio::test]
async fn code_that_fails_to_load_is_an_init_failure() {
    let (backend, _data) = backend();
    let id_spec = spec(
        "broken",
        python("def handler(event, context)\n    return 1\n"),
        128,
    );
    let dirs = instance_dirs(&id_spec.instance_id);
    let Err(err) = backend.create(id_spec).await else {
        panic!("code with a syntax error loaded");
    };
    assert!(matches!(err, SandboxError::InitFailed { .. }), "{err:?}");
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
}

/// The cgroup directories an instance id gets on this host.
fn instance_dirs(id: &str) -> Vec<PathBuf> {
    CgroupHost::detect(&CgroupConfig::default())
        .expect("cgroups")
        .group_dirs()
        .iter()
        .map(|g| g.join(id))
        .collect()
}

#[tokio::test]
async fn destroy_leaves_no_cgroup_and_no_process() {
    let (backend, _data) = backend();
    let mut instance = backend
        .create_instance(spec("destroy", python(ECHO), 128))
        .await
        .expect("create");
    assert_success(&invoke(&mut instance, "{}").await);
    let dirs = instance.cgroup_dirs();
    assert!(!dirs.is_empty() && dirs.iter().all(|d| d.is_dir()));
    let pids = cgroup_pids(&dirs);
    assert!(!pids.is_empty(), "no process in the instance's cgroup");
    let agent = instance.pid().expect("agent pid") as i32;
    assert!(
        pids.contains(&agent),
        "agent {agent} not in its cgroup {pids:?}"
    );
    Box::new(instance).destroy().await;
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
    let alive: Vec<i32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(alive.is_empty(), "processes survive destroy: {alive:?}");
}

#[tokio::test]
async fn a_dropped_instance_leaves_no_cgroup_and_no_process() {
    let (backend, _data) = backend();
    let instance = backend
        .create_instance(spec("dropped", python(ECHO), 128))
        .await
        .expect("create");
    let dirs = instance.cgroup_dirs();
    let pids = cgroup_pids(&dirs);
    assert!(!pids.is_empty());
    drop(instance);
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
    // SIGKILLed processes may take a moment to be reaped by their parents.
    let mut alive_pids = pids.clone();
    eventually(GONE_WITHIN, "the dropped instance's processes die", || {
        alive_pids.retain(|p| alive(*p));
        alive_pids.is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: {alive_pids:?} survive drop"));
}

#[tokio::test]
async fn a_handler_past_its_timeout_does_not_hang_the_worker() {
    let (backend, _data) = backend();
    let code = python(
        "import time\n\
        def handler(event, context):\n\
        \x20   time.sleep(event['s'])\n\
        \x20   return 'woke'\n",
    );
    let mut instance = backend
        .create_instance(spec("timeout", code, 128))
        .await
        .expect("create");
    let spec = InvokeSpec {
        request_id: unique_id("req"),
        timeout_ms: 300,
        log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
        attempt: 1,
    };
    // The handler sleeps 30 s; the agent's own timer must end it at 300 ms and answer
    // with a timeout (the worker's fallback for a silent agent, `Unresponsive`, is a
    // failure here: it would mean the agent's timer did not fire).
    let run = instance
        .run_event(spec, Bytes::from_static(br#"{"s":30}"#), &mut DiscardSink)
        .await
        .unwrap_or_else(|e| panic!("the agent did not answer the timeout itself: {e:?}"));
    assert_eq!(
        run.outcome.status,
        OutcomeStatus::Timeout,
        "{:#?}",
        run.outcome
    );
    let error = run.outcome.error.clone().unwrap();
    assert_eq!(error.message, "invocation timed out after 300 ms");
    assert_eq!(run.outcome.signal, Some(9), "{:#?}", run.outcome);
    // The instance serves again after the kill.
    let next = instance
        .run_event(
            InvokeSpec {
                request_id: unique_id("req"),
                timeout_ms: 5000,
                log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
                attempt: 1,
            },
            Bytes::from_static(br#"{"s":0}"#),
            &mut DiscardSink,
        )
        .await
        .expect("invoke after the timeout");
    assert_success(&next);
    Box::new(instance).destroy().await;
}

#[tokio::test]
async fn the_handler_sees_only_its_sandbox() {
    let (backend, _data) = backend();
    let code = python(
        "import os, socket\n\
        def handler(event, context):\n\
        \x20   try:\n\
        \x20       open('/usr/hearth-probe', 'w')\n\
        \x20       usr_writable = True\n\
        \x20   except OSError:\n\
        \x20       usr_writable = False\n\
        \x20   return {\n\
        \x20       'uid': os.getuid(), 'gid': os.getgid(),\n\
        \x20       'root': sorted(os.listdir('/')),\n\
        \x20       'pids': len([p for p in os.listdir('/proc') if p.isdigit()]),\n\
        \x20       'interfaces': [name for _, name in socket.if_nameindex()],\n\
        \x20       'hostname': socket.gethostname(),\n\
        \x20       'usr_writable': usr_writable,\n\
        \x20   }\n",
    );
    let mut instance = backend
        .create_instance(spec("isolation", code, 128))
        .await
        .expect("create");
    let run = invoke(&mut instance, "{}").await;
    assert_success(&run);
    let seen: serde_json::Value = serde_json::from_slice(&run.result).expect("json result");
    eprintln!("inside the sandbox: {seen}");
    let (_, function_uid) = instance.uids().expect("the instance's uids");
    assert_eq!(
        (seen["uid"].as_u64(), seen["gid"].as_u64()),
        (Some(u64::from(function_uid)), Some(u64::from(function_uid)))
    );
    let root: Vec<&str> = seen["root"]
        .as_array()
        .expect("root listing")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // `/home` is there, the sandbox's own empty HOME (the agent tests check it).
    for host_only in ["root", "work", "var"] {
        assert!(
            !root.contains(&host_only),
            "/{host_only} is visible: {root:?}"
        );
    }
    assert!(root.contains(&"usr"), "{root:?}");
    assert!(
        seen["pids"].as_u64().is_some_and(|n| n < 10),
        "the host's processes are visible: {seen}"
    );
    assert_eq!(seen["interfaces"], serde_json::json!(["lo"]));
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert_ne!(seen["hostname"].as_str(), Some(host_name.trim()));
    assert_eq!(seen["usr_writable"], false);
    Box::new(instance).destroy().await;
}

#[tokio::test]
async fn a_node_handler_returns_its_event() {
    let (backend, _data) = backend();
    let code = package(
        "index.js",
        "exports.handler = async (event, context) => ({ got: event });\n",
    );
    let mut spec = spec("node-echo", code, 128);
    spec.runtime = Runtime::Nodejs;
    let mut instance = backend.create_instance(spec).await.expect("create");
    let run = invoke(&mut instance, r#"{"a":1}"#).await;
    assert_success(&run);
    let value: serde_json::Value = serde_json::from_slice(&run.result).expect("json result");
    assert_eq!(value, serde_json::json!({"got": {"a": 1}}));
    Box::new(instance).destroy().await;
}

/// `Name:\tvalue` lines of `/proc/<pid>/status`.
fn proc_status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The fds a process holds, with what each points at.
fn open_fds(pid: u32) -> Vec<(i32, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_string_lossy().parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

#[tokio::test]
async fn the_agents_hold_no_power_and_nothing_of_the_workers() {
    let (backend, data) = backend();
    // A descriptor the worker leaks (open, not close-on-exec) while an agent starts.
    let secret = data.path().join("worker-secret");
    std::fs::write(&secret, "s").unwrap();
    let leaked = std::fs::File::open(&secret).unwrap();
    let leaked_fd = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    // SAFETY: clearing FD_CLOEXEC on a descriptor we own.
    assert_eq!(unsafe { libc::fcntl(leaked_fd, libc::F_SETFD, 0) }, 0);
    let mut instance = backend
        .create_instance(spec(
            "powerless",
            python("def handler(e, c):\n    return 1\n"),
            64,
        ))
        .await
        .expect("create");
    drop(leaked);
    assert_success(&invoke(&mut instance, "{}").await);
    let outer = instance.pid().expect("the outer agent's pid");
    let (agent_uid, function_uid) = instance.uids().expect("uids");
    assert_ne!(agent_uid, function_uid);
    // The outer agent only waits for the sandbox's PID 1 (issue 10.10): no capability
    // of any set, not root, non-dumpable.
    let status = proc_status(outer);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status[set], "0000000000000000",
            "outer agent {set}: {status:?}"
        );
    }
    assert!(
        status["Uid"].starts_with(&agent_uid.to_string()),
        "{status:?}"
    );
    assert_eq!(status["NoNewPrivs"], "1", "{status:?}");
    // PID 1 of the sandbox: real and saved uid the agent's, effective the function's
    // (issue 10.2).
    let children =
        std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).expect("children");
    let inner: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let status = proc_status(inner);
    let uids: Vec<&str> = status["Uid"].split_whitespace().collect();
    let (a, f) = (agent_uid.to_string(), function_uid.to_string());
    assert_eq!(
        uids,
        [a.as_str(), f.as_str(), a.as_str(), f.as_str()],
        "{status:?}"
    );
    assert_eq!(status["CapEff"], "0000000000000000", "{status:?}");
    // Neither agent holds the leaked descriptor: inherited fds are closed, not only
    // marked close-on-exec (issue 10.10).
    for pid in [outer, inner] {
        for (fd, target) in open_fds(pid) {
            assert!(
                !target.ends_with("worker-secret"),
                "agent {pid} holds the worker's fd {fd} -> {target}"
            );
        }
    }
    Box::new(instance).destroy().await;
}

/// The CPU quota is the function's: its processes (the python zygote's forks, here one
/// that spins; a node standby once it loads the code) are in the group with the quota;
/// the agent is not (its bookkeeping never spends the function's share). Whether the
/// kernel throttles a spinning process depends on the host's load: not asserted.
#[tokio::test]
async fn the_function_and_not_the_agent_is_under_the_cpu_quota() {
    let (backend, _data) = backend();
    let spin = "import time\n\
        def handler(event, context):\n\
        \x20   end = time.process_time() + 0.2\n\
        \x20   while time.process_time() < end:\n\
        \x20       pass\n\
        \x20   return open('/proc/self/cgroup').read()\n";
    let node = "exports.handler = () => require('fs').readFileSync('/proc/self/cgroup', 'utf8');\n";
    let mut python_spec = spec("quota-py", python(spin), 128);
    python_spec.cpus = Some(0.25);
    let mut node_spec = spec("quota-node", package("index.js", node), 128);
    node_spec.runtime = Runtime::Nodejs;
    for spec in [python_spec, node_spec] {
        let mut instance = backend.create_instance(spec).await.expect("create");
        let dirs = instance.cgroup_dirs();
        let quota_group = dirs
            .iter()
            .find(|d| d.ends_with("fn"))
            .or_else(|| dirs.iter().find(|d| d.join("cpu.max").exists()))
            .expect("a cgroup with the CPU quota")
            .clone();
        let run = invoke(&mut instance, "{}").await;
        assert_success(&run);
        let cgroups: String = serde_json::from_slice(&run.result).unwrap();
        // `N:cpu,cpuacct:/path` on v1, `0::/path` on v2.
        let function_cpu = cgroups
            .lines()
            .find(|line| {
                let controllers = line.split(':').nth(1).unwrap_or("x");
                controllers.is_empty() || controllers.split(',').any(|c| c == "cpu")
            })
            .expect("the cpu line of /proc/self/cgroup");
        if quota_group.ends_with("fn") {
            assert!(function_cpu.ends_with("/fn"), "{function_cpu}");
            let agent_group = quota_group.parent().unwrap();
            let quota = std::fs::read_to_string(agent_group.join("cpu.cfs_quota_us")).unwrap();
            assert_eq!(quota.trim(), "-1", "the agent's group has no quota");
            let ours = std::fs::read_to_string(quota_group.join("cpu.cfs_quota_us")).unwrap();
            assert_ne!(ours.trim(), "-1", "the function's group has one");
            assert!(
                !cgroup_pids(&[agent_group.to_path_buf()]).is_empty(),
                "the agent stays in the instance's own group"
            );
        }
        Box::new(instance).destroy().await;
    }
}
