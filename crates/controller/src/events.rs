//! `GET /v1/events[?function=NAME]`: the dashboard's live feed, as Server-Sent Events.
//!
//! Each stream has its own loop that every [`TICK`] reads what any controller can read
//! (the data of `GET /v1/status`, the newest invocations in the metadata store) and
//! sends a named event only when it changed:
//! - `workers`: the status (workers, pools, totals);
//! - `invocations`: per-10 s buckets of the last 5 minutes (count, errors) and the
//!   newest invocations (of `function` when given: its newest [`FUNCTION_RECENT`]);
//! - `session`: `{"signed_in": false}` when the stream's dashboard session ended (then
//!   the stream closes).
//!
//! Reading stores rather than listening to the worker keeps it working unchanged on a
//! cluster controller, where invocations run elsewhere.

use crate::session::SessionLease;
use crate::{ApiError, AppState};
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
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

pub(crate) async fn stream(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
    lease: Option<Extension<SessionLease>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if let Some(name) = &query.function {
        crate::functions::find(&state, name).await?;
    }
    let (events, rx) = mpsc::channel(8);
    tokio::spawn(feed(
        state,
        Activity::new(query.function),
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
        if lease.as_ref().is_some_and(|lease| !lease.is_live()) {
            let ended = Event::default()
                .event("session")
                .data(json!({"signed_in": false}).to_string());
            let _ = events.send(ended).await;
            return;
        }
        let workers = workers(&state).await.to_string();
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

/// The status as `GET /v1/status` answers it, less what changes on every read; when the
/// fleet cannot be read (a cluster whose Redis is down), the error the API would give.
async fn workers(state: &AppState) -> Value {
    let mut status = match crate::status::status(State(state.clone())).await {
        Ok(axum::Json(status)) => status,
        Err(error) => serde_json::json!({"error": {"message": error.message()}}),
    };
    if let Some(object) = status.as_object_mut() {
        object.remove("uptime_ms");
    }
    status
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
    seen: HashMap<String, Summary>,
    primed: bool,
    sampled: bool,
}

impl Activity {
    fn new(function: Option<String>) -> Activity {
        Activity {
            function,
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
                let names: Vec<String> = functions.into_iter().map(|f| f.name).collect();
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
        json!({
            "function": self.function,
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
        let mut activity = Activity::new(None);
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
