//! The warm pool of one function version.
//!
//! Instances serve one invocation at a time. A semaphore with one permit per allowed
//! instance bounds how many are busy; a caller holding a permit takes the most recently
//! used idle instance (so the rest can age out) or makes a new one (a cold start).

use crate::WorkerError;
use hearth_core::Runtime;
use hearth_sandbox::Instance;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub use hearth_core::status::PoolStatus;

/// The right to run one invocation in this pool; frees its slot when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    busy: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a caller gets from [`Pool::checkout`].
pub enum Checkout {
    /// A warm instance to run on.
    Warm(Box<dyn Instance>, Slot),
    /// A free slot but no idle instance: the caller starts one.
    Cold(Slot),
}

struct Idle {
    instance: Box<dyn Instance>,
    since: Instant,
}

struct IdleList {
    instances: Vec<Idle>,
    retired: bool,
}

/// Warm instances of one function version.
pub struct Pool {
    function: String,
    version: u64,
    runtime: Runtime,
    max_instances: u32,
    slots: Arc<Semaphore>,
    idle: Mutex<IdleList>,
    waiting: AtomicUsize,
    busy: Arc<AtomicUsize>,
    /// Instances answered early and not yet settled (see `settle.rs`).
    settling: AtomicUsize,
    /// Notified whenever an instance comes back.
    returned: Notify,
}

/// The longest a caller with a slot waits for a settling instance before it starts a
/// new one: past the sandbox's own bound on a settle (30 s), after which the instance
/// comes back or is destroyed. A settle takes well under a millisecond unless the
/// process lingers or the host is loaded; a caller that gave up sooner would start a
/// second instance the function may not be allowed (a namespace's warm quota) and a
/// cold start slower than the wait, where before settling it took the same instance.
const SETTLE_WAIT: Duration = Duration::from_secs(35);

impl Pool {
    /// An empty pool allowing `max_instances` at once.
    pub fn new(function: String, version: u64, runtime: Runtime, max_instances: u32) -> Pool {
        Pool {
            function,
            version,
            runtime,
            max_instances,
            slots: Arc::new(Semaphore::new(max_instances as usize)),
            idle: Mutex::new(IdleList {
                instances: Vec::new(),
                retired: false,
            }),
            waiting: AtomicUsize::new(0),
            busy: Arc::new(AtomicUsize::new(0)),
            settling: AtomicUsize::new(0),
            returned: Notify::new(),
        }
    }

    /// The function this pool serves.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The version this pool serves.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Waits for a free slot (bounded queue and wait), then hands out an idle instance
    /// when there is one.
    pub async fn checkout(
        &self,
        queue_limit: usize,
        queue_timeout: Duration,
    ) -> Result<Checkout, WorkerError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let overloaded = |queued| WorkerError::Overloaded {
                    function: self.function.clone(),
                    max_instances: self.max_instances,
                    queued,
                };
                let queued = self.waiting.fetch_add(1, Ordering::Relaxed);
                let _leave_queue = DecrementOnDrop(&self.waiting);
                if queued >= queue_limit {
                    return Err(overloaded(queued));
                }
                match tokio::time::timeout(queue_timeout, self.slots.clone().acquire_owned()).await
                {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is closed only when the pool is retired.
                    Ok(Err(_)) => return Err(WorkerError::ShuttingDown),
                    Err(_) => return Err(overloaded(queued)),
                }
            }
        };
        self.busy.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            _permit: permit,
            busy: self.busy.clone(),
        };
        Ok(match self.take_idle().await {
            Some(instance) => Checkout::Warm(instance, slot),
            None => Checkout::Cold(slot),
        })
    }

    /// The most recently used idle instance; when there is none but one is settling,
    /// that one once it is back (at most [`SETTLE_WAIT`]): a call right after an early
    /// answer takes the same warm instance instead of a cold start.
    async fn take_idle(&self) -> Option<Box<dyn Instance>> {
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(idle) = self.lock_idle().instances.pop() {
                return Some(idle.instance);
            }
            if self.settling.load(Ordering::Acquire) == 0 {
                return None;
            }
            tokio::time::timeout_at(deadline, returned).await.ok()?;
        }
    }

    /// An instance of this pool was answered early and is settling.
    pub(crate) fn settle_started(&self) {
        self.settling.fetch_add(1, Ordering::AcqRel);
    }

    /// [`Pool::checkin`] of an instance that was settling.
    pub(crate) fn checkin_settled(&self, instance: Box<dyn Instance>, slot: Slot, healthy: bool) {
        self.checkin_and(instance, slot, healthy, || {
            self.settling.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Returns an instance after an invocation: back to the idle list when it is
    /// healthy and the pool still serves, destroyed otherwise.
    pub fn checkin(&self, instance: Box<dyn Instance>, slot: Slot, healthy: bool) {
        self.checkin_and(instance, slot, healthy, || {});
    }

    /// Checks in, then runs `counted` (after the instance is on the idle list, so that a
    /// caller who sees it counted no more finds it there), then wakes waiting callers.
    fn checkin_and(
        &self,
        instance: Box<dyn Instance>,
        slot: Slot,
        healthy: bool,
        counted: impl FnOnce(),
    ) {
        let mut idle = self.lock_idle();
        if healthy && !idle.retired {
            idle.instances.push(Idle {
                instance,
                since: Instant::now(),
            });
        } else {
            tokio::spawn(instance.destroy());
        }
        drop(idle);
        counted();
        self.returned.notify_waiters();
        drop(slot);
    }

    /// Destroys instances idle for longer than `max_idle`.
    pub async fn evict_idle(&self, max_idle: Duration) {
        let expired: Vec<Idle> = {
            let mut idle = self.lock_idle();
            let (old, fresh): (Vec<Idle>, Vec<Idle>) = idle
                .instances
                .drain(..)
                .partition(|i| i.since.elapsed() >= max_idle);
            idle.instances = fresh;
            old
        };
        for idle in expired {
            tracing::info!(function = %self.function, version = self.version, instance = idle.instance.id(), "idle instance expired");
            idle.instance.destroy().await;
        }
    }

    /// Stops serving: idle instances are destroyed now, busy ones when they return,
    /// and waiting callers are turned away.
    pub async fn retire(&self) {
        self.slots.close();
        let instances = {
            let mut idle = self.lock_idle();
            idle.retired = true;
            std::mem::take(&mut idle.instances)
        };
        for idle in instances {
            idle.instance.destroy().await;
        }
    }

    /// Numbers for `/v1/status`. An instance that answered and is settling counts as
    /// idle, not busy: it runs no invocation, and the next caller takes it (so the
    /// controller's warm quotas see it as the function's own warm instance).
    pub fn status(&self) -> PoolStatus {
        let settling = self.settling.load(Ordering::Acquire);
        PoolStatus {
            function: self.function.clone(),
            version: self.version,
            runtime: self.runtime,
            idle: self.lock_idle().instances.len() + settling,
            busy: self.busy.load(Ordering::Relaxed).saturating_sub(settling),
            queued: self.waiting.load(Ordering::Relaxed),
            max_instances: self.max_instances,
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, IdleList> {
        // The list stays consistent even if a holder panicked: keep serving.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
    use super::*;
    use bytes::Bytes;
    use hearth_core::protocol::InvokeSpec;
    use hearth_sandbox::{InstanceRun, InvocationSink, SandboxError, Settled};

    struct Fake;

    #[async_trait::async_trait]
    impl Instance for Fake {
        fn id(&self) -> &str {
            "fake"
        }
        async fn run_event(
            &mut self,
            _: InvokeSpec,
            _: Bytes,
            _: &mut dyn InvocationSink,
        ) -> Result<InstanceRun, SandboxError> {
            Err(SandboxError::Unavailable("a fake runs nothing".into()))
        }
        async fn settle(&mut self) -> Result<Option<Settled>, SandboxError> {
            Ok(None)
        }
        async fn destroy(self: Box<Self>) {}
    }

    /// A second caller's checkout while the first call's instance settles.
    async fn checkout_during_a_settle(healthy: bool) -> bool {
        let pool = Arc::new(Pool::new("f".into(), 1, Runtime::Python, 2));
        let Checkout::Cold(slot) = pool.checkout(10, Duration::from_secs(5)).await.unwrap() else {
            panic!("an empty pool has no warm instance");
        };
        pool.settle_started();
        let next = tokio::spawn({
            let pool = pool.clone();
            async move {
                let checkout = pool.checkout(10, Duration::from_secs(5)).await.unwrap();
                matches!(checkout, Checkout::Warm(..))
            }
        });
        tokio::task::yield_now().await;
        pool.checkin_settled(Box::new(Fake), slot, healthy);
        next.await.unwrap()
    }

    #[tokio::test]
    async fn a_caller_takes_the_settling_instance_rather_than_start_one() {
        assert!(checkout_during_a_settle(true).await);
    }

    #[tokio::test]
    async fn an_instance_that_did_not_settle_is_never_handed_out() {
        assert!(!checkout_during_a_settle(false).await);
    }
}
