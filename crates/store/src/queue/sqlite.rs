//! [`AsyncQueue`] on the embedded SQLite store.

use super::{due_after, now_us, AsyncJob, AsyncQueue};
use crate::metadata::SqliteMetadataStore;
use crate::StoreError;
use async_trait::async_trait;
use rusqlite::params;
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
            let tx = conn.transaction()?;
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
