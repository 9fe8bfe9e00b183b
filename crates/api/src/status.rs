//! `GET /v1/status` (the workers and their warm pools) and `GET /healthz`.

use hearth_core::Runtime;
use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusBody {
    /// `online`.
    pub status: String,
    /// Time since this controller started, ms.
    pub uptime_ms: u64,
    /// Sums over the workers.
    pub totals: Totals,
    /// One per live worker.
    pub workers: Vec<WorkerObject>,
}

/// Sums over the workers of [`StatusBody`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Live workers.
    pub workers: usize,
    /// Invocations running now.
    pub active_invocations: usize,
    /// Instances, idle or busy, in the pools the caller sees.
    pub warm_instances: usize,
}

/// A live worker, as it last published itself.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerObject {
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
    /// Warm pools, one per function version (those the caller sees).
    pub pools: Vec<PoolObject>,
    /// hearth version of the worker.
    pub version: String,
    /// Milliseconds since its last heartbeat (0 in process).
    pub heartbeat_age_ms: u64,
}

/// The warm instances of one function version on one worker.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolObject {
    /// Function name (bare, unless the caller is the default namespace's admin).
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

/// `GET /healthz`: `{"status": "ok"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::{assert_round_trips, documented};

    #[test]
    fn the_documented_status_round_trips() {
        let status: StatusBody = assert_round_trips(&documented("`GET /v1/status` →"));
        assert_eq!(status.totals.warm_instances, 2);
        assert_eq!(status.workers[0].pools[0].runtime, Runtime::Python);
        let health: Health = assert_round_trips(r#"{"status": "ok"}"#);
        assert_eq!(health.status, "ok");
    }
}
