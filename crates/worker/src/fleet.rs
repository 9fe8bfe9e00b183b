//! The seam between the controller and "the workers": one trait, [`Fleet`], through
//! which the controller hands over an invocation (sync: it awaits the outcome; async:
//! it hands over a job that a worker runs, retries and reports), asks for a build,
//! retires old versions and lists live workers.
//!
//! Two implementations run the same controller code: [`crate::local::LocalFleet`] (one
//! worker in the controller's process, for `hearth up`) and the Redis one of
//! `hearth-cluster` (any number of workers on other machines).

use crate::build::{BuildError, BuildRequest, Built};
use crate::deps::{DepsError, Installed, Manifest};
use crate::{ExecuteRequest, Target, WorkerError};
use async_trait::async_trait;
use hearth_core::Invocation;
use hearth_sandbox::SandboxError;
use hearth_store::AsyncJob;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why the fleet could not give an outcome (a function's own failure is not one: it is
/// an [`Invocation`] with a failed status).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The worker refused or failed the invocation (overloaded, no sandbox, …).
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A build made no artifact.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The worker running a sync invocation died; it is not run again (at most once).
    #[error("worker {worker} stopped while running the invocation; it was not run again: retry if the function is safe to repeat")]
    WorkerLost {
        /// The lost worker.
        worker: String,
    },
    /// No live worker can take the invocation.
    #[error("no worker is available: start one (hearth worker) or retry shortly")]
    NoWorkers,
    /// Too many async invocations wait already.
    #[error("{pending} asynchronous invocations are waiting: retry later")]
    QueueFull {
        /// Jobs waiting.
        pending: u64,
    },
    /// A service the fleet depends on (Redis, the metadata store) is down.
    #[error("{0}")]
    Unavailable(String),
    /// A worker on another machine refused or failed the request.
    #[error("{message}")]
    Refused {
        /// What kind of refusal.
        refusal: Refusal,
        /// The worker's message.
        message: String,
    },
}

/// The kinds of [`WorkerError`] and [`BuildError`], as they cross a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Every instance busy and the queue full.
    Overloaded,
    /// The worker is stopping.
    ShuttingDown,
    /// No sandbox could be started.
    SandboxUnavailable,
    /// The platform failed while setting a sandbox up (not the function's code).
    SystemError,
    /// The reporter is too far behind.
    Backlog,
    /// The spool is at its quota.
    SpoolFull,
    /// The user's code does not build.
    BuildFailed,
    /// The worker cannot build this runtime.
    RuntimeUnavailable,
    /// Anything else (code unreadable, spool failure, store failure).
    Internal,
}

impl Refusal {
    /// The kind of a worker's error.
    pub fn of_worker(error: &WorkerError) -> Refusal {
        match error {
            WorkerError::Overloaded { .. } => Refusal::Overloaded,
            WorkerError::ShuttingDown => Refusal::ShuttingDown,
            WorkerError::Sandbox(SandboxError::Setup { .. }) => Refusal::SystemError,
            WorkerError::Sandbox(_) => Refusal::SandboxUnavailable,
            WorkerError::Backlog { .. } => Refusal::Backlog,
            WorkerError::SpoolFull { .. } => Refusal::SpoolFull,
            WorkerError::Code { .. } | WorkerError::Spool(_) => Refusal::Internal,
        }
    }

    /// The kind of a build's error.
    pub fn of_build(error: &BuildError) -> Refusal {
        match error {
            e if e.is_users() => Refusal::BuildFailed,
            BuildError::Unavailable(_) => Refusal::RuntimeUnavailable,
            _ => Refusal::Internal,
        }
    }
}

impl FleetError {
    /// How this error crosses a machine.
    pub fn refusal(&self) -> (Refusal, String) {
        let refusal = match self {
            FleetError::Worker(e) => Refusal::of_worker(e),
            FleetError::Build(e) => Refusal::of_build(e),
            FleetError::Refused { refusal, .. } => *refusal,
            _ => Refusal::Internal,
        };
        (refusal, self.to_string())
    }
}

pub use hearth_core::status::WorkerState;

/// The workers, as the controller sees them.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// Runs a sync invocation on some worker and returns how it ended.
    async fn dispatch(
        &self,
        target: Target,
        request: ExecuteRequest,
    ) -> Result<Invocation, FleetError>;

    /// Hands over an async invocation: a worker runs it at least once, retries it with
    /// backoff, records it in history and POSTs its callback. The caller has already
    /// recorded it as `queued`.
    async fn submit(&self, job: AsyncJob) -> Result<(), FleetError>;

    /// Builds a compiled function's code (`None` for an interpreted runtime).
    async fn build(&self, request: BuildRequest) -> Result<Option<Built>, FleetError>;

    /// Installs the dependencies a deploy's code names (`requirements.txt`,
    /// `package.json`, `go.mod`), or finds them installed: `None` when it names none.
    /// A fleet that cannot install them refuses code that names some.
    async fn install_dependencies(
        &self,
        function: &str,
        runtime: hearth_core::Runtime,
        code_tar: &bytes::Bytes,
    ) -> Result<Option<Installed>, DepsError> {
        match Manifest::of(code_tar, runtime)? {
            None => Ok(None),
            Some(manifest) => Err(DepsError::Unavailable(format!(
                "this fleet does not install dependencies ({} names some of {function}'s): \
                 vendor them in the zip",
                manifest.main_file()
            ))),
        }
    }

    /// Destroys warm instances of `name` except those of `keep_version` (best effort).
    async fn retire(&self, name: &str, keep_version: Option<u64>);

    /// Live workers, by id.
    async fn workers(&self) -> Result<Vec<WorkerState>, FleetError>;

    /// Waits at most `limit` for the reports (logs, outputs, history) of finished
    /// invocations, where the fleet can tell; returns at once where it cannot.
    async fn settle(&self, limit: Duration);

    /// Stops taking work; a local worker destroys its warm instances.
    async fn shutdown(&self);
}

/// The request of a first attempt, received now.
pub fn first_attempt(id: String, event: bytes::Bytes, started_at: String) -> ExecuteRequest {
    ExecuteRequest {
        id,
        event,
        received: std::time::Instant::now(),
        started_at,
        attempt: 1,
    }
}
