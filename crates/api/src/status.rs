//! `GET /v1/status` (the workers and their warm pools) and `GET /healthz`.

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
    pub workers: Vec<WorkerState>,
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

pub use hearth_core::status::{PoolStatus, WorkerState};

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
    use hearth_core::Runtime;

    #[test]
    fn the_documented_status_round_trips() {
        let status: StatusBody = assert_round_trips(&documented("`GET /v1/status` →"));
        assert_eq!(status.totals.warm_instances, 2);
        assert_eq!(status.workers[0].pools[0].runtime, Runtime::Python);
        let health: Health = assert_round_trips(r#"{"status": "ok"}"#);
        assert_eq!(health.status, "ok");
    }
}
