//! `GET /v1/stats/functions?hours=24`: per function, its invocations, errors and
//! p50/p95 duration over a recent window, for the dashboard's function list.
//!
//! Computed here from the metadata store's listing (the newest [`SAMPLE_LIMIT`]
//! invocations of each function in the window), so it works on every store backend
//! without a new query; `sampled: true` says a busy function had more than that and the
//! figures describe its newest ones.

use crate::{ApiError, AppState};
use axum::extract::{Extension, Query, State};
use axum::Json;
use hearth_api::stats::{FunctionStatsRow, StatsBody};
use hearth_core::{Invocation, InvocationStatus};
use hearth_store::{FunctionRecord, InvocationFilter};
use serde::Deserialize;

/// Most invocations read per function (the most one listing returns).
const SAMPLE_LIMIT: u32 = 1000;
/// Longest window, hours (history is kept 30 days).
const MAX_HOURS: u32 = 24 * 30;

#[derive(Deserialize)]
pub(crate) struct StatsQuery {
    hours: Option<u32>,
}

/// Figures over a set of invocations.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Figures {
    pub(crate) invocations: u64,
    pub(crate) errors: u64,
    pub(crate) p50_duration_ms: Option<f64>,
    pub(crate) p95_duration_ms: Option<f64>,
}

impl Figures {
    /// Over the finished ones of `invocations`.
    pub(crate) fn of<'a>(invocations: impl Iterator<Item = &'a Invocation>) -> Figures {
        let mut durations = Vec::new();
        let mut errors = 0;
        for invocation in invocations.filter(|i| i.status.is_final()) {
            durations.push(invocation.duration_ms);
            if invocation.status != InvocationStatus::Success {
                errors += 1;
            }
        }
        durations.sort_by(f64::total_cmp);
        Figures {
            invocations: durations.len() as u64,
            errors,
            p50_duration_ms: percentile(&durations, 50),
            p95_duration_ms: percentile(&durations, 95),
        }
    }

    fn error_rate(&self) -> Option<f64> {
        (self.invocations > 0).then(|| self.errors as f64 / self.invocations as f64)
    }
}

/// Nearest rank: the smallest value with at least `p`% of values at or below it.
pub(crate) fn percentile(sorted: &[f64], p: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[utoipa::path(get, path = "/v1/stats/functions", operation_id = "function_stats", tag = "operations",
    params(("hours" = Option<u32>, Query, minimum = 1, maximum = 720, description = "window, hours (24)")),
    responses((status = 200, body = crate::schemas::StatsBody), crate::schemas::CommonErrors))]
pub(crate) async fn functions(
    State(state): State<AppState>,
    Extension(caller): Extension<crate::tenancy::Caller>,
    Query(query): Query<StatsQuery>,
) -> Result<Json<StatsBody>, ApiError> {
    let hours = query.hours.unwrap_or(24);
    if hours == 0 || hours > MAX_HOURS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("hours must be between 1 and {MAX_HOURS} (history is kept 30 days)"),
        ));
    }
    let since = (chrono::Utc::now() - chrono::TimeDelta::hours(i64::from(hours)))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let records = state
        .metadata
        .list_functions()
        .await
        .map_err(|e| ApiError::internal("listing functions", e))?;
    let rows = futures::future::try_join_all(
        records
            .iter()
            .filter(|record| caller.sees(&record.name))
            .map(|record| function_row(&state, record, &since)),
    )
    .await?;
    Ok(Json(StatsBody {
        window_hours: hours,
        functions: rows,
    }))
}

async fn function_row(
    state: &AppState,
    record: &FunctionRecord,
    since: &str,
) -> Result<FunctionStatsRow, ApiError> {
    let filter = InvocationFilter {
        limit: SAMPLE_LIMIT,
        status: None,
        since: Some(since.to_string()),
    };
    let invocations = state
        .metadata
        .list_invocations(&record.name, &filter)
        .await
        .map_err(|e| ApiError::internal("listing invocations", e))?;
    let figures = Figures::of(invocations.iter());
    let (namespace, name) = crate::tenancy::split(&record.name);
    Ok(FunctionStatsRow {
        name: name.to_string(),
        namespace: namespace.to_string(),
        version: record.version,
        runtime: record.spec.runtime,
        memory_mb: record.spec.memory_mb,
        timeout_ms: record.spec.timeout_ms,
        updated_at: record.updated_at.clone(),
        invocations: figures.invocations,
        errors: figures.errors,
        error_rate: figures.error_rate(),
        p50_duration_ms: figures.p50_duration_ms,
        p95_duration_ms: figures.p95_duration_ms,
        sampled: invocations.len() as u32 >= SAMPLE_LIMIT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50), Some(10.0));
        assert_eq!(percentile(&values, 95), Some(19.0));
        assert_eq!(percentile(&[7.0], 95), Some(7.0));
        assert_eq!(percentile(&[], 50), None);
    }

    fn invocation(status: InvocationStatus, duration_ms: f64) -> Invocation {
        serde_json::from_value(json!({
            "id": "x", "function": "f", "version": 1, "status": status,
            "result": null, "error": null, "exit_code": 0, "stdout": "", "stderr": "",
            "truncated": false, "cold_start": false, "worker": "w", "started_at": "",
            "duration_ms": duration_ms, "handler_duration_ms": 0.0,
            "memory": {"limit_mb": 128, "peak_bytes": 0, "max_rss_bytes": 0},
            "cpu": {"user_ms": 0.0, "system_ms": 0.0}, "io": {"read_bytes": 0, "write_bytes": 0},
            "outputs": [], "advice": null
        }))
        .unwrap()
    }

    #[test]
    fn figures_count_finished_invocations_only() {
        let list = [
            invocation(InvocationStatus::Success, 3.0),
            invocation(InvocationStatus::Error, 1.0),
            invocation(InvocationStatus::Timeout, 9.0),
            invocation(InvocationStatus::Running, 0.0),
            invocation(InvocationStatus::Queued, 0.0),
        ];
        let figures = Figures::of(list.iter());
        assert_eq!(figures.invocations, 3);
        assert_eq!(figures.errors, 2);
        assert_eq!(figures.p50_duration_ms, Some(3.0));
        assert_eq!(figures.p95_duration_ms, Some(9.0));
        assert_eq!(Figures::of([].iter()).error_rate(), None);
    }
}
