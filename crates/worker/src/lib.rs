//! The worker: runs invocations in warm sandboxes.
//!
//! Owns: one warm [`pool`] per function version (instances serve one invocation at a
//! time; more are started up to the function's maximum; callers past that wait in a
//! bounded queue, then get [`WorkerError::Overloaded`]), cold starts (code fetched from
//! the object store, checked, handed to the sandbox as a tar, kept for the next cold start
//! in a bounded [`code_cache`]; for a compiled function, the artifact its [`build`] made; with the version's dependency layer, which
//! [`deps`] installs at deploy and unpacks once per worker), idle keep-alive, and
//! turning a sandbox's report into the API's [`Invocation`] ([`outcome`]), and
//! everything after the answer: full logs and output files land in the on-disk
//! [`spool`] while the invocation runs (each log capped, the spool under a quota), and
//! the [`reporter`] uploads them and writes
//! the history record in the background (fire-and-forget, nothing lost on a restart; a
//! quiet call's row waits in the reporter's bounded memory queue instead of a spool
//! file, and a clean shutdown spills that queue to the spool):
//! the worker is the one writer of history; the Prometheus metrics of all that
//! ([`telemetry`]). Also the seam to the controller ([`fleet::Fleet`];
//! [`local::LocalFleet`] runs it in one process) and the policy of async invocations
//! ([`async_runner`]: attempts, backoff, callbacks).
//!
//! Never: speaks HTTP (a callback POST is a client call), reads the metadata store
//! beyond what an async attempt needs (the function's newest version), or knows which
//! sandbox backend it drives (it holds a `dyn SandboxBackend`).
//!
//! Verb (one per layer, README "One call, followed down"): [`Worker::execute`] (one invocation
//! on a warm instance, taking an [`ExecuteRequest`], giving an [`Invocation`]); the
//! fleet's [`dispatch`](fleet::Fleet::dispatch) picks the worker and calls it; it calls the
//! sandbox's [`run_event`](hearth_sandbox::Instance::run_event).

pub mod async_runner;
pub mod build;
pub mod code_cache;
pub mod deps;
pub mod fleet;
pub mod local;
pub mod outcome;
pub mod pool;
pub mod reporter;
pub mod spool;
pub mod stems;
pub mod telemetry;

use bytes::Bytes;
use hearth_core::protocol::InvokeSpec;
use hearth_core::{FunctionSpec, Invocation};
use hearth_sandbox::{InstanceSpec, SandboxBackend, SandboxError};
use hearth_store::{CodeStore, MetadataStore};
use pool::{Checkout, Pool, PoolStatus};
use reporter::Reporter;
use spool::{Job, OutputScan, Spool, SpoolWriter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shown in invocations and status.
    pub id: String,
    /// How long an idle instance stays warm.
    pub idle_timeout: Duration,
    /// Callers that may wait for an instance of one function before 429.
    pub queue_limit: usize,
    /// Longest a caller waits for an instance before 429.
    pub queue_timeout: Duration,
    /// Spooled jobs the reporter may owe before new invocations get 503.
    pub max_pending_reports: usize,
    /// Cap on one invocation's full log (stdout and stderr together), bytes: the agent
    /// cuts there and the spool again.
    pub log_limit_bytes: u64,
    /// Bytes the spool may hold (logs and outputs not yet uploaded) before new
    /// invocations get 503 `spool_full`.
    pub spool_quota_bytes: u64,
    /// Limits of the builds of compiled functions.
    pub build: build::BuildConfig,
    /// Where dependencies come from, and their limits.
    pub deps: deps::DepsConfig,
    /// The pre-started generic sandboxes cold starts take.
    pub stems: stems::StemConfig,
    /// Most bytes of code (tars, artifacts) kept in memory for cold starts.
    pub code_cache_bytes: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: "w-1".into(),
            idle_timeout: Duration::from_secs(600),
            queue_limit: 100,
            queue_timeout: Duration::from_secs(30),
            max_pending_reports: 10_000,
            log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
            spool_quota_bytes: spool::DEFAULT_SPOOL_QUOTA_BYTES,
            build: build::BuildConfig::default(),
            deps: deps::DepsConfig::default(),
            stems: stems::StemConfig::default(),
            code_cache_bytes: code_cache::DEFAULT_CODE_CACHE_BYTES,
        }
    }
}

/// How an invocation's history row waits for the reporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    /// Its caller received the whole invocation in the answer: a call without logs or
    /// outputs queues its row in memory (written in batches; spilled to the spool at
    /// shutdown; a crash of the worker loses the rows of its last moments, see
    /// [`reporter`]).
    Answered,
    /// Always a job record in the spool (an async attempt: history is where its end
    /// lands).
    Spooled,
}

/// The function version an invocation targets.
#[derive(Debug, Clone)]
pub struct Target {
    /// Function name.
    pub name: String,
    /// Version to run.
    pub version: u64,
    /// Its settings.
    pub spec: FunctionSpec,
    /// Hash of its code zip in the object store.
    pub code_sha256: String,
}

/// One invocation to run.
#[derive(Debug, Clone)]
pub struct ExecuteRequest {
    /// Invocation id (ULID).
    pub id: String,
    /// The event, JSON text already checked by the caller.
    pub event: Bytes,
    /// When the platform accepted the request (for `duration_ms`).
    pub received: Instant,
    /// The same moment as wall-clock time, RFC 3339.
    pub started_at: String,
    /// Which attempt this is (1, then 2, 3 for retried async invocations).
    pub attempt: u32,
}

/// Why the worker could not run an invocation (a function's own failure is not one:
/// it is an [`Invocation`] with a failed status).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Every instance is busy and the queue is full or the wait ran out.
    #[error("function {function} is at its limit of {max_instances} concurrent instances and {queued} queued calls: retry later or raise max_instances")]
    Overloaded {
        /// Function name.
        function: String,
        /// Its instance maximum.
        max_instances: u32,
        /// Callers waiting when this one gave up.
        queued: usize,
    },
    /// The function's code could not be fetched, unpacked or built.
    #[error("code of {function} v{version}: {source}")]
    Code {
        /// Function name.
        function: String,
        /// Version.
        version: u64,
        /// What failed.
        #[source]
        source: CodeError,
    },
    /// The sandbox failed for a platform reason.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The worker is shutting down.
    #[error("worker is shutting down")]
    ShuttingDown,
    /// The background reporter is too far behind (the object store is down or slow);
    /// taking more would risk losing outputs.
    #[error("{pending} finished invocations are still waiting to be reported (is the object store reachable?): retry later")]
    Backlog {
        /// Jobs waiting.
        pending: usize,
    },
    /// The spool on disk failed (full disk?).
    #[error("the worker's spool failed: {0}")]
    Spool(std::io::Error),
    /// The spool is at its quota: logs and outputs of earlier invocations wait for the
    /// object store, or this invocation's did not fit.
    #[error("the worker's spool is full ({used_mb} of {quota_mb} MB of logs and outputs wait to be uploaded; is the object store reachable?), or this invocation's logs and outputs did not fit: retry later, write less, or raise --spool-quota-mb")]
    SpoolFull {
        /// MB the spool holds.
        used_mb: u64,
        /// Its quota, MB.
        quota_mb: u64,
    },
}

/// Why a version's code could not be made ready for its instances.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The package could not be fetched or does not pass the checks.
    #[error(transparent)]
    Package(#[from] hearth_store::GetPackageError),
    /// The object store failed (reading the artifact).
    #[error(transparent)]
    Store(#[from] hearth_store::StoreError),
    /// The missing artifact could not be rebuilt.
    #[error("rebuilding the artifact: {0}")]
    Build(#[source] build::BuildError),
    /// The artifact was not there right after its build stored it.
    #[error("the artifact vanished after its build")]
    ArtifactVanished,
    /// The version's dependency layer could not be made.
    #[error("dependencies: {0}")]
    Deps(#[source] deps::DepsError),
}

/// What a worker reports in `/v1/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerStatus {
    /// Worker id.
    pub id: String,
    /// Sandbox backend in use.
    pub backend: String,
    /// Invocations running now.
    pub active_invocations: usize,
    /// Warm pools, one per function version.
    pub pools: Vec<PoolStatus>,
}

/// Runs invocations; cheap to share behind an `Arc`.
pub struct Worker {
    config: WorkerConfig,
    backend: Arc<dyn SandboxBackend>,
    code: CodeStore,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    code_tars: code_cache::CodeCache,
    builds: build::Builds,
    deps: deps::Dependencies,
    spool: Spool,
    reporter: Arc<Reporter>,
    stems: Arc<stems::Stems>,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl Worker {
    /// Makes a worker and starts its idle reaper and its reporter (which resumes what
    /// `spool` still holds from an earlier run).
    pub fn start(
        config: WorkerConfig,
        backend: Arc<dyn SandboxBackend>,
        code: CodeStore,
        metadata: Arc<dyn MetadataStore>,
        spool: Spool,
    ) -> Arc<Worker> {
        let spool = spool.with_quota(config.spool_quota_bytes);
        let code_tars = code_cache::CodeCache::new(config.code_cache_bytes);
        let reporter = Reporter::start(spool.clone(), code.object_store().clone(), metadata);
        let worker = Arc::new(Worker {
            builds: build::Builds::new(config.build.clone()),
            deps: deps::Dependencies::new(config.deps.clone()),
            stems: stems::Stems::new(backend.clone(), config.stems.clone()),
            config,
            backend,
            code,
            pools: Mutex::new(HashMap::new()),
            code_tars,
            spool,
            reporter,
            shutting_down: Default::default(),
        });
        let weak = Arc::downgrade(&worker);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let Some(worker) = weak.upgrade() else { break };
                worker.reap_idle().await;
            }
        });
        worker
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The code store it runs functions from.
    pub fn code(&self) -> &CodeStore {
        &self.code
    }

    /// The worker's settings.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Runs one invocation to its end.
    pub async fn execute(
        &self,
        target: &Target,
        request: ExecuteRequest,
    ) -> Result<Invocation, WorkerError> {
        self.execute_with(target, request, &|_| {}, History::Answered)
            .await
    }

    /// Runs one invocation to its end; `finish` amends the invocation before it is
    /// spooled for history (the async runner marks an attempt to be retried or given up
    /// there, so that the reporter stays the one writer of history). Its history row is
    /// always spooled on disk: nobody but history receives an async invocation's end.
    pub async fn execute_finishing(
        &self,
        target: &Target,
        request: ExecuteRequest,
        finish: &(dyn Fn(&mut Invocation) + Send + Sync),
    ) -> Result<Invocation, WorkerError> {
        self.execute_with(target, request, finish, History::Spooled)
            .await
    }

    async fn execute_with(
        &self,
        target: &Target,
        request: ExecuteRequest,
        finish: &(dyn Fn(&mut Invocation) + Send + Sync),
        history: History,
    ) -> Result<Invocation, WorkerError> {
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(WorkerError::ShuttingDown);
        }
        let pending = self.reporter.pending();
        if pending >= self.config.max_pending_reports {
            return Err(WorkerError::Backlog { pending });
        }
        if self.spool.is_full() {
            return Err(self.spool_full());
        }
        let mut spooled = self.spool.begin(&request.id, self.config.log_limit_bytes);
        let (mut invocation, outputs) = match self.run(target, &request, &mut spooled).await {
            Ok(invocation) => invocation,
            Err(e) => {
                let e = match spooled.quota_hit() {
                    true => self.spool_full(),
                    false => e,
                };
                spooled.discard().await;
                return Err(e);
            }
        };
        invocation.output.truncated |= spooled.log_truncated();
        invocation.outputs = outputs.output_files(&request.id);
        invocation.advice = hearth_core::tuning::invocation_advice(&invocation);
        invocation.skipped_outputs = outputs.skipped.clone();
        // Metrics count how the run ended, before an async attempt is re-labelled.
        telemetry::invocation_finished(&invocation);
        finish(&mut invocation);
        // Nothing to upload, and the caller gets the whole invocation in its answer:
        // the history row waits in memory for the reporter's next batch (unless that
        // queue is full, then it is a job record like any other).
        let queued = match history == History::Answered && !spooled.holds_files() {
            true => match self.reporter.record(invocation.clone()) {
                None => Ok(()),
                Some(full) => Err(Some(full)),
            },
            false => Err(None),
        };
        match queued {
            Ok(()) => spooled.discard().await,
            Err(unqueued) => {
                let job = Job {
                    invocation: unqueued.unwrap_or_else(|| invocation.clone()),
                    outputs: outputs.files,
                };
                spooled.commit(&job).await.map_err(WorkerError::Spool)?;
                self.reporter.wake();
            }
        }
        self.publish_warm_instances();
        Ok(invocation)
    }

    /// Takes an instance (or starts one) and runs the invocation on it, its logs and
    /// outputs going to `spooled`.
    async fn run(
        &self,
        target: &Target,
        request: &ExecuteRequest,
        spooled: &mut SpoolWriter,
    ) -> Result<(Invocation, OutputScan), WorkerError> {
        let pool = self.pool_for(target);
        let checkout = pool
            .checkout(self.config.queue_limit, self.config.queue_timeout)
            .await?;
        let (mut instance, permit, cold_start) = match checkout {
            Checkout::Warm(instance, permit) => (instance, permit, false),
            Checkout::Cold(permit) => match self.cold_start(target).await {
                Ok(instance) => (instance, permit, true),
                Err(WorkerError::Sandbox(SandboxError::InitFailed { message })) => {
                    let failed = outcome::init_failure(target, request, &self.config.id, message);
                    return Ok((failed, OutputScan::default()));
                }
                Err(e) => return Err(e),
            },
        };
        let spec = InvokeSpec {
            request_id: request.id.clone(),
            timeout_ms: target.spec.timeout_ms,
            log_limit_bytes: self.config.log_limit_bytes,
            attempt: request.attempt,
        };
        let run = instance
            .run_event(spec, request.event.clone(), &mut *spooled)
            .await;
        let invocation = match run {
            Ok(run) => {
                let healthy = run.outcome.healthy && !run.usage.oom_killed;
                let invocation =
                    outcome::from_run(target, request, &self.config.id, cold_start, run);
                pool.checkin(instance, permit, healthy);
                invocation
            }
            Err(SandboxError::Spool { source, .. }) => {
                pool.checkin(instance, permit, true);
                return Err(WorkerError::Spool(source));
            }
            Err(error) => {
                tracing::warn!(function = %target.name, %error, "instance failed; destroying it");
                pool.checkin(instance, permit, false);
                outcome::platform_failure(target, request, &self.config.id, cold_start, &error)
            }
        };
        let outputs = spooled.close_and_scan().await.map_err(WorkerError::Spool)?;
        Ok((invocation, outputs))
    }

    fn spool_full(&self) -> WorkerError {
        WorkerError::SpoolFull {
            used_mb: self.spool.used_bytes() >> 20,
            quota_mb: self.spool.quota_bytes() >> 20,
        }
    }

    /// Waits (at most `limit`) until every finished invocation is reported.
    pub async fn flush_reports(&self, limit: Duration) {
        self.reporter.flush(limit).await;
    }

    /// Destroys the warm instances of `name`, except those of `keep_version`.
    pub async fn retire(&self, name: &str, keep_version: Option<u64>) {
        let retired: Vec<Arc<Pool>> = {
            let mut pools = self.lock_pools();
            let keys: Vec<String> = pools
                .iter()
                .filter(|(_, p)| p.function() == name && Some(p.version()) != keep_version)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| pools.remove(k)).collect()
        };
        for pool in retired {
            pool.retire().await;
        }
        self.publish_warm_instances();
    }

    /// Pools and activity for `/v1/status`.
    pub fn status(&self) -> WorkerStatus {
        let pools: Vec<PoolStatus> = {
            let mut list: Vec<PoolStatus> =
                self.lock_pools().values().map(|p| p.status()).collect();
            list.sort_by(|a, b| (&a.function, a.version).cmp(&(&b.function, b.version)));
            list
        };
        WorkerStatus {
            id: self.config.id.clone(),
            backend: self.backend.name().to_string(),
            active_invocations: pools.iter().map(|p| p.busy).sum(),
            pools,
        }
    }

    /// Stops taking invocations and destroys every instance.
    pub async fn shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let pools: Vec<Arc<Pool>> = self.lock_pools().drain().map(|(_, p)| p).collect();
        for pool in pools {
            pool.retire().await;
        }
        self.stems.shutdown().await;
        self.reporter.close(HISTORY_CLOSE_LIMIT).await;
    }

    /// Stems (pre-started generic sandboxes) waiting for a cold start.
    pub fn waiting_stems(&self) -> usize {
        self.stems.waiting()
    }

    fn lock_pools(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Pool>>> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pool_for(&self, target: &Target) -> Arc<Pool> {
        let key = format!("{}@{}", target.name, target.version);
        let mut pools = self.lock_pools();
        pools
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Pool::new(
                    target.name.clone(),
                    target.version,
                    target.spec.runtime,
                    target.spec.max_instances,
                ))
            })
            .clone()
    }

    async fn cold_start(
        &self,
        target: &Target,
    ) -> Result<Box<dyn hearth_sandbox::Instance>, WorkerError> {
        let code_tar = self.code_tar(target).await?;
        // A compiled program carries its modules; an interpreted version gets its layer.
        let layer = match target.spec.runtime.is_compiled() {
            true => None,
            false => {
                let runtime = target.spec.runtime;
                self.layer_for(&target.name, target.version, runtime, &code_tar)
                    .await?
            }
        };
        let spec = InstanceSpec {
            instance_id: format!(
                "{}-{}-{}",
                target.name,
                target.version,
                ulid::Ulid::new().to_string().to_lowercase()
            ),
            function_name: target.name.clone(),
            version: target.version,
            runtime: target.spec.runtime,
            memory_mb: target.spec.memory_mb,
            cpus: Some(target.spec.cpus_on(host_cores())),
            output_quota_mb: target.spec.output_quota_mb,
            env: target.spec.env.clone(),
            code_tar,
            layer,
        };
        let started = Instant::now();
        let instance = self.create_instance(spec).await?;
        telemetry::cold_start(&target.name, started.elapsed().as_secs_f64());
        Ok(instance)
    }

    /// A new instance of `spec`: a waiting stem of its kind specialized when there is
    /// one (a stem that fails for a platform reason is gone, and a fresh sandbox is made
    /// instead), a sandbox made for it otherwise.
    async fn create_instance(
        &self,
        spec: InstanceSpec,
    ) -> Result<Box<dyn hearth_sandbox::Instance>, SandboxError> {
        let Some(kind) = self.backend.stem_kind(&spec) else {
            return self.backend.create(spec).await;
        };
        let Some(stem) = self.stems.take(&kind) else {
            return self.backend.create(spec).await;
        };
        tracing::debug!(function = %spec.function_name, stem = stem.id(), "cold start from a stem");
        match self.backend.specialize(stem, spec.clone()).await {
            Ok(instance) => Ok(instance),
            Err(error @ SandboxError::InitFailed { .. }) => Err(error),
            Err(error) => {
                tracing::warn!(function = %spec.function_name, %error, "a stem failed; starting a sandbox of its own");
                self.backend.create(spec).await
            }
        }
    }

    /// The code of a version as a tar, fetched and checked once per code hash.
    async fn code_tar(&self, target: &Target) -> Result<Bytes, WorkerError> {
        if target.spec.runtime.is_compiled() {
            return self.artifact_tar(target).await;
        }
        if let Some(tar) = self.code_tars.get(&target.code_sha256) {
            return Ok(tar);
        }
        let package = self
            .code
            .get_package(&target.code_sha256, target.spec.runtime)
            .await
            .map_err(|e| WorkerError::Code {
                function: target.name.clone(),
                version: target.version,
                source: e.into(),
            })?;
        let tar = Bytes::from(package.tar);
        self.code_tars.insert(&target.code_sha256, tar.clone());
        Ok(tar)
    }

    async fn reap_idle(&self) {
        let pools: Vec<Arc<Pool>> = self.lock_pools().values().cloned().collect();
        for pool in pools {
            pool.evict_idle(self.config.idle_timeout).await;
        }
        self.publish_warm_instances();
    }
}

/// Cores this process may use (CPU follows memory up to this many). Read once: the
/// standard library reads the cgroup's files on every call, which cost a few percent of
/// the worker's CPU when every invocation asked.
pub fn host_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Longest a shutdown waits for queued history rows to be written before it spills
/// them to the spool.
const HISTORY_CLOSE_LIMIT: Duration = Duration::from_secs(3);
