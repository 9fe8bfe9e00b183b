//! Drives a real hearth-agent process over its stdio, as the worker does.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod compiled;

use hearth_core::protocol::{
    read_frame, write_frame, FromAgent, InitSpec, InvokeOutcome, InvokeSpec, LogStream, RootSetup,
    ToAgent, PROTOCOL_VERSION,
};
use hearth_core::Runtime;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// How long any single frame may take to arrive before the test fails.
pub const FRAME_WAIT: Duration = Duration::from_secs(60);
/// Largest payload of a `Log` or `Output` frame.
pub const MAX_PIECE: usize = 1 << 20;

/// The agent binary cargo built for these tests.
pub fn agent_path() -> &'static str {
    env!("CARGO_BIN_EXE_hearth-agent")
}

/// An uncompressed tar holding `files` (path, content).
pub fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// An init spec for `runtime` with test-friendly defaults.
pub fn spec(runtime: Runtime, root: RootSetup) -> InitSpec {
    InitSpec {
        protocol_version: PROTOCOL_VERSION,
        runtime,
        function_name: "fn-under-test".into(),
        version: 7,
        memory_limit_mb: 256,
        env: BTreeMap::from([
            ("GREETING".to_string(), "hello".to_string()),
            ("HEARTH_FUNCTION_NAME".to_string(), "spoofed".to_string()),
        ]),
        interpreter: match runtime {
            Runtime::Nodejs => "/usr/bin/node".into(),
            _ => "/usr/bin/python3".into(),
        },
        root,
        tmp_size_mb: 64,
        inline_output_limit: 64 * 1024,
        output_size_mb: 0,
        uid: 65534,
        gid: 65534,
        agent_id: None,
        purpose: hearth_core::protocol::Purpose::Serve,
        stem: false,
    }
}

/// A running agent and the frames it sends.
pub struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Option<(FromAgent, Vec<u8>)>>,
    /// The agent's base dir in Existing mode (kept alive for the agent's life).
    pub root: Option<tempfile::TempDir>,
}

/// What came back from one invocation.
#[derive(Debug)]
pub struct Reply {
    pub outcome: InvokeOutcome,
    pub payload: Vec<u8>,
    /// The `Log` frames' payloads, in order.
    pub logs: Vec<(LogStream, Vec<u8>)>,
    /// The `Output` frames' payloads, in order.
    pub output_pieces: Vec<Vec<u8>>,
    /// The `Settled` frame that follows a result answered early (`outcome.settles`).
    pub settled: Option<hearth_core::protocol::SettleReport>,
}

/// One entry of the output tar.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub link: Option<String>,
    pub data: Vec<u8>,
}

impl Reply {
    /// Everything logged on `stream`.
    pub fn log(&self, stream: LogStream) -> Vec<u8> {
        self.logs
            .iter()
            .filter(|(s, _)| *s == stream)
            .flat_map(|(_, bytes)| bytes.iter().copied())
            .collect()
    }

    /// The output tar's entries (empty when no `Output` frame came).
    pub fn outputs(&self) -> Vec<OutputEntry> {
        let stream = self.output_pieces.concat();
        if stream.is_empty() {
            return Vec::new();
        }
        assert_eq!(stream.len() % 512, 0, "a tar stream is whole blocks");
        assert!(
            stream.ends_with(&[0u8; 1024]),
            "the tar ends with two zero blocks"
        );
        let mut archive = tar::Archive::new(stream.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                OutputEntry {
                    path: entry.path().unwrap().to_string_lossy().into_owned(),
                    kind: entry.header().entry_type(),
                    link: entry
                        .link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    data,
                }
            })
            .collect()
    }

    /// The output entry at `path`.
    pub fn output(&self, path: &str) -> OutputEntry {
        let outputs = self.outputs();
        outputs
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} is not in the outputs: {outputs:#?}"))
            .clone()
    }

    /// The payload as JSON.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload is not JSON ({e}): {:?}\n{:#?}",
                String::from_utf8_lossy(&self.payload),
                self.outcome
            )
        })
    }
}

impl Agent {
    /// Starts the agent in Existing mode under a fresh temp dir and sends `Init`.
    pub fn existing(mut init: InitSpec, files: &[(&str, &str)]) -> (Agent, FromAgent) {
        init.root = RootSetup::Existing;
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = Command::new(agent_path());
        cmd.env("HEARTH_AGENT_ROOT", root.path());
        let mut agent = Agent::spawn(cmd);
        agent.root = Some(root);
        let first = agent.init(&init, &tar_of(files));
        (agent, first)
    }

    /// Starts `cmd` (the agent binary) with piped stdin/stdout.
    pub fn spawn(mut cmd: Command) -> Agent {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn hearth-agent");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || loop {
            match read_frame::<FromAgent>(&mut stdout) {
                Ok(Some(frame)) => {
                    if tx.send(Some(frame)).is_err() {
                        return;
                    }
                }
                _ => {
                    let _ = tx.send(None);
                    return;
                }
            }
        });
        Agent {
            child,
            stdin,
            frames,
            root: None,
        }
    }

    /// Sends `Init` with `code` and returns the first frame back.
    pub fn init(&mut self, init: &InitSpec, code: &[u8]) -> FromAgent {
        self.send(&ToAgent::Init(init.clone()), code);
        self.next()
            .expect("agent closed its stdout instead of answering init")
            .0
    }

    fn send(&mut self, message: &ToAgent, payload: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        write_frame(stdin, message, payload).unwrap();
    }

    /// The next frame, `None` when the agent closed its stdout.
    pub fn next(&mut self) -> Option<(FromAgent, Vec<u8>)> {
        self.frames
            .recv_timeout(FRAME_WAIT)
            .expect("no frame from the agent in time")
    }

    /// One invocation with `event` (JSON text): collects its `Log` and `Output` frames
    /// until the `Result`, checking their order (`Log`*, then `Output`*, then
    /// `Result`) and sizes.
    pub fn invoke(&mut self, request_id: &str, timeout_ms: u64, event: &str) -> Reply {
        self.send(
            &ToAgent::Invoke(InvokeSpec {
                request_id: request_id.into(),
                timeout_ms,
                log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
                attempt: 1,
            }),
            event.as_bytes(),
        );
        let mut logs = Vec::new();
        let mut output_pieces: Vec<Vec<u8>> = Vec::new();
        loop {
            match self.next() {
                Some((FromAgent::Log(chunk), bytes)) => {
                    assert!(
                        output_pieces.is_empty(),
                        "a Log frame after an Output frame"
                    );
                    assert!(!bytes.is_empty(), "an empty Log frame");
                    assert!(
                        bytes.len() <= MAX_PIECE,
                        "Log frame of {} bytes",
                        bytes.len()
                    );
                    logs.push((chunk.stream, bytes));
                }
                Some((FromAgent::Output, bytes)) => {
                    assert!(!bytes.is_empty(), "an empty Output frame");
                    assert!(
                        bytes.len() <= MAX_PIECE,
                        "Output frame of {} bytes",
                        bytes.len()
                    );
                    output_pieces.push(bytes);
                }
                Some((FromAgent::Result(outcome), payload)) => {
                    assert_eq!(outcome.request_id, request_id);
                    let settled = outcome.settles.then(|| match self.next() {
                        Some((FromAgent::Settled(report), _)) => {
                            assert_eq!(report.request_id, request_id);
                            report
                        }
                        other => panic!("expected Settled after an early result, got {other:?}"),
                    });
                    return Reply {
                        outcome,
                        payload,
                        logs,
                        output_pieces,
                        settled,
                    };
                }
                other => panic!("expected a result, got {other:?}"),
            }
        }
    }

    /// Sends `Shutdown` and waits for the agent to exit.
    pub fn shutdown(mut self) -> ExitStatus {
        self.send(&ToAgent::Shutdown, b"");
        self.stdin = None;
        self.wait()
    }

    /// Waits (bounded) for the agent to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let mut status = None;
        hearth_testkit::eventually(FRAME_WAIT, "the agent exits", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        })
        .unwrap();
        status.unwrap()
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `pid` is a live (non-zombie) process whose command line contains `needle`.
pub fn process_alive(pid: i64, needle: &str) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie && String::from_utf8_lossy(&cmdline).contains(needle)
}

/// A command for the agent that enters the namespaces the native worker creates.
pub fn native_command() -> Command {
    native_command_for(agent_path())
}

/// [`native_command`] for another agent binary.
pub fn native_command_for(agent: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(agent);
    // SAFETY: unshare is async-signal-safe and touches only the child being spawned.
    unsafe {
        cmd.pre_exec(|| {
            let flags = libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS;
            if libc::unshare(flags) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Whether the tests run as root (native mode needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The files of fixture `name` (`tests/fixtures/functions/<name>`), as (path, text).
pub fn fixture_files(name: &str) -> Vec<(String, String)> {
    let dir = hearth_testkit::fixture(name);
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        files.push((name, fs::read_to_string(&path).unwrap()));
    }
    assert!(!files.is_empty(), "fixture {} is empty", dir.display());
    files
}

/// The files of fixture `name` as the borrowed pairs [`Agent::existing`] takes.
fn borrowed(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect()
}

/// [`Agent::existing`] on the files of fixture `name`.
pub fn existing_fixture(init: InitSpec, name: &str) -> (Agent, FromAgent) {
    Agent::existing(init, &borrowed(&fixture_files(name)))
}

/// An agent serving fixture `name` on `runtime` (built first for a compiled runtime).
pub fn serve_fixture(runtime: Runtime, name: &str) -> Agent {
    if matches!(runtime, Runtime::Cpp | Runtime::Go) {
        return compiled::serve(runtime, &borrowed(&fixture_files(name)));
    }
    let (agent, first) = existing_fixture(spec(runtime, RootSetup::Existing), name);
    assert!(matches!(first, FromAgent::Ready(_)), "{name}: {first:?}");
    agent
}

/// A reply in the API's view of an invocation (`status`, `result`, `error.type`,
/// `message`, `trace`), which the fixture cases of `hearth_testkit::cases` are written in.
pub fn api_view(reply: &Reply) -> serde_json::Value {
    let outcome = &reply.outcome;
    let mut view = serde_json::json!({
        "status": outcome.status,
        "stdout": outcome.output.stdout,
        "stderr": outcome.output.stderr,
    });
    if let Some(error) = &outcome.error {
        view["error"] = serde_json::json!({
            "type": error.kind,
            "message": error.message,
            "trace": error.trace,
        });
    }
    if let Ok(result) = serde_json::from_slice::<serde_json::Value>(&reply.payload) {
        view["result"] = result;
    }
    view
}
