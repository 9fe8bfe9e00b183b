//! Asynchronous invocations: a durable queue, retries with backoff, callbacks.
//!
//! `POST …/invoke` with `Prefer: respond-async` puts a job in the store's queue and
//! answers 202. The dispatcher claims due jobs (at most [`MAX_RUNNING`] at once), runs
//! each on the worker, and retries any attempt that did not succeed (a handler error,
//! a timeout, an OOM, a platform failure) with exponential backoff, up to
//! [`MAX_ATTEMPTS`]; then the invocation ends `failed` with the last reason. A finished
//! invocation is POSTed to the job's callback URL when it has one.

use crate::AppState;
use hearth_core::invocation::ErrorInfo;
use hearth_core::{Invocation, InvocationStatus};
use hearth_store::AsyncJob;
use hearth_worker::{InvokeRequest, Target};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Attempts before an async invocation is given up.
pub(crate) const MAX_ATTEMPTS: u32 = 3;
/// Async invocations running at once.
const MAX_RUNNING: usize = 16;
/// Jobs waiting before new async requests get 503.
pub(crate) const MAX_PENDING: u64 = 10_000;
/// Delay before the second attempt; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How often the dispatcher looks for due retries when nobody wakes it.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Wakes the dispatcher and counts what it runs.
#[derive(Default)]
pub(crate) struct Dispatcher {
    wake: Notify,
    running: AtomicUsize,
}

impl Dispatcher {
    /// A new job is due.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Runs the dispatcher until the process ends.
pub(crate) fn start(state: AppState) {
    tokio::spawn(async move {
        match state.queue.release_claims().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "resuming async invocations of an earlier run"),
            Err(error) => tracing::error!(%error, "cannot release async claims"),
        }
        let dispatcher = state.dispatcher.clone();
        loop {
            let free = MAX_RUNNING.saturating_sub(dispatcher.running.load(Ordering::Relaxed));
            if free > 0 {
                match state.queue.claim_due(free as u32).await {
                    Ok(jobs) => {
                        for job in jobs {
                            dispatcher.running.fetch_add(1, Ordering::Relaxed);
                            let state = state.clone();
                            tokio::spawn(async move {
                                run_attempt(&state, job).await;
                                state.dispatcher.running.fetch_sub(1, Ordering::Relaxed);
                                state.dispatcher.wake();
                            });
                        }
                    }
                    Err(error) => tracing::error!(%error, "cannot claim async invocations"),
                }
            }
            tokio::select! {
                _ = dispatcher.wake.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    });
}

/// The backoff before attempt `next` (2, 3, …).
fn backoff(next: u32) -> Duration {
    FIRST_BACKOFF * 2u32.saturating_pow(next.saturating_sub(2))
}

async fn run_attempt(state: &AppState, job: AsyncJob) {
    let attempt = job.attempts + 1;
    let outcome = attempt_once(state, &job).await;
    let invocation = match outcome {
        Ok(invocation) if invocation.status == InvocationStatus::Success => invocation,
        Ok(failed) if attempt < MAX_ATTEMPTS => {
            let mut waiting = failed;
            waiting.status = InvocationStatus::Queued;
            state.history.record(&waiting);
            crate::telemetry::async_retry(&job.function);
            if let Err(error) = state
                .queue
                .retry_later(&job.id, attempt, backoff(attempt + 1))
                .await
            {
                tracing::error!(id = %job.id, %error, "cannot schedule a retry");
            }
            return;
        }
        Ok(failed) => {
            crate::telemetry::async_dead_letter(&job.function);
            gave_up(failed, attempt)
        }
        Err(final_failure) => {
            crate::telemetry::async_dead_letter(&job.function);
            final_failure
        }
    };
    state.history.record(&invocation);
    if let Err(error) = state.queue.complete(&job.id).await {
        tracing::error!(id = %job.id, %error, "cannot remove a finished async invocation");
    }
    if let Some(url) = &job.callback_url {
        post_callback(url, &invocation).await;
    }
}

/// Runs one attempt. `Ok` is an invocation to judge (success or a retryable failure);
/// `Err` is a final failure that no retry can mend (the function is gone).
async fn attempt_once(state: &AppState, job: &AsyncJob) -> Result<Invocation, Invocation> {
    let record = match state.metadata.get_function(&job.function).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            return Err(failed_placeholder(
                state,
                job,
                "the function was deleted before the invocation could run".into(),
            ))
        }
        Err(error) => {
            return Ok(failed_placeholder(
                state,
                job,
                format!("the metadata store failed: {error}"),
            ))
        }
    };
    let target = Target {
        name: record.name,
        version: record.version,
        spec: record.spec,
        code_sha256: record.code_sha256,
    };
    let request = InvokeRequest {
        id: job.id.clone(),
        event: job.event.clone().into(),
        received: Instant::now(),
        started_at: job.started_at.clone(),
    };
    let mut running = hearth_worker::outcome::queued(&target, &request, state.worker.id());
    running.status = InvocationStatus::Running;
    state.history.record(&running);
    match state.worker.invoke(&target, request).await {
        Ok(invocation) => Ok(invocation),
        Err(error) => {
            let mut failed = running;
            failed.status = InvocationStatus::Crashed;
            failed.error = Some(ErrorInfo {
                kind: "PlatformError".into(),
                message: error.to_string(),
                trace: String::new(),
            });
            Ok(failed)
        }
    }
}

fn failed_placeholder(state: &AppState, job: &AsyncJob, message: String) -> Invocation {
    let target_name = job.function.clone();
    Invocation {
        id: job.id.clone(),
        function: target_name,
        version: 0,
        status: InvocationStatus::Failed,
        result: None,
        error: Some(ErrorInfo {
            kind: "PlatformError".into(),
            message,
            trace: String::new(),
        }),
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        truncated: false,
        cold_start: false,
        worker: state.worker.id().to_string(),
        started_at: job.started_at.clone(),
        duration_ms: 0.0,
        handler_duration_ms: 0.0,
        memory: Default::default(),
        cpu: Default::default(),
        io: Default::default(),
        outputs: Vec::new(),
        skipped_outputs: Vec::new(),
        advice: None,
    }
}

fn gave_up(mut last: Invocation, attempts: u32) -> Invocation {
    let (kind, message, trace) = match last.error.take() {
        Some(e) => (e.kind, e.message, e.trace),
        None => (String::new(), String::new(), String::new()),
    };
    last.error = Some(ErrorInfo {
        kind: "RetriesExhausted".into(),
        message: format!(
            "gave up after {attempts} attempts; the last ended {}: {kind}: {message}",
            last.status.as_str()
        ),
        trace,
    });
    last.status = InvocationStatus::Failed;
    last
}

/// POSTs the finished invocation, retrying a few times; failures are logged.
async fn post_callback(url: &str, invocation: &Invocation) {
    let client = reqwest::Client::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let sent = client
            .post(url)
            .timeout(Duration::from_secs(10))
            .json(invocation)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                tracing::warn!(%url, status = %response.status(), attempt, "callback refused")
            }
            Err(error) => tracing::warn!(%url, %error, attempt, "callback failed"),
        }
        tokio::time::sleep(backoff(attempt + 1)).await;
    }
    tracing::error!(%url, id = %invocation.id, "gave up delivering the callback");
}

/// Checks a callback URL: absolute http(s).
pub(crate) fn check_callback_url(url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("callback_url {url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(format!(
            "callback_url {url:?} must be an absolute http:// or https:// URL"
        ));
    }
    Ok(())
}

/// Shared handle type for the state.
pub(crate) type DispatcherHandle = Arc<Dispatcher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_attempt() {
        assert_eq!(backoff(2), FIRST_BACKOFF);
        assert_eq!(backoff(3), FIRST_BACKOFF * 2);
        assert_eq!(backoff(4), FIRST_BACKOFF * 4);
    }

    #[test]
    fn callback_urls_must_be_absolute_http() {
        assert!(check_callback_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_callback_url("https://example.com/x").is_ok());
        assert!(check_callback_url("ftp://example.com/x").is_err());
        assert!(check_callback_url("/relative").is_err());
    }
}
