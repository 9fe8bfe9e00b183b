//! Dashboard sessions: the [`SessionStore`] interface, and [`LocalSessions`], its
//! in-process implementation for a single controller (`hearth up`).
//!
//! A cluster's controllers share one store on Redis (`hearth-cluster`'s), so a browser
//! signed in through one controller stays signed in on every other, and a sign-out on
//! any of them ends the session everywhere. Both keep only hashes: a session is found
//! by the SHA-256 of its token, and holds the SHA-256 of the API key it stands for (the
//! key itself is re-resolved from that hash on every request, so a revoked key ends its
//! sessions at once). Neither the token nor the key is ever stored.

use crate::StoreError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a session stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Hex SHA-256 of the API key the session was opened with.
    pub key_sha256: String,
}

/// A live session as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// What it stands for.
    pub record: SessionRecord,
    /// How long until it expires.
    pub remaining: Duration,
}

/// Sessions by the hash of their token, each with its own expiry.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Keeps `record` under `token_sha256` for `ttl`.
    async fn open(
        &self,
        token_sha256: &str,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The unexpired session under `token_sha256`, if any.
    async fn find(&self, token_sha256: &str) -> Result<Option<LiveSession>, StoreError>;

    /// Ends the session under `token_sha256` (nothing if there is none).
    async fn close(&self, token_sha256: &str) -> Result<(), StoreError>;
}

/// Most sessions kept in memory at once; past it the oldest is dropped.
pub const MAX_LOCAL_SESSIONS: usize = 10_000;

/// Sessions in this process's memory.
#[derive(Default)]
pub struct LocalSessions {
    by_token_hash: Mutex<HashMap<String, Kept>>,
}

struct Kept {
    record: SessionRecord,
    opened: Instant,
    expires: Instant,
}

impl LocalSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        // Plain data: still consistent if a holder panicked.
        self.by_token_hash.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`SessionStore::open`] at `now`.
    pub fn open_at(&self, token_sha256: &str, record: &SessionRecord, ttl: Duration, now: Instant) {
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_LOCAL_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(
            token_sha256.to_string(),
            Kept {
                record: record.clone(),
                opened: now,
                expires: now + ttl,
            },
        );
    }

    /// [`SessionStore::find`] at `now`; an expired session is dropped.
    pub fn find_at(&self, token_sha256: &str, now: Instant) -> Option<LiveSession> {
        let mut sessions = self.lock();
        let session = sessions.get(token_sha256)?;
        if session.expires <= now {
            sessions.remove(token_sha256);
            return None;
        }
        Some(LiveSession {
            record: session.record.clone(),
            remaining: session.expires - now,
        })
    }

    /// How many sessions are kept (expired ones included until they are next seen).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl SessionStore for LocalSessions {
    async fn open(
        &self,
        token_sha256: &str,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.open_at(token_sha256, record, ttl, Instant::now());
        Ok(())
    }

    async fn find(&self, token_sha256: &str) -> Result<Option<LiveSession>, StoreError> {
        Ok(self.find_at(token_sha256, Instant::now()))
    }

    async fn close(&self, token_sha256: &str) -> Result<(), StoreError> {
        self.lock().remove(token_sha256);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> SessionRecord {
        SessionRecord {
            key_sha256: key.to_string(),
        }
    }

    #[test]
    fn a_session_lives_until_its_expiry_then_is_gone() {
        let sessions = LocalSessions::default();
        let t0 = Instant::now();
        sessions.open_at("t", &record("k"), Duration::from_secs(60), t0);
        let live = sessions.find_at("t", t0 + Duration::from_secs(59)).unwrap();
        assert_eq!(live.record, record("k"));
        assert_eq!(live.remaining, Duration::from_secs(1));
        assert!(sessions
            .find_at("t", t0 + Duration::from_secs(60))
            .is_none());
        // Dropped, not just hidden: an earlier clock does not revive it.
        assert!(sessions.find_at("t", t0).is_none());
        assert!(sessions.is_empty());
    }

    #[tokio::test]
    async fn close_ends_a_session() {
        let sessions = LocalSessions::default();
        sessions
            .open("t", &record("k"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(sessions.find("t").await.unwrap().is_some());
        sessions.close("t").await.unwrap();
        assert!(sessions.find("t").await.unwrap().is_none());
        sessions.close("t").await.unwrap();
    }

    #[test]
    fn past_the_bound_the_oldest_session_goes() {
        let sessions = LocalSessions::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3600);
        for i in 0..MAX_LOCAL_SESSIONS {
            sessions.open_at(
                &format!("t{i}"),
                &record("k"),
                ttl,
                t0 + Duration::from_millis(i as u64),
            );
        }
        let later = t0 + Duration::from_secs(20);
        sessions.open_at("newest", &record("k"), ttl, later);
        assert_eq!(sessions.len(), MAX_LOCAL_SESSIONS);
        assert!(sessions.find_at("t0", later).is_none());
        assert!(sessions.find_at("t1", later).is_some());
        assert!(sessions.find_at("newest", later).is_some());
    }
}
