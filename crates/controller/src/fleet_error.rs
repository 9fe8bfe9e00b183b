//! How a failure of the workers reaches the caller: one HTTP answer per [`FleetError`],
//! for every handler that hands work to the fleet (invoke, deploy, tuning, status).

use crate::ApiError;
use axum::http::StatusCode;
use hearth_worker::fleet::{FleetError, Refusal};
use hearth_worker::WorkerError;

/// The HTTP answer to a fleet that gave no outcome.
pub(crate) fn fleet_error(error: FleetError) -> ApiError {
    match error {
        FleetError::Worker(error) => worker_error(error),
        FleetError::Build(error) => ApiError::internal("building the function", error),
        FleetError::WorkerLost { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "worker_lost", error.to_string())
        }
        FleetError::NoWorkers => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_workers",
            error.to_string(),
        )
        .retry_after(2),
        FleetError::QueueFull { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            error.to_string(),
        )
        .retry_after(5),
        FleetError::Unavailable(why) => ApiError::unavailable("the workers cannot be reached", why),
        FleetError::Refused { refusal, message } => refused(refusal, message),
    }
}

/// The HTTP answer to a remote worker's refusal.
fn refused(refusal: Refusal, message: String) -> ApiError {
    match refusal {
        Refusal::Overloaded => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message).retry_after(1)
        }
        Refusal::ShuttingDown => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
        }
        Refusal::SandboxUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sandbox_unavailable",
            message,
        ),
        Refusal::SystemError => system_error(message),
        Refusal::Backlog => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "backlog", message).retry_after(5)
        }
        Refusal::SpoolFull => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "spool_full", message).retry_after(5)
        }
        Refusal::BuildFailed => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "build_failed",
            format!("the build failed; no version was made:\n{message}"),
        ),
        Refusal::RuntimeUnavailable => ApiError::bad_request("runtime_unavailable", message),
        Refusal::Internal => ApiError::internal("a worker failed", message),
    }
}

fn worker_error(error: WorkerError) -> ApiError {
    match error {
        WorkerError::Overloaded { .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            error.to_string(),
        )
        .retry_after(1),
        WorkerError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this hearth is shutting down: retry against another instance or after restart",
        ),
        WorkerError::Sandbox(_) if matches!(Refusal::of_worker(&error), Refusal::SystemError) => {
            system_error(error.to_string())
        }
        WorkerError::Sandbox(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sandbox_unavailable",
            format!("no sandbox could be started: {e}"),
        ),
        WorkerError::Backlog { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backlog",
            error.to_string(),
        )
        .retry_after(5),
        WorkerError::SpoolFull { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "spool_full",
            error.to_string(),
        )
        .retry_after(5),
        WorkerError::Code { .. } => ApiError::internal("loading function code", error),
        WorkerError::Spool(_) => ApiError::internal("keeping the invocation's logs", error),
    }
}

/// A platform fault while starting an instance: a 500 that says plainly the function's
/// code is not to blame (a failed load is an invocation `error` with `InitError`).
fn system_error(message: String) -> ApiError {
    tracing::error!(%message, "a platform fault while starting an instance");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "system_error", message)
}
