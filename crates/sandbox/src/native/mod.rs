//! The native backend: each instance is the agent in fresh Linux namespaces and its own
//! cgroup, with no daemon in between.
//!
//! [`NativeBackend::create_instance`] makes the instance's cgroup, spawns the agent straight into
//! it and into new mount/pid/net/ipc/uts namespaces (`spawn.rs`), and hands it an `Init`
//! frame with the code tar. The agent, still root, builds a tmpfs root on the shared
//! empty mount point (each instance in its own private mount namespace), binds the
//! runtime directories read-only, pivots, drops to the instance's own uids (`uids.rs`)
//! without capabilities, and
//! answers `Ready`. Each [`crate::Instance::run_event`] then costs one frame each way plus a
//! few cgroup file reads.
//!
//! Needs root (namespaces, cgroups, mounts). Interpreters are resolved once, at
//! [`NativeBackend::new`], past shims and symlinks (`interpreter.rs`), and so are the
//! compiled runtimes' toolchains (`g++`, `go`, under the read-only `/usr`): a build
//! ([`NativeBackend::create_build_instance`]) is an instance like any other (same
//! namespaces, cgroup limits, seccomp filter, no network) whose agent runs the toolchain
//! in a `/tmp` sized for it; an instance serving a compiled function runs the built
//! program from its code dir, with no interpreter.

mod interpreter;
mod spawn;
mod stem;

pub use stem::NativeStem;

pub use interpreter::{ProgramError, Rejection};

use crate::agent_stream::AgentStream;
use crate::backend::TypedBackend;
use crate::cgroup::UsageMeter;
use crate::cgroup::{CgroupConfig, CgroupHost, CgroupLimits, CpuQuota, InstanceCgroup};
use crate::instance::{AgentInstance, InstanceHost};
use crate::lines::LineSplitter;
use crate::session::{self, AgentSetup, LogTail};
use crate::uids::{UidLease, UidPool, UidRange};
use crate::{InstanceSpec, SandboxError};
use async_trait::async_trait;
use hearth_core::protocol::{InitSpec, Purpose, RootSetup, ToAgent};
use hearth_core::Runtime;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

const MIB: u64 = 1 << 20;

/// Settings of the native backend. [`NativeConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// The static `hearth-agent` binary.
    pub agent_path: PathBuf,
    /// hearth's data directory; the backend uses `<data_dir>/sandbox/`.
    pub data_dir: PathBuf,
    /// Host directories bound read-only into every sandbox (those that exist).
    pub read_only_dirs: Vec<PathBuf>,
    /// Most processes and threads in one instance.
    pub pids_max: u64,
    /// CPU limit of one instance, in CPUs.
    pub cpus: f64,
    /// Size of each instance's `/tmp`, MB (capped at the function's memory).
    pub tmp_size_mb: u64,
    /// Size of a build instance's `/tmp` (the source's copy, the compiler's files, the
    /// program), MB (capped at the build's memory: tmpfs pages count against it).
    pub build_tmp_size_mb: u64,
    /// Where the cgroup and proc file systems are.
    pub cgroup: CgroupConfig,
    /// How long a cold start may take, from spawn to `Ready`.
    pub init_timeout: Duration,
    /// The host uids instances run under: a pair of its own for each ([`crate::uids`]).
    pub uids: UidRange,
    /// Where the uid slots are locked, host-wide.
    pub uid_lock_dir: PathBuf,
}

impl NativeConfig {
    /// Runtime directories bound read-only by default (where they exist).
    pub const DEFAULT_READ_ONLY_DIRS: [&'static str; 5] =
        ["/usr", "/lib", "/lib64", "/bin", "/sbin"];
    /// Default process limit per instance.
    pub const DEFAULT_PIDS_MAX: u64 = 64;
    /// Default `/tmp` size, MB.
    pub const DEFAULT_TMP_SIZE_MB: u64 = 64;
    /// Default `/tmp` size of a build instance, MB.
    pub const DEFAULT_BUILD_TMP_SIZE_MB: u64 = 512;

    /// Defaults: the standard runtime directories, 64 pids, one CPU, 64 MB of `/tmp`,
    /// cgroups under `/sys/fs/cgroup`, 30 s to start.
    pub fn new(agent_path: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            agent_path: agent_path.into(),
            data_dir: data_dir.into(),
            read_only_dirs: Self::DEFAULT_READ_ONLY_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            pids_max: Self::DEFAULT_PIDS_MAX,
            cpus: 1.0,
            tmp_size_mb: Self::DEFAULT_TMP_SIZE_MB,
            build_tmp_size_mb: Self::DEFAULT_BUILD_TMP_SIZE_MB,
            cgroup: CgroupConfig::default(),
            init_timeout: Duration::from_secs(30),
            uids: UidRange::DEFAULT,
            uid_lock_dir: PathBuf::from(UidPool::DEFAULT_LOCK_DIR),
        }
    }
}

/// Makes native instances. Cheap to share (`Arc`) between tasks.
#[derive(Debug)]
pub struct NativeBackend {
    config: NativeConfig,
    cgroups: CgroupHost,
    mount_point: PathBuf,
    read_only_dirs: Vec<String>,
    /// Per runtime: the interpreter (none for a compiled runtime), or why there is none.
    interpreters: HashMap<Runtime, Result<Option<PathBuf>, ProgramError>>,
    /// Per compiled runtime: the toolchain's driver, or why there is none.
    toolchains: HashMap<Runtime, Result<PathBuf, ProgramError>>,
    /// Each instance's own uids.
    uids: UidPool,
}

impl NativeBackend {
    /// Checks the host (root, agent binary, cgroups) and prepares the shared mount
    /// point. Any problem is [`SandboxError::Unavailable`] with a message for the user.
    pub fn new(config: NativeConfig) -> Result<Self, SandboxError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(SandboxError::Unavailable(
                "the native sandbox needs root; run as root or use --sandbox docker".into(),
            ));
        }
        check_agent(&config.agent_path)?;
        let cgroups = CgroupHost::detect(&config.cgroup)?;
        cgroups.prepare()?;
        let mount_point = prepare_mount_point(&config.data_dir)?;
        let uids = UidPool::new(config.uids, &config.uid_lock_dir)?;

        let existing: Vec<PathBuf> = config
            .read_only_dirs
            .iter()
            .filter(|d| d.exists())
            .cloned()
            .collect();
        let read_only_dirs = existing
            .iter()
            .map(|d| path_string(d))
            .collect::<Result<Vec<_>, _>>()?;
        let visible: Vec<PathBuf> = existing
            .iter()
            .filter_map(|d| d.canonicalize().ok())
            .collect();
        let interpreters = Runtime::ALL
            .into_iter()
            .map(|runtime| (runtime, interpreter::resolve(runtime, &visible)))
            .collect();
        let toolchains = Runtime::ALL
            .into_iter()
            .filter(|runtime| runtime.is_compiled())
            .map(|runtime| (runtime, interpreter::toolchain(runtime, &visible)))
            .collect();
        tracing::info!(
            cgroup = ?cgroups.version(),
            mount_point = %mount_point.display(),
            ?interpreters,
            ?toolchains,
            "native sandbox ready"
        );
        Ok(Self {
            config,
            cgroups,
            mount_point,
            read_only_dirs,
            interpreters,
            toolchains,
            uids,
        })
    }

    /// Removes the cgroups of instances left by an earlier run that crashed (killing
    /// what still runs in them). Call once at startup, before any `create`; two workers
    /// must not share a cgroup group. Returns how many were removed.
    pub fn sweep_orphans(&self) -> usize {
        self.cgroups.sweep_orphans()
    }

    /// The interpreter `runtime` runs with, or why it cannot run (a compiled runtime
    /// has none: its instances run the built program).
    pub fn interpreter(&self, runtime: Runtime) -> Result<&Path, SandboxError> {
        match self.interpreters.get(&runtime) {
            Some(Ok(Some(path))) => Ok(path),
            Some(Ok(None)) => Err(SandboxError::Unavailable(format!(
                "{runtime} functions have no interpreter: they run their built program"
            ))),
            Some(Err(why)) => Err(SandboxError::Unavailable(why.to_string())),
            None => Err(SandboxError::Unavailable(format!(
                "the native sandbox cannot run {runtime} functions"
            ))),
        }
    }

    /// The toolchain's driver a compiled `runtime` builds with, or why it cannot build.
    pub fn toolchain(&self, runtime: Runtime) -> Result<&Path, SandboxError> {
        match self.toolchains.get(&runtime) {
            Some(Ok(path)) => Ok(path),
            Some(Err(why)) => Err(SandboxError::Unavailable(why.to_string())),
            None => Err(SandboxError::Unavailable(format!(
                "{runtime} functions are not compiled: there is nothing to build"
            ))),
        }
    }

    /// The program the agent runs for `runtime`: the interpreter, the toolchain for a
    /// build, or (serving a compiled function) the built program in the code dir.
    fn program(&self, runtime: Runtime, purpose: Purpose) -> Result<String, SandboxError> {
        match purpose {
            // Installing a python function's dependencies runs its interpreter (pip).
            Purpose::Build if !runtime.is_compiled() => path_string(self.interpreter(runtime)?),
            Purpose::Build => path_string(self.toolchain(runtime)?),
            Purpose::Serve if runtime.is_compiled() => Ok(hearth_core::paths::served_program()),
            Purpose::Serve => path_string(self.interpreter(runtime)?),
        }
    }

    async fn start(
        &self,
        spec: InstanceSpec,
        purpose: Purpose,
    ) -> Result<NativeInstance, SandboxError> {
        let program = self.program(spec.runtime, purpose)?;
        let uids = self.uids.lease()?;
        let init = self.init_spec(&spec, program, purpose, &uids)?;
        let cgroup = self
            .cgroups
            .create(&spec.instance_id, &self.limits(&spec))?;
        let instance =
            NativeInstance::spawn(&self.config.agent_path, spec.instance_id.clone(), cgroup)
                .await?;
        self.handshake(instance, &spec, init, uids, purpose).await
    }

    /// The cgroup limits of `spec`'s instance.
    fn limits(&self, spec: &InstanceSpec) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: spec.memory_mb.saturating_mul(MIB),
            pids_max: self.config.pids_max,
            cpu: CpuQuota::cpus(spec.cpus.unwrap_or(self.config.cpus)),
        }
    }

    /// Hands a spawned agent its `Init` and the code, and waits (at most
    /// `init_timeout`) for it to be ready; tears it down on any failure. The instance
    /// keeps `uids` (those named in `init`) until it is gone.
    async fn handshake(
        &self,
        mut instance: NativeInstance,
        spec: &InstanceSpec,
        init: InitSpec,
        uids: UidLease,
        purpose: Purpose,
    ) -> Result<NativeInstance, SandboxError> {
        instance.output_quota_mb = spec.output_quota_mb;
        instance.builder = matches!(purpose, Purpose::Build);
        instance.uids = Some(uids);
        let answer = session::handshake(
            &mut instance.stream,
            &instance.id,
            init,
            &spec.code_tar,
            self.config.init_timeout,
        )
        .await;
        match answer {
            Ok(ready) => {
                tracing::debug!(
                    instance = %instance.id,
                    agent = %ready.agent_version,
                    init_ms = ready.init_ms,
                    "instance ready"
                );
                Ok(instance)
            }
            Err(error) => Err(instance.fail(error).await),
        }
    }

    fn init_spec(
        &self,
        spec: &InstanceSpec,
        program: String,
        purpose: Purpose,
        uids: &UidLease,
    ) -> Result<InitSpec, SandboxError> {
        let tmp_size_mb = match purpose {
            Purpose::Serve => self.config.tmp_size_mb,
            Purpose::Build => self.config.build_tmp_size_mb,
        };
        let root = RootSetup::Native {
            mount_point: path_string(&self.mount_point)?,
            read_only_dirs: self.read_only_dirs.clone(),
            root_size_mb: root_size_mb(spec.code_tar.len()),
            layer_dir: spec.layer.as_deref().map(path_string).transpose()?,
        };
        Ok(session::init_spec(
            spec,
            AgentSetup {
                program,
                root,
                tmp_size_mb,
                purpose,
                function_id: uids.function,
                agent_id: uids.agent,
            },
        ))
    }
}

/// How long `destroy` lets the agent shut down by itself.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// The root tmpfs holds the code plus some room: code + 16 MB, at least 32 MB.
fn root_size_mb(code_bytes: usize) -> u64 {
    let code_mb = (code_bytes as u64).div_ceil(MIB);
    (code_mb + 16).max(32)
}

fn path_string(path: &Path) -> Result<String, SandboxError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| SandboxError::Unavailable(format!("path {} is not UTF-8", path.display())))
}

fn check_agent(path: &Path) -> Result<(), SandboxError> {
    let build = "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release \
                 -p hearth-agent --target x86_64-unknown-linux-gnu --target-dir target/agent";
    let metadata = std::fs::metadata(path).map_err(|e| {
        SandboxError::Unavailable(format!(
            "agent binary {}: {e} (build it with `{build}`)",
            path.display()
        ))
    })?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        return Err(SandboxError::Unavailable(format!(
            "agent binary {} is not an executable file",
            path.display()
        )));
    }
    Ok(())
}

/// Makes `<data_dir>/sandbox/mnt`, the empty directory every instance mounts its root
/// on (each in its own mount namespace, so they never see each other's).
fn prepare_mount_point(data_dir: &Path) -> Result<PathBuf, SandboxError> {
    let dir = data_dir.join("sandbox").join("mnt");
    let unavailable = |e: std::io::Error| {
        SandboxError::Unavailable(format!("mount point {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(&dir).map_err(unavailable)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(unavailable)?;
    if std::fs::read_dir(&dir)
        .map_err(unavailable)?
        .next()
        .is_some()
    {
        tracing::warn!(dir = %dir.display(), "the sandbox mount point is not empty");
    }
    dir.canonicalize().map_err(unavailable)
}

#[async_trait]
impl TypedBackend for NativeBackend {
    type Instance = NativeInstance;
    const NAME: &'static str = "native";
    const MOUNTS_LAYERS: bool = true;

    /// Starts the agent, loads the code and waits (at most `init_timeout`) for it to be
    /// ready.
    async fn create_instance(&self, spec: InstanceSpec) -> Result<NativeInstance, SandboxError> {
        self.start(spec, Purpose::Serve).await
    }

    async fn create_build_instance(
        &self,
        spec: InstanceSpec,
    ) -> Result<NativeInstance, SandboxError> {
        self.start(spec, Purpose::Build).await
    }
}

/// Forwards the agent's stderr to `tracing`, line by line, tagged with the instance.
fn forward_stderr(instance: String, stderr: ChildStderr, tail: LogTail) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stderr = stderr;
        let mut splitter = LineSplitter::default();
        let mut buf = vec![0u8; 8192];
        let log = |line: &[u8]| tail.record(&instance, line);
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => splitter.feed(&buf[..n], log),
            }
        }
        splitter.finish(log);
    })
}

/// The native part of an instance: the outer agent's process and the instance's cgroup.
pub struct AgentProcess {
    // Fields drop in order: the process (killed on drop), then the cgroup (everything
    // left in it killed, directories removed).
    child: Child,
    cgroup: Option<InstanceCgroup>,
    stderr_task: Option<JoinHandle<()>>,
}

/// One running agent, serving one function version.
pub type NativeInstance = AgentInstance<AgentProcess>;

impl NativeInstance {
    /// Spawns the agent into `cgroup` and new namespaces.
    async fn spawn(agent: &Path, id: String, cgroup: InstanceCgroup) -> Result<Self, SandboxError> {
        let mut child =
            spawn::spawn_agent(agent, cgroup.procs_files(), cgroup.function_procs_file())
                .await
                .map_err(|e| SandboxError::Spawn {
                    instance: id.clone(),
                    message: format!("cannot start the agent {}: {e}", agent.display()),
                })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SandboxError::Spawn {
                instance: id,
                message: "the agent's stdio is not piped".into(),
            });
        };
        let log_tail = LogTail::default();
        let stderr_task = forward_stderr(id.clone(), stderr, log_tail.clone());
        let host = AgentProcess {
            child,
            cgroup: Some(cgroup),
            stderr_task: Some(stderr_task),
        };
        let stream = AgentStream::new(id.clone(), stdin, stdout);
        let mut instance = Self::new(id, stream, host);
        instance.log_tail = log_tail;
        Ok(instance)
    }

    /// The agent's process id (outside the sandbox's pid namespace): the outer agent,
    /// which only waits for the sandbox's PID 1.
    pub fn pid(&self) -> Option<u32> {
        self.host.child.id()
    }

    /// The instance's cgroup directories (empty once destroyed).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.host
            .cgroup
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default()
    }

    /// Tears the instance down after a failed start and returns the error, with what
    /// the agent last said added to a lost stream's message.
    async fn fail(mut self, error: SandboxError) -> SandboxError {
        AgentProcess::teardown(&mut self).await;
        if let Some(task) = self.host.stderr_task.take() {
            // Everything is dead, so stderr ends; do not wait long for its last lines.
            let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
        }
        self.with_agent_log(error)
    }
}

#[async_trait]
impl InstanceHost for AgentProcess {
    type Writer = ChildStdin;
    type Reader = ChildStdout;

    fn meter(&mut self, instance: &str) -> Result<&mut UsageMeter, SandboxError> {
        match self.cgroup.as_mut() {
            Some(cgroup) => cgroup.meter(),
            None => Err(SandboxError::Lost {
                instance: instance.to_string(),
                message: "the instance was destroyed".into(),
            }),
        }
    }

    /// Asks the agent to stop, kills it after [`SHUTDOWN_GRACE`], then empties and
    /// removes the cgroup.
    async fn teardown(instance: &mut NativeInstance) {
        let (id, stream, host) = (&instance.id, &mut instance.stream, &mut instance.host);
        let polite = async {
            if stream.send(&ToAgent::Shutdown, b"").await.is_ok() {
                let _ = host.child.wait().await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, polite).await.is_err() {
            tracing::debug!(instance = %id, "agent ignored shutdown; killing it");
        }
        if let Err(e) = host.child.start_kill() {
            // InvalidInput: it already exited.
            if e.kind() != std::io::ErrorKind::InvalidInput {
                tracing::warn!(instance = %id, error = %e, "cannot kill the agent");
            }
        }
        let _ = host.child.wait().await;
        if let Some(cgroup) = host.cgroup.take() {
            let id = id.clone();
            match tokio::task::spawn_blocking(move || cgroup.destroy()).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(instance = %id, "instance cgroup not fully removed"),
                Err(e) => tracing::warn!(instance = %id, error = %e, "cgroup removal panicked"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_tmpfs_fits_the_code_with_room() {
        assert_eq!(root_size_mb(0), 32);
        assert_eq!(root_size_mb(10 * MIB as usize), 32);
        assert_eq!(root_size_mb(16 * MIB as usize + 1), 33);
        assert_eq!(root_size_mb(100 * MIB as usize), 116);
    }

    #[test]
    fn a_missing_agent_names_the_build_command() {
        let err = check_agent(Path::new("/nonexistent/hearth-agent")).unwrap_err();
        assert!(
            err.to_string()
                .contains("cargo build --release -p hearth-agent"),
            "{err}"
        );
    }

    #[test]
    fn the_mount_point_is_made_empty_and_open() {
        let dir = tempfile::tempdir().unwrap();
        let mount_point = prepare_mount_point(dir.path()).unwrap();
        assert!(mount_point.ends_with("sandbox/mnt"));
        let mode = std::fs::metadata(&mount_point)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
