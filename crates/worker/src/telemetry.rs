//! The worker's Prometheus metrics, recorded where each event happens: invocations,
//! cold starts, OOM kills, warm instances, stems waiting and being made, async retries,
//! dead letters and the queue's depth. Base units (seconds, bytes), `_total`
//! counters, histograms (so they add up across workers), a `function` label and never
//! an invocation id. The controller's `/metrics` (or a worker's own) renders them.

use crate::Worker;
use hearth_core::{Invocation, InvocationStatus};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, OnceLock};

/// Names and help of every metric the worker records.
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "hearth_invocations_total",
        "Finished invocations, by function and status.",
    ),
    (
        "hearth_invocation_duration_seconds",
        "Wall time of an invocation from request to result, seconds.",
    ),
    (
        "hearth_invocation_peak_memory_bytes",
        "Peak memory of the instance during an invocation, bytes.",
    ),
    (
        "hearth_cold_starts_total",
        "Invocations that had to start an instance.",
    ),
    (
        "hearth_cold_start_seconds",
        "Time to start an instance and load its code, seconds.",
    ),
    (
        "hearth_oom_kills_total",
        "Invocations ended by the kernel's OOM killer.",
    ),
    (
        "hearth_warm_instances",
        "Instances alive (idle or busy), by function.",
    ),
    (
        "hearth_reports_total",
        "Finished invocations whose history and outputs were written.",
    ),
    (
        "hearth_report_queue",
        "Finished invocations still waiting to be reported.",
    ),
    (
        "hearth_queue_depth",
        "Asynchronous invocations waiting in the queue.",
    ),
    (
        "hearth_async_retries_total",
        "Asynchronous invocations scheduled for another attempt, by function.",
    ),
    (
        "hearth_async_dead_letters_total",
        "Asynchronous invocations that gave up (retries exhausted or function gone), by function.",
    ),
    (
        "hearth_stems_waiting",
        "Stems (pre-started generic sandboxes) waiting for a cold start, all runtimes.",
    ),
    (
        "hearth_stems_making",
        "Stems being made in the background (refills after a cold start took one).",
    ),
    (
        "hearth_builds_total",
        "Builds of compiled functions, by runtime and result.",
    ),
    (
        "hearth_build_duration_seconds",
        "Duration of a build of a compiled function, seconds.",
    ),
];

/// Registers HELP texts with the installed recorder (call once after installing it).
pub fn describe() {
    for (name, help) in DESCRIPTIONS {
        let (name, help) = (*name, *help);
        if name.ends_with("_total") {
            metrics::describe_counter!(name, help);
        } else if matches!(
            name,
            "hearth_warm_instances"
                | "hearth_report_queue"
                | "hearth_queue_depth"
                | "hearth_stems_waiting"
                | "hearth_stems_making"
        ) {
            metrics::describe_gauge!(name, help);
        } else {
            metrics::describe_histogram!(name, help);
        }
    }
}

/// Records a finished invocation.
pub(crate) fn invocation_finished(invocation: &Invocation) {
    let function = invocation.function.clone();
    metrics::counter!(
        "hearth_invocations_total",
        "function" => function.clone(),
        "status" => invocation.status.as_str()
    )
    .increment(1);
    metrics::histogram!("hearth_invocation_duration_seconds", "function" => function.clone())
        .record(invocation.duration_ms / 1000.0);
    metrics::histogram!("hearth_invocation_peak_memory_bytes", "function" => function.clone())
        .record(invocation.memory.peak_bytes as f64);
    if invocation.cold_start {
        metrics::counter!("hearth_cold_starts_total", "function" => function.clone()).increment(1);
    }
    if invocation.status == InvocationStatus::Oom {
        metrics::counter!("hearth_oom_kills_total", "function" => function).increment(1);
    }
}

/// An async invocation will be tried again.
pub(crate) fn async_retry(function: &str) {
    metrics::counter!("hearth_async_retries_total", "function" => function.to_string())
        .increment(1);
}

/// An async invocation gave up.
pub(crate) fn async_dead_letter(function: &str) {
    metrics::counter!("hearth_async_dead_letters_total", "function" => function.to_string())
        .increment(1);
}

/// Sets `hearth_queue_depth` from the durable queue (where the work waits).
pub(crate) async fn publish_queue_depth(queue: &dyn hearth_store::AsyncQueue) {
    match queue.pending().await {
        Ok(pending) => metrics::gauge!("hearth_queue_depth").set(pending as f64),
        Err(error) => tracing::warn!(%error, "cannot read the async queue's depth"),
    }
}

/// Records an instance's start.
pub(crate) fn cold_start(function: &str, seconds: f64) {
    metrics::histogram!("hearth_cold_start_seconds", "function" => function.to_string())
        .record(seconds);
}

fn published() -> &'static Mutex<HashSet<String>> {
    static PUBLISHED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    PUBLISHED.get_or_init(Default::default)
}

impl Worker {
    /// Sets `hearth_warm_instances` from the pools, and to 0 for functions whose
    /// pools are gone.
    pub(crate) fn publish_warm_instances(&self) {
        let mut warm: BTreeMap<String, usize> = BTreeMap::new();
        for pool in self.lock_pools().values() {
            let status = pool.status();
            *warm.entry(status.function).or_default() += status.idle + status.busy;
        }
        let mut published = published().lock().unwrap_or_else(|e| e.into_inner());
        for gone in published.iter().filter(|f| !warm.contains_key(*f)) {
            metrics::gauge!("hearth_warm_instances", "function" => gone.clone()).set(0.0);
        }
        for (function, count) in &warm {
            metrics::gauge!("hearth_warm_instances", "function" => function.clone())
                .set(*count as f64);
        }
        published.retain(|f| warm.contains_key(f));
        published.extend(warm.into_keys());
    }
}
