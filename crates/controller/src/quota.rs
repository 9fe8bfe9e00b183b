//! Admission of an invocation under its namespace's quotas and its key's concurrency:
//! beyond them, 429 `quota_exceeded` with `Retry-After` at once, never a queue.
//!
//! Concurrency is counted in slots of the [`Limiter`](hearth_store::Limiter) (in
//! process, or on Redis for a cluster, so exact across controllers), held while a
//! synchronous invocation runs and freed when it ends (or, if this process dies, when
//! the lease of the function's timeout plus a minute runs out). Warm-instance quotas
//! are checked against the workers' published pools before a call that would have to
//! start a new instance.

use crate::auth::denied;
use crate::tenancy::{split, Caller};
use crate::{ApiError, AppState};
use axum::http::StatusCode;
use hearth_store::{Admission, FunctionRecord, Limiter, NamespaceQuotas};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Slack past a function's timeout before a slot whose holder vanished is freed.
const LEASE_SLACK: Duration = Duration::from_secs(60);
/// What a warm-instance denial asks to wait: idle instances are reclaimed over minutes.
const WARM_RETRY_AFTER_S: u64 = 10;

/// Namespaces' quotas as last read, and when.
#[derive(Default)]
pub(crate) struct QuotaCache {
    by_namespace: Mutex<HashMap<String, (NamespaceQuotas, Instant)>>,
}

impl QuotaCache {
    fn get(&self, namespace: &str, ttl: Option<Duration>) -> Option<NamespaceQuotas> {
        let cache = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(namespace)
            .filter(|(_, read)| ttl.is_none_or(|ttl| read.elapsed() < ttl))
            .map(|(quotas, _)| quotas.clone())
    }

    pub(crate) fn remember(&self, namespace: &str, quotas: &NamespaceQuotas) {
        let mut cache = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(namespace.to_string(), (quotas.clone(), Instant::now()));
    }
}

/// A namespace's quotas: from memory when fresh (forever when this process is the only
/// writer; as briefly as function records in a cluster).
pub(crate) async fn quotas_of(
    state: &AppState,
    namespace: &str,
) -> Result<NamespaceQuotas, ApiError> {
    if let Some(quotas) = state.quota_cache.get(namespace, state.function_ttl) {
        return Ok(quotas);
    }
    let quotas = state
        .metadata
        .quotas(namespace)
        .await
        .map_err(|e| ApiError::store("reading the namespace's quotas", e))?;
    state.quota_cache.remember(namespace, &quotas);
    Ok(quotas)
}

/// Slots an admitted invocation holds; freed when dropped.
pub(crate) struct Admitted {
    limiter: Arc<dyn Limiter>,
    holder: String,
    pools: Vec<String>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.pools.is_empty() {
            return;
        }
        let (limiter, holder, pools) = (
            self.limiter.clone(),
            std::mem::take(&mut self.holder),
            std::mem::take(&mut self.pools),
        );
        // Dropped also when the client goes away mid-call: free the slots then too.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for pool in pools {
                    if let Err(error) = limiter.release_slot(&pool, &holder).await {
                        tracing::warn!(%error, %pool, "freeing a concurrency slot failed; its lease frees it");
                    }
                }
            });
        }
    }
}

fn exceeded(caller: &Caller, message: String, retry_after_s: u64) -> ApiError {
    denied("quota_exceeded", Some(&caller.key_id));
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message)
        .retry_after(retry_after_s)
}

/// Admits invocation `id` of `record` for `caller`, or answers 429 `quota_exceeded`.
pub(crate) async fn admit(
    state: &AppState,
    caller: &Caller,
    record: &FunctionRecord,
    id: &str,
) -> Result<Admitted, ApiError> {
    let namespace = split(&record.name).0;
    let quotas = quotas_of(state, namespace).await?;
    let mut admitted = Admitted {
        limiter: state.limiter.clone(),
        holder: id.to_string(),
        pools: Vec::new(),
    };
    let lease = Duration::from_millis(record.spec.timeout_ms) + LEASE_SLACK;
    let limits = [
        (
            format!("ns:{namespace}"),
            quotas.max_concurrency,
            "namespace",
            namespace,
        ),
        (
            format!("key:{}", caller.key_id),
            caller.max_concurrency,
            "key",
            caller.key_id.as_str(),
        ),
    ];
    for (pool, max, kind, owner) in limits {
        let Some(max) = max else { continue };
        let admission = state
            .limiter
            .acquire_slot(&pool, id, max, lease)
            .await
            .map_err(|e| ApiError::store("checking the concurrency quota", e))?;
        match admission {
            Admission::Granted => admitted.pools.push(pool),
            Admission::Denied { retry_after } => {
                return Err(exceeded(
                    caller,
                    format!("{kind} {owner} already runs its quota of {max} invocations at once: retry when one ends"),
                    retry_after.as_secs().max(1),
                ))
            }
        }
    }
    if quotas.max_warm_instances.is_some() || quotas.max_warm_memory_mb.is_some() {
        check_warm(state, caller, record, namespace, &quotas).await?;
    }
    Ok(admitted)
}

/// Refuses a call that would start an instance past the namespace's warm quotas.
async fn check_warm(
    state: &AppState,
    caller: &Caller,
    record: &FunctionRecord,
    namespace: &str,
    quotas: &NamespaceQuotas,
) -> Result<(), ApiError> {
    let workers = state
        .fleet
        .workers()
        .await
        .map_err(crate::fleet_error::fleet_error)?;
    let pools = workers.iter().flat_map(|w| &w.pools);
    let mut idle_here = 0;
    let (mut instances, mut memory_mb) = (0u64, 0u64);
    for pool in pools.filter(|p| split(&p.function).0 == namespace) {
        if pool.function == record.name && pool.version == record.version {
            idle_here += pool.idle;
        }
        let count = (pool.idle + pool.busy) as u64;
        instances += count;
        let size = match crate::functions::find(state, &pool.function).await {
            Ok(function) => function.spec.memory_mb,
            Err(_) => record.spec.memory_mb,
        };
        memory_mb += count * size;
    }
    if idle_here > 0 {
        return Ok(()); // runs on a warm instance: nothing new starts
    }
    if let Some(max) = quotas.max_warm_instances {
        if instances + 1 > u64::from(max) {
            return Err(exceeded(
                caller,
                format!("namespace {namespace} has {instances} warm instances, its quota is {max}: retry when idle ones are reclaimed"),
                WARM_RETRY_AFTER_S,
            ));
        }
    }
    if let Some(max) = quotas.max_warm_memory_mb {
        if memory_mb + record.spec.memory_mb > max {
            return Err(exceeded(
                caller,
                format!("namespace {namespace}'s warm instances hold {memory_mb} MB, and another of {} MB would pass its quota of {max} MB", record.spec.memory_mb),
                WARM_RETRY_AFTER_S,
            ));
        }
    }
    Ok(())
}
