//! [`RedisLimiter`]: the cluster's rate limits and concurrency slots, one Lua script per
//! operation on Redis's own clock (`TIME`), so every controller shares each key's token
//! bucket and each namespace's slots exactly, whatever their own clocks say.
//!
//! A bucket is a hash (`tokens`, `at` in µs) that expires once it would be full again; a
//! pool of slots is a sorted set of holders scored by the end of their lease, so a
//! controller that dies holding slots frees them when the leases run out.

use crate::RedisConfig;
use async_trait::async_trait;
use hearth_store::{Admission, Limiter, StoreError, SLOT_RETRY_AFTER};
use redis::aio::ConnectionManager;
use std::time::Duration;

/// Takes a token: `KEYS[1]` the bucket, `ARGV` rate per second and burst. Returns 0 when
/// granted, else the milliseconds until a token is back.
const TAKE_TOKEN: &str = r#"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now_us
end
tokens = math.min(burst, tokens + math.max(0, now_us - at) / 1000000 * rate)
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait_ms = math.max(1, math.ceil((1 - tokens) / rate * 1000))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now_us))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait_ms
"#;

/// Takes a slot: `KEYS[1]` the pool, `ARGV` holder, most slots, lease in ms. Returns 1
/// when granted (or already held), 0 when every slot is taken.
const ACQUIRE_SLOT: &str = r#"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + lease, ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
"#;

/// Rate limits and slots shared by a cluster's controllers.
pub struct RedisLimiter {
    config: RedisConfig,
    conn: ConnectionManager,
}

impl RedisLimiter {
    /// Connects to the cluster's Redis.
    pub async fn connect(config: RedisConfig) -> Result<RedisLimiter, crate::ClusterError> {
        let conn = config.manager().await?;
        Ok(RedisLimiter { config, conn })
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn take_token(
        &self,
        bucket: &str,
        rate_per_s: f64,
        burst: u32,
    ) -> Result<Admission, StoreError> {
        let wait_ms: u64 = redis::cmd("EVAL")
            .arg(TAKE_TOKEN)
            .arg(1)
            .arg(self.config.key(&format!("limit:bucket:{bucket}")))
            .arg(rate_per_s)
            .arg(burst.max(1))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(self.config.unavailable("take a rate-limit token"))?;
        Ok(match wait_ms {
            0 => Admission::Granted,
            ms => Admission::Denied {
                retry_after: Duration::from_millis(ms),
            },
        })
    }

    async fn acquire_slot(
        &self,
        pool: &str,
        holder: &str,
        max: u32,
        lease: Duration,
    ) -> Result<Admission, StoreError> {
        let granted: u32 = redis::cmd("EVAL")
            .arg(ACQUIRE_SLOT)
            .arg(1)
            .arg(self.config.key(&format!("limit:slots:{pool}")))
            .arg(holder)
            .arg(max)
            .arg(lease.as_millis().max(1) as u64)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(self.config.unavailable("take a concurrency slot"))?;
        Ok(if granted == 1 {
            Admission::Granted
        } else {
            Admission::Denied {
                retry_after: SLOT_RETRY_AFTER,
            }
        })
    }

    async fn release_slot(&self, pool: &str, holder: &str) -> Result<(), StoreError> {
        let _: u32 = redis::cmd("ZREM")
            .arg(self.config.key(&format!("limit:slots:{pool}")))
            .arg(holder)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(self.config.unavailable("free a concurrency slot"))?;
        Ok(())
    }
}
