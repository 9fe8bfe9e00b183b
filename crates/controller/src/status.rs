//! `/v1/status`, `/healthz` and `/metrics`.

use crate::tenancy::{split, Caller, Role, DEFAULT_NAMESPACE};
use crate::{ApiError, AppState};
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_api::status::{Health, StatusBody, Totals};

#[utoipa::path(get, path = "/v1/status", operation_id = "get_status", tag = "operations",
    responses((status = 200, body = crate::schemas::StatusBody), crate::schemas::CommonErrors))]
pub(crate) async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<StatusBody>, ApiError> {
    let mut workers = state
        .fleet
        .workers()
        .await
        .map_err(crate::fleet_error::fleet_error)?;
    // Workers are shared; their pools are shown to the namespaces that own them.
    if caller.role != Role::Admin || caller.namespace != DEFAULT_NAMESPACE {
        for worker in &mut workers {
            worker.pools.retain(|pool| caller.sees(&pool.function));
            for pool in &mut worker.pools {
                pool.function = split(&pool.function).1.to_string();
            }
        }
    }
    let active: usize = workers.iter().map(|w| w.active_invocations).sum();
    let warm: usize = workers
        .iter()
        .flat_map(|w| &w.pools)
        .map(|p| p.idle + p.busy)
        .sum();
    Ok(Json(StatusBody {
        status: "online".to_string(),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        totals: Totals {
            workers: workers.len(),
            active_invocations: active,
            warm_instances: warm,
        },
        workers,
    }))
}

pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
    })
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    match &state.metrics {
        Some(handle) => Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            crate::telemetry::render(handle),
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "metrics are not enabled in this process",
        )),
    }
}
