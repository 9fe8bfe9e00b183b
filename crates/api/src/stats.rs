//! `GET /v1/stats/functions?hours=24`: per function, its invocations, errors and
//! durations over a recent window (the dashboard's function list).

use hearth_core::Runtime;
use serde::{Deserialize, Serialize};

/// `GET /v1/stats/functions`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsBody {
    /// The window, hours.
    pub window_hours: u32,
    /// One row per function the caller sees.
    pub functions: Vec<FunctionStatsRow>,
}

/// A function's figures over the window: finished invocations started in it (the
/// newest 1000; `sampled` when there were more).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionStatsRow {
    /// Function name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Newest version.
    pub version: u64,
    /// Its runtime.
    pub runtime: Runtime,
    /// Memory limit, MB.
    pub memory_mb: u64,
    /// Timeout, ms.
    pub timeout_ms: u64,
    /// RFC 3339 time of the newest version.
    pub updated_at: String,
    /// Finished invocations.
    pub invocations: u64,
    /// Those that did not succeed.
    pub errors: u64,
    /// `errors / invocations`; null without invocations.
    pub error_rate: Option<f64>,
    /// Median duration, ms; null without invocations.
    pub p50_duration_ms: Option<f64>,
    /// 95th percentile of the duration, ms; null without invocations.
    pub p95_duration_ms: Option<f64>,
    /// Whether the function had more invocations in the window than were read.
    pub sampled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::assert_round_trips;

    #[test]
    fn the_documented_stats_round_trip() {
        let stats: StatsBody = assert_round_trips(
            r#"{"window_hours": 24, "functions": [{"name": "hello", "namespace": "default",
            "version": 2, "runtime": "python", "memory_mb": 128, "timeout_ms": 3000,
            "updated_at": "2026-11-28T10:00:00.000Z", "invocations": 4, "errors": 1,
            "error_rate": 0.25, "p50_duration_ms": 1.5, "p95_duration_ms": 9.0, "sampled": false},
            {"name": "idle", "namespace": "default", "version": 1, "runtime": "go",
            "memory_mb": 64, "timeout_ms": 1000, "updated_at": "t", "invocations": 0,
            "errors": 0, "error_rate": null, "p50_duration_ms": null, "p95_duration_ms": null,
            "sampled": false}]}"#,
        );
        assert_eq!(stats.functions[1].error_rate, None);
    }
}
