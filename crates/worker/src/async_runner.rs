//! One attempt of an asynchronous invocation, and what follows it: the policy that both
//! fleets share (the local queue of `hearth up` and the Redis streams of a cluster).
//!
//! An attempt that did not succeed (a handler error, a timeout, an OOM, a platform
//! failure) is retried with exponential backoff, up to [`MAX_ATTEMPTS`]; then the
//! invocation ends `failed` with the last reason. Every record goes to history through
//! the worker's reporter (the one writer), amended before it is spooled; only records
//! of attempts that never reached an instance are written directly. A finished
//! invocation is POSTed to its callback URL when it has one.

use crate::{outcome, ExecuteRequest, Target, Worker};
use hearth_core::invocation::ErrorInfo;
use hearth_core::{Invocation, InvocationStatus};
use hearth_store::{AsyncJob, MetadataStore};
use std::time::{Duration, Instant};

/// Attempts (and, in a cluster, deliveries) before an async invocation is given up.
pub const MAX_ATTEMPTS: u32 = 3;
/// Delay before the second attempt; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// How an attempt ended.
#[derive(Debug)]
pub enum AttemptEnd {
    /// The invocation has ended (success, or `failed` after the last attempt).
    Finished(Box<Invocation>),
    /// Run it again (attempt + 1) after this delay.
    RetryAfter(Duration),
}

/// The backoff before attempt `next` (2, 3, …).
pub fn backoff(next: u32) -> Duration {
    FIRST_BACKOFF * 2u32.saturating_pow(next.saturating_sub(2))
}

/// Runs attempt `attempt` of `job` on `worker` and records it.
pub async fn run_attempt(
    worker: &Worker,
    metadata: &dyn MetadataStore,
    job: &AsyncJob,
    attempt: u32,
) -> AttemptEnd {
    let last = attempt >= MAX_ATTEMPTS;
    let record = match metadata.get_function(&job.function).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            let gone = placeholder(
                worker,
                job,
                attempt,
                "the function was deleted before the invocation could run",
            );
            write(metadata, &gone).await;
            crate::telemetry::async_dead_letter(&job.function);
            return AttemptEnd::Finished(Box::new(gone));
        }
        Err(error) if !last => {
            tracing::warn!(id = %job.id, %error, "metadata store failed; async attempt postponed");
            return AttemptEnd::RetryAfter(backoff(attempt + 1));
        }
        Err(error) => {
            let failed = placeholder(
                worker,
                job,
                attempt,
                &format!("the metadata store failed: {error}"),
            );
            write(metadata, &failed).await;
            return AttemptEnd::Finished(Box::new(failed));
        }
    };
    let target = Target {
        name: record.name,
        version: record.version,
        spec: record.spec,
        code_sha256: record.code_sha256,
    };
    let request = ExecuteRequest {
        id: job.id.clone(),
        event: job.event.clone().into(),
        received: Instant::now(),
        started_at: job.started_at.clone(),
        attempt,
    };
    let mut running = outcome::queued(&target, &request, worker.id());
    running.status = InvocationStatus::Running;
    write(metadata, &running).await;
    let finish = |invocation: &mut Invocation| judge(invocation, attempt);
    let invocation = match worker.execute_finishing(&target, request, &finish).await {
        Ok(invocation) => invocation,
        Err(error) => {
            let mut failed = running;
            failed.status = InvocationStatus::Crashed;
            failed.error = Some(ErrorInfo {
                kind: "PlatformError".into(),
                message: error.to_string(),
                trace: String::new(),
            });
            judge(&mut failed, attempt);
            write(metadata, &failed).await;
            failed
        }
    };
    if invocation.status == InvocationStatus::Queued {
        AttemptEnd::RetryAfter(backoff(attempt + 1))
    } else {
        AttemptEnd::Finished(Box::new(invocation))
    }
}

/// Marks an attempt that did not succeed: `queued` again while attempts remain, else
/// `failed` with the last reason.
fn judge(invocation: &mut Invocation, attempt: u32) {
    if invocation.status == InvocationStatus::Success {
        return;
    }
    if attempt < MAX_ATTEMPTS {
        invocation.status = InvocationStatus::Queued;
        crate::telemetry::async_retry(&invocation.function);
        return;
    }
    crate::telemetry::async_dead_letter(&invocation.function);
    let (kind, message, trace) = match invocation.error.take() {
        Some(e) => (e.kind, e.message, e.trace),
        None => (String::new(), String::new(), String::new()),
    };
    invocation.error = Some(ErrorInfo {
        kind: "RetriesExhausted".into(),
        message: format!(
            "gave up after {attempt} attempts; the last ended {}: {kind}: {message}",
            invocation.status.as_str()
        ),
        trace,
    });
    invocation.status = InvocationStatus::Failed;
}

/// Gives up an invocation whose attempts were all lost with their workers.
pub fn lost(worker: &Worker, job: &AsyncJob, deliveries: u32) -> Invocation {
    placeholder(
        worker,
        job,
        deliveries,
        &format!("gave up after {deliveries} deliveries: each worker that took it stopped before it finished"),
    )
}

/// A `failed` record for an invocation that never reached an instance.
fn placeholder(worker: &Worker, job: &AsyncJob, attempt: u32, message: &str) -> Invocation {
    Invocation {
        id: job.id.clone(),
        function: job.function.clone(),
        version: 0,
        status: InvocationStatus::Failed,
        result: None,
        error: Some(ErrorInfo {
            kind: "PlatformError".into(),
            message: message.to_string(),
            trace: String::new(),
        }),
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        truncated: false,
        cold_start: false,
        worker: worker.id().to_string(),
        started_at: job.started_at.clone(),
        duration_ms: 0.0,
        handler_duration_ms: 0.0,
        memory: Default::default(),
        cpu: Default::default(),
        io: Default::default(),
        outputs: Vec::new(),
        skipped_outputs: Vec::new(),
        advice: None,
        attempt,
    }
}

/// Writes a record that does not go through the reporter.
pub async fn write(metadata: &dyn MetadataStore, invocation: &Invocation) {
    if let Err(error) = metadata.record_invocation(invocation).await {
        tracing::error!(id = %invocation.id, %error, "cannot record invocation");
    }
}

/// POSTs the finished invocation, retrying a few times; failures are logged.
pub async fn post_callback(url: &str, invocation: &Invocation) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_attempt() {
        assert_eq!(backoff(2), FIRST_BACKOFF);
        assert_eq!(backoff(3), FIRST_BACKOFF * 2);
        assert_eq!(backoff(4), FIRST_BACKOFF * 4);
    }
}
