//! The durable queue of asynchronous invocations.
//!
//! An accepted async invocation is a row until it has ended, so it survives a restart.
//! A dispatcher claims due rows, runs them, and either completes them or schedules
//! another attempt. Claims are not leases: one dispatcher owns a queue (`hearth up`
//! locks its data dir), so at startup it releases every claim a previous run left
//! behind. On PostgreSQL several processes may claim at once and never get the same
//! job; `release_claims` there is for the one dispatcher of a deployment, at its start.
//!
//! [`AsyncQueue`] is the interface; each metadata backend implements it beside its
//! tables (`sqlite.rs`, `postgres.rs`).

mod postgres;
mod sqlite;

use crate::StoreError;
use async_trait::async_trait;
use chrono::Utc;
use std::time::Duration;

/// One queued asynchronous invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncJob {
    /// The invocation id (the same as the invocation record's).
    pub id: String,
    /// Function to run (its newest version at the time of each attempt).
    pub function: String,
    /// The event, JSON text.
    pub event: Vec<u8>,
    /// Where to POST the finished invocation, if anywhere.
    pub callback_url: Option<String>,
    /// RFC 3339 time the invocation was accepted.
    pub started_at: String,
    /// Attempts made so far.
    pub attempts: u32,
}

/// The queue interface; the embedded store implements it, Redis will too.
#[async_trait]
pub trait AsyncQueue: Send + Sync {
    /// Adds a job, due now.
    async fn enqueue(&self, job: &AsyncJob) -> Result<(), StoreError>;
    /// Claims up to `limit` due jobs, oldest first.
    async fn claim_due(&self, limit: u32) -> Result<Vec<AsyncJob>, StoreError>;
    /// Releases a claimed job for another attempt after `delay`.
    async fn retry_later(&self, id: &str, attempts: u32, delay: Duration)
        -> Result<(), StoreError>;
    /// Removes a job that has ended.
    async fn complete(&self, id: &str) -> Result<(), StoreError>;
    /// Releases every claim (at startup: claims of a previous run are void).
    async fn release_claims(&self) -> Result<u64, StoreError>;
    /// Jobs not yet ended.
    async fn pending(&self) -> Result<u64, StoreError>;
}

/// Now, in microseconds since the epoch (the unit of `next_attempt_us`).
pub(crate) fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// When a job released now with `delay` falls due (microseconds since the epoch).
pub(crate) fn due_after(delay: Duration) -> i64 {
    now_us().saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX))
}
