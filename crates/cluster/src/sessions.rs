//! [`RedisSessions`]: the cluster's dashboard sessions, shared by every controller, so a
//! browser's next request may land on any of them and a sign-out on one ends the session
//! on all.
//!
//! A session is one key, `{prefix}:session:{SHA-256 of the token}`, whose value is a
//! small JSON record (the SHA-256 of the API key it stands for) and whose Redis TTL is
//! the session's expiry. Neither the token nor the key is ever written to Redis.

use crate::RedisConfig;
use async_trait::async_trait;
use hearth_store::{LiveSession, SessionRecord, SessionStore, StoreError};
use redis::aio::ConnectionManager;
use serde::Deserialize;
use std::time::Duration;

/// The record as Redis keeps it.
#[derive(Deserialize)]
struct Stored {
    key_sha256: String,
}

/// Sessions on the cluster's Redis.
pub struct RedisSessions {
    config: RedisConfig,
    conn: ConnectionManager,
}

impl RedisSessions {
    /// Connects to the cluster's Redis.
    pub async fn connect(config: RedisConfig) -> Result<RedisSessions, crate::ClusterError> {
        let conn = config.manager().await?;
        Ok(RedisSessions { config, conn })
    }

    fn key(&self, token_sha256: &str) -> String {
        self.config.key(&format!("session:{token_sha256}"))
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn open(
        &self,
        token_sha256: &str,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let value = serde_json::json!({"key_sha256": record.key_sha256}).to_string();
        let () = redis::cmd("SET")
            .arg(self.key(token_sha256))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(self.config.unavailable("open a dashboard session"))?;
        Ok(())
    }

    async fn find(&self, token_sha256: &str) -> Result<Option<LiveSession>, StoreError> {
        let key = self.key(token_sha256);
        let (value, pttl_ms): (Option<String>, i64) = redis::pipe()
            .atomic()
            .get(&key)
            .pttl(&key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(self.config.unavailable("read a dashboard session"))?;
        let (Some(value), true) = (value, pttl_ms > 0) else {
            return Ok(None);
        };
        // A record this build cannot read is no session (a newer hearth wrote it): the
        // browser signs in again.
        let Ok(stored) = serde_json::from_str::<Stored>(&value) else {
            tracing::warn!("a dashboard session in Redis is unreadable; treating it as signed out");
            return Ok(None);
        };
        Ok(Some(LiveSession {
            record: SessionRecord {
                key_sha256: stored.key_sha256,
            },
            remaining: Duration::from_millis(pttl_ms as u64),
        }))
    }

    async fn close(&self, token_sha256: &str) -> Result<(), StoreError> {
        let _: u32 = redis::cmd("DEL")
            .arg(self.key(token_sha256))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(self.config.unavailable("end a dashboard session"))?;
        Ok(())
    }
}
