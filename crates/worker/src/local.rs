//! The fleet of `hearth up`: one worker in the controller's process.
//!
//! Sync invocations are a function call. Async ones wait in the store's durable
//! [`AsyncQueue`] (a row until they end, so a restart loses none); a dispatcher claims
//! due jobs, at most [`MAX_RUNNING`] at once, and runs each attempt through the shared
//! [`async_runner`](crate::async_runner) policy.

use crate::async_runner::{self, AttemptEnd};
use crate::build::{BuildRequest, Built};
use crate::deps::{DepsError, Installed};
use crate::fleet::{Fleet, FleetError, WorkerState};
use crate::{ExecuteRequest, Target, Worker};
use async_trait::async_trait;
use hearth_core::Invocation;
use hearth_store::{AsyncJob, AsyncQueue, MetadataStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Async invocations running at once.
const MAX_RUNNING: usize = 16;
/// Jobs waiting before new async requests are refused.
pub const MAX_PENDING: u64 = 10_000;
/// How often the dispatcher looks for due retries when nobody wakes it.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// One worker, in process.
pub struct LocalFleet {
    worker: Arc<Worker>,
    queue: Arc<dyn AsyncQueue>,
    metadata: Arc<dyn MetadataStore>,
    wake: Notify,
    running: AtomicUsize,
}

impl LocalFleet {
    /// Wraps `worker` and starts the dispatcher of the async jobs in `queue` (releasing
    /// the claims an earlier run left behind).
    pub fn start(
        worker: Arc<Worker>,
        queue: Arc<dyn AsyncQueue>,
        metadata: Arc<dyn MetadataStore>,
    ) -> Arc<LocalFleet> {
        let fleet = Arc::new(LocalFleet {
            worker,
            queue,
            metadata,
            wake: Notify::new(),
            running: AtomicUsize::new(0),
        });
        tokio::spawn(dispatch_forever(fleet.clone()));
        fleet
    }

    /// The worker.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }
}

async fn dispatch_forever(fleet: Arc<LocalFleet>) {
    match fleet.queue.release_claims().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "resuming async invocations of an earlier run"),
        Err(error) => tracing::error!(%error, "cannot release async claims"),
    }
    loop {
        let free = MAX_RUNNING.saturating_sub(fleet.running.load(Ordering::Relaxed));
        if free > 0 {
            match fleet.queue.claim_due(free as u32).await {
                Ok(jobs) => {
                    for job in jobs {
                        fleet.running.fetch_add(1, Ordering::Relaxed);
                        let fleet = fleet.clone();
                        tokio::spawn(async move {
                            run_job(&fleet, job).await;
                            fleet.running.fetch_sub(1, Ordering::Relaxed);
                            fleet.wake.notify_one();
                        });
                    }
                }
                Err(error) => tracing::error!(%error, "cannot claim async invocations"),
            }
        }
        crate::telemetry::publish_queue_depth(fleet.queue.as_ref()).await;
        tokio::select! {
            _ = fleet.wake.notified() => {}
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

async fn run_job(fleet: &LocalFleet, job: AsyncJob) {
    let attempt = job.attempts + 1;
    match async_runner::run_attempt(&fleet.worker, fleet.metadata.as_ref(), &job, attempt).await {
        AttemptEnd::RetryAfter(delay) => {
            if let Err(error) = fleet.queue.retry_later(&job.id, attempt, delay).await {
                tracing::error!(id = %job.id, %error, "cannot schedule a retry");
            }
        }
        AttemptEnd::Finished(invocation) => {
            if let Err(error) = fleet.queue.complete(&job.id).await {
                tracing::error!(id = %job.id, %error, "cannot remove a finished async invocation");
            }
            if let Some(url) = &job.callback_url {
                async_runner::post_callback(url, &invocation).await;
            }
        }
    }
}

#[async_trait]
impl Fleet for LocalFleet {
    async fn dispatch(
        &self,
        target: Target,
        request: ExecuteRequest,
    ) -> Result<Invocation, FleetError> {
        Ok(self.worker.execute(&target, request).await?)
    }

    async fn submit(&self, job: AsyncJob) -> Result<(), FleetError> {
        let pending = self
            .queue
            .pending()
            .await
            .map_err(|e| FleetError::Unavailable(format!("reading the async queue: {e}")))?;
        if pending >= MAX_PENDING {
            return Err(FleetError::QueueFull { pending });
        }
        self.queue
            .enqueue(&job)
            .await
            .map_err(|e| FleetError::Unavailable(format!("queueing the invocation: {e}")))?;
        self.wake.notify_one();
        Ok(())
    }

    async fn build(&self, request: BuildRequest) -> Result<Option<Built>, FleetError> {
        Ok(self.worker.build(request).await?)
    }

    async fn install_dependencies(
        &self,
        function: &str,
        runtime: hearth_core::Runtime,
        code_tar: &bytes::Bytes,
    ) -> Result<Option<Installed>, DepsError> {
        self.worker
            .install_dependencies(function, runtime, code_tar)
            .await
    }

    async fn retire(&self, name: &str, keep_version: Option<u64>) {
        self.worker.retire(name, keep_version).await;
    }

    async fn workers(&self) -> Result<Vec<WorkerState>, FleetError> {
        let status = self.worker.status();
        Ok(vec![WorkerState {
            id: status.id,
            address: "in-process".into(),
            backend: status.backend,
            capacity: MAX_RUNNING,
            active_invocations: status.active_invocations,
            pools: status.pools,
            version: env!("CARGO_PKG_VERSION").into(),
            heartbeat_age_ms: 0,
        }])
    }

    async fn settle(&self, limit: Duration) {
        self.worker.flush_reports(limit).await;
    }

    async fn shutdown(&self) {
        self.worker.shutdown().await;
    }
}
