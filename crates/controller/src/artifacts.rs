//! `GET /v1/invocations/{id}/logs` and `GET /v1/invocations/{id}/outputs/{path}`:
//! streamed from the object store, never from a worker's disk. A worker's reporter
//! uploads logs and outputs before it writes the invocation's final record, so until
//! that record is in the metadata store the answer is 404 `pending_upload` (retry).

use crate::tenancy::Caller;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
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

/// How long a read waits for a local worker's reporter before answering
/// `pending_upload`.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A body streaming one log, or `None` when the invocation wrote nothing to it.
async fn log_body(state: &AppState, id: &str, stream: LogStream) -> Result<Option<Body>, ApiError> {
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
        Err(e) => Err(ApiError::unavailable("reading the object store", e)),
    }
}

/// Checks that the caller may see the invocation: its record may still be on its way to
/// history (a cluster's worker reports after answering), so a miss waits for that once.
async fn visible_settled(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    if crate::invoke::visible(state, caller, id).await.is_ok() {
        return Ok(());
    }
    state.fleet.settle(SETTLE_LIMIT).await;
    crate::invoke::visible(state, caller, id).await.map(drop)
}

/// Checks that the invocation exists and its logs and outputs are uploaded.
async fn uploaded_invocation(state: &AppState, id: &str) -> Result<(), ApiError> {
    let mut settled = false;
    loop {
        let stored = state
            .metadata
            .get_invocation(id)
            .await
            .map_err(|e| ApiError::store("reading invocation", e))?;
        match stored {
            Some(invocation) if invocation.status.is_final() => return Ok(()),
            None if state.history.recent(id).is_none() => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invocation_not_found",
                    format!("invocation {id:?} does not exist (history is kept 30 days)"),
                ))
            }
            _ if !settled => {
                state.fleet.settle(SETTLE_LIMIT).await;
                settled = true;
            }
            _ => {
                // Pending, or the object store is down and the upload stuck: say which.
                let probe = ObjectPath::from(log_key(id, LogStream::Stdout));
                match state.code.object_store().head(&probe).await {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(ApiError::unavailable("reading the object store", e)),
                }
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "pending_upload",
                    format!("invocation {id} has not finished, or its logs and outputs are still being uploaded: retry shortly"),
                )
                .retry_after(1));
            }
        }
    }
}

fn text(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The full stdout and stderr of an invocation: `?stream=stdout|stderr` for one, else
/// stdout followed by stderr.
#[utoipa::path(get, path = "/v1/invocations/{id}/logs", operation_id = "get_invocation_logs", tag = "invocations", params(crate::schemas::InvocationId,
        ("stream" = Option<String>, Query, description = "`stdout`, `stderr` or `all` (the default)")),
    responses((status = 200, description = "the full logs", content_type = "text/plain", body = String),
        crate::schemas::CommonErrors))]
pub(crate) async fn logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    visible_settled(&state, &caller, &id).await?;
    uploaded_invocation(&state, &id).await?;
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
#[utoipa::path(get, path = "/v1/invocations/{id}/outputs/{path}", operation_id = "get_invocation_output", tag = "invocations",
    params(crate::schemas::InvocationId, ("path" = String, Path, description = "the file's path under $OUTPUT_DIR")),
    responses((status = 200, description = "the file", content_type = "application/octet-stream", body = Vec<u8>),
        crate::schemas::CommonErrors))]
pub(crate) async fn output(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    visible_settled(&state, &caller, &id).await?;
    match object_body(&state, &output_key(&id, &path)).await? {
        Some(body) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
        }
        None => Err({
            uploaded_invocation(&state, &id).await?;
            ApiError::new(
                StatusCode::NOT_FOUND,
                "output_not_found",
                format!("invocation {id} has no output {path:?}: see the invocation's outputs"),
            )
        }),
    }
}
