//! `GET /v1/invocations/{id}/logs` and `GET /v1/invocations/{id}/outputs/{path}`:
//! streamed from the worker's spool while the reporter has not uploaded them yet,
//! from the object store after.

use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use hearth_core::protocol::LogStream;
use hearth_worker::spool::{log_key, output_key};
use object_store::path::Path as ObjectPath;
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct LogsQuery {
    stream: Option<String>,
}

/// A body streaming one log, or `None` when there is no such log.
async fn log_body(state: &AppState, id: &str, stream: LogStream) -> Result<Option<Body>, ApiError> {
    if let Some(job) = state.worker.spool().ready_job(id) {
        return match tokio::fs::File::open(job.log_path(stream)).await {
            Ok(file) => Ok(Some(Body::from_stream(tokio_util::io::ReaderStream::new(
                file,
            )))),
            Err(_) => Ok(None),
        };
    }
    object_body(state, &log_key(id, stream)).await
}

async fn object_body(state: &AppState, key: &str) -> Result<Option<Body>, ApiError> {
    let location = ObjectPath::parse(key).map_err(|e| {
        ApiError::bad_request("invalid_path", format!("{key:?} is not a valid path: {e}"))
    })?;
    match state.code.object_store().get(&location).await {
        Ok(found) => Ok(Some(Body::from_stream(
            found.into_stream().map_err(std::io::Error::other).boxed(),
        ))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => {
            tracing::warn!(%key, error = %e, "object store read failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "object_store_unavailable",
                "the object store cannot be read right now: retry shortly",
            )
            .retry_after(5))
        }
    }
}

async fn known_invocation(state: &AppState, id: &str) -> Result<(), ApiError> {
    if state.history.recent(id).is_some() {
        return Ok(());
    }
    match state.metadata.get_invocation(id).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invocation_not_found",
            format!("invocation {id:?} does not exist (history is kept 30 days)"),
        )),
        Err(e) => Err(ApiError::internal("reading invocation", e)),
    }
}

fn text(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The full stdout and stderr of an invocation: `?stream=stdout|stderr` for one, else
/// stdout followed by stderr.
pub(crate) async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    known_invocation(&state, &id).await?;
    let streams: &[LogStream] = match query.stream.as_deref() {
        None | Some("") | Some("all") => &[LogStream::Stdout, LogStream::Stderr],
        Some("stdout") => &[LogStream::Stdout],
        Some("stderr") => &[LogStream::Stderr],
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("unknown stream {other:?}: use stdout, stderr or leave it out for both"),
            ))
        }
    };
    let mut bodies = Vec::new();
    for stream in streams {
        if let Some(body) = log_body(&state, &id, *stream).await? {
            bodies.push(body.into_data_stream());
        }
    }
    let joined = futures::stream::iter(bodies).flatten();
    Ok(text(Body::from_stream(joined)))
}

/// One output file, streamed from the object store (404 until it is uploaded).
pub(crate) async fn output(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    known_invocation(&state, &id).await?;
    match object_body(&state, &output_key(&id, &path)).await? {
        Some(body) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            body,
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "output_not_found",
            format!("invocation {id} has no output {path:?}, or it is not uploaded yet: see the invocation's outputs and retry shortly"),
        )),
    }
}
