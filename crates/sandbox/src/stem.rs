//! Stem cells: generic sandboxes started before any function needs them, so that a cold
//! start only hands one its limits and its code.
//!
//! A backend says which [`StemKind`] can serve an [`crate::InstanceSpec`] (none for a build, a
//! version with a dependency layer, or code too large for a stem's root) and makes stems
//! of a kind ([`crate::SandboxBackend::create_stem`]). [`crate::SandboxBackend::specialize`]
//! consumes the stem: once it has received one function's code it is that function's
//! instance, or destroyed, never anything else's. The worker keeps the pool (how many, refilled in the
//! background, bounded by memory).

use async_trait::async_trait;
use hearth_core::Runtime;

/// The memory limit of a waiting stem, MB (what a worker counts it for): it runs only
/// the agent until it is specialized.
pub const STEM_MEMORY_MB: u64 = 32;

/// What a stem is made for before any function is known: the parts of a sandbox that
/// cannot change once it runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StemKind {
    /// The runtime its image or interpreter is for.
    pub runtime: Runtime,
    /// Size of its output dir, MB (0: none), where the backend fixes it at creation.
    pub output_quota_mb: u64,
    /// Size of its `/tmp`, MB, where the backend fixes it at creation.
    pub tmp_size_mb: u64,
    /// The function's CPU quota, µs per 100 ms period, where the backend sets it when
    /// the stem is made (0: set at specialization). A quota set ahead has its CFS burst
    /// filled by the time the function loads, so its first call is not throttled for
    /// the load's CPU.
    pub cpu_quota_us: u64,
}

impl StemKind {
    /// The memory limit a waiting stem of this kind has, MB: [`STEM_MEMORY_MB`], or its
    /// `/tmp` when larger (tmpfs pages count against the limit).
    pub fn memory_mb(&self) -> u64 {
        self.tmp_size_mb.max(STEM_MEMORY_MB)
    }
}

/// A pre-started generic sandbox of one [`StemKind`]: no code, no function.
#[async_trait]
pub trait Stem: Send + Sync {
    /// Its id (the instance id it keeps once specialized).
    fn id(&self) -> &str;

    /// Its kind.
    fn kind(&self) -> &StemKind;

    /// The stem as `Any`, for its backend to take back its own type.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;

    /// Kills it. Never fails: problems are logged.
    async fn destroy(self: Box<Self>);
}

/// A stem as a backend keeps it: its kind and the instance of its own type it becomes
/// once specialized (`DockerStem`, `NativeStem`).
#[derive(Debug)]
pub struct WaitingStem<I> {
    /// What it was made for.
    pub(crate) kind: StemKind,
    /// The sandbox, its agent blocked on its first frame.
    pub(crate) instance: I,
}

impl<I: crate::Instance + 'static> WaitingStem<I> {
    /// Takes back a backend's own stem; another backend's (`backend` names this one) is
    /// an error, and dropped.
    pub(crate) fn take(stem: Box<dyn Stem>, backend: &str) -> Result<Self, crate::SandboxError> {
        let id = stem.id().to_string();
        stem.into_any()
            .downcast::<Self>()
            .map(|stem| *stem)
            .map_err(|_| crate::SandboxError::Spawn {
                instance: id,
                message: format!("not a {backend} stem"),
            })
    }
}

#[async_trait]
impl<I: crate::Instance + 'static> Stem for WaitingStem<I> {
    fn id(&self) -> &str {
        self.instance.id()
    }

    fn kind(&self) -> &StemKind {
        &self.kind
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }

    async fn destroy(self: Box<Self>) {
        Box::new(self.instance).destroy().await;
    }
}
