//! [`AsyncQueue`] on the embedded SQLite store.

use super::{due_after, now_us, AsyncJob, AsyncQueue};
use crate::metadata::SqliteMetadataStore;
use crate::StoreError;
use async_trait::async_trait;
use rusqlite::{params, TransactionBehavior};
use std::time::Duration;

#[async_trait]
impl AsyncQueue for SqliteMetadataStore {
    async fn enqueue(&self, job: &AsyncJob) -> Result<(), StoreError> {
        let job = job.clone();
        self.with_conn("enqueue", move |conn| {
            conn.execute(
                "INSERT INTO async_jobs (id, function, event, callback_url, started_at, attempts, next_attempt_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![job.id, job.function, job.event, job.callback_url, job.started_at, job.attempts, now_us()],
            )?;
            Ok(())
        })
        .await
    }

    async fn claim_due(&self, limit: u32) -> Result<Vec<AsyncJob>, StoreError> {
        self.with_conn("claim_due", move |conn| {
            // IMMEDIATE: a read that later writes would fail with "database is locked"
            // (not wait) when another process claims at the same moment.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let jobs = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, function, event, callback_url, started_at, attempts FROM async_jobs
                     WHERE claimed = 0 AND next_attempt_us <= ?1
                     ORDER BY next_attempt_us LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now_us(), limit], |row| {
                    Ok(AsyncJob {
                        id: row.get(0)?,
                        function: row.get(1)?,
                        event: row.get(2)?,
                        callback_url: row.get(3)?,
                        started_at: row.get(4)?,
                        attempts: row.get(5)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            for job in &jobs {
                tx.execute("UPDATE async_jobs SET claimed = 1 WHERE id = ?1", [&job.id])?;
            }
            tx.commit()?;
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
        let id = id.to_string();
        let due = due_after(delay);
        self.with_conn("retry_later", move |conn| {
            conn.execute(
                "UPDATE async_jobs SET claimed = 0, attempts = ?2, next_attempt_us = ?3 WHERE id = ?1",
                params![id, attempts, due],
            )?;
            Ok(())
        })
        .await
    }

    async fn complete(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with_conn("complete", move |conn| {
            conn.execute("DELETE FROM async_jobs WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    async fn release_claims(&self) -> Result<u64, StoreError> {
        self.with_conn("release_claims", move |conn| {
            let n = conn.execute("UPDATE async_jobs SET claimed = 0 WHERE claimed = 1", [])?;
            Ok(n as u64)
        })
        .await
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        self.with_conn("pending", move |conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM async_jobs", [], |row| row.get(0))?;
            Ok(n.unsigned_abs())
        })
        .await
    }
}

// Tests: `tests/metadata_store.rs` runs the same suite on this backend and on PostgreSQL.
