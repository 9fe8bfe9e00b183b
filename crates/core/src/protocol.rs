//! The frames spoken between a worker and the agent inside each sandbox.
//!
//! A frame is `[u32 BE header length][u32 BE payload length][header JSON][payload]`.
//! The header is a [`ToAgent`] or [`FromAgent`] message; the payload carries bulk bytes
//! that would be wasteful as JSON: the code tar in `Init`, the event in `Invoke`, the
//! handler's return value in `Result`. The agent reads frames on its stdin and writes
//! them on its stdout; nothing else may write to that stream.
//!
//! An instance of a compiled runtime (cpp, go) is started for one of two
//! [`Purpose`]s. `Build`: `Init` carries the uploaded source, and the one `Invoke`
//! (empty payload) compiles it in a fresh process; its `Result` is a success whose
//! payload is the artifact (a tar holding [`ARTIFACT_PROGRAM`] and
//! [`ARTIFACT_MANIFEST`]), or an `error` whose message is the compiler's output.
//! `Serve`: `Init` carries that artifact as the code, and every `Invoke` runs the
//! program in a fresh process.
//!
//! An interpreted runtime (python) is started for `Build` to install its dependencies:
//! `Init` carries the wheels fetched on the host and `requirements.txt`, the one
//! `Invoke` installs them offline, and the `Result`'s payload is a tar of the installed
//! tree, rooted at [`DEPS_PYTHON`]. A version's installed dependencies (its layer) are
//! visible read-only at [`DEPS_DIR`] in its instances (and a Go build's module cache
//! at [`DEPS_GOMOD`] under it).

use crate::invocation::{CapturedOutput, ErrorInfo};
use crate::runtime::Runtime;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// Bumped whenever a frame changes shape; `Init` and `Ready` carry it.
pub const PROTOCOL_VERSION: u32 = 3;
/// Largest header accepted (inline stdout/stderr are capped at 1 MB each).
pub const MAX_HEADER_BYTES: u32 = 32 << 20;
/// Largest payload accepted (a code tar, at most 250 MB uncompressed, plus headers).
pub const MAX_PAYLOAD_BYTES: u32 = 512 << 20;
/// Length of the fixed prefix before each header.
pub const PREFIX_BYTES: usize = 8;
/// Version of the compiled runtimes' build recipe: entrypoint templates, compiler flags,
/// the artifact's layout. Artifacts are stored under it, so changing any of those and
/// bumping it makes every compiled function build afresh rather than run an artifact
/// made the old way.
pub const BUILD_VERSION: u32 = 1;
/// The built program inside a compiled function's artifact (and its code directory).
pub const ARTIFACT_PROGRAM: &str = "function";
/// The manifest beside it: JSON saying how the program takes its event.
pub const ARTIFACT_MANIFEST: &str = "function.json";
/// Where a version's dependency layer is visible, read-only, inside its sandboxes.
pub const DEPS_DIR: &str = "/deps";
/// The layer's Python packages (a `pip install --target` tree), under [`DEPS_DIR`].
pub const DEPS_PYTHON: &str = "python";
/// The layer's Node.js packages, under [`DEPS_DIR`].
pub const DEPS_NODE: &str = "node_modules";
/// The layer's Go module cache (for builds), under [`DEPS_DIR`].
pub const DEPS_GOMOD: &str = "gomod";
/// The agent's environment variable naming the fd (opened by the worker) of the
/// `cgroup.procs` that holds the function's CPU quota; every process the agent starts
/// writes `0` there before it runs anything. Absent: the quota is the whole sandbox's.
pub const FUNCTION_CGROUP_FD_ENV: &str = "HEARTH_FUNCTION_CGROUP_FD";

/// The agent's environment variable, in a container, naming the abstract unix socket it
/// binds at start (in the container's own network namespace, before any other process
/// exists there) and on which it waits for the worker to hand it the same fd as
/// [`FUNCTION_CGROUP_FD_ENV`] names natively (`SCM_RIGHTS`; one byte and no fd when the
/// host has no such group). The engine cannot pass an fd into a container.
pub const CPU_GROUP_SOCKET_ENV: &str = "HEARTH_CPU_GROUP_SOCKET";
/// The abstract socket name (without its leading NUL) the container's agent binds.
pub const CPU_GROUP_SOCKET: &str = "hearth-agent-cpu-group";

/// Messages from the worker to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    /// Set the sandbox up and load the code (payload: an uncompressed tar of the code).
    Init(InitSpec),
    /// Only after an `Init` with `stem` set and its `Ready`: become this function's
    /// instance (payload: the code tar for the agent to unpack, or empty when the code is
    /// already in place, as in a container); answered by a second `Ready`.
    Specialize(SpecializeSpec),
    /// Run one invocation in a fresh process (payload: the event as JSON).
    Invoke(InvokeSpec),
    /// Kill everything and exit.
    Shutdown,
}

/// Messages from the agent to the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromAgent {
    /// Init done; the next invocation's process is being prepared.
    Ready(ReadyInfo),
    /// A piece of the running invocation's stdout or stderr, as it was written
    /// (payload: the bytes). Together they are the full log; the inline copy in
    /// `Result` is capped.
    Log(LogChunk),
    /// A piece of the tar stream of the invocation's output directory (payload: the
    /// bytes), sent after the process has ended and before `Result`.
    Output,
    /// One invocation ended (payload: the handler's return value as JSON, may be empty).
    Result(InvokeOutcome),
    /// After a `Result` with [`InvokeOutcome::settles`] (answered while its process was
    /// still exiting): the process has ended and the invocation's leftovers are swept,
    /// so what the sandbox's cgroup counts from here on is no longer the invocation's.
    /// The agent reads no frame before it has sent this.
    Settled(SettleReport),
    /// The agent cannot go on (bad init, broken runtime); it exits after sending this.
    Failed(AgentFailure),
}

/// Everything the agent needs to become a function instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitSpec {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Runtime of the function.
    pub runtime: Runtime,
    /// Function name, for `context.function_name`.
    pub function_name: String,
    /// Function version, for `context.version`.
    pub version: u64,
    /// Memory limit, for `context.memory_limit_mb`.
    pub memory_limit_mb: u64,
    /// The user's environment variables; the agent adds the platform's, which win.
    pub env: BTreeMap<String, String>,
    /// Absolute path of the interpreter to run (e.g. `/usr/bin/python3`), already
    /// resolved past shims and symlinks by the worker. For a compiled runtime: the
    /// toolchain's driver when building; the built program when serving (the agent runs
    /// [`ARTIFACT_PROGRAM`] from its code directory).
    pub interpreter: String,
    /// How the agent builds its root file system.
    pub root: RootSetup,
    /// Size of the writable `/tmp`, MB.
    pub tmp_size_mb: u64,
    /// Cap on inline stdout and on inline stderr, bytes each.
    pub inline_output_limit: u64,
    /// Size of the per-invocation output directory (`$OUTPUT_DIR`), MB: the output
    /// quota. 0 means the function gets no output directory.
    #[serde(default)]
    pub output_size_mb: u64,
    /// User id the function runs as.
    pub uid: u32,
    /// Group id the function runs as.
    pub gid: u32,
    /// The uid and gid the agent keeps as its real and saved ids once it leaves root (its
    /// effective ids are the function's, for files and for signalling the function's
    /// processes): the kernel checks a signal, `ptrace` or a `/proc/<pid>` access against
    /// the target's real and saved ids, so the function can reach none of the agent.
    /// `None`: the agent runs as the function's uid (an agent started unprivileged).
    #[serde(default)]
    pub agent_id: Option<u32>,
    /// What the instance is for; only compiled runtimes are ever started to build.
    #[serde(default)]
    pub purpose: Purpose,
    /// A stem: build the sandbox, drop privileges and start the runtime's interpreter
    /// with no code and no function (`function_name`, `version`, `env` are empty), then
    /// wait for [`ToAgent::Specialize`]. The uid is already the one instance's it will be.
    #[serde(default)]
    pub stem: bool,
}

/// What a stem learns when it becomes one function's instance (see [`InitSpec`] for
/// each field): everything of the function that is not fixed when the sandbox is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecializeSpec {
    /// Function name.
    pub function_name: String,
    /// Function version.
    pub version: u64,
    /// Memory limit, MB.
    pub memory_limit_mb: u64,
    /// The user's environment variables.
    pub env: BTreeMap<String, String>,
}

/// What an instance is started for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Serve the function's invocations.
    #[default]
    Serve,
    /// Compile the code once: `interpreter` is the toolchain's driver (`g++`, `go`), the
    /// one `Invoke` runs the build and answers with the artifact.
    Build,
}

/// How the agent gets an isolated root file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RootSetup {
    /// Native backend: the agent is in fresh mount/pid/net/ipc/uts namespaces, still
    /// root. It mounts a tmpfs on `mount_point` (an empty host directory), binds each of
    /// `read_only_dirs` read-only inside it, pivots into it, and drops privileges.
    Native {
        /// Empty host directory to mount the new root on (in the private mount ns).
        mount_point: String,
        /// Host directories bound read-only at the same path (the runtimes' files).
        read_only_dirs: Vec<String>,
        /// Size of the root tmpfs, MB (code + runtime files).
        root_size_mb: u64,
        /// The version's dependency layer: an immutable host directory the worker
        /// unpacked, bound read-only (nosuid, nodev) at [`DEPS_DIR`]; none without one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer_dir: Option<String>,
    },
    /// The sandbox is already isolated (a container): use `/` as it is.
    Existing,
}

/// One invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvokeSpec {
    /// Invocation id, for `context.request_id`.
    pub request_id: String,
    /// Wall-clock limit; the process is killed when it passes.
    pub timeout_ms: u64,
    /// Most bytes of stdout and stderr together sent as `Log` frames; past it the agent
    /// sends [`crate::logs::truncation_marker`] and drops the rest.
    #[serde(default = "default_log_limit_bytes")]
    pub log_limit_bytes: u64,
    /// Which attempt this is: 1 for a sync call and an async one's first run, then 2, 3
    /// for an async retry or redelivery. The function sees it as `HEARTH_ATTEMPT`.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn default_log_limit_bytes() -> u64 {
    crate::logs::DEFAULT_LOG_LIMIT_BYTES
}

fn first_attempt() -> u32 {
    1
}

/// Sent once init has finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The agent's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The agent's own version (its crate version).
    pub agent_version: String,
    /// Time spent in init, ms.
    pub init_ms: f64,
}

/// How the invocation's process ended, as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// Returned a value.
    Success,
    /// The handler raised or returned an error.
    Error,
    /// Killed at its deadline.
    Timeout,
    /// Died without a result (signal, exit without result). The worker turns this into
    /// `oom` when the cgroup's OOM counter moved.
    Crashed,
}

/// The end of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvokeOutcome {
    /// The invocation id from [`InvokeSpec`].
    pub request_id: String,
    /// How it ended.
    pub status: OutcomeStatus,
    /// The handler's error, or why it crashed.
    pub error: Option<ErrorInfo>,
    /// Exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// Signal that killed the process, when one did.
    pub signal: Option<i32>,
    /// Captured stdout/stderr, at most `inline_output_limit` bytes each (flattened:
    /// members `stdout`, `stderr`, `truncated`).
    #[serde(flatten)]
    pub output: CapturedOutput,
    /// From handing the event over to the process's exit, ms.
    pub handler_duration_ms: f64,
    /// `ru_maxrss` of the process, bytes.
    pub max_rss_bytes: u64,
    /// User CPU time of the process, ms.
    pub user_cpu_ms: f64,
    /// System CPU time of the process, ms.
    pub system_cpu_ms: f64,
    /// Processes left behind by the invocation that the agent killed.
    pub leftovers_killed: u32,
    /// False when the instance should not serve again (a runtime process died, a
    /// leftover could not be killed).
    pub healthy: bool,
    /// Bytes of regular files found in the output directory.
    #[serde(default)]
    pub output_bytes: u64,
    /// Whether the output directory filled up (the quota was reached).
    #[serde(default)]
    pub output_quota_exceeded: bool,
    /// Answered before the process had ended: a [`FromAgent::Settled`] follows once it
    /// has (until then the invocation may still use CPU and memory).
    #[serde(default)]
    pub settles: bool,
}

/// The end of an invocation answered early ([`FromAgent::Settled`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettleReport {
    /// The invocation id from [`InvokeSpec`].
    pub request_id: String,
    /// False when the instance must not serve again (`problem` says why).
    pub healthy: bool,
    /// Why the settle failed (a survivor of the sweep, a lost zygote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Which stream a [`FromAgent::Log`] chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The process's stdout.
    Stdout,
    /// The process's stderr.
    Stderr,
}

/// Header of a [`FromAgent::Log`] frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The stream the payload was written to.
    pub stream: LogStream,
}

/// Why the agent gave up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentFailure {
    /// Where it gave up, which says whose fault it is.
    pub phase: FailurePhase,
    /// What went wrong, for the user (e.g. the import error of `main.py`).
    pub message: String,
}

/// Where the agent gave up: the user's code ([`FailurePhase::CodeLoad`]) or the
/// platform (the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePhase {
    /// The function's code failed to load (an import or syntax error, a crash or an
    /// endless loop at load time, a compiled program that died before it was ready):
    /// the user's to fix. `message` is the runtime's own (a traceback).
    CodeLoad,
    /// The sandbox could not be set up before the code was loaded (a mount, seccomp,
    /// dropping privileges, a missing interpreter or toolchain, a bad artifact, a
    /// protocol mismatch): the platform's fault, never the code's.
    Setup,
    /// A runtime process broke after `Ready`.
    Runtime,
}

impl FailurePhase {
    /// The name in frames and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePhase::CodeLoad => "code_load",
            FailurePhase::Setup => "setup",
            FailurePhase::Runtime => "runtime",
        }
    }
}

impl std::fmt::Display for FailurePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed.
    #[error("agent stream i/o: {0}")]
    Io(#[from] io::Error),
    /// A length over the limits: a corrupt or hostile stream.
    #[error("frame too large: header {header} bytes, payload {payload} bytes")]
    TooLarge {
        /// Header length announced.
        header: u32,
        /// Payload length announced.
        payload: u32,
    },
    /// The header is not a valid message.
    #[error("bad frame header: {0}")]
    Json(#[from] serde_json::Error),
}

/// Parses the 8-byte prefix into (header length, payload length), checking limits.
pub fn parse_prefix(prefix: [u8; PREFIX_BYTES]) -> Result<(usize, usize), FrameError> {
    let header = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let payload = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if header > MAX_HEADER_BYTES || payload > MAX_PAYLOAD_BYTES {
        return Err(FrameError::TooLarge { header, payload });
    }
    Ok((header as usize, payload as usize))
}

/// Encodes a whole frame into one buffer (one `write` on the stream).
pub fn encode<T: Serialize>(message: &T, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = serde_json::to_vec(message)?;
    let too_large = FrameError::TooLarge {
        header: u32::try_from(header.len()).unwrap_or(u32::MAX),
        payload: u32::try_from(payload.len()).unwrap_or(u32::MAX),
    };
    let (Ok(hlen), Ok(plen)) = (u32::try_from(header.len()), u32::try_from(payload.len())) else {
        return Err(too_large);
    };
    if hlen > MAX_HEADER_BYTES || plen > MAX_PAYLOAD_BYTES {
        return Err(too_large);
    }
    let mut frame = Vec::with_capacity(PREFIX_BYTES + header.len() + payload.len());
    frame.extend_from_slice(&hlen.to_be_bytes());
    frame.extend_from_slice(&plen.to_be_bytes());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Writes one frame and flushes.
pub fn write_frame<T: Serialize>(
    w: &mut impl Write,
    message: &T,
    payload: &[u8],
) -> Result<(), FrameError> {
    w.write_all(&encode(message, payload)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub fn read_frame<T: DeserializeOwned>(
    r: &mut impl Read,
) -> Result<Option<(T, Vec<u8>)>, FrameError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut filled = 0;
    while filled < PREFIX_BYTES {
        match r.read(&mut prefix[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (hlen, plen) = parse_prefix(prefix)?;
    let mut header = vec![0u8; hlen];
    r.read_exact(&mut header)?;
    let mut payload = vec![0u8; plen];
    r.read_exact(&mut payload)?;
    Ok(Some((serde_json::from_slice(&header)?, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_their_payload() {
        let msg = ToAgent::Invoke(InvokeSpec {
            request_id: "r1".into(),
            timeout_ms: 3000,
            log_limit_bytes: 1 << 20,
            attempt: 2,
        });
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg, b"{\"x\":1}").unwrap();
        write_frame(&mut buf, &ToAgent::Shutdown, b"").unwrap();
        let mut r = buf.as_slice();
        let (got, payload) = read_frame::<ToAgent>(&mut r).unwrap().unwrap();
        assert_eq!((got, payload.as_slice()), (msg, &b"{\"x\":1}"[..]));
        let (got, _) = read_frame::<ToAgent>(&mut r).unwrap().unwrap();
        assert_eq!(got, ToAgent::Shutdown);
        assert!(read_frame::<ToAgent>(&mut r).unwrap().is_none());
    }

    #[test]
    fn failure_phases_travel_by_name() {
        for phase in [
            FailurePhase::CodeLoad,
            FailurePhase::Setup,
            FailurePhase::Runtime,
        ] {
            let failed = FromAgent::Failed(AgentFailure {
                phase,
                message: "m".into(),
            });
            let json = serde_json::to_value(&failed).unwrap();
            assert_eq!(json["phase"], phase.as_str());
            assert_eq!(serde_json::from_value::<FromAgent>(json).unwrap(), failed);
        }
    }

    #[test]
    fn captured_output_travels_as_flat_members() {
        let outcome = InvokeOutcome {
            request_id: "r".into(),
            status: OutcomeStatus::Success,
            error: None,
            exit_code: Some(0),
            signal: None,
            output: CapturedOutput {
                stdout: "out".into(),
                stderr: "err".into(),
                truncated: true,
            },
            handler_duration_ms: 1.0,
            max_rss_bytes: 0,
            user_cpu_ms: 0.0,
            system_cpu_ms: 0.0,
            leftovers_killed: 0,
            healthy: true,
            output_bytes: 0,
            output_quota_exceeded: false,
            settles: false,
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["stdout"], "out");
        assert_eq!(json["stderr"], "err");
        assert_eq!(json["truncated"], true);
        assert!(json.get("output").is_none(), "no nested member: {json}");
        assert_eq!(
            serde_json::from_value::<InvokeOutcome>(json).unwrap(),
            outcome
        );
    }

    #[test]
    fn an_init_without_a_purpose_serves() {
        let init = InitSpec {
            protocol_version: PROTOCOL_VERSION,
            runtime: Runtime::Cpp,
            function_name: "f".into(),
            version: 1,
            memory_limit_mb: 128,
            env: BTreeMap::new(),
            interpreter: "/code/function".into(),
            root: RootSetup::Existing,
            tmp_size_mb: 64,
            inline_output_limit: 1024,
            output_size_mb: 0,
            uid: 65534,
            gid: 65534,
            agent_id: None,
            purpose: Purpose::Build,
            stem: false,
        };
        let mut json = serde_json::to_value(&init).unwrap();
        assert_eq!(json["purpose"], "build");
        json.as_object_mut().unwrap().remove("purpose");
        let read: InitSpec = serde_json::from_value(json).unwrap();
        assert_eq!(read.purpose, Purpose::Serve);
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut prefix = [0u8; PREFIX_BYTES];
        prefix[..4].copy_from_slice(&(MAX_HEADER_BYTES + 1).to_be_bytes());
        assert!(matches!(
            parse_prefix(prefix),
            Err(FrameError::TooLarge { .. })
        ));
        let frame = encode(&ToAgent::Shutdown, b"abc").unwrap();
        let mut cut = &frame[..frame.len() - 1];
        assert!(read_frame::<ToAgent>(&mut cut).is_err());
        let mut partial_prefix = &frame[..3];
        assert!(read_frame::<ToAgent>(&mut partial_prefix).is_err());
    }
}
