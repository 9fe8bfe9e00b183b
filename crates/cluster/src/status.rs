//! Live worker status: each worker's state under its own key with a 10 s TTL, refreshed
//! every 2 s, and a sorted set (id → last heartbeat) to enumerate them. A worker that
//! stops refreshing is gone when its key expires; the set is cleaned as readers go.

use crate::{now_ms, ClusterError, RedisConfig, STATUS_TTL};
use hearth_worker::fleet::WorkerState;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

/// Set members whose key expired this long ago are dropped from the set.
const FORGET_AFTER_MS: u64 = 60_000;

#[derive(Serialize, Deserialize)]
struct Published {
    state: WorkerState,
    heartbeat_ms: u64,
}

/// Publishes `state` as `worker`'s heartbeat.
pub async fn publish(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
    state: &WorkerState,
) -> Result<(), ClusterError> {
    let now = now_ms();
    let body = serde_json::to_vec(&Published {
        state: state.clone(),
        heartbeat_ms: now,
    })
    .unwrap_or_default();
    redis::pipe()
        .cmd("SET")
        .arg(config.worker_status(&state.id))
        .arg(body)
        .arg("PX")
        .arg(STATUS_TTL.as_millis() as u64)
        .ignore()
        .cmd("ZADD")
        .arg(config.workers())
        .arg(now)
        .arg(&state.id)
        .ignore()
        .query_async::<()>(conn)
        .await
        .map_err(|e| config.error(e))
}

/// Removes `worker` at once (a clean stop).
pub async fn withdraw(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
    worker: &str,
) -> Result<(), ClusterError> {
    redis::pipe()
        .cmd("DEL")
        .arg(config.worker_status(worker))
        .ignore()
        .cmd("ZREM")
        .arg(config.workers())
        .arg(worker)
        .ignore()
        .query_async::<()>(conn)
        .await
        .map_err(|e| config.error(e))
}

/// Every live worker, with its heartbeat age, by id.
pub async fn live(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
) -> Result<Vec<WorkerState>, ClusterError> {
    let ids: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(config.workers())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .map_err(|e| config.error(e))?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|(id, _)| config.worker_status(id)).collect();
    let bodies: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(conn)
        .await
        .map_err(|e| config.error(e))?;
    let now = now_ms();
    let mut workers = Vec::new();
    let mut forgotten = Vec::new();
    for ((id, last), body) in ids.iter().zip(bodies) {
        let published = body.and_then(|b| serde_json::from_slice::<Published>(&b).ok());
        match published {
            Some(published) => {
                let mut state = published.state;
                state.heartbeat_age_ms = now.saturating_sub(published.heartbeat_ms);
                workers.push(state);
            }
            None if now.saturating_sub(*last) > FORGET_AFTER_MS => forgotten.push(id.clone()),
            None => {}
        }
    }
    if !forgotten.is_empty() {
        let _: Result<(), _> = redis::cmd("ZREM")
            .arg(config.workers())
            .arg(&forgotten)
            .query_async(conn)
            .await;
    }
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(workers)
}

/// Whether `worker`'s status key still lives.
pub async fn is_alive(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
    worker: &str,
) -> Result<bool, ClusterError> {
    redis::cmd("EXISTS")
        .arg(config.worker_status(worker))
        .query_async(conn)
        .await
        .map_err(|e| config.error(e))
}
