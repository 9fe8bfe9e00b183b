//! What the controller keeps of invocation history: a small cache of the invocations it
//! answered (so `GET /v1/invocations/{id}` answers at once while the worker's reporter
//! is still writing them), and the pruning of history past its retention (with the
//! invocations' logs and outputs). The workers
//! write history; the controller writes only the `queued` record of an async invocation
//! it accepted, before any worker can see it.

use hearth_core::Invocation;
use hearth_store::{CodeStore, MetadataStore};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How long invocation history is kept.
const RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);
/// How often old history is pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// Invocations kept in memory for immediate reads.
const RECENT_CAPACITY: usize = 4096;

/// Deletes history older than the retention period, with its logs and outputs in the
/// object store, now and every hour.
pub(crate) fn prune_forever(store: Arc<dyn MetadataStore>, code: CodeStore) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            let cutoff = chrono::Utc::now() - RETENTION;
            match hearth_store::cleanup::prune_history(store.as_ref(), &code, cutoff).await {
                Ok(freed) if freed.invocations == 0 => {}
                Ok(freed) => tracing::info!(
                    pruned = freed.invocations,
                    objects = freed.objects,
                    "pruned invocation history older than 30 days, with its logs and outputs"
                ),
                Err(error) => tracing::warn!(%error, "cannot prune invocation history"),
            }
        }
    });
}

/// The invocations this controller answered lately.
#[derive(Default)]
pub(crate) struct History {
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    by_id: HashMap<String, Invocation>,
    order: VecDeque<String>,
}

impl History {
    /// Keeps the invocation for immediate reads (the worker stores it).
    pub(crate) fn remember(&self, invocation: &Invocation) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent
            .by_id
            .insert(invocation.id.clone(), invocation.clone())
            .is_none()
        {
            recent.order.push_back(invocation.id.clone());
        }
        while recent.order.len() > RECENT_CAPACITY {
            if let Some(old) = recent.order.pop_front() {
                recent.by_id.remove(&old);
            }
        }
    }

    pub(crate) fn recent(&self, id: &str) -> Option<Invocation> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get(id)
            .cloned()
    }
}
