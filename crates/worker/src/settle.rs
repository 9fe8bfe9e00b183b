//! An instance whose invocation was answered while its process was still exiting
//! ([`InstanceRun::settling`](hearth_sandbox::InstanceRun::settling)): it goes back to
//! its pool only once the agent has seen that process end and swept its leftovers, and
//! the invocation's history row carries what it used up to then (the CPU of an `atexit`
//! hook, a thread left running, the exit itself), not what was known at the answer.
//! What the settle costs is the invocation's, never the next call's.

use crate::pool::{Pool, Slot};
use hearth_core::Invocation;
use hearth_sandbox::Instance;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An answered invocation's instance, not yet settled; holds its pool slot.
pub(crate) struct Settling {
    instance: Box<dyn Instance>,
    slot: Slot,
    pool: Arc<Pool>,
    /// Whether the run itself left the instance fit to serve.
    healthy: bool,
}

impl Settling {
    /// Takes `instance` (its run answered early) out of circulation until
    /// [`Settling::finish`]; callers of `pool` wait for it rather than start another.
    pub(crate) fn begin(
        instance: Box<dyn Instance>,
        slot: Slot,
        pool: Arc<Pool>,
        healthy: bool,
    ) -> Settling {
        pool.settle_started();
        Settling {
            instance,
            slot,
            pool,
            healthy,
        }
    }

    /// Waits for the settle (the sandbox bounds it), puts the whole invocation's usage
    /// into `invocation`, and returns the instance to its pool: destroyed when the
    /// settle failed, hung, or found it unfit.
    pub(crate) async fn finish(mut self, invocation: &mut Invocation) {
        let healthy = match self.instance.settle().await {
            Ok(Some(settled)) => {
                crate::outcome::amend_usage(invocation, &settled.usage);
                if let Some(problem) = &settled.problem {
                    tracing::warn!(function = %invocation.function, instance = self.instance.id(),
                        %problem, "the instance did not settle; destroying it");
                }
                self.healthy && settled.healthy && !settled.usage.oom_killed
            }
            Ok(None) => self.healthy,
            Err(error) => {
                tracing::warn!(function = %invocation.function, instance = self.instance.id(),
                    %error, "the instance did not settle; destroying it");
                false
            }
        };
        self.pool.checkin_settled(self.instance, self.slot, healthy);
    }
}

/// Settles running after their answer, so that a flush or a shutdown waits for their
/// history rows.
#[derive(Debug, Default)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

/// One settle counted in an [`InFlight`] until dropped.
pub(crate) struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// Counts one more until the guard drops.
    pub(crate) fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }

    /// Waits (at most `limit`, polling: a flush is rare) until none is running.
    pub(crate) async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.0.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
