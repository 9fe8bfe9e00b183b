//! Invocation history, written behind the response.
//!
//! A finished invocation goes into a small in-memory cache (so `GET /v1/invocations/{id}`
//! answers at once) and onto a channel that one task drains into the metadata store,
//! so the store's latency never sits on the invocation path.

use hearth_core::Invocation;
use hearth_store::MetadataStore;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// How long invocation history is kept.
const RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);
/// How often old history is pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes history older than the retention period, now and every hour.
pub(crate) fn prune_forever(store: Arc<dyn MetadataStore>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            match store
                .prune_invocations(chrono::Utc::now() - RETENTION)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned invocation history older than 30 days"),
                Err(error) => tracing::warn!(%error, "cannot prune invocation history"),
            }
        }
    });
}

/// Invocations kept in memory for immediate reads.
const RECENT_CAPACITY: usize = 4096;

enum Job {
    Record(Box<Invocation>),
    Flush(oneshot::Sender<()>),
}

pub(crate) struct History {
    recent: Mutex<Recent>,
    jobs: mpsc::UnboundedSender<Job>,
}

#[derive(Default)]
struct Recent {
    by_id: HashMap<String, Invocation>,
    order: VecDeque<String>,
}

impl History {
    pub(crate) fn start(store: Arc<dyn MetadataStore>) -> Arc<History> {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                match job {
                    Job::Record(invocation) => {
                        if let Err(error) = store.record_invocation(&invocation).await {
                            tracing::error!(id = %invocation.id, %error, "cannot record invocation");
                        }
                    }
                    Job::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Arc::new(History {
            recent: Mutex::new(Recent::default()),
            jobs,
        })
    }

    /// Keeps the invocation for immediate reads and writes it to the store.
    pub(crate) fn record(&self, invocation: &Invocation) {
        self.remember(invocation);
        if self
            .jobs
            .send(Job::Record(Box::new(invocation.clone())))
            .is_err()
        {
            tracing::error!(id = %invocation.id, "history writer stopped; invocation not recorded");
        }
    }

    /// Keeps the invocation for immediate reads only (someone else stores it).
    pub(crate) fn remember(&self, invocation: &Invocation) {
        {
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
    }

    pub(crate) fn recent(&self, id: &str) -> Option<Invocation> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get(id)
            .cloned()
    }

    /// Waits until everything recorded so far is in the store.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.jobs.send(Job::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}
