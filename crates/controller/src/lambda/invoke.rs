//! Invoke: RequestResponse (the function's answer), Event (202, queued) and DryRun (204),
//! with Tail logs, over hearth's invoke path.

use super::errors::LambdaError;
use super::manage::{record_of, QualifierQuery};
use super::names;
use crate::invoke::{check_event, enqueue, prepare, run};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use hearth_core::{Invocation, InvocationStatus};
use serde_json::json;

/// Bytes of log tail returned with `X-Amz-Log-Type: Tail`, as Lambda.
const LOG_TAIL_BYTES: usize = 4096;

pub(crate) async fn invoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, LambdaError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let kind = header("x-amz-invocation-type").unwrap_or("RequestResponse");
    let tail = match header("x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(LambdaError::invalid(format!(
                "X-Amz-Log-Type {other:?}: use None or Tail"
            )))
        }
    };
    let function = names::parse(&name, query.qualifier.as_deref())?;
    let record = record_of(&state, &function).await?;
    let event = check_event(body)?;
    let version = record.version;
    match kind {
        "DryRun" => Ok(StatusCode::NO_CONTENT.into_response()),
        "Event" => {
            if function.version.is_some_and(|v| v != version) {
                return Err(LambdaError::invalid(
                    "asynchronous invocations run the newest version: leave out the qualifier",
                ));
            }
            let (target, request) = prepare(record, event);
            let id = enqueue(&state, &target, &request, None).await?;
            let mut response = StatusCode::ACCEPTED.into_response();
            set(&mut response, "x-amzn-requestid", &id);
            Ok(response)
        }
        "RequestResponse" => {
            let (target, request) = prepare(record, event);
            let invocation = run(&state, target, request).await?;
            Ok(answer(&invocation, tail))
        }
        other => Err(LambdaError::invalid(format!(
            "X-Amz-Invocation-Type {other:?}: use RequestResponse, Event or DryRun"
        ))),
    }
}

/// A finished invocation as Lambda answers it: 200 with the result, or with
/// `X-Amz-Function-Error: Unhandled` and `{errorMessage, errorType, stackTrace}`.
fn answer(invocation: &Invocation, tail: bool) -> Response {
    let (payload, failed) = match (&invocation.status, &invocation.error) {
        (InvocationStatus::Success, _) => (
            invocation.result.clone().unwrap_or(serde_json::Value::Null),
            false,
        ),
        (status, error) => {
            let (kind, message, trace) = match error {
                Some(e) => (e.kind.clone(), e.message.clone(), e.trace.clone()),
                None => (
                    match status {
                        InvocationStatus::Timeout => "Sandbox.Timedout".to_string(),
                        InvocationStatus::Oom => "Runtime.OutOfMemory".to_string(),
                        _ => "Runtime.ExitError".to_string(),
                    },
                    format!(
                        "RequestId: {} Error: the invocation ended with status {}",
                        invocation.id,
                        serde_json::to_value(status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    ),
                    String::new(),
                ),
            };
            let stack: Vec<&str> = trace.lines().collect();
            (
                json!({"errorMessage": message, "errorType": kind, "stackTrace": stack}),
                true,
            )
        }
    };
    let body = serde_json::to_vec(&payload).unwrap_or_else(|_| b"null".to_vec());
    let mut response = (StatusCode::OK, body).into_response();
    set(&mut response, "content-type", "application/json");
    set(&mut response, "x-amzn-requestid", &invocation.id);
    set(
        &mut response,
        "x-amz-executed-version",
        &invocation.version.to_string(),
    );
    if failed {
        set(&mut response, "x-amz-function-error", "Unhandled");
    }
    if tail {
        let tail = base64::engine::general_purpose::STANDARD.encode(log_tail(invocation));
        set(&mut response, "x-amz-log-result", &tail);
    }
    response
}

/// The last 4 KB of the invocation's logs, framed as Lambda's START/END/REPORT lines.
fn log_tail(invocation: &Invocation) -> Vec<u8> {
    let id = &invocation.id;
    let mut log = format!("START RequestId: {id} Version: {}\n", invocation.version);
    log.push_str(&invocation.output.stdout);
    log.push_str(&invocation.output.stderr);
    if !log.ends_with('\n') {
        log.push('\n');
    }
    log.push_str(&format!(
        "END RequestId: {id}\nREPORT RequestId: {id}\tDuration: {:.2} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\n",
        invocation.duration_ms,
        invocation.memory.limit_mb,
        invocation.memory.peak_bytes.max(invocation.memory.max_rss_bytes).div_ceil(1 << 20),
    ));
    let bytes = log.into_bytes();
    bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES)..].to_vec()
}

fn set(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}
