//! hearth's cluster state on Redis: the [`Fleet`](hearth_worker::fleet::Fleet) of a
//! cluster, where controllers and workers are separate processes on any machines.
//!
//! Owns: live worker status (each worker's own key with a 10 s TTL, refreshed every 2 s,
//! plus a sorted set to enumerate them: [`status`]), the invocation queue on Redis
//! Streams with consumer groups (a stream per worker for warm affinity, a shared one for
//! first calls, one for async jobs whose pending entries are their leases), the
//! per-controller reply streams, and the at-most-once claim of a sync invocation.
//! [`controller::RedisFleet`] is the controller's side, [`node::WorkerNode`] the worker's;
//! [`janitor`] cleans what dead workers leave in the sync queues (never an async lease).
//! Also the controllers' shared rate limits and concurrency slots ([`limits`]) and their
//! shared dashboard sessions (hashes only, [`sessions`]).
//!
//! Never: runs code (the worker crate does), speaks HTTP, or stores metadata and objects
//! (PostgreSQL and S3 do, through `hearth-store`). Trimming never deletes a pending
//! entry: queue entries are deleted one by one once acknowledged, reply streams trimmed
//! below what their reader has read; only the janitor deletes a pending entry, and only
//! a sync one whose reader died (never an async lease). Blocking reads use connections of their own with
//! no response timeout (a shared connection's timeout would cut a `BLOCK` short).
//!
//! Verb (one per layer, README "One call, followed down"): `dispatch` ([`controller::RedisFleet`]
//! queues the call; [`node::WorkerNode`] takes it and calls `Worker::execute`).

pub mod controller;
pub mod janitor;
pub mod limits;
pub mod messages;
pub mod node;
pub mod sessions;
pub mod status;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::AsyncConnectionConfig;
use std::time::Duration;

/// Consumer group of every queue stream.
pub const GROUP: &str = "workers";
/// How long a worker's status key lives without a refresh.
pub const STATUS_TTL: Duration = Duration::from_secs(10);
/// How often a worker refreshes its status.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// An async entry whose worker has been silent this long is reclaimed by another.
pub const LEASE: Duration = Duration::from_secs(15);

/// Why the cluster state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis refused or could not be reached.
    #[error("redis at {url}: {source}")]
    Redis {
        /// The server (without credentials).
        url: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
}

/// Where the cluster's keys live: a Redis server and a key prefix (several clusters, or
/// tests, can share one server).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prefix of every key, e.g. `hearth`.
    pub prefix: String,
}

impl RedisConfig {
    /// The key `{prefix}:{rest}`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// The shared queue of first calls (no warm instance anywhere).
    pub fn shared_queue(&self) -> String {
        self.key("q:sync")
    }

    /// The queue of calls for `worker`'s warm instances.
    pub fn worker_queue(&self, worker: &str) -> String {
        self.key(&format!("q:sync:{worker}"))
    }

    /// The queue of async jobs.
    pub fn async_queue(&self) -> String {
        self.key("q:async")
    }

    /// The reply stream of `controller`.
    pub fn reply_stream(&self, controller: &str) -> String {
        self.key(&format!("reply:{controller}"))
    }

    /// The at-most-once claim of dispatch `dispatch` of invocation `id`.
    pub fn claim(&self, id: &str, dispatch: u32) -> String {
        self.key(&format!("claim:{id}:{dispatch}"))
    }

    /// The status key of `worker`.
    pub fn worker_status(&self, worker: &str) -> String {
        self.key(&format!("worker:{worker}"))
    }

    /// The sorted set of workers by last heartbeat.
    pub fn workers(&self) -> String {
        self.key("workers")
    }

    /// The channel on which deploys and deletes retire old warm instances.
    pub fn retire_channel(&self) -> String {
        self.key("retire")
    }

    fn client(&self) -> Result<redis::Client, ClusterError> {
        redis::Client::open(self.url.as_str()).map_err(|e| self.error(e))
    }

    /// A shared connection for short commands: reconnects by itself; a command gives up
    /// after 2 s rather than hang while Redis is away.
    pub async fn manager(&self) -> Result<ConnectionManager, ClusterError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        ConnectionManager::new_with_config(self.client()?, config)
            .await
            .map_err(|e| self.error(e))
    }

    /// A connection of its own for blocking reads (`BLOCK`): no response timeout.
    pub async fn blocking(&self) -> Result<MultiplexedConnection, ClusterError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(None);
        self.client()?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(e))
    }

    /// Wraps a client error with the server's address.
    pub fn error(&self, source: redis::RedisError) -> ClusterError {
        ClusterError::Redis {
            url: redact(&self.url),
            source,
        }
    }

    /// Maps a failed `op` on this Redis to the stores' error (for the store traits this
    /// crate implements on Redis).
    pub(crate) fn unavailable(
        &self,
        op: &'static str,
    ) -> impl Fn(redis::RedisError) -> hearth_store::StoreError + '_ {
        move |e| hearth_store::StoreError::Unavailable {
            service: format!("Redis ({})", self.error(e.clone())),
            op,
            source: Box::new(e),
        }
    }
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Creates the consumer group of `stream` (and the stream) unless it exists.
pub async fn ensure_group(
    conn: &mut ConnectionManager,
    stream: &str,
) -> Result<(), redis::RedisError> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.1:6379"),
            "redis://***@10.0.0.1:6379"
        );
        assert_eq!(redact("redis://127.0.0.1:6390"), "redis://127.0.0.1:6390");
    }
}
