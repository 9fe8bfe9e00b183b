//! The durable queue of asynchronous invocations.
//!
//! An accepted async invocation is a row until it has ended, so it survives a restart.
//! A dispatcher claims due rows, runs them, and either completes them or schedules
//! another attempt. Claims are not leases: one process owns a store (the data dir is
//! locked), so at startup it releases every claim a previous run left behind.

use crate::metadata::{db_error, SqliteMetadataStore};
use crate::StoreError;
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::params;
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

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

#[async_trait]
impl AsyncQueue for SqliteMetadataStore {
    async fn enqueue(&self, job: &AsyncJob) -> Result<(), StoreError> {
        let (job, path) = (job.clone(), self.path().to_path_buf());
        self.with_conn("enqueue", move |conn| {
            conn.execute(
                "INSERT INTO async_jobs (id, function, event, callback_url, started_at, attempts, next_attempt_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![job.id, job.function, job.event, job.callback_url, job.started_at, job.attempts, now_us()],
            )
            .map_err(|e| db_error(&path, "enqueue", e))?;
            Ok(())
        })
        .await
    }

    async fn claim_due(&self, limit: u32) -> Result<Vec<AsyncJob>, StoreError> {
        let path = self.path().to_path_buf();
        self.with_conn("claim_due", move |conn| {
            let err = |e| db_error(&path, "claim_due", e);
            let tx = conn.transaction().map_err(err)?;
            let jobs = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, function, event, callback_url, started_at, attempts FROM async_jobs
                         WHERE claimed = 0 AND next_attempt_us <= ?1
                         ORDER BY next_attempt_us LIMIT ?2",
                    )
                    .map_err(err)?;
                let rows = stmt
                    .query_map(params![now_us(), limit], |row| {
                        Ok(AsyncJob {
                            id: row.get(0)?,
                            function: row.get(1)?,
                            event: row.get(2)?,
                            callback_url: row.get(3)?,
                            started_at: row.get(4)?,
                            attempts: row.get(5)?,
                        })
                    })
                    .map_err(err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(err)?
            };
            for job in &jobs {
                tx.execute("UPDATE async_jobs SET claimed = 1 WHERE id = ?1", [&job.id])
                    .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(jobs)
        })
        .await
    }

    async fn retry_later(
        &self,
        id: &str,
        attempts: u32,
        delay: Duration,
    ) -> Result<(), StoreError> {
        let (id, path) = (id.to_string(), self.path().to_path_buf());
        let due = now_us().saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
        self.with_conn("retry_later", move |conn| {
            conn.execute(
                "UPDATE async_jobs SET claimed = 0, attempts = ?2, next_attempt_us = ?3 WHERE id = ?1",
                params![id, attempts, due],
            )
            .map_err(|e| db_error(&path, "retry_later", e))?;
            Ok(())
        })
        .await
    }

    async fn complete(&self, id: &str) -> Result<(), StoreError> {
        let (id, path) = (id.to_string(), self.path().to_path_buf());
        self.with_conn("complete", move |conn| {
            conn.execute("DELETE FROM async_jobs WHERE id = ?1", [&id])
                .map_err(|e| db_error(&path, "complete", e))?;
            Ok(())
        })
        .await
    }

    async fn release_claims(&self) -> Result<u64, StoreError> {
        let path = self.path().to_path_buf();
        self.with_conn("release_claims", move |conn| {
            let n = conn
                .execute("UPDATE async_jobs SET claimed = 0 WHERE claimed = 1", [])
                .map_err(|e| db_error(&path, "release_claims", e))?;
            Ok(n as u64)
        })
        .await
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let path = self.path().to_path_buf();
        self.with_conn("pending", move |conn| {
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM async_jobs", [], |row| row.get(0))
                .map_err(|e| db_error(&path, "pending", e))?;
            Ok(n.unsigned_abs())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> AsyncJob {
        AsyncJob {
            id: id.into(),
            function: "f".into(),
            event: b"{}".to_vec(),
            callback_url: None,
            started_at: "2026-11-28T10:00:00Z".into(),
            attempts: 0,
        }
    }

    #[tokio::test]
    async fn jobs_are_claimed_once_retried_later_and_completed() {
        let store = SqliteMetadataStore::open_in_memory().unwrap();
        store.enqueue(&job("a")).await.unwrap();
        store.enqueue(&job("b")).await.unwrap();
        let claimed = store.claim_due(10).await.unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(
            store.claim_due(10).await.unwrap().is_empty(),
            "claimed jobs are not handed out twice"
        );
        store
            .retry_later("a", 1, Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(
            store.claim_due(10).await.unwrap().is_empty(),
            "a retry is not due before its delay"
        );
        store.retry_later("a", 2, Duration::ZERO).await.unwrap();
        let again = store.claim_due(10).await.unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 2));
        store.complete("a").await.unwrap();
        assert_eq!(store.pending().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn claims_of_a_previous_run_are_released_and_jobs_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        {
            let store = SqliteMetadataStore::open(&path).unwrap();
            store.enqueue(&job("a")).await.unwrap();
            assert_eq!(store.claim_due(10).await.unwrap().len(), 1);
        }
        let store = SqliteMetadataStore::open(&path).unwrap();
        assert!(store.claim_due(10).await.unwrap().is_empty());
        assert_eq!(store.release_claims().await.unwrap(), 1);
        let jobs = store.claim_due(10).await.unwrap();
        assert_eq!(jobs, vec![job("a")]);
    }
}
