//! Builds of compiled functions (C++, Go): once per code package, in a sandbox.
//!
//! A build is an instance of the function's runtime started for `Purpose::Build`
//! ([`SandboxBackend::create_builder`]): the same isolation and limits as an invocation
//! (no network, memory, pids, a deadline), the uploaded source as its code. Its one
//! invocation runs the toolchain and answers with the artifact, which is stored in the
//! object store under the code's hash ([`hearth_store::artifact_key`]). Whoever asks for
//! a build of code that is already built gets the stored artifact ("cached"), so the same
//! code is never compiled twice; two asking at once share one build. Cold starts copy the
//! artifact in; nothing compiles on the invocation path (an artifact missing from the
//! store, after a build-recipe change, is rebuilt once by the first cold start).
//!
//! Owns: [`BuildConfig`], [`Builds`] (the deduplication and the concurrency gate), and
//! turning a build instance's report into a [`Built`] or a [`BuildError`].

use crate::{CodeError, WorkerError};
use bytes::Bytes;
use hearth_core::protocol::{InvokeSpec, OutcomeStatus, BUILD_VERSION};
use hearth_core::Runtime;
use hearth_sandbox::{DiscardSink, InstanceRun, InstanceSpec, SandboxBackend, SandboxError};
use hearth_store::{CodeStore, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Limits of one build.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// Memory of the build instance, MB (the compiler, and `/tmp`, whose pages count).
    pub memory_mb: u64,
    /// Longest a build may run.
    pub timeout: Duration,
    /// Builds running at once on this worker; more wait their turn.
    pub max_concurrent: usize,
}

impl Default for BuildConfig {
    /// 1 GB, 120 s, two at a time.
    fn default() -> Self {
        BuildConfig {
            memory_mb: 1024,
            timeout: Duration::from_secs(120),
            max_concurrent: 2,
        }
    }
}

/// A build that produced (or found) an artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// True when the artifact was already stored: nothing was compiled.
    pub cached: bool,
    /// Time spent compiling, ms (0 when cached).
    pub duration_ms: f64,
}

/// Why there is no artifact.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The code does not compile: the compiler's message.
    #[error("{message}")]
    Failed {
        /// The compiler's output, or why the build was refused.
        message: String,
    },
    /// The build ran past its deadline.
    #[error("the build took longer than {seconds} s and was stopped")]
    TimedOut {
        /// The limit.
        seconds: u64,
    },
    /// The compiler ran out of memory.
    #[error("the build ran out of memory (its limit is {memory_mb} MB)")]
    OutOfMemory {
        /// The limit.
        memory_mb: u64,
    },
    /// This worker cannot build this runtime (no toolchain, a backend without builds).
    #[error("{0}")]
    Unavailable(String),
    /// The sandbox failed for a platform reason.
    #[error("build sandbox: {0}")]
    Sandbox(SandboxError),
    /// The artifact could not be stored or read.
    #[error("artifact store: {0}")]
    Store(#[from] StoreError),
}

impl BuildError {
    /// Whether the user's code is at fault (a 422), rather than the platform.
    pub fn is_users(&self) -> bool {
        matches!(
            self,
            BuildError::Failed { .. }
                | BuildError::TimedOut { .. }
                | BuildError::OutOfMemory { .. }
        )
    }
}

impl From<SandboxError> for BuildError {
    fn from(e: SandboxError) -> Self {
        match e {
            SandboxError::Unavailable(why) => BuildError::Unavailable(why),
            // The build agent refused to start: its toolchain is missing.
            SandboxError::InitFailed { message } => BuildError::Unavailable(message),
            other => BuildError::Sandbox(other),
        }
    }
}

/// What one build needs.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The function (for the instance's name and logs).
    pub function: String,
    /// Its runtime (compiled ones only are built).
    pub runtime: Runtime,
    /// Hash of the code zip: the artifact's key.
    pub code_sha256: String,
    /// The code as the checked tar `inspect_zip` made.
    pub code_tar: Bytes,
}

/// The builds of one worker.
pub struct Builds {
    config: BuildConfig,
    gate: Arc<Semaphore>,
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    compiled: AtomicU64,
}

impl Builds {
    /// No build yet; at most `config.max_concurrent` at once.
    pub fn new(config: BuildConfig) -> Builds {
        Builds {
            gate: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
            running: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
        }
    }

    /// Builds that ran a toolchain since the worker started (cached ones not counted):
    /// what the tests of the deduplication count.
    #[cfg(test)]
    pub fn compiled(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// The artifact of `request`'s code: found in `store`, or built in `backend` and
    /// stored. `None` for a runtime that is not compiled.
    pub async fn build(
        &self,
        backend: &dyn SandboxBackend,
        store: &CodeStore,
        request: BuildRequest,
        layer: Option<PathBuf>,
    ) -> Result<Option<Built>, BuildError> {
        if !request.runtime.is_compiled() {
            return Ok(None);
        }
        let key = hearth_store::artifact_key(&request.code_sha256, request.runtime, BUILD_VERSION);
        let turn = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _mine = turn.lock().await;
            self.build_once(backend, store, &request, layer).await
        };
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            // Nobody else holds it: forget it (the artifact is stored, or it failed).
            if Arc::strong_count(&turn) == 2 {
                running.remove(&key);
            }
        }
        result.map(Some)
    }

    async fn build_once(
        &self,
        backend: &dyn SandboxBackend,
        store: &CodeStore,
        request: &BuildRequest,
        layer: Option<PathBuf>,
    ) -> Result<Built, BuildError> {
        let (sha, runtime) = (request.code_sha256.as_str(), request.runtime);
        if store.has_artifact(sha, runtime, BUILD_VERSION).await? {
            return Ok(Built {
                cached: true,
                duration_ms: 0.0,
            });
        }
        let _permit = self
            .gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BuildError::Unavailable("the worker is shutting down".into()))?;
        let started = Instant::now();
        let outcome = self.run(backend, request, layer).await;
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let label = match &outcome {
            Ok(_) => "success",
            Err(e) if e.is_users() => "failed",
            Err(_) => "error",
        };
        metrics::counter!("hearth_builds_total", "runtime" => runtime.as_str(), "result" => label)
            .increment(1);
        metrics::histogram!("hearth_build_duration_seconds", "runtime" => runtime.as_str())
            .record(duration_ms / 1000.0);
        let artifact = outcome?;
        tracing::info!(
            function = %request.function,
            %runtime,
            code = %sha,
            duration_ms,
            artifact_bytes = artifact.len(),
            "built"
        );
        store
            .put_artifact(sha, runtime, BUILD_VERSION, artifact)
            .await?;
        Ok(Built {
            cached: false,
            duration_ms,
        })
    }

    /// One build in a fresh build instance, destroyed afterwards; the artifact.
    async fn run(
        &self,
        backend: &dyn SandboxBackend,
        request: &BuildRequest,
        layer: Option<PathBuf>,
    ) -> Result<Bytes, BuildError> {
        let id = ulid::Ulid::new().to_string().to_lowercase();
        let spec = InstanceSpec {
            instance_id: format!("build-{}-{id}", request.function),
            function_name: request.function.clone(),
            version: 0,
            runtime: request.runtime,
            memory_mb: self.config.memory_mb,
            cpus: None,
            output_quota_mb: 0,
            env: BTreeMap::new(),
            code_tar: request.code_tar.clone(),
            layer,
        };
        let mut instance = backend.create_builder(spec).await?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let invoke = InvokeSpec {
            request_id: format!("build-{id}"),
            timeout_ms: u64::try_from(self.config.timeout.as_millis()).unwrap_or(u64::MAX),
            log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
            attempt: 1,
        };
        let run = instance
            .run_event(invoke, Bytes::new(), &mut DiscardSink)
            .await;
        instance.destroy().await;
        self.judge(run?)
    }

    /// The artifact, or why the build gave none.
    fn judge(&self, run: InstanceRun) -> Result<Bytes, BuildError> {
        let outcome = run.outcome;
        if run.usage.oom_killed {
            return Err(BuildError::OutOfMemory {
                memory_mb: self.config.memory_mb,
            });
        }
        let error = outcome.error.map(|e| e.message).unwrap_or_default();
        match outcome.status {
            OutcomeStatus::Success if !run.result.is_empty() => Ok(Bytes::from(run.result)),
            OutcomeStatus::Success => Err(BuildError::Failed {
                message: "the build succeeded but produced no program".into(),
            }),
            OutcomeStatus::Error => Err(BuildError::Failed { message: error }),
            OutcomeStatus::Timeout => Err(BuildError::TimedOut {
                seconds: self.config.timeout.as_secs(),
            }),
            OutcomeStatus::Crashed => {
                let stderr = outcome.output.stderr.trim();
                Err(BuildError::Failed {
                    message: if stderr.is_empty() {
                        format!("the compiler crashed: {error}")
                    } else {
                        format!("the compiler crashed ({error}): {stderr}")
                    },
                })
            }
        }
    }
}

impl crate::Worker {
    /// Builds a compiled function's code (at deploy), or finds it built: `None` for an
    /// interpreted runtime.
    pub async fn build(&self, request: BuildRequest) -> Result<Option<Built>, BuildError> {
        if !request.runtime.is_compiled() {
            return Ok(None);
        }
        // A Go build sees its module cache (the deploy installed it) read-only.
        let layer = self
            .deps
            .layer_dir(
                self.backend.as_ref(),
                &self.code,
                &request.function,
                &request.code_tar,
                request.runtime,
            )
            .await
            .map_err(|e| match e {
                e if e.is_users() => BuildError::Failed {
                    message: e.to_string(),
                },
                crate::deps::DepsError::Unavailable(why) => BuildError::Unavailable(why),
                other => BuildError::Unavailable(other.to_string()),
            })?;
        self.builds
            .build(self.backend.as_ref(), &self.code, request, layer)
            .await
    }

    /// The artifact of a compiled function's version, as the tar its instances get as
    /// their code: from the worker's cache, else the object store. One missing there (a
    /// build-recipe change since the deploy) is built now, once.
    pub(crate) async fn artifact_tar(&self, target: &crate::Target) -> Result<Bytes, WorkerError> {
        let runtime = target.spec.runtime;
        let key = hearth_store::artifact_key(&target.code_sha256, runtime, BUILD_VERSION);
        if let Some(tar) = self.code_tars.get(&key) {
            return Ok(tar);
        }
        let code_error = |source: CodeError| WorkerError::Code {
            function: target.name.clone(),
            version: target.version,
            source,
        };
        let sha = target.code_sha256.as_str();
        let found = self
            .code
            .get_artifact(sha, runtime, BUILD_VERSION)
            .await
            .map_err(|e| code_error(e.into()))?;
        let artifact = match found {
            Some(artifact) => artifact,
            None => {
                tracing::warn!(
                    function = %target.name,
                    version = target.version,
                    "no artifact for this version (built by another recipe?): building it now"
                );
                let package = self
                    .code
                    .get_package(sha, runtime)
                    .await
                    .map_err(|e| code_error(e.into()))?;
                let request = BuildRequest {
                    function: target.name.clone(),
                    runtime,
                    code_sha256: target.code_sha256.clone(),
                    code_tar: Bytes::from(package.tar),
                };
                match self.build(request).await {
                    Ok(_) => {}
                    Err(e) if e.is_users() => {
                        return Err(WorkerError::Sandbox(SandboxError::InitFailed {
                            message: e.to_string(),
                        }))
                    }
                    Err(e) => return Err(code_error(CodeError::Build(e))),
                }
                self.code
                    .get_artifact(sha, runtime, BUILD_VERSION)
                    .await
                    .map_err(|e| code_error(e.into()))?
                    .ok_or_else(|| code_error(CodeError::ArtifactVanished))?
            }
        };
        self.code_tars.insert(&key, artifact.clone());
        Ok(artifact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::invocation::ErrorInfo;
    use hearth_core::protocol::InvokeOutcome;
    use hearth_sandbox::Usage;

    fn run(status: OutcomeStatus, error: Option<&str>, result: &[u8], oom: bool) -> InstanceRun {
        InstanceRun {
            outcome: InvokeOutcome {
                request_id: "b".into(),
                status,
                error: error.map(|m| ErrorInfo {
                    kind: "BuildFailed".into(),
                    message: m.into(),
                    trace: String::new(),
                }),
                exit_code: None,
                signal: None,
                output: Default::default(),
                handler_duration_ms: 1.0,
                max_rss_bytes: 0,
                user_cpu_ms: 0.0,
                system_cpu_ms: 0.0,
                leftovers_killed: 0,
                healthy: true,
                output_bytes: 0,
                output_quota_exceeded: false,
            },
            result: result.to_vec(),
            usage: Usage {
                oom_killed: oom,
                ..Usage::default()
            },
        }
    }

    #[test]
    fn reports_become_artifacts_or_the_users_errors() {
        let builds = Builds::new(BuildConfig::default());
        let ok = builds.judge(run(OutcomeStatus::Success, None, b"tar", false));
        assert_eq!(ok.unwrap(), Bytes::from_static(b"tar"));
        let failed = builds.judge(run(
            OutcomeStatus::Error,
            Some("main.cpp:3:5: error: expected ';'"),
            b"",
            false,
        ));
        assert!(
            matches!(&failed, Err(BuildError::Failed { message }) if message.starts_with("main.cpp:3:5")),
            "{failed:?}"
        );
        let late = builds.judge(run(OutcomeStatus::Timeout, Some("late"), b"", false));
        assert!(matches!(late, Err(BuildError::TimedOut { seconds: 120 })));
        let oom = builds.judge(run(OutcomeStatus::Error, Some("Killed"), b"", true));
        assert!(matches!(
            oom,
            Err(BuildError::OutOfMemory { memory_mb: 1024 })
        ));
        assert!(oom.unwrap_err().is_users());
        let crashed = builds.judge(run(OutcomeStatus::Crashed, Some("signal 11"), b"", false));
        assert!(crashed.unwrap_err().to_string().contains("crashed"));
    }

    /// Builds succeed with the artifact `built:<code tar>`, a little later; counted.
    struct FakeBuilder {
        started: AtomicU64,
    }

    struct FakeInstance {
        code: Bytes,
    }

    #[async_trait::async_trait]
    impl SandboxBackend for FakeBuilder {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn create(
            &self,
            _: InstanceSpec,
        ) -> Result<Box<dyn hearth_sandbox::Instance>, SandboxError> {
            Err(SandboxError::Unavailable("serving is not faked".into()))
        }

        async fn create_builder(
            &self,
            spec: InstanceSpec,
        ) -> Result<Box<dyn hearth_sandbox::Instance>, SandboxError> {
            self.started.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(FakeInstance {
                code: spec.code_tar,
            }))
        }
    }

    #[async_trait::async_trait]
    impl hearth_sandbox::Instance for FakeInstance {
        fn id(&self) -> &str {
            "fake"
        }

        async fn run_event(
            &mut self,
            _: InvokeSpec,
            _: Bytes,
            _: &mut dyn hearth_sandbox::InvocationSink,
        ) -> Result<InstanceRun, SandboxError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let artifact = [b"built:".as_slice(), &self.code].concat();
            Ok(run(OutcomeStatus::Success, None, &artifact, false))
        }

        async fn destroy(self: Box<Self>) {}
    }

    fn request(code: &'static [u8]) -> BuildRequest {
        // Any 64 hex digits will do as a key; distinct codes here have distinct sums.
        let key: u64 = code.iter().map(|b| u64::from(*b)).sum();
        BuildRequest {
            function: "f".into(),
            runtime: Runtime::Cpp,
            code_sha256: format!("{key:064x}"),
            code_tar: Bytes::from_static(code),
        }
    }

    #[tokio::test]
    async fn the_same_code_is_built_once_even_when_asked_twice_at_once() {
        let backend = FakeBuilder {
            started: AtomicU64::new(0),
        };
        let store = CodeStore::new(Arc::new(object_store::memory::InMemory::new()));
        let builds = Builds::new(BuildConfig::default());
        let (a, b) = tokio::join!(
            builds.build(&backend, &store, request(b"one"), None),
            builds.build(&backend, &store, request(b"one"), None),
        );
        let mut cached = [a.unwrap().unwrap().cached, b.unwrap().unwrap().cached];
        cached.sort();
        assert_eq!(cached, [false, true], "one built, the other found it");
        assert_eq!(backend.started.load(Ordering::SeqCst), 1);
        assert_eq!(builds.compiled(), 1);
        let again = builds.build(&backend, &store, request(b"one"), None).await;
        assert!(again.unwrap().unwrap().cached);
        let stored = store
            .get_artifact(&request(b"one").code_sha256, Runtime::Cpp, BUILD_VERSION)
            .await
            .unwrap();
        assert_eq!(stored, Some(Bytes::from_static(b"built:one")));

        let other = builds.build(&backend, &store, request(b"two"), None).await;
        assert!(!other.unwrap().unwrap().cached);
        assert_eq!(backend.started.load(Ordering::SeqCst), 2);
        let mut python = request(b"three");
        python.runtime = Runtime::Python;
        assert_eq!(
            builds.build(&backend, &store, python, None).await.unwrap(),
            None
        );
        assert_eq!(backend.started.load(Ordering::SeqCst), 2);
        assert!(
            builds.running.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }

    #[test]
    fn a_backend_without_builds_is_unavailable_not_the_users_fault() {
        let e = BuildError::from(SandboxError::Unavailable("no g++".into()));
        assert!(matches!(&e, BuildError::Unavailable(m) if m == "no g++"));
        assert!(!e.is_users());
    }
}
