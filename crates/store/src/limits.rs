//! Rate limits and concurrency slots: the [`Limiter`] interface, and [`LocalLimiter`],
//! its in-process implementation for a single controller (`hearth up`).
//!
//! A cluster's controllers share one limiter on Redis (`hearth-cluster`'s), so that a
//! key's bucket and a namespace's slots are exact across them. Both answer at once: a
//! request beyond a limit is denied with how long to wait, never queued.

use crate::StoreError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The answer of a limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Granted,
    /// Over the limit: try again after this long.
    Denied {
        /// How long until a retry can succeed (at least a millisecond).
        retry_after: Duration,
    },
}

/// How long a denied slot asks the caller to wait: slots free when invocations end,
/// which nothing here can foresee.
pub const SLOT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Token buckets and counted slots, by name.
#[async_trait]
pub trait Limiter: Send + Sync {
    /// Takes one token from `bucket`, which refills at `rate_per_s` tokens a second up
    /// to `burst` (and starts full).
    async fn take_token(
        &self,
        bucket: &str,
        rate_per_s: f64,
        burst: u32,
    ) -> Result<Admission, StoreError>;

    /// Takes one of the `max` slots of `pool` for `holder`, held until
    /// [`release_slot`](Self::release_slot) or, should the holder vanish, `lease`.
    async fn acquire_slot(
        &self,
        pool: &str,
        holder: &str,
        max: u32,
        lease: Duration,
    ) -> Result<Admission, StoreError>;

    /// Frees `holder`'s slot of `pool` (nothing if it holds none).
    async fn release_slot(&self, pool: &str, holder: &str) -> Result<(), StoreError>;
}

/// The token bucket rule, shared by every limiter: refill for the time passed, then take
/// one token if there is one. Returns the bucket's new level and the answer.
pub fn bucket_step(level: f64, elapsed: Duration, rate_per_s: f64, burst: u32) -> (f64, Admission) {
    let burst = f64::from(burst.max(1));
    let level = (level + elapsed.as_secs_f64() * rate_per_s).min(burst);
    if level >= 1.0 {
        return (level - 1.0, Admission::Granted);
    }
    let wait = if rate_per_s > 0.0 {
        (1.0 - level) / rate_per_s
    } else {
        3600.0
    };
    let retry_after = Duration::from_secs_f64(wait.clamp(0.001, 3600.0));
    (level, Admission::Denied { retry_after })
}

/// Buckets and slots in this process's memory.
#[derive(Default)]
pub struct LocalLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    slots: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl LocalLimiter {
    fn take_at(&self, bucket: &str, rate_per_s: f64, burst: u32, now: Instant) -> Admission {
        // Plain data: still consistent if a holder panicked.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (level, last) = buckets
            .get(bucket)
            .copied()
            .unwrap_or((f64::from(burst.max(1)), now));
        let (level, admission) = bucket_step(
            level,
            now.saturating_duration_since(last),
            rate_per_s,
            burst,
        );
        buckets.insert(bucket.to_string(), (level, now));
        admission
    }

    fn acquire_at(
        &self,
        pool: &str,
        holder: &str,
        max: u32,
        lease: Duration,
        now: Instant,
    ) -> Admission {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let held = slots.entry(pool.to_string()).or_default();
        held.retain(|_, expires| *expires > now);
        if held.len() >= max as usize && !held.contains_key(holder) {
            return Admission::Denied {
                retry_after: SLOT_RETRY_AFTER,
            };
        }
        held.insert(holder.to_string(), now + lease);
        Admission::Granted
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn take_token(
        &self,
        bucket: &str,
        rate_per_s: f64,
        burst: u32,
    ) -> Result<Admission, StoreError> {
        Ok(self.take_at(bucket, rate_per_s, burst, Instant::now()))
    }

    async fn acquire_slot(
        &self,
        pool: &str,
        holder: &str,
        max: u32,
        lease: Duration,
    ) -> Result<Admission, StoreError> {
        Ok(self.acquire_at(pool, holder, max, lease, Instant::now()))
    }

    async fn release_slot(&self, pool: &str, holder: &str) -> Result<(), StoreError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = slots.get_mut(pool) {
            held.remove(holder);
            if held.is_empty() {
                slots.remove(pool);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_grants_its_burst_then_refills_at_its_rate() {
        let limiter = LocalLimiter::default();
        let t0 = Instant::now();
        let granted = (0..50)
            .filter(|_| limiter.take_at("k", 10.0, 10, t0) == Admission::Granted)
            .count();
        assert_eq!(granted, 10);
        match limiter.take_at("k", 10.0, 10, t0) {
            Admission::Denied { retry_after } => {
                assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}")
            }
            Admission::Granted => panic!("an empty bucket granted"),
        }
        // 100 ms later one token is back, and only one.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(limiter.take_at("k", 10.0, 10, later), Admission::Granted);
        assert_ne!(limiter.take_at("k", 10.0, 10, later), Admission::Granted);
        // Another bucket is untouched.
        assert_eq!(
            limiter.take_at("other", 10.0, 10, later),
            Admission::Granted
        );
    }

    #[test]
    fn slots_are_counted_released_and_expire() {
        let limiter = LocalLimiter::default();
        let t0 = Instant::now();
        let lease = Duration::from_secs(60);
        assert_eq!(
            limiter.acquire_at("ns", "a", 2, lease, t0),
            Admission::Granted
        );
        assert_eq!(
            limiter.acquire_at("ns", "b", 2, lease, t0),
            Admission::Granted
        );
        assert_ne!(
            limiter.acquire_at("ns", "c", 2, lease, t0),
            Admission::Granted
        );
        futures::executor::block_on(limiter.release_slot("ns", "a")).unwrap();
        assert_eq!(
            limiter.acquire_at("ns", "c", 2, lease, t0),
            Admission::Granted
        );
        // A holder that vanished frees its slot when the lease ends.
        let after = t0 + lease + Duration::from_secs(1);
        assert_eq!(
            limiter.acquire_at("ns", "d", 2, lease, after),
            Admission::Granted
        );
        assert_eq!(
            limiter.acquire_at("ns", "e", 2, lease, after),
            Admission::Granted
        );
    }
}
