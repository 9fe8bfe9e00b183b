//! `/v1/status`, `/healthz` and `/metrics`.

use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub(crate) async fn status(State(state): State<AppState>) -> Json<Value> {
    let worker = state.worker.status();
    let warm: usize = worker.pools.iter().map(|p| p.idle + p.busy).sum();
    let active = worker.active_invocations;
    Json(json!({
        "status": "online",
        "uptime_ms": state.started.elapsed().as_millis() as u64,
        "workers": [{
            "id": worker.id,
            "address": "in-process",
            "backend": worker.backend,
            "heartbeat_age_ms": 0,
            "active_invocations": active,
            "pools": worker.pools,
        }],
        "totals": {"workers": 1, "active_invocations": active, "warm_instances": warm},
    }))
}

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    match &state.metrics {
        Some(handle) => Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            crate::telemetry::render(&state, handle).await,
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "metrics are not enabled in this process",
        )),
    }
}
