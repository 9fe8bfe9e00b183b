//! `/v1/functions/{name}/tuning`: the AutoTuner's passive advice, applying it (with a
//! watch that reverts a size that fails), and active exploration at several sizes.
//!
//! The rules are `hearth_core::tuning` (pure); this module reads history, makes
//! versions and runs invocations. Every invocation it makes goes through
//! [`invoke_once`], the one seam to the controller's invoke path.

use crate::functions::{find, function_object};
use crate::tenancy::Caller;
use crate::{ApiError, AppState};
use axum::extract::{Extension, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hearth_api::functions::{FunctionObject, TuningChange};
use hearth_api::tuning::{AdviceBody, ExploreAnswer, Reverted, TuningApply, TuningExplore};
use hearth_core::tuning::{self, Advice, ExploreRow, Sample, TuningInput};
use hearth_core::{FunctionSpec, Invocation, InvocationStatus};
use hearth_store::{FunctionRecord, InvocationFilter};
use hearth_worker::fleet::first_attempt;
use hearth_worker::{host_cores, Target};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Calls of an applied size that the watch judges before it keeps the size.
pub(crate) const WATCHED_CALLS: usize = 20;
/// How often the watch reads history.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How long a watch waits for its calls before it gives up (keeping the size).
const WATCH_AT_MOST: Duration = Duration::from_secs(24 * 3600);
/// Longest the advice waits for just-finished invocations to reach history.
const FLUSH_LIMIT: Duration = Duration::from_millis(500);
/// Newest calls the advice reads (the store's largest listing).
const HISTORY_LIMIT: u32 = 1000;
/// Sizes explored when the request does not say (Power Tuning's usual set).
const DEFAULT_SIZES: [u64; 4] = [128, 256, 512, 1024];
/// Measured runs per size when the request does not say.
const DEFAULT_RUNS: usize = 10;
/// Most sizes and runs one exploration may ask for.
const MAX_SIZES: usize = 10;
const MAX_RUNS: usize = 50;

/// A size the tuner applied and then took back.
#[derive(Debug, Clone)]
pub(crate) struct Revert {
    /// What the advice shows of it.
    reverted: Reverted,
    /// Code the failed size ran (a new deploy of other code forgets the revert).
    code_sha256: String,
}

/// What the tuner remembers between requests: the reverts it made, by function.
#[derive(Default)]
pub(crate) struct Tuner {
    reverts: Mutex<HashMap<String, Revert>>,
}

impl Tuner {
    fn reverts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Revert>> {
        // Plain data: still consistent if a holder panicked.
        self.reverts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn revert_of(&self, record: &FunctionRecord) -> Option<Revert> {
        self.reverts()
            .get(&record.name)
            .filter(|r| r.code_sha256 == record.code_sha256)
            .cloned()
    }
}

/// Runs `target` once with `event` through the controller's invoke path (the fleet).
async fn invoke_once(
    state: &AppState,
    target: &Target,
    event: Bytes,
) -> Result<Invocation, ApiError> {
    let request = first_attempt(
        ulid::Ulid::new().to_string(),
        event,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    let invocation = state
        .fleet
        .dispatch(target.clone(), request)
        .await
        .map_err(crate::fleet_error::fleet_error)?;
    state.history.remember(&invocation);
    Ok(invocation)
}

/// The finished invocations of `record`'s version in the window, newest first.
async fn history_of(
    state: &AppState,
    record: &FunctionRecord,
) -> Result<Vec<Invocation>, ApiError> {
    // Invocations just answered may still be on their way to the store.
    state.fleet.settle(FLUSH_LIMIT).await;
    let since = chrono::Utc::now() - chrono::Duration::days(tuning::WINDOW_DAYS as i64);
    let filter = InvocationFilter {
        limit: HISTORY_LIMIT,
        status: None,
        since: Some(since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    };
    let invocations = state
        .metadata
        .list_invocations(&record.name, &filter)
        .await
        .map_err(|e| ApiError::internal("reading invocation history", e))?;
    Ok(invocations
        .into_iter()
        .filter(|i| i.version == record.version && i.status.is_final())
        .collect())
}

async fn advice_for(state: &AppState, record: &FunctionRecord) -> Result<Advice, ApiError> {
    let samples: Vec<Sample> = history_of(state, record)
        .await?
        .iter()
        .map(Sample::of)
        .collect();
    let revert = state.tuner.revert_of(record);
    Ok(tuning::advise(&TuningInput {
        current_memory_mb: record.spec.memory_mb,
        cpus: record.spec.cpus_on(host_cores()),
        samples: &samples,
        failed_mb: revert.map(|r| r.reverted.failed_memory_mb),
    }))
}

fn advice_body(state: &AppState, record: &FunctionRecord, mut advice: Advice) -> AdviceBody {
    let reverted = state.tuner.revert_of(record).map(|revert| revert.reverted);
    if let Some(revert) = &reverted {
        advice.reason = format!(
            "reverted v{} ({} MB) to {} MB: {}. {}",
            revert.from_version,
            revert.failed_memory_mb,
            revert.memory_mb,
            revert.reason,
            advice.reason
        );
    }
    AdviceBody {
        function: crate::tenancy::split(&record.name).1.to_string(),
        version: record.version,
        advice,
        cpus: record.spec.cpus_on(host_cores()),
        reverted,
    }
}

/// `GET /v1/functions/{name}/tuning`.
#[utoipa::path(get, path = "/v1/functions/{name}/tuning", operation_id = "tuning_advice", tag = "tuning",
    params(crate::schemas::FunctionName),
    responses((status = 200, description = "the AutoTuner's advice (docs/API.md)", body = Object), crate::schemas::CommonErrors))]
pub(crate) async fn advice(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<AdviceBody>, ApiError> {
    let name = caller.qualify(&name)?;
    let record = find(&state, &name).await?;
    let advice = advice_for(&state, &record).await?;
    Ok(Json(advice_body(&state, &record, advice)))
}

/// A tuning action's request body, with the shape a bad body's error shows.
trait ActionRequest: serde::de::DeserializeOwned + Send {
    const SHAPE: &'static str;
}

impl ActionRequest for TuningApply {
    const SHAPE: &'static str =
        r#"{"memory_mb": <the current size you saw>, "to_memory_mb": <optional size>}"#;
}

impl ActionRequest for TuningExplore {
    const SHAPE: &'static str = r#"{"event": <any JSON>, "sizes": [128, 256], "runs": 10, "strategy": "cost"|"speed"|"balanced", "apply": false}"#;
}

/// What every tuning action starts from, taken from its request: the caller's function
/// (its qualified name and record) and the action's body.
pub(crate) struct TuningAction<T> {
    state: AppState,
    name: String,
    record: FunctionRecord,
    request: T,
}

impl<T> TuningAction<T> {
    /// The state, the function's qualified name, its record, the request.
    fn into_parts(self) -> (AppState, String, FunctionRecord, T) {
        (self.state, self.name, self.record, self.request)
    }
}

/// What a tuning action answers.
type Answer<T> = Result<Json<T>, ApiError>;

impl<T: ActionRequest> FromRequest<AppState> for TuningAction<T> {
    /// An extractor's own rejection, or the API's error (the `json_errors` layer gives
    /// the former the API's shape).
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Extension(caller) = Extension::<Caller>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(name) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let found = async {
            let name = caller.qualify(&name)?;
            let request = parse_body(&body, T::SHAPE)?;
            let record = find(state, &name).await?;
            Ok::<_, ApiError>((name, record, request))
        };
        let (name, record, request) = found.await.map_err(IntoResponse::into_response)?;
        Ok(Self {
            state: state.clone(),
            name,
            record,
            request,
        })
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("the body must be JSON {shape}: {e}"),
        )
    })
}

/// `POST /v1/functions/{name}/tuning/apply`.
#[utoipa::path(post, path = "/v1/functions/{name}/tuning/apply", operation_id = "tuning_apply", tag = "tuning",
    params(crate::schemas::FunctionName), request_body = crate::schemas::TuningApply,
    responses((status = 200, description = "the new function version, with `tuning`", body = Object),
        (status = 409, description = "the function changed since", body = crate::schemas::ErrorBody),
        (status = 422, description = "`insufficient_data` or `no_change`", body = crate::schemas::ErrorBody),
        crate::schemas::CommonErrors))]
pub(crate) async fn apply(action: TuningAction<TuningApply>) -> Answer<FunctionObject> {
    let (state, name, record, request) = action.into_parts();
    if record.spec.memory_mb != request.memory_mb {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "{name} is at {} MB (version {}) now, not {} MB: read the advice again",
                record.spec.memory_mb, record.version, request.memory_mb
            ),
        ));
    }
    let advice = advice_for(&state, &record).await?;
    let target_mb = match (request.to_memory_mb, advice.recommended_memory_mb) {
        (Some(mb), _) | (None, Some(mb)) => mb,
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "insufficient_data",
                format!("no recommendation to apply yet: {}", advice.reason),
            ))
        }
    };
    if target_mb == record.spec.memory_mb {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_change",
            format!("{name} is already at {target_mb} MB: {}", advice.reason),
        ));
    }
    let error_rate = if advice.stats.n == 0 {
        0.0
    } else {
        advice.stats.errors as f64 / advice.stats.n as f64
    };
    let applied = make_version(&state, &record, target_mb).await?;
    state.tuner.reverts().remove(&name);
    tracing::info!(function = %name, from = record.spec.memory_mb, to = target_mb, version = applied.version, "tuning applied");
    tokio::spawn(watch(
        state.clone(),
        applied.clone(),
        record.clone(),
        error_rate,
    ));
    Ok(Json(FunctionObject {
        tuning: Some(TuningChange {
            previous_memory_mb: record.spec.memory_mb,
            previous_version: record.version,
            watching_calls: WATCHED_CALLS,
        }),
        ..function_object(&applied, None)
    }))
}

/// A new version of `record` at `memory_mb`, everything else the same.
async fn make_version(
    state: &AppState,
    record: &FunctionRecord,
    memory_mb: u64,
) -> Result<FunctionRecord, ApiError> {
    let spec = FunctionSpec {
        memory_mb,
        ..record.spec.clone()
    };
    spec.validate()
        .map_err(|e| ApiError::bad_request("invalid_config", e.to_string()))?;
    let (made, _) = state
        .metadata
        .put_version(&record.name, &spec, &record.code_sha256, record.code_size)
        .await
        .map_err(|e| ApiError::internal("storing function", e))?;
    state.cache_function(Some(&made), &record.name);
    state.fleet.retire(&record.name, Some(made.version)).await;
    Ok(made)
}

/// Why the first calls of `applied` condemn it, if they do: any OOM kill, or (after
/// [`WATCHED_CALLS`]) an error rate at least double the old one (and 2 errors or more).
fn verdict(calls: &[Invocation], old_error_rate: f64) -> Option<String> {
    let oom = calls
        .iter()
        .filter(|c| c.status == InvocationStatus::Oom)
        .count();
    if oom > 0 {
        return Some(format!(
            "{oom} of its first {} calls were OOM-killed",
            calls.len()
        ));
    }
    if calls.len() < WATCHED_CALLS {
        return None;
    }
    let errors = calls
        .iter()
        .filter(|c| c.status != InvocationStatus::Success)
        .count();
    let rate = errors as f64 / calls.len() as f64;
    (errors >= 2 && rate >= 2.0 * old_error_rate).then(|| {
        format!(
            "{errors} of its first {} calls failed ({:.0}% against {:.0}% before)",
            calls.len(),
            rate * 100.0,
            old_error_rate * 100.0
        )
    })
}

/// Watches the first calls of an applied size and reverts to `previous`'s size when
/// they condemn it. Stops when the calls are judged, the function changes, or after
/// [`WATCH_AT_MOST`].
async fn watch(
    state: AppState,
    applied: FunctionRecord,
    previous: FunctionRecord,
    old_error_rate: f64,
) {
    let started = Instant::now();
    while started.elapsed() < WATCH_AT_MOST {
        tokio::time::sleep(WATCH_EVERY).await;
        let current = match state.metadata.get_function(&applied.name).await {
            Ok(Some(current)) => current,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(function = %applied.name, %error, "tuning watch cannot read the function");
                continue;
            }
        };
        if current.version != applied.version {
            return;
        }
        let mut calls = match history_of(&state, &applied).await {
            Ok(calls) => calls,
            Err(_) => continue,
        };
        calls.reverse();
        calls.truncate(WATCHED_CALLS);
        match verdict(&calls, old_error_rate) {
            Some(reason) => {
                revert(&state, &applied, &previous, reason).await;
                return;
            }
            None if calls.len() >= WATCHED_CALLS => {
                tracing::info!(function = %applied.name, version = applied.version, "tuned size kept");
                return;
            }
            None => {}
        }
    }
}

async fn revert(
    state: &AppState,
    applied: &FunctionRecord,
    previous: &FunctionRecord,
    reason: String,
) {
    match make_version(state, applied, previous.spec.memory_mb).await {
        Ok(reverted) => {
            tracing::warn!(function = %applied.name, from = applied.spec.memory_mb, to = previous.spec.memory_mb, %reason, "tuning reverted");
            state.tuner.reverts().insert(
                applied.name.clone(),
                Revert {
                    reverted: Reverted {
                        from_version: applied.version,
                        failed_memory_mb: applied.spec.memory_mb,
                        to_version: reverted.version,
                        memory_mb: reverted.spec.memory_mb,
                        reason,
                    },
                    code_sha256: applied.code_sha256.clone(),
                },
            );
        }
        Err(error) => {
            tracing::error!(function = %applied.name, error = error.message(), "tuning revert failed")
        }
    }
}

/// `POST /v1/functions/{name}/tuning/explore`: runs the function at each size (a
/// cold start, then `runs` measured calls), one row per size, and the strategy's pick.
#[utoipa::path(post, path = "/v1/functions/{name}/tuning/explore", operation_id = "tuning_explore", tag = "tuning",
    params(crate::schemas::FunctionName), request_body = crate::schemas::TuningExplore,
    responses((status = 200, description = "one row per size, and the strategy's pick", body = Object),
        (status = 409, description = "the function changed while explored", body = crate::schemas::ErrorBody),
        (status = 429, description = "overloaded", body = crate::schemas::ErrorBody),
        crate::schemas::CommonErrors))]
pub(crate) async fn explore(action: TuningAction<TuningExplore>) -> Answer<ExploreAnswer> {
    let (state, name, record, request) = action.into_parts();
    let sizes = request.sizes.unwrap_or_else(|| DEFAULT_SIZES.to_vec());
    let runs = request.runs.unwrap_or(DEFAULT_RUNS);
    if sizes.is_empty() || sizes.len() > MAX_SIZES || !(1..=MAX_RUNS).contains(&runs) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("give 1 to {MAX_SIZES} sizes and 1 to {MAX_RUNS} runs"),
        ));
    }
    let event = serde_json::to_vec(
        &request
            .event
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
    )
    .map_err(|e| ApiError::bad_request("invalid_event", e.to_string()))?;
    if event.len() > crate::invoke::MAX_EVENT_BYTES {
        return Err(ApiError::bad_request(
            "event_too_large",
            "the event is larger than 6 MB",
        ));
    }
    let mut rows = Vec::with_capacity(sizes.len());
    for size in sizes {
        rows.push(explore_size(&state, &record, size, runs, Bytes::from(event.clone())).await?);
    }
    let strategy = request.strategy.unwrap_or_default();
    let pick = tuning::pick(&rows, strategy);
    let mut body = ExploreAnswer {
        function: crate::tenancy::split(&name).1.to_string(),
        version: record.version,
        strategy,
        rows,
        pick,
        applied: None,
    };
    if let Some(pick) = pick.filter(|p| request.apply && *p != record.spec.memory_mb) {
        let current = find(&state, &name).await?;
        if current.version != record.version {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "{name} changed while it was explored (now version {}): nothing applied",
                    current.version
                ),
            ));
        }
        let applied = make_version(&state, &record, pick).await?;
        body.applied = Some(function_object(&applied, None));
    }
    Ok(Json(body))
}

/// The row of one size. The runs use a pool of their own (a name no function can
/// have), so the function's own instances and history are untouched.
async fn explore_size(
    state: &AppState,
    record: &FunctionRecord,
    memory_mb: u64,
    runs: usize,
    event: Bytes,
) -> Result<ExploreRow, ApiError> {
    let spec = FunctionSpec {
        memory_mb,
        ..record.spec.clone()
    };
    spec.validate()
        .map_err(|e| ApiError::bad_request("invalid_size", e.to_string()))?;
    let cpus = spec.cpus_on(host_cores());
    // `_` is in no function or namespace name: the pool is nobody else's, and its
    // namespace (`tenancy::split`) stays the function's.
    let target = Target {
        name: format!("{}_tune-{memory_mb}", record.name),
        version: record.version,
        spec,
        code_sha256: record.code_sha256.clone(),
    };
    let measured = measure(state, &target, runs, event).await;
    state.fleet.retire(&target.name, None).await;
    Ok(tuning::summarize_runs(memory_mb, cpus, &measured?))
}

/// A cold start (not measured unless it fails), then `runs` calls, stopping at the
/// first that is OOM-killed or times out.
async fn measure(
    state: &AppState,
    target: &Target,
    runs: usize,
    event: Bytes,
) -> Result<Vec<Sample>, ApiError> {
    let first = invoke_once(state, target, event.clone()).await?;
    if first.status != InvocationStatus::Success {
        return Ok(vec![Sample::of(&first)]);
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let run = Sample::of(&invoke_once(state, target, event.clone()).await?);
        let fatal = matches!(
            run.status,
            InvocationStatus::Oom | InvocationStatus::Timeout
        );
        samples.push(run);
        if fatal {
            break;
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(status: InvocationStatus) -> Invocation {
        let mut json = json!({
            "id": "x", "function": "f", "version": 2, "status": "success", "result": null,
            "error": null, "exit_code": 0, "stdout": "", "stderr": "", "truncated": false,
            "cold_start": false, "worker": "w", "started_at": "t", "duration_ms": 1.0,
            "handler_duration_ms": 1.0,
            "memory": {"limit_mb": 64, "peak_bytes": 0, "max_rss_bytes": 0},
            "cpu": {"user_ms": 0.0, "system_ms": 0.0}, "io": {"read_bytes": 0, "write_bytes": 0},
            "outputs": [], "advice": null
        });
        json["status"] = json!(status.as_str());
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn one_oom_kill_condemns_at_once() {
        let calls = vec![call(InvocationStatus::Success), call(InvocationStatus::Oom)];
        assert!(verdict(&calls, 0.0).unwrap().contains("OOM"));
    }

    #[test]
    fn errors_condemn_only_after_the_watched_calls_and_when_doubled() {
        let mut calls = vec![call(InvocationStatus::Success); 10];
        calls.extend(vec![call(InvocationStatus::Error); 4]);
        assert_eq!(verdict(&calls, 0.0), None, "not yet {WATCHED_CALLS} calls");
        calls.extend(vec![call(InvocationStatus::Success); 6]);
        assert!(verdict(&calls, 0.05).is_some(), "20% against 5%");
        assert_eq!(verdict(&calls, 0.15), None, "20% is not double 15%");
        let mut one = vec![call(InvocationStatus::Success); 19];
        one.push(call(InvocationStatus::Error));
        assert_eq!(verdict(&one, 0.0), None, "one error is noise");
    }
}
