//! Sandboxes: where function code runs, isolated from the host and from each other.
//!
//! Owns: the [`SandboxBackend`] / [`Instance`] traits the worker programs against, the
//! native backend ([`native`]: Linux namespaces + cgroups, no daemon), the Docker backend
//! ([`docker`]: warm hardened containers through the engine API, and their images), and
//! the cgroup code that sets limits and reads per-invocation usage ([`cgroup`], v1 and
//! v2), and generic pre-started sandboxes a cold start specializes ([`stem`]).
//!
//! Never: decides which instance serves which call (the worker's pool does, and keeps
//! the stems), gives a stem that received one function's code to another, talks
//! HTTP, or bind-mounts a host path other than the runtimes' read-only directories and
//! the version's own dependency layer (read-only, see [`InstanceSpec::layer`]).
//!
//! Talk with the agent inside a sandbox goes over its stdio as `hearth_core::protocol`
//! frames; [`agent_stream`] has the async reading and writing of those frames, and
//! `session.rs` what both backends say to an agent (the `Init` handshake, one metered
//! invocation, the tail of its stderr).
//!
//! A backend is written in its own types ([`TypedBackend`], [`StemBackend`]: its
//! instance type, its stems); `backend.rs` implements [`SandboxBackend`] once over them.
//! An instance of either backend is an [`AgentInstance`] (the agent's stream, what both
//! keep) around the backend's own [`InstanceHost`] (a container, or a process and its
//! cgroup); `instance.rs` implements [`Instance`] once over it.
//!
//! Verb (one per layer, README "One call, followed down"): [`Instance::run_event`] (one metered
//! event in a warm instance), and below it [`agent_stream::AgentStream::exchange`] (the
//! frames of that one call with the agent). A call answered while its process was
//! exiting is then [settled](Instance::settle): the agent's `Settled` frame, and the
//! cgroup read again, so that what it used after the answer is its own.
#![deny(missing_docs)]

pub mod agent_stream;
mod backend;
pub mod cgroup;
pub mod docker;
mod instance;
mod lines;
pub mod native;
mod session;
pub mod stem;
pub mod uids;

pub use backend::{StemBackend, TypedBackend};
pub use instance::{AgentInstance, InstanceHost};

use async_trait::async_trait;
use bytes::Bytes;
use hearth_core::protocol::{InvokeOutcome, InvokeSpec, LogStream};
use hearth_core::Runtime;
use std::collections::BTreeMap;

/// What the worker asks a backend to start.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Unique id (also the cgroup's name).
    pub instance_id: String,
    /// Function name.
    pub function_name: String,
    /// Function version.
    pub version: u64,
    /// Runtime of the code.
    pub runtime: Runtime,
    /// Memory limit of the whole instance, MB.
    pub memory_mb: u64,
    /// CPU limit of the instance, in CPUs; `None`: the backend's configured default.
    pub cpus: Option<f64>,
    /// Size of the per-invocation output directory, MB (0: none).
    pub output_quota_mb: u64,
    /// User environment variables (already validated: no reserved names).
    pub env: BTreeMap<String, String>,
    /// The function's code as an uncompressed tar (entries relative to the code root).
    pub code_tar: Bytes,
    /// The version's dependency layer: a directory the worker unpacked once for this
    /// version (immutable, owned by root, holding nothing else), made visible read-only
    /// at `hearth_core::protocol::DEPS_DIR`. `None`: the version has no dependencies.
    pub layer: Option<std::path::PathBuf>,
}

/// Resource usage of one invocation, read from the instance's cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Peak memory of the cgroup during the invocation (reset before it), bytes.
    pub peak_bytes: u64,
    /// User CPU time consumed by the cgroup during the invocation, ns.
    pub cpu_user_ns: u64,
    /// System CPU time consumed by the cgroup during the invocation, ns.
    pub cpu_system_ns: u64,
    /// Block bytes read during the invocation.
    pub io_read_bytes: u64,
    /// Block bytes written during the invocation.
    pub io_write_bytes: u64,
    /// Whether the kernel's OOM killer fired in the cgroup during the invocation.
    pub oom_killed: bool,
}

/// The end of one invocation in an instance.
#[derive(Debug, Clone)]
pub struct InstanceRun {
    /// What the agent reported.
    pub outcome: InvokeOutcome,
    /// The handler's return value as JSON text (empty when it returned none).
    pub result: Vec<u8>,
    /// What the invocation used, as read when its result arrived.
    pub usage: Usage,
    /// The result came while the invocation's process was still exiting
    /// ([`InvokeOutcome::settles`]): `usage` misses what it does until it has ended, and
    /// [`Instance::settle`] must be called before the instance runs anything else.
    pub settling: bool,
}

/// The end of an invocation answered early ([`Instance::settle`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// What the invocation used from its event to its last process's end (the peak
    /// included), read once the agent had swept its leftovers.
    pub usage: Usage,
    /// False when the instance must not serve again.
    pub healthy: bool,
    /// Why it must not, as the agent said.
    pub problem: Option<String>,
}

/// Where an invocation's full logs and output files go while it runs: the agent's
/// `Log` and `Output` frames are handed over as they arrive, so nothing of them is
/// held whole in memory.
#[async_trait]
pub trait InvocationSink: Send {
    /// A piece of the process's stdout or stderr.
    async fn log(&mut self, stream: LogStream, bytes: &[u8]) -> std::io::Result<()>;
    /// A piece of the tar stream of the output directory.
    async fn output(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

/// A sink that keeps nothing (for callers that only want the result).
pub struct DiscardSink;

#[async_trait]
impl InvocationSink for DiscardSink {
    async fn log(&mut self, _: LogStream, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    async fn output(&mut self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sandbox failure. Messages carry the instance id or path involved.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The backend cannot be used on this host (no cgroup, no agent binary, …).
    #[error("sandbox backend unavailable: {0}")]
    Unavailable(String),
    /// Creating the instance failed before the agent ran.
    #[error("cannot start instance {instance}: {message}")]
    Spawn {
        /// Instance id.
        instance: String,
        /// What failed.
        message: String,
    },
    /// The agent could not set the sandbox up before loading the code (a mount,
    /// seccomp, a missing toolchain, a bad artifact): the platform's fault.
    #[error(
        "the platform could not set up instance {instance} (not the function's code): {message}"
    )]
    Setup {
        /// Instance id.
        instance: String,
        /// What failed, as the agent said.
        message: String,
    },
    /// The agent refused the code (e.g. `main.py` fails to import).
    #[error("{message}")]
    InitFailed {
        /// The runtime's own message.
        message: String,
    },
    /// The agent died, closed its stream or broke the protocol.
    #[error("instance {instance} lost: {message}")]
    Lost {
        /// Instance id.
        instance: String,
        /// What happened.
        message: String,
    },
    /// The agent did not answer within the invocation's timeout plus a grace period.
    #[error("instance {instance} did not answer within {waited_ms} ms")]
    Unresponsive {
        /// Instance id.
        instance: String,
        /// How long the worker waited.
        waited_ms: u64,
    },
    /// The invocation's logs or outputs could not be kept (the spool failed).
    #[error("cannot keep the logs and outputs of {request_id}: {source}")]
    Spool {
        /// The invocation.
        request_id: String,
        /// What the sink's write returned.
        source: std::io::Error,
    },
    /// A cgroup file could not be read or written.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A way of making sandboxes.
#[async_trait]
pub trait SandboxBackend: Send + Sync {
    /// Short name for logs and status (`native`, `docker`).
    fn name(&self) -> &'static str;

    /// Starts an instance, loads the code, and returns once the agent is ready to
    /// invoke (the cold start). An `InitFailed` error means the user's code is at fault.
    async fn create(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, SandboxError>;

    /// Whether its instances see a version's dependency layer ([`InstanceSpec::layer`]).
    fn mounts_layers(&self) -> bool {
        false
    }

    /// Whether its build instances ([`SandboxBackend::create_builder`]) get a layer
    /// (a Go build's module cache): mounted, or copied in.
    fn builds_with_layers(&self) -> bool {
        self.mounts_layers()
    }

    /// Starts an instance that builds `spec`'s code (a compiled runtime's source)
    /// instead of serving it: the same isolation and limits as a function instance, the
    /// runtime's toolchain visible, `/tmp` sized for a build. Its one invocation (empty
    /// event) runs the build; a success's result is the artifact. For python the
    /// "build" installs the fetched wheels and its result is the dependency layer. A
    /// backend that cannot build says so with [`SandboxError::Unavailable`].
    async fn create_builder(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, SandboxError> {
        Err(SandboxError::Unavailable(format!(
            "the {} sandbox cannot build {} functions",
            self.name(),
            spec.runtime
        )))
    }

    /// The kind of pre-started stem ([`stem`]) that can become `spec`'s instance, or
    /// `None` when it needs a sandbox made for it alone.
    fn stem_kind(&self, _spec: &InstanceSpec) -> Option<stem::StemKind> {
        None
    }

    /// Pre-starts a generic sandbox of `kind`, with no function's code in it.
    async fn create_stem(
        &self,
        kind: &stem::StemKind,
    ) -> Result<Box<dyn stem::Stem>, SandboxError> {
        Err(SandboxError::Unavailable(format!(
            "the {} sandbox has no stems ({kind:?})",
            self.name()
        )))
    }

    /// Makes `stem` (one of this backend's, of `spec`'s kind) `spec`'s instance: the
    /// function's limits, then its code and runtime; returns once the agent is ready,
    /// as [`SandboxBackend::create`] does. The stem is consumed either way: on an error
    /// it is destroyed.
    async fn specialize(
        &self,
        stem: Box<dyn stem::Stem>,
        spec: InstanceSpec,
    ) -> Result<Box<dyn Instance>, SandboxError> {
        let id = stem.id().to_string();
        stem.destroy().await;
        Err(SandboxError::Spawn {
            instance: id,
            message: format!(
                "the {} sandbox cannot make stems into {} instances",
                self.name(),
                spec.function_name
            ),
        })
    }
}

/// One warm sandbox serving one function version, one invocation at a time.
#[async_trait]
pub trait Instance: Send + Sync {
    /// The instance id.
    fn id(&self) -> &str;

    /// Runs one invocation: resets the cgroup's peak, sends the event, passes logs and
    /// outputs to `sink` as they come, waits for the agent's result (at most
    /// `spec.timeout_ms` plus a grace period), reads usage.
    /// After an error the instance must be destroyed.
    async fn run_event(
        &mut self,
        spec: InvokeSpec,
        event: Bytes,
        sink: &mut dyn InvocationSink,
    ) -> Result<InstanceRun, SandboxError>;

    /// After a run that is [`settling`](InstanceRun::settling): waits (bounded) until
    /// the agent has seen the invocation's process end and swept its leftovers, then
    /// reads the usage of the whole invocation. `None` when no run is settling. After an
    /// error the instance must be destroyed. [`Instance::run_event`] settles first
    /// when this was not called.
    async fn settle(&mut self) -> Result<Option<Settled>, SandboxError>;

    /// Kills everything in the instance and removes its cgroup. Never fails: problems
    /// are logged.
    async fn destroy(self: Box<Self>);
}
