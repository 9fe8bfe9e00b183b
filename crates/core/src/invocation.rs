//! The invocation record: what a client gets back and what history keeps.

use serde::{Deserialize, Serialize};

/// Where an invocation stands or how it ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationStatus {
    /// Accepted, waiting for an instance (async).
    Queued,
    /// Running in an instance.
    Running,
    /// The handler returned.
    Success,
    /// The handler raised or returned an error.
    Error,
    /// The handler ran past its timeout and was killed.
    Timeout,
    /// The instance ran out of memory while the handler ran.
    Oom,
    /// The process died another way (signal, bad exit, lost agent).
    Crashed,
    /// An async invocation that gave up after its retries.
    Failed,
}

impl InvocationStatus {
    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Success => "success",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Oom => "oom",
            Self::Crashed => "crashed",
            Self::Failed => "failed",
        }
    }

    /// Whether the invocation has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// A handler's failure, as the language reported it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Exception class or error name, e.g. `ValueError`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The exception's message.
    pub message: String,
    /// The stack trace, as the runtime formats it.
    pub trace: String,
}

/// Memory the invocation used.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryUsage {
    /// The function's memory limit.
    pub limit_mb: u64,
    /// Peak of the instance's cgroup during this invocation (reset before it).
    pub peak_bytes: u64,
    /// `ru_maxrss` of the invocation's process.
    pub max_rss_bytes: u64,
}

/// CPU time the invocation used, from the instance's cgroup.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// User-mode CPU time, ms.
    pub user_ms: f64,
    /// Kernel-mode CPU time, ms.
    pub system_ms: f64,
    /// CPUs the instance was given (0 in records older than this field).
    #[serde(default)]
    pub cpus: f64,
}

/// Block I/O the invocation caused, from the instance's cgroup.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IoUsage {
    /// Bytes read from block devices.
    pub read_bytes: u64,
    /// Bytes written to block devices.
    pub write_bytes: u64,
}

/// One file the invocation left in its output directory.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the output directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Object-store key.
    pub key: String,
}

/// An entry of the output directory that was not kept, and why.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedOutput {
    /// The entry's path as the sandbox named it.
    pub path: String,
    /// Why it was skipped (a symlink, a device, a path leaving the directory, …).
    pub reason: String,
}

/// What an invocation's process wrote on stdout and stderr, as captured inline.
///
/// Both the API's [`Invocation`] record and the agent protocol's
/// [`InvokeOutcome`](crate::protocol::InvokeOutcome) embed it flattened, so on the
/// wire it is three members beside the others: `stdout`, `stderr`, `truncated`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedOutput {
    /// Captured stdout (lossy UTF-8), at most the inline cap (`inline_output_limit`).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8), at most the inline cap.
    pub stderr: String,
    /// Whether stdout or stderr went past the cap (and was cut at it).
    pub truncated: bool,
}

/// The invocation object of the API.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// ULID of the invocation.
    pub id: String,
    /// Function name.
    pub function: String,
    /// Function version that ran.
    pub version: u64,
    /// Outcome.
    pub status: InvocationStatus,
    /// The handler's return value (JSON), when it returned one.
    pub result: Option<serde_json::Value>,
    /// The handler's failure, or the platform's reason for `timeout`/`oom`/`crashed`.
    pub error: Option<ErrorInfo>,
    /// Exit code of the invocation's process, when it exited (not when killed).
    pub exit_code: Option<i32>,
    /// Captured stdout/stderr, at most 1 MB each (members `stdout`, `stderr`, `truncated`).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub output: CapturedOutput,
    /// Whether this invocation had to start an instance.
    pub cold_start: bool,
    /// Worker that ran it.
    pub worker: String,
    /// RFC 3339 time the platform accepted it.
    pub started_at: String,
    /// Wall time from request in to result out, ms.
    pub duration_ms: f64,
    /// Wall time of the handler's own process, ms.
    pub handler_duration_ms: f64,
    /// Memory used.
    pub memory: MemoryUsage,
    /// CPU used.
    pub cpu: CpuUsage,
    /// Block I/O caused.
    pub io: IoUsage,
    /// Files written to the output directory.
    pub outputs: Vec<OutputFile>,
    /// Entries of the output directory that were not kept (links, devices, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_outputs: Vec<SkippedOutput>,
    /// AutoTuner advice, when there is some.
    pub advice: Option<serde_json::Value>,
    /// Which attempt this is (1 for a sync call; async ones retry, and a worker that
    /// died with one leaves it to another), as the function saw in `HEARTH_ATTEMPT`.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}
