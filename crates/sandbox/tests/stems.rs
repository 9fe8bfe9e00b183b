//! Native stems against the real kernel and agent: a stem becomes exactly one function's
//! instance, keeps its id and its cgroup, takes the function's limits, and is consumed.
//!
//! Needs root and the static agent (`$HEARTH_AGENT`, else the workspace's release
//! build); nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use bytes::Bytes;
use hearth_core::protocol::{InvokeSpec, OutcomeStatus};
use hearth_core::Runtime;
use hearth_sandbox::native::{NativeBackend, NativeConfig};
use hearth_sandbox::stem::Stem;
use hearth_sandbox::stem::StemKind;
use hearth_sandbox::{
    DiscardSink, Instance, InstanceSpec, SandboxBackend, SandboxError, StemBackend,
};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn backend() -> (NativeBackend, TempDir) {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the stem tests need root");
    let agent = std::env::var_os("HEARTH_AGENT").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/agent/x86_64-unknown-linux-gnu/release/hearth-agent")
        },
        PathBuf::from,
    );
    assert!(
        agent.is_file(),
        "no agent at {}: scripts/build.sh",
        agent.display()
    );
    let data = tempfile::tempdir().expect("temp dir");
    let backend = NativeBackend::new(NativeConfig::new(agent, data.path())).expect("backend");
    (backend, data)
}

fn python(source: &str) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(source.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "main.py", source.as_bytes())
        .expect("tar entry");
    Bytes::from(builder.into_inner().expect("tar"))
}

fn spec(name: &str, code: Bytes, memory_mb: u64) -> InstanceSpec {
    InstanceSpec {
        instance_id: format!("test-{}-{name}", std::process::id()),
        function_name: name.into(),
        version: 1,
        runtime: Runtime::Python,
        memory_mb,
        cpus: Some(0.5),
        output_quota_mb: 0,
        env: [("WHO".to_string(), name.to_string())].into(),
        code_tar: code,
        layer: None,
    }
}

const REPORT: &str = "import os\n\
def handler(event, context):\n    \
    return {'who': os.environ['WHO'], 'code': sorted(os.listdir('/code')),\n            \
            'net': os.readlink('/proc/self/ns/net'), 'uid': os.getuid()}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stem_becomes_one_functions_instance_with_its_limits() {
    let (backend, _data) = backend();
    let kind = backend
        .stem_kind(&spec("a", python(REPORT), 128))
        .expect("a python function without a layer has a stem kind");
    assert_eq!(kind.runtime, Runtime::Python);
    let mut layered = spec("l", python(REPORT), 128);
    layered.layer = Some(PathBuf::from("/nonexistent-layer"));
    assert_eq!(
        backend.stem_kind(&layered),
        None,
        "a layer needs its own root"
    );

    let stem_a = backend.grow_stem(&kind).await.expect("stem a");
    let stem_b = backend.create_stem(&kind).await.expect("stem b");
    let (id_a, id_b) = (stem_a.id().to_string(), stem_b.id().to_string());
    assert_ne!(id_a, id_b);

    let mut a = backend
        .specialize_stem(stem_a, spec("a", python(REPORT), 96))
        .await
        .expect("a");
    // The function's memory limit replaced the stem's.
    let dirs = a.cgroup_dirs();
    let limit = dirs
        .iter()
        .find_map(|dir| {
            std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(dir.join("memory.max")))
                .ok()
        })
        .unwrap_or_else(|| panic!("no memory limit file in {dirs:?}"));
    assert_eq!(limit.trim(), (96u64 << 20).to_string());
    let mut b = backend
        .specialize(stem_b, spec("b", python(REPORT), 128))
        .await
        .expect("b");
    assert_eq!(
        a.id(),
        id_a,
        "the instance keeps its stem's id (and cgroup)"
    );
    assert_eq!(b.id(), id_b);

    let mut seen = Vec::new();
    for who in ["a", "b", "a"] {
        let instance: &mut dyn Instance = if who == "a" { &mut a } else { b.as_mut() };
        let invoke = InvokeSpec {
            request_id: format!("r-{who}"),
            timeout_ms: 30_000,
            log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
            attempt: 1,
        };
        let run = instance
            .run_event(invoke, Bytes::from_static(b"{}"), &mut DiscardSink)
            .await
            .expect("invoke");
        assert_eq!(run.outcome.status, OutcomeStatus::Success, "{run:?}");
        let result: serde_json::Value = serde_json::from_slice(&run.result).unwrap();
        assert_eq!(result["who"], who, "{result}");
        assert_eq!(result["code"], serde_json::json!(["main.py"]), "{result}");
        let uid = result["uid"].as_u64().unwrap();
        assert_ne!(uid, 0, "{result}");
        seen.push((result["net"].as_str().unwrap().to_string(), uid));
    }
    assert_ne!(seen[0], seen[1], "two functions, two sandboxes, two uids");
    assert_ne!(seen[0].1, seen[1].1, "each instance its own uid");
    assert_eq!(
        seen[0], seen[2],
        "a stays in the sandbox (and uid) its stem was"
    );
    let (_, a_function_uid) = a.uids().expect("a specialized stem holds its uids");
    assert_eq!(u64::from(a_function_uid), seen[0].1);
    Box::new(a).destroy().await;
    b.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_fails_to_load_in_a_stem_is_the_users_fault_and_ends_the_stem() {
    let (backend, _data) = backend();
    let broken = spec("broken", python("def handler(:\n"), 128);
    let kind = backend.stem_kind(&broken).unwrap();
    let stem = backend.create_stem(&kind).await.unwrap();
    let error = match backend.specialize(stem, broken).await {
        Ok(_) => panic!("a syntax error loaded"),
        Err(e) => e,
    };
    assert!(
        matches!(&error, SandboxError::InitFailed { message } if message.contains("SyntaxError")),
        "{error:?}"
    );
    let _: StemKind = kind;
}

fn tar_of(file: &str, source: &str) -> Bytes {
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

async fn run_once(instance: &mut dyn Instance) -> serde_json::Value {
    let invoke = InvokeSpec {
        request_id: "r".into(),
        timeout_ms: 30_000,
        log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
        attempt: 1,
    };
    let run = instance
        .run_event(invoke, Bytes::from_static(b"{}"), &mut DiscardSink)
        .await
        .expect("invoke");
    assert_eq!(run.outcome.status, OutcomeStatus::Success, "{run:?}");
    serde_json::from_slice(&run.result).unwrap()
}

/// Module-level code sees the function's environment, not the stem's; the code the stem
/// received belongs to no one the function is, so it cannot be changed.
const PYTHON_LOAD: &str = "import os, sys\n\
WHO_AT_LOAD = os.environ.get('WHO')\n\
def handler(event, context):\n    \
    try:\n        open('/code/planted.py', 'w').write('x')\n        wrote = True\n    \
    except OSError:\n        wrote = False\n    \
    return {'who': WHO_AT_LOAD, 'name': context.function_name, 'wrote': wrote,\n            \
            'hash_seed_fixed': sys.flags.hash_randomization == 0, 'uid': os.getuid()}\n";

const NODE_LOAD: &str = "const fs = require('fs');\n\
const whoAtLoad = process.env.WHO;\n\
exports.handler = () => {\n  \
  let wrote = true;\n  \
  try { fs.writeFileSync('/code/planted.js', 'x'); } catch (e) { wrote = false; }\n  \
  return { who: whoAtLoad, name: process.env.HEARTH_FUNCTION_NAME, wrote, uid: process.getuid() };\n\
};\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stems_waiting_interpreter_loads_the_code_with_the_functions_environment() {
    let (backend, _data) = backend();
    let mut python_fn = spec("py", tar_of("main.py", PYTHON_LOAD), 128);
    let mut node_fn = spec("js", tar_of("index.js", NODE_LOAD), 128);
    node_fn.runtime = Runtime::Nodejs;
    node_fn.instance_id = format!("{}-js", node_fn.instance_id);
    // A variable that shapes the interpreter's start: that function gets a fresh one.
    let mut seeded = spec("seeded", tar_of("main.py", PYTHON_LOAD), 128);
    seeded.instance_id = format!("{}-seeded", seeded.instance_id);
    seeded
        .env
        .insert("PYTHONHASHSEED".to_string(), "0".to_string());
    python_fn.instance_id = format!("{}-py", python_fn.instance_id);
    for (function, expect_seed) in [
        (python_fn, Some(false)),
        (seeded, Some(true)),
        (node_fn, None),
    ] {
        let name = function.function_name.clone();
        let kind = backend.stem_kind(&function).expect("a stem kind");
        let stem = backend.create_stem(&kind).await.expect("stem");
        let mut instance = backend
            .specialize(stem, function)
            .await
            .expect("specialize");
        let result = run_once(instance.as_mut()).await;
        assert_eq!(result["who"], name.as_str(), "{result}");
        assert_eq!(result["name"], name.as_str(), "{result}");
        assert_eq!(
            result["wrote"], false,
            "the function wrote its code: {result}"
        );
        assert_ne!(result["uid"], 0, "{result}");
        if let Some(fixed) = expect_seed {
            assert_eq!(result["hash_seed_fixed"], fixed, "{result}");
        }
        instance.destroy().await;
    }
}

/// The cpu cgroup v1 dir of instance `id`, when the host has one (`None` on v2).
fn v1_cpu_dir(id: &str) -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "cpu")
            .then(|| path.to_string())
    })?;
    let dir = Path::new("/sys/fs/cgroup/cpu")
        .join(path.trim_start_matches('/'))
        .join("hearth")
        .join(id);
    Some(dir).filter(|d| d.is_dir())
}

/// A node stem says ready only once node has booted and its standby sits in the
/// function's CPU group: a cold start that takes it waits for neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stem_is_ready_once_its_standby_booted_inside_the_function_group() {
    let (backend, _data) = backend();
    let mut function = spec("booted", tar_of("index.js", NODE_LOAD), 128);
    function.runtime = Runtime::Nodejs;
    let kind = backend.stem_kind(&function).expect("a stem kind");
    let stem = backend.create_stem(&kind).await.expect("stem");
    if let Some(dir) = v1_cpu_dir(stem.id()) {
        let procs = std::fs::read_to_string(dir.join("fn/cgroup.procs")).unwrap();
        let pids: Vec<&str> = procs.split_whitespace().collect();
        assert_eq!(pids.len(), 1, "one standby in fn: {procs:?}");
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.contains("bootstrap.js") && cmdline.contains("--stem"),
            "{cmdline}"
        );
    }
    let mut instance = backend
        .specialize(stem, function)
        .await
        .expect("specialize");
    let result = run_once(instance.as_mut()).await;
    assert_eq!(result["who"], "booted", "{result}");
    instance.destroy().await;
}
