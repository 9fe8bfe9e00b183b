//! `GET /v1/events[?function=NAME]`: the dashboard's live feed, as Server-Sent Events.
//!
//! Each stream has its own loop that every [`TICK`] reads what any controller can read
//! (`GET /v1/status`, asked of the API with the caller's credentials, and the newest
//! invocations in the metadata store) and sends a named event only when it changed:
//! - `workers`: the status (workers, pools, totals), or `{"error": {"message"}}`
//!   when it cannot be read;
//! - `invocations`: per-10 s buckets of the last 5 minutes (count, errors) and the
//!   newest invocations (of `function` when given: its newest [`FUNCTION_RECENT`]);
//! - `session`: `{"signed_in": false}` when the stream's dashboard session ended (then
//!   the stream closes).
//!
//! Reading stores rather than listening to the worker keeps it working unchanged on a
//! cluster controller, where invocations run elsewhere.

use crate::auth::SessionKey;
use crate::session::SessionLease;
use crate::tenancy::{split, Caller};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Request};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, Router};
use chrono::{DateTime, TimeDelta, Utc};
use futures::Stream;
use hearth_core::{Invocation, InvocationStatus};
use hearth_store::InvocationFilter;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::ServiceExt;

/// Largest status body read (a cluster of many workers with many pools).
const STATUS_BODY_LIMIT: usize = 16 << 20;
/// How often a stream looks for changes.
const TICK: Duration = Duration::from_millis(500);
/// Width of one activity bucket, seconds.
const BUCKET_S: i64 = 10;
/// Buckets sent: 5 minutes.
const BUCKETS: i64 = 30;
/// Invocations re-read each tick in overview mode (late records and status changes
/// of running ones land within it).
const REREAD_WINDOW_S: i64 = 30;
/// Most invocations read per function per tick.
const READ_LIMIT: u32 = 1000;
/// Newest invocations sent for a function page.
const FUNCTION_RECENT: u32 = 200;
/// Newest invocations sent for the overview.
const OVERVIEW_RECENT: usize = 20;

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    function: Option<String>,
}

/// Server-Sent Events: live status and invocations (of one function with `?function=`).
#[utoipa::path(get, path = "/v1/events", operation_id = "events", tag = "operations",
    params(("function" = Option<String>, Query, description = "only this function's invocations")),
    responses((status = 200, description = "an endless event stream", content_type = "text/event-stream", body = String),
        crate::schemas::CommonErrors))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
    Extension(caller): Extension<Caller>,
    Extension(api): Extension<ApiRouter>,
    lease: Option<Extension<SessionLease>>,
    session_key: Option<Extension<SessionKey>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let function = query
        .function
        .as_deref()
        .map(|name| caller.qualify(name))
        .transpose()?;
    if let Some(name) = &function {
        crate::functions::find(&state, name).await?;
    }
    // The status is asked of the API with the caller's own credentials, so the feed
    // shows what `GET /v1/status` would show this caller.
    let status = StatusReader {
        api: api.0,
        authorization: headers.get(header::AUTHORIZATION).cloned(),
        session_key: session_key.map(|Extension(key)| key),
    };
    let (events, rx) = mpsc::channel(8);
    tokio::spawn(feed(
        state,
        status,
        Activity::new(function, caller),
        lease.map(|Extension(lease)| lease),
        events,
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Sends events until the client goes or its session ends.
async fn feed(
    state: AppState,
    status: StatusReader,
    mut activity: Activity,
    lease: Option<SessionLease>,
    events: mpsc::Sender<Event>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_workers, mut last_activity) = (String::new(), String::new());
    loop {
        tick.tick().await;
        if events.is_closed() {
            return;
        }
        let ended = match &lease {
            Some(lease) => !lease.is_live().await,
            None => false,
        };
        if ended {
            let ended = Event::default()
                .event("session")
                .data(json!({"signed_in": false}).to_string());
            let _ = events.send(ended).await;
            return;
        }
        // When the status cannot be read (a cluster whose Redis is down), the page is
        // told why, as the API would tell it.
        let workers = match status.read().await {
            Ok(workers) => workers,
            Err(why) => {
                tracing::warn!(%why, "live feed cannot read the status");
                json!({"error": {"message": why.to_string()}})
            }
        }
        .to_string();
        if workers != last_workers {
            if events
                .send(Event::default().event("workers").data(&workers))
                .await
                .is_err()
            {
                return;
            }
            last_workers = workers;
        }
        let now = Utc::now();
        let body = match activity.refresh(&state, now).await {
            Ok(()) => activity.body(now).to_string(),
            Err(error) => {
                tracing::warn!(
                    message = error.message(),
                    "live feed cannot read invocations"
                );
                continue;
            }
        };
        if body != last_activity {
            if events
                .send(Event::default().event("invocations").data(&body))
                .await
                .is_err()
            {
                return;
            }
            last_activity = body;
        }
    }
}

/// The API router, put in every request's extensions by the dashboard layer so a
/// handler can ask the API what any client would see.
#[derive(Clone)]
pub(crate) struct ApiRouter(pub(crate) Router);

/// Why the live feed could not read the status.
#[derive(Debug, thiserror::Error)]
enum StatusReadError {
    #[error("cannot build the status request: {0}")]
    Request(axum::http::Error),
    #[error("cannot read the status body: {0}")]
    Body(axum::Error),
    #[error("the status is not JSON: {0}")]
    Json(serde_json::Error),
    #[error("GET /v1/status answered {status}: {message}")]
    Refused {
        status: axum::http::StatusCode,
        message: String,
    },
}

/// Reads `GET /v1/status` through the API itself.
struct StatusReader {
    api: Router,
    authorization: Option<HeaderValue>,
    /// A session's key, when the caller came with a cookie instead of a header.
    session_key: Option<SessionKey>,
}

impl StatusReader {
    /// The status, less what changes on every read.
    async fn read(&self) -> Result<Value, StatusReadError> {
        let mut request = Request::get("/v1/status")
            .body(Body::empty())
            .map_err(StatusReadError::Request)?;
        if let Some(value) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, value.clone());
        }
        if let Some(key) = &self.session_key {
            request.extensions_mut().insert(key.clone());
        }
        let response = match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), STATUS_BODY_LIMIT)
            .await
            .map_err(StatusReadError::Body)?;
        let mut value: Value = serde_json::from_slice(&body).map_err(StatusReadError::Json)?;
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or_default();
            return Err(StatusReadError::Refused {
                status,
                message: message.to_string(),
            });
        }
        if let Some(object) = value.as_object_mut() {
            object.remove("uptime_ms");
        }
        Ok(value)
    }
}

/// What the feed says about one invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Summary {
    id: String,
    function: String,
    version: u64,
    status: InvocationStatus,
    started_at: String,
    #[serde(skip)]
    started: DateTime<Utc>,
    duration_ms: f64,
    cold_start: bool,
    memory_peak_bytes: u64,
    memory_limit_mb: u64,
    worker: String,
}

impl Summary {
    fn of(invocation: &Invocation) -> Option<Summary> {
        let started = DateTime::parse_from_rfc3339(&invocation.started_at)
            .ok()?
            .with_timezone(&Utc);
        Some(Summary {
            id: invocation.id.clone(),
            function: invocation.function.clone(),
            version: invocation.version,
            status: invocation.status,
            started_at: invocation.started_at.clone(),
            started,
            duration_ms: invocation.duration_ms,
            cold_start: invocation.cold_start,
            memory_peak_bytes: invocation.memory.peak_bytes,
            memory_limit_mb: invocation.memory.limit_mb,
            worker: invocation.worker.clone(),
        })
    }

    fn failed(&self) -> bool {
        self.status.is_final() && self.status != InvocationStatus::Success
    }
}

/// Recent invocations as one stream has seen them.
struct Activity {
    function: Option<String>,
    /// Whose functions the overview shows.
    caller: Caller,
    seen: HashMap<String, Summary>,
    primed: bool,
    sampled: bool,
}

impl Activity {
    fn new(function: Option<String>, caller: Caller) -> Activity {
        Activity {
            function,
            caller,
            seen: HashMap::new(),
            primed: false,
            sampled: false,
        }
    }

    /// Reads what changed: a function page its newest invocations; the overview every
    /// function's invocations of the last seconds (all 5 minutes the first time).
    async fn refresh(&mut self, state: &AppState, now: DateTime<Utc>) -> Result<(), ApiError> {
        let window_start = now - TimeDelta::seconds(BUCKET_S * BUCKETS);
        let (names, filter) = match &self.function {
            Some(name) => {
                self.seen.clear();
                let filter = InvocationFilter {
                    limit: FUNCTION_RECENT,
                    status: None,
                    since: None,
                };
                (vec![name.clone()], filter)
            }
            None => {
                let functions = state
                    .metadata
                    .list_functions()
                    .await
                    .map_err(|e| ApiError::internal("listing functions", e))?;
                let from = if self.primed {
                    now - TimeDelta::seconds(REREAD_WINDOW_S)
                } else {
                    window_start
                };
                let filter = InvocationFilter {
                    limit: READ_LIMIT,
                    status: None,
                    since: Some(from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
                };
                let names: Vec<String> = functions
                    .into_iter()
                    .map(|f| f.name)
                    .filter(|name| self.caller.sees(name))
                    .collect();
                // A deleted function's history is gone: so is what we saw of it.
                self.seen.retain(|_, s| names.contains(&s.function));
                (names, filter)
            }
        };
        let lists = futures::future::try_join_all(
            names
                .iter()
                .map(|name| state.metadata.list_invocations(name, &filter)),
        )
        .await
        .map_err(|e| ApiError::internal("listing invocations", e))?;
        self.sampled = lists
            .iter()
            .any(|list| list.len() as u32 >= filter.effective_limit())
            && self.function.is_none();
        for summary in lists.iter().flatten().filter_map(Summary::of) {
            self.seen.insert(summary.id.clone(), summary);
        }
        if self.function.is_none() {
            self.seen.retain(|_, s| s.started >= window_start);
        }
        self.primed = true;
        Ok(())
    }

    /// The `invocations` event.
    fn body(&self, now: DateTime<Utc>) -> Value {
        let newest_bucket = now.timestamp().div_euclid(BUCKET_S) * BUCKET_S;
        let first_bucket = newest_bucket - BUCKET_S * (BUCKETS - 1);
        let mut buckets: Vec<(i64, u64, u64)> = (0..BUCKETS)
            .map(|i| (first_bucket + i * BUCKET_S, 0, 0))
            .collect();
        let (mut total, mut errors) = (0u64, 0u64);
        for summary in self.seen.values().filter(|s| s.status.is_final()) {
            let index = (summary.started.timestamp() - first_bucket).div_euclid(BUCKET_S);
            let Some(bucket) = usize::try_from(index).ok().and_then(|i| buckets.get_mut(i)) else {
                continue;
            };
            bucket.1 += 1;
            total += 1;
            if summary.failed() {
                bucket.2 += 1;
                errors += 1;
            }
        }
        let mut recent: Vec<&Summary> = self.seen.values().collect();
        recent.sort_by(|a, b| (b.started, &b.id).cmp(&(a.started, &a.id)));
        if self.function.is_none() {
            recent.truncate(OVERVIEW_RECENT);
        }
        // Names as the API shows them: bare, within the caller's namespace.
        let recent: Vec<Value> = recent
            .into_iter()
            .map(|summary| {
                let mut value = json!(summary);
                value["function"] = split(&summary.function).1.into();
                value
            })
            .collect();
        json!({
            "function": self.function.as_deref().map(|f| split(f).1),
            "bucket_s": BUCKET_S,
            "buckets": buckets
                .iter()
                .map(|(t, n, e)| json!({"t": t, "n": n, "errors": e}))
                .collect::<Vec<_>>(),
            "totals": {"invocations": total, "errors": errors},
            "recent": recent,
            "sampled": self.sampled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, started: DateTime<Utc>, status: InvocationStatus) -> Summary {
        Summary {
            id: id.into(),
            function: "f".into(),
            version: 1,
            status,
            started_at: started.to_rfc3339(),
            started,
            duration_ms: 1.0,
            cold_start: false,
            memory_peak_bytes: 0,
            memory_limit_mb: 128,
            worker: "w".into(),
        }
    }

    #[test]
    fn buckets_count_finished_invocations_and_errors_by_start_time() {
        let now = DateTime::parse_from_rfc3339("2026-11-29T12:00:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut activity = Activity::new(None, Caller::admin());
        for (id, ago, status) in [
            ("a", 1, InvocationStatus::Success),
            ("b", 2, InvocationStatus::Error),
            ("c", 12, InvocationStatus::Success),
            ("d", 3, InvocationStatus::Running),
            ("e", 400, InvocationStatus::Success),
        ] {
            let s = summary(id, now - TimeDelta::seconds(ago), status);
            activity.seen.insert(id.into(), s);
        }
        let body = activity.body(now);
        let buckets = body["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 30);
        let last = &buckets[29];
        assert_eq!(last["t"], json!(now.timestamp() - 5));
        assert_eq!(
            (last["n"].as_u64(), last["errors"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(buckets[28]["n"], json!(1));
        assert_eq!(body["totals"], json!({"invocations": 3, "errors": 1}));
        // Newest first, the running one included.
        let ids: Vec<&str> = body["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b", "d", "c", "e"]);
    }
}
