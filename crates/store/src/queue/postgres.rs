//! [`AsyncQueue`] on PostgreSQL. Claims take rows with `FOR UPDATE SKIP LOCKED`, so
//! dispatchers in several processes never claim one job twice.

use super::{due_after, now_us, AsyncJob, AsyncQueue};
use crate::metadata::PgMetadataStore;
use crate::StoreError;
use async_trait::async_trait;
use sqlx::Row;
use std::time::Duration;

fn attempts_i64(attempts: u32) -> i64 {
    i64::from(attempts)
}

#[async_trait]
impl AsyncQueue for PgMetadataStore {
    async fn enqueue(&self, job: &AsyncJob) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO async_jobs (id, function, event, callback_url, started_at, attempts, next_attempt_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&job.id)
        .bind(&job.function)
        .bind(&job.event)
        .bind(&job.callback_url)
        .bind(&job.started_at)
        .bind(attempts_i64(job.attempts))
        .bind(now_us())
        .execute(self.pool())
        .await
        .map_err(self.err("enqueue"))?;
        Ok(())
    }

    async fn claim_due(&self, limit: u32) -> Result<Vec<AsyncJob>, StoreError> {
        let err = self.err("claim_due");
        let rows = sqlx::query(
            "WITH due AS (
                 SELECT id FROM async_jobs
                 WHERE NOT claimed AND next_attempt_us <= $1
                 ORDER BY next_attempt_us LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE async_jobs j SET claimed = TRUE FROM due WHERE j.id = due.id
             RETURNING j.id, j.function, j.event, j.callback_url, j.started_at, j.attempts,
                       j.next_attempt_us",
        )
        .bind(now_us())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(&err)?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let attempts: i64 = row.try_get(5).map_err(&err)?;
            let due: i64 = row.try_get(6).map_err(&err)?;
            let id: String = row.try_get(0).map_err(&err)?;
            let attempts = u32::try_from(attempts).map_err(|e| StoreError::Corrupt {
                what: format!("async job {id}"),
                reason: format!("attempts {attempts}: {e}"),
            })?;
            let job = AsyncJob {
                id,
                function: row.try_get(1).map_err(&err)?,
                event: row.try_get(2).map_err(&err)?,
                callback_url: row.try_get(3).map_err(&err)?,
                started_at: row.try_get(4).map_err(&err)?,
                attempts,
            };
            jobs.push((due, job));
        }
        // UPDATE ... RETURNING keeps no order: oldest first, as promised.
        jobs.sort_by_key(|(due, _)| *due);
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    async fn retry_later(
        &self,
        id: &str,
        attempts: u32,
        delay: Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE async_jobs SET claimed = FALSE, attempts = $2, next_attempt_us = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(attempts_i64(attempts))
        .bind(due_after(delay))
        .execute(self.pool())
        .await
        .map_err(self.err("retry_later"))?;
        Ok(())
    }

    async fn complete(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM async_jobs WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(self.err("complete"))?;
        Ok(())
    }

    async fn release_claims(&self) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("UPDATE async_jobs SET claimed = FALSE WHERE claimed")
                .execute(self.pool())
                .await
                .map_err(self.err("release_claims"))?
                .rows_affected(),
        )
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM async_jobs")
            .fetch_one(self.pool())
            .await
            .map_err(self.err("pending"))?;
        Ok(n.unsigned_abs())
    }
}
