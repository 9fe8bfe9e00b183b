//! `/v1/functions/{name}/invoke` and the invocation reads.

use crate::fleet_error::fleet_error;
use crate::functions::find;
use crate::schemas::{self, CommonErrors, FunctionName, InvocationId};
use crate::tenancy::{invocation_object, Caller};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hearth_core::{Invocation, InvocationStatus};
use hearth_store::{AsyncJob, FunctionRecord, InvocationFilter};
use hearth_worker::fleet::first_attempt;
use hearth_worker::{ExecuteRequest, Target};
use serde::Deserialize;
use serde_json::json;

/// Longest a listing waits for the reporter to write recent invocations.
const LIST_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Largest event accepted inline, as Lambda's synchronous payload limit.
pub(crate) const MAX_EVENT_BYTES: usize = 6 << 20;

async fn read_event(body: Body) -> Result<Bytes, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_EVENT_BYTES)
        .await
        .map_err(|_| event_too_large())?;
    check_event(bytes)
}

pub(crate) fn event_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "event_too_large",
        "the event is larger than 6 MB: pass a reference to the data (e.g. an object key) instead",
    )
}

/// The event an invocation gets: `{}` for an empty body, else the body if it is JSON.
pub(crate) fn check_event(bytes: Bytes) -> Result<Bytes, ApiError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(event_too_large());
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    // serde_json skips over what it ignores without checking it: the UTF-8 check and
    // the nesting limit are ours (a runtime's own parser would overflow its stack on a
    // deep event: Python's at about 1000).
    std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_event",
            format!("the event must be JSON in UTF-8: {e}"),
        )
    })?;
    if nesting_depth(&bytes) > MAX_EVENT_DEPTH {
        return Err(ApiError::bad_request(
            "invalid_event",
            format!("the event nests arrays and objects more than {MAX_EVENT_DEPTH} deep"),
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_event",
            format!("the event must be JSON (any value): {e}"),
        )
    })?;
    Ok(bytes)
}

/// Deepest nesting of arrays and objects an event may have.
pub(crate) const MAX_EVENT_DEPTH: usize = 128;

/// How deep `json` nests arrays and objects (brackets inside strings do not count).
/// One pass, no recursion; the syntax itself is checked by serde_json afterwards.
fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// What the worker needs to run `event` on the version `record`.
pub(crate) fn prepare(record: FunctionRecord, event: Bytes) -> (Target, ExecuteRequest) {
    let target = Target {
        name: record.name,
        version: record.version,
        spec: record.spec,
        code_sha256: record.code_sha256,
    };
    let request = first_attempt(
        ulid::Ulid::new().to_string(),
        event,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    (target, request)
}

fn wants_async(headers: &HeaderMap, query: &InvokeQuery) -> bool {
    query.r#async.unwrap_or(false)
        || headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim() == "respond-async"))
}

#[derive(Deserialize)]
pub(crate) struct InvokeQuery {
    r#async: Option<bool>,
    callback_url: Option<String>,
}

/// Runs the function on the event (the body: any JSON, ≤ 6 MB). A function's own failure
/// is a 200 whose `status` says so.
#[utoipa::path(post, path = "/v1/functions/{name}/invoke", operation_id = "invoke_function", tag = "invocations",
    params(FunctionName,
        ("async" = Option<bool>, Query, description = "answer 202 at once (as `Prefer: respond-async`)"),
        ("callback_url" = Option<String>, Query, description = "async: receives a POST of the finished invocation"),
        ("Prefer" = Option<String>, Header, description = "`respond-async` for an asynchronous invocation"),
        ("X-Hearth-Idempotency-Key" = Option<String>, Header, description = "a retry with the same key gets the first answer (10 minutes)")),
    request_body(content = Object, description = "the event", example = json!({"name": "you"})),
    responses((status = 200, description = "the finished invocation", body = schemas::InvocationObject),
        (status = 202, description = "queued", body = schemas::Queued, headers(("Location" = String))),
        (status = 413, description = "the event is over 6 MB", body = schemas::ErrorBody),
        (status = 429, description = "overloaded; see Retry-After", body = schemas::ErrorBody),
        (status = 502, description = "the worker running it was lost", body = schemas::ErrorBody), CommonErrors))]
pub(crate) async fn invoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let record = find(&state, &caller.qualify(&name)?).await?;
    let event = read_event(body).await?;
    let (target, request) = prepare(record.clone(), event);
    // Quotas are checked before anything runs; a sync call holds its slots until it
    // ends, an async one is only refused while the quota is full (its worker runs it).
    let admitted = crate::quota::admit(&state, &caller, &record, &request.id).await?;
    if wants_async(&headers, &query) {
        drop(admitted);
        return start_async(state, target, request, query.callback_url).await;
    }
    let invocation = run(&state, target, request).await;
    drop(admitted);
    Ok(Json(invocation_object(invocation?)).into_response())
}

/// Runs one invocation synchronously and keeps it for immediate reads.
pub(crate) async fn run(
    state: &AppState,
    target: Target,
    request: ExecuteRequest,
) -> Result<Invocation, ApiError> {
    let invocation = state
        .fleet
        .dispatch(target, request)
        .await
        .map_err(fleet_error)?;
    // The worker's reporter writes it to history; keep it for immediate reads.
    state.history.remember(&invocation);
    Ok(invocation)
}

/// Records the invocation `queued`, hands it to the workers and answers 202 at once.
async fn start_async(
    state: AppState,
    target: Target,
    request: ExecuteRequest,
    callback_url: Option<String>,
) -> Result<Response, ApiError> {
    let id = enqueue(&state, &target, &request, callback_url).await?;
    let location = format!("/v1/invocations/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(hearth_api::Queued {
            id,
            status: InvocationStatus::Queued,
        }),
    )
        .into_response())
}

/// Queues an invocation durably (recorded as `queued`); returns its id.
pub(crate) async fn enqueue(
    state: &AppState,
    target: &Target,
    request: &ExecuteRequest,
    callback_url: Option<String>,
) -> Result<String, ApiError> {
    if let Some(url) = &callback_url {
        check_callback_url(url)?;
    }
    let job = AsyncJob {
        id: request.id.clone(),
        function: target.name.clone(),
        event: request.event.to_vec(),
        callback_url,
        started_at: request.started_at.clone(),
        attempts: 0,
    };
    // Written before any worker can see the job, so it never overwrites their records.
    let queued = hearth_worker::outcome::queued(target, request, "");
    state
        .metadata
        .record_invocation(&queued)
        .await
        .map_err(|e| ApiError::store("recording the invocation", e))?;
    state.fleet.submit(job).await.map_err(fleet_error)?;
    Ok(request.id.clone())
}

/// Checks a callback URL: absolute http(s).
pub(crate) fn check_callback_url(url: &str) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_callback_url", message);
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| invalid(format!("callback_url {url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid(format!(
            "callback_url {url:?} must be an absolute http:// or https:// URL"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/invocations/{id}", operation_id = "get_invocation", tag = "invocations", params(InvocationId),
    responses((status = 200, body = schemas::InvocationObject), CommonErrors))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<hearth_api::InvocationObject>, ApiError> {
    let invocation = visible(&state, &caller, &id).await?;
    Ok(Json(invocation_object(invocation)))
}

/// The invocation `id` if the caller may see it; else (another namespace's, or none)
/// the same 404.
pub(crate) async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Invocation, ApiError> {
    // History first: an invocation answered while its process was exiting gets its
    // whole usage there once settled; the answer as sent waits in `recent` until then.
    let stored = state
        .metadata
        .get_invocation(id)
        .await
        .map_err(|e| ApiError::store("reading invocation", e))?;
    let found = stored.or_else(|| state.history.recent(id));
    found
        .filter(|invocation| caller.sees(&invocation.function))
        .ok_or_else(|| invocation_not_found(id))
}

pub(crate) fn invocation_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invocation_not_found",
        format!("invocation {id:?} does not exist (history is kept 30 days)"),
    )
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<u32>,
    status: Option<String>,
    since: Option<String>,
}

/// A function's invocations, newest first.
#[utoipa::path(get, path = "/v1/functions/{name}/invocations", operation_id = "list_invocations", tag = "invocations",
    params(FunctionName,
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many (50)"),
        ("status" = Option<hearth_core::InvocationStatus>, Query, description = "only this status"),
        ("since" = Option<String>, Query, description = "only those started at or after this RFC 3339 time")),
    responses((status = 200, body = schemas::InvocationList), CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<hearth_api::InvocationList>, ApiError> {
    let name = caller.qualify(&name)?;
    find(&state, &name).await?;
    // Invocations just answered may still be on their way to the store.
    state.fleet.settle(LIST_FLUSH_LIMIT).await;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            serde_json::from_value::<InvocationStatus>(json!(s)).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("unknown status {s:?}: use success, error, timeout, oom, crashed, queued, running or failed"),
                )
            })?,
        ),
    };
    let filter = InvocationFilter {
        limit: query
            .limit
            .unwrap_or(hearth_store::metadata::DEFAULT_LIST_LIMIT)
            .clamp(1, hearth_store::metadata::MAX_LIST_LIMIT),
        status,
        since: query.since,
    };
    let invocations = state
        .metadata
        .list_invocations(&name, &filter)
        .await
        .map_err(|e| ApiError::store("listing invocations", e))?;
    let invocations = invocations.into_iter().map(invocation_object).collect();
    Ok(Json(hearth_api::InvocationList { invocations }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert_eq!(nesting_depth(b"{}"), 1);
        assert_eq!(nesting_depth(br#"{"a": [1, {"b": []}]}"#), 4);
        assert_eq!(nesting_depth(br#"["[[[[", "\"[[["]"#), 1);
        assert_eq!(nesting_depth(b"42"), 0);
    }

    #[test]
    fn deep_and_non_utf8_events_are_invalid() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for bad in [deep.into_bytes(), b"\"\xff\"".to_vec()] {
            let err = check_event(Bytes::from(bad)).unwrap_err();
            assert_eq!(err.code(), "invalid_event");
        }
        let fine = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(check_event(Bytes::from(fine)).is_ok());
    }
}
