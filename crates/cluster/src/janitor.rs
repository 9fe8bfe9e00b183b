//! Cleaning what dead workers and given-up sync calls leave in the queues.
//!
//! A sync entry is acknowledged and deleted the moment a worker reads it, so one still
//! pending after [`Rules::sync_pending_idle`] was read by a worker that died before its
//! acknowledgement; its controller has taken the call back (or answered `worker_lost`).
//! A worker's own stream outlives the worker, holding calls its controllers took back
//! and dispatched again; the consumers of dead workers stay in every group. The sweep:
//!
//! - acknowledges and deletes stale pending entries of the sync streams;
//! - deletes the own stream of a worker that is dead ([`Rules::forget_after`] without a
//!   heartbeat);
//! - deletes a dead worker's consumer from the sync groups (its pending entries with it),
//!   and from the async group only when it holds no pending entry there.
//!
//! An async entry is never touched: a pending one is a lease that another worker
//! reclaims. Each decision about a worker is taken inside one Lua script together with
//! its action, so a worker that comes back between the look and the deletion keeps its
//! stream and its entries. Any number of workers may sweep at once.

use crate::{now_ms, ClusterError, RedisConfig, GROUP};
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::time::Duration;

/// How often a worker sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Whether worker `ARGV[1]` is dead: no status key (`KEYS[2]`) and no heartbeat in the
/// set (`KEYS[3]`) for `ARGV[3]` ms, at `ARGV[2]` ms.
const DEAD: &str = r"
local function dead()
  if redis.call('EXISTS', KEYS[2]) == 1 then return false end
  local seen = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if seen and tonumber(ARGV[2]) - tonumber(seen) < tonumber(ARGV[3]) then return false end
  return true
end
";

/// Deletes stream `KEYS[1]` when its worker is dead.
const DROP_STREAM: &str = r"
if not dead() then return 0 end
return redis.call('DEL', KEYS[1])
";

/// Deletes the worker's consumer from group `ARGV[4]` of `KEYS[1]` when the worker is
/// dead. `ARGV[5]` is `sync` (its pending entries are acknowledged and deleted first)
/// or `async` (a consumer holding a pending entry is kept: that entry is a lease).
const DROP_CONSUMER: &str = r"
if not dead() then return 0 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[4], '-', '+', 1000, ARGV[1])
if ARGV[5] == 'async' then
  if #pending > 0 then return 0 end
else
  for _, entry in ipairs(pending) do
    redis.call('XACK', KEYS[1], ARGV[4], entry[1])
    redis.call('XDEL', KEYS[1], entry[1])
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[4], ARGV[1])
return 1
";

/// When an entry, a stream or a consumer counts as left behind.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// A sync entry pending this long was read by a worker that died before acking it.
    pub sync_pending_idle: Duration,
    /// A worker without a status key and without a heartbeat for this long is dead.
    pub forget_after: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            // A live worker acknowledges within milliseconds of reading.
            sync_pending_idle: Duration::from_secs(10),
            // Status keys live 10 s; callers take back calls a second after that.
            forget_after: Duration::from_secs(60),
        }
    }
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Stale pending sync entries acknowledged and deleted.
    pub sync_entries: u64,
    /// Own streams of dead workers deleted.
    pub streams: u64,
    /// Consumers of dead workers deleted (sync and async groups).
    pub consumers: u64,
}

/// One sweep of the cluster's queues under `config`'s prefix.
pub async fn sweep(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
    rules: Rules,
) -> Result<Swept, ClusterError> {
    let mut swept = Swept::default();
    let shared = config.shared_queue();
    let own_prefix = config.worker_queue("");
    let mut sync_streams = vec![shared];
    sync_streams.extend(streams_under(config, conn, &own_prefix).await?);
    for stream in &sync_streams {
        swept.sync_entries += drop_stale_pending(config, conn, stream, rules).await?;
        for consumer in consumers(config, conn, stream).await? {
            swept.consumers +=
                drop_consumer(config, conn, stream, &consumer, "sync", rules).await?;
        }
        if let Some(worker) = stream.strip_prefix(&own_prefix) {
            swept.streams +=
                run_about(config, conn, DROP_STREAM, stream, worker, &[], rules).await?;
        }
    }
    let async_queue = config.async_queue();
    for consumer in consumers(config, conn, &async_queue).await? {
        swept.consumers +=
            drop_consumer(config, conn, &async_queue, &consumer, "async", rules).await?;
    }
    Ok(swept)
}

/// Sweeps forever, every [`SWEEP_EVERY`] (a failed sweep is logged and tried again).
pub async fn sweep_forever(config: RedisConfig, mut conn: ConnectionManager) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        match sweep(&config, &mut conn, Rules::default()).await {
            Ok(swept) if swept != Swept::default() => {
                tracing::info!(?swept, "cleaned what dead workers left in the queues");
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "cannot sweep the queues"),
        }
    }
}

/// Every stream whose key starts with `prefix` (glob characters in it escaped).
async fn streams_under(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
    prefix: &str,
) -> Result<Vec<String>, ClusterError> {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .arg("TYPE")
            .arg("stream")
            .query_async(conn)
            .await
            .map_err(|e| config.error(e))?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// Acknowledges and deletes the sync entries of `stream` pending past the rule.
async fn drop_stale_pending(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
    stream: &str,
    rules: Rules,
) -> Result<u64, ClusterError> {
    let pending: redis::RedisResult<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg("IDLE")
        .arg(rules.sync_pending_idle.as_millis() as u64)
        .arg("-")
        .arg("+")
        .arg(1000)
        .query_async(conn)
        .await;
    let pending = match pending {
        Ok(pending) => pending,
        Err(e) if e.code() == Some("NOGROUP") => return Ok(0),
        Err(e) => return Err(config.error(e)),
    };
    if pending.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = pending.iter().map(|(id, ..)| id.as_str()).collect();
    redis::pipe()
        .cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(&ids)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(&ids)
        .ignore()
        .query_async::<()>(conn)
        .await
        .map_err(|e| config.error(e))?;
    Ok(ids.len() as u64)
}

/// The consumer names of `stream`'s group (none when it has no group).
async fn consumers(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
    stream: &str,
) -> Result<Vec<String>, ClusterError> {
    let listed: redis::RedisResult<Vec<HashMap<String, redis::Value>>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(GROUP)
        .query_async(conn)
        .await;
    let listed = match listed {
        Ok(listed) => listed,
        // No stream or no group yet: no consumers.
        Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(config.error(e)),
    };
    let names = listed
        .into_iter()
        .filter_map(|mut c| c.remove("name"))
        .filter_map(|name| redis::from_redis_value::<String>(name).ok())
        .collect();
    Ok(names)
}

async fn drop_consumer(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
    stream: &str,
    worker: &str,
    kind: &str,
    rules: Rules,
) -> Result<u64, ClusterError> {
    run_about(
        config,
        conn,
        DROP_CONSUMER,
        stream,
        worker,
        &[GROUP, kind],
        rules,
    )
    .await
}

/// Runs `script` (with the [`DEAD`] check) on `stream` about `worker`.
async fn run_about(
    config: &RedisConfig,
    conn: &mut ConnectionManager,
    script: &str,
    stream: &str,
    worker: &str,
    extra: &[&str],
    rules: Rules,
) -> Result<u64, ClusterError> {
    redis::cmd("EVAL")
        .arg(format!("{DEAD}{script}"))
        .arg(3)
        .arg(stream)
        .arg(config.worker_status(worker))
        .arg(config.workers())
        .arg(worker)
        .arg(now_ms())
        .arg(rules.forget_after.as_millis() as u64)
        .arg(extra)
        .query_async(conn)
        .await
        .map_err(|e| config.error(e))
}
