//! What a worker publishes about itself and its warm pools: one definition for the worker
//! that reports it, the fleet that carries it, and `/v1/status` that shows it.

use crate::Runtime;
use serde::{Deserialize, Serialize};

/// A live worker, as it last published itself.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerState {
    /// Worker id.
    pub id: String,
    /// Where it runs (host name and data dir, or `in-process`).
    pub address: String,
    /// Sandbox backend: `native` or `docker`.
    pub backend: String,
    /// Invocations it runs at once at most.
    pub capacity: usize,
    /// Invocations running now.
    pub active_invocations: usize,
    /// Warm pools, one per function version (in `/v1/status`, those the caller sees).
    pub pools: Vec<PoolStatus>,
    /// hearth version of the worker.
    pub version: String,
    /// Milliseconds since its last heartbeat (0 in process).
    pub heartbeat_age_ms: u64,
}

/// The warm instances of one function version on one worker.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Function name (in `/v1/status`, bare unless the caller is the default
    /// namespace's admin).
    pub function: String,
    /// Function version.
    pub version: u64,
    /// Runtime.
    pub runtime: Runtime,
    /// Warm instances waiting for work.
    pub idle: usize,
    /// Instances running an invocation.
    pub busy: usize,
    /// Callers waiting for an instance.
    pub queued: usize,
    /// Most instances allowed.
    pub max_instances: u32,
}
