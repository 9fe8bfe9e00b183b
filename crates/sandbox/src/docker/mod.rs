//! The Docker backend: each instance is a warm, hardened container whose PID 1 is the
//! agent, driven through the engine API (bollard, version negotiated: 1.41 here).
//!
//! [`DockerBackend::create_instance`] creates the container (`container.rs`: no network, read-only
//! root, capabilities dropped but for the two the agent needs to leave root for the
//! instance's own uids (`uids.rs`), limits, hearth's labels, no host mount),
//! streams the code tar into its `/code` volume through the archive API, attaches to its
//! stdin/stdout/stderr, starts it, finds its cgroup from its init pid, creates the
//! function's CPU group beside it and hands that to the agent (`cpu_group.rs`), and hands
//! the agent an `Init` frame. Every invocation is then one frame each way over the attach
//! connection (`instance.rs`), never a `docker exec`; usage comes from the cgroup files.
//!
//! Containers are labelled with their owner, a digest of the hearth's data dir
//! ([`labels`]). [`DockerBackend::sweep_orphans`] removes that owner's containers and
//! their volumes; call it at start and after shutdown. A hearth killed outright leaves
//! nothing behind either way: the engine closes the agent's stdin when the attach
//! connection drops, the agent exits, and the engine auto-removes the container.
//!
//! Images are made by `hearth images build` ([`images`], [`rootfs`]) and tagged with the
//! agent's digest; a backend starts only the images of its own agent.
//!
//! Builds of compiled functions ([`DockerBackend::create_build_instance`]) run in a
//! container of the runtime's builder image (its toolchain inside), hardened like any
//! other (no network, read-only root, the function's uids, limits), with a `/tmp` sized
//! for a build. A Go build's module cache (the layer the worker fetched and checked on
//! the host) goes in through the archive API into an anonymous `/deps` volume, never a
//! bind: the container stays offline, and sees only modules `go.sum` vouched for.
//!
//! Never: binds a host path, uses `docker exec` or the stats API, or touches containers
//! without hearth's owner label.

mod container;
mod cpu_group;
pub mod images;
mod instance;
pub mod labels;
pub mod rootfs;
mod seccomp;
mod stem;

pub use bollard::Docker;
pub use container::Limits;
pub use instance::{Container, DockerInstance};
pub use stem::DockerStem;

use crate::backend::TypedBackend;
use crate::cgroup::{CgroupConfig, UsageMeter};
use crate::session::{self, AgentSetup, LogTail};
use crate::uids::{UidLease, UidPool, UidRange};
use crate::{InstanceSpec, SandboxError};
use async_trait::async_trait;
use bollard::body_full;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ListContainersOptions, StartContainerOptions,
    UploadToContainerOptions,
};
use hearth_core::protocol::{InitSpec, Purpose, RootSetup};
use hearth_core::Runtime;
use images::AgentTag;
use instance::{demultiplex, StdinWriter};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where the engine listens unless `DOCKER_HOST` says otherwise.
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";
/// Seconds before an engine request times out.
const REQUEST_TIMEOUT_S: u64 = 120;

/// Settings of the Docker backend. [`DockerConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The static agent: its digest picks the images.
    pub agent_path: PathBuf,
    /// The owner label value of this hearth's containers (one per data dir).
    pub owner: String,
    /// The engine's socket (`unix://…`); default `DOCKER_HOST` or the standard socket.
    pub socket: String,
    /// Per-container limits besides memory.
    pub limits: Limits,
    /// Where the cgroup and proc file systems are (to read the containers' cgroups).
    pub cgroup: CgroupConfig,
    /// How long a cold start may take, from create to `Ready`.
    pub init_timeout: Duration,
    /// The host uids containers run under: a pair of its own for each ([`crate::uids`]).
    pub uids: UidRange,
    /// Where the uid slots are locked, host-wide.
    pub uid_lock_dir: PathBuf,
    /// Size of a build container's `/tmp` (the source's copy, the compiler's files, the
    /// program), MB (capped at the build's memory).
    pub build_tmp_size_mb: u64,
}

/// The engine's socket: `DOCKER_HOST` when it names a unix socket, else the standard one.
pub fn default_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string())
}

impl DockerConfig {
    /// Defaults: 64 pids, one CPU, 1024 open files, 64 MB of `/tmp`, 30 s to start.
    pub fn new(agent_path: impl Into<PathBuf>, owner: impl Into<String>) -> Self {
        Self {
            agent_path: agent_path.into(),
            owner: owner.into(),
            socket: default_socket(),
            limits: Limits {
                pids_max: 64,
                cpus: 1.0,
                nofile: 1024,
                tmp_size_mb: 64,
            },
            cgroup: CgroupConfig::default(),
            init_timeout: Duration::from_secs(30),
            uids: UidRange::DEFAULT,
            uid_lock_dir: PathBuf::from(UidPool::DEFAULT_LOCK_DIR),
            build_tmp_size_mb: 512,
        }
    }
}

/// A runtime's image, as found in the engine.
#[derive(Debug, Clone)]
struct RuntimeImage {
    reference: String,
    interpreter: String,
}

/// Makes Docker instances. Cheap to share (`Arc`) between tasks.
#[derive(Debug)]
pub struct DockerBackend {
    docker: Docker,
    config: DockerConfig,
    images: HashMap<Runtime, RuntimeImage>,
    /// The builder images of the compiled runtimes (their toolchains).
    builders: HashMap<Runtime, RuntimeImage>,
    engine_version: String,
    uids: UidPool,
}

fn engine_error(what: &str, e: bollard::errors::Error) -> SandboxError {
    SandboxError::Unavailable(format!("docker engine: {what}: {e}"))
}

/// Connects to the engine at `socket` (`unix://…`) and negotiates the API version.
pub async fn connect(socket: &str) -> Result<Docker, SandboxError> {
    let unavailable = |e: bollard::errors::Error| {
        SandboxError::Unavailable(format!(
            "no Docker engine answers at {socket} ({e}): start one (scripts/docker.sh) or use \
             --sandbox native"
        ))
    };
    Docker::connect_with_socket(socket, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
        .map_err(unavailable)?
        .negotiate_version()
        .await
        .map_err(unavailable)
}

impl DockerBackend {
    /// Connects to the engine and finds the runtime images of this agent. Fails with
    /// [`SandboxError::Unavailable`] when no engine answers or no image exists (the
    /// message says to run `hearth images build`).
    pub async fn connect(config: DockerConfig) -> Result<Self, SandboxError> {
        let docker = connect(&config.socket).await?;
        let engine_version = docker
            .version()
            .await
            .map_err(|e| engine_error("version", e))?
            .version
            .unwrap_or_default();
        let agent = AgentTag::of(&config.agent_path)
            .map_err(|e| SandboxError::Unavailable(format!("agent binary: {e}")))?;
        let mut found = HashMap::new();
        let mut builders = HashMap::new();
        for spec in images::RUNTIME_IMAGES {
            let reference = images::image_ref(spec, &agent);
            let labels = images::runtime_image_labels(&docker, &reference)
                .await
                .map_err(|e| SandboxError::Unavailable(e.to_string()))?;
            if let Some(labels) = labels {
                let interpreter = labels
                    .get(labels::INTERPRETER)
                    .cloned()
                    .unwrap_or_else(|| spec.interpreter.to_string());
                let image = RuntimeImage {
                    reference,
                    interpreter,
                };
                match spec.role {
                    images::ImageRole::Serve => found.insert(spec.runtime, image),
                    images::ImageRole::Build => builders.insert(spec.runtime, image),
                };
            }
        }
        let uids = UidPool::new(config.uids, &config.uid_lock_dir)?;
        if found.is_empty() {
            return Err(SandboxError::Unavailable(format!(
                "the Docker engine has no hearth runtime images for agent {} ({}): run \
                 `hearth images build`",
                agent.tag(),
                config.agent_path.display()
            )));
        }
        tracing::info!(
            engine = %engine_version,
            api = %docker.client_version(),
            images = ?found.values().map(|i| &i.reference).collect::<Vec<_>>(),
            builders = ?builders.values().map(|i| &i.reference).collect::<Vec<_>>(),
            "docker sandbox ready"
        );
        Ok(Self {
            docker,
            config,
            images: found,
            builders,
            engine_version,
            uids,
        })
    }

    /// The engine's version.
    pub fn engine_version(&self) -> &str {
        &self.engine_version
    }

    /// The image `runtime` runs in, when there is one.
    pub fn image(&self, runtime: Runtime) -> Option<&str> {
        self.images.get(&runtime).map(|i| i.reference.as_str())
    }

    /// Removes every container carrying this hearth's owner label, with its volumes:
    /// what an earlier run left (call at start, before any `create`) or what no pool
    /// owns any more (call after shutdown). Returns how many were removed; failures are
    /// logged.
    pub async fn sweep_orphans(&self) -> usize {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![labels::owner_filter(&self.config.owner)],
            )])),
            ..ListContainersOptions::default()
        };
        let containers = match self.docker.list_containers(Some(options)).await {
            Ok(containers) => containers,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list containers to sweep");
                return 0;
            }
        };
        let mut removed = 0;
        for id in containers.into_iter().filter_map(|c| c.id) {
            tracing::info!(container = %id, "removing an orphaned sandbox container");
            match instance::remove(&self.docker, &id).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(container = %id, error = %e, "cannot remove"),
            }
        }
        removed
    }

    /// Creates, fills, starts and initialises a container of `image` for `purpose`; on
    /// any failure the container is removed.
    async fn create_container(
        &self,
        spec: InstanceSpec,
        image: &RuntimeImage,
        purpose: Purpose,
    ) -> Result<DockerInstance, SandboxError> {
        let spawn_error = |what: &str, e: bollard::errors::Error| SandboxError::Spawn {
            instance: spec.instance_id.clone(),
            message: format!("{what}: {e}"),
        };
        let uids = self.uids.lease()?;
        let mut body = container::definition(
            &spec,
            &image.reference,
            &self.config.limits,
            &self.config.owner,
            uids.function,
        );
        if purpose == Purpose::Build {
            container::for_build(&mut body, self.build_tmp_mb(&spec), spec.layer.is_some());
        }
        let options = CreateContainerOptions {
            name: Some(container::name(&spec.instance_id)),
            ..CreateContainerOptions::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| spawn_error("create the container", e))?;
        let container = created.id;
        if let Err(error) = self.check_warnings(&created.warnings) {
            if let Err(e) = instance::remove(&self.docker, &container).await {
                tracing::warn!(container = %container, error = %e, "cannot remove a refused container");
            }
            return Err(error);
        }
        let started = self.start(&spec, image, &container, uids, purpose).await;
        match started {
            Ok(instance) => Ok(instance),
            Err(error) => {
                if let Err(e) = instance::remove(&self.docker, &container).await {
                    tracing::warn!(container = %container, error = %e,
                        "cannot remove a container that failed to start");
                }
                Err(error)
            }
        }
    }

    /// The engine's warnings about a created container: one saying a limit was dropped
    /// (a kernel without swap accounting, no CPU bandwidth control) refuses it, unless
    /// `--allow-missing-limits` allows it.
    fn check_warnings(&self, warnings: &[String]) -> Result<(), SandboxError> {
        for warning in warnings {
            let lower = warning.to_lowercase();
            let about_limits = ["limit", "swap", "cpu", "memory"]
                .iter()
                .any(|word| lower.contains(word));
            if !about_limits {
                tracing::warn!(warning = %warning, "docker engine warning");
            } else if self.config.cgroup.allow_missing_limits {
                tracing::warn!(warning = %warning, "a sandbox limit is missing (allowed by --allow-missing-limits)");
            } else {
                return Err(SandboxError::Unavailable(format!(
                    "the docker engine cannot apply a sandbox's limits: {warning}; fix the \
                     host, or pass --allow-missing-limits to run sandboxes without them"
                )));
            }
        }
        Ok(())
    }

    /// Everything after create: code in, attach, start, cgroup, init. On an error the
    /// caller removes the container.
    async fn start(
        &self,
        spec: &InstanceSpec,
        image: &RuntimeImage,
        container: &str,
        uids: UidLease,
        purpose: Purpose,
    ) -> Result<DockerInstance, SandboxError> {
        self.upload_code(spec, container).await?;
        if let Some(layer) = &spec.layer {
            self.upload_layer(spec, layer, container).await?;
        }
        let mut instance = self.boot(spec, container).await?;
        instance.uids = Some(uids);
        instance.builder = purpose == Purpose::Build;
        self.init_as(instance, spec, image, purpose, false).await
    }

    /// `/tmp` of a build container, MB: the build's size, capped at its memory.
    fn build_tmp_mb(&self, spec: &InstanceSpec) -> u64 {
        self.config.build_tmp_size_mb.min(spec.memory_mb).max(1)
    }

    /// Copies the dependency layer at `layer` (a host directory the worker unpacked, its
    /// links kept as links) into the container's `/deps` volume through the archive API.
    async fn upload_layer(
        &self,
        spec: &InstanceSpec,
        layer: &std::path::Path,
        container: &str,
    ) -> Result<(), SandboxError> {
        let spawn_error = |message: String| SandboxError::Spawn {
            instance: spec.instance_id.clone(),
            message,
        };
        let dir = layer.to_path_buf();
        let tar = tokio::task::spawn_blocking(move || layer_tar(&dir))
            .await
            .map_err(|e| spawn_error(format!("pack the dependency layer: {e}")))?
            .map_err(|e| {
                spawn_error(format!(
                    "pack the dependency layer {}: {e}",
                    layer.display()
                ))
            })?;
        let options = UploadToContainerOptions {
            path: hearth_core::protocol::DEPS_DIR.to_string(),
            ..UploadToContainerOptions::default()
        };
        self.docker
            .upload_to_container(container, Some(options), body_full(tar.into()))
            .await
            .map_err(|e| spawn_error(format!("copy the dependency layer in: {e}")))
    }

    /// Copies `spec`'s code into the container's `/code` (the archive API: written by
    /// the engine, so the function's user cannot write there).
    async fn upload_code(&self, spec: &InstanceSpec, container: &str) -> Result<(), SandboxError> {
        let spawn_error = |what: &str, e: bollard::errors::Error| SandboxError::Spawn {
            instance: spec.instance_id.clone(),
            message: format!("{what}: {e}"),
        };
        if !spec.code_tar.is_empty() {
            let options = UploadToContainerOptions {
                path: container::CODE_DIR.to_string(),
                ..UploadToContainerOptions::default()
            };
            self.docker
                .upload_to_container(container, Some(options), body_full(spec.code_tar.clone()))
                .await
                .map_err(|e| spawn_error("copy the code in", e))?;
        }
        Ok(())
    }

    /// Attaches to the created container and starts it: the agent waits for `Init`.
    async fn boot(
        &self,
        spec: &InstanceSpec,
        container: &str,
    ) -> Result<DockerInstance, SandboxError> {
        let spawn_error = |what: &str, e: bollard::errors::Error| SandboxError::Spawn {
            instance: spec.instance_id.clone(),
            message: format!("{what}: {e}"),
        };
        let attach = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            logs: false,
            detach_keys: None,
        };
        let attached = self
            .docker
            .attach_container(container, Some(attach))
            .await
            .map_err(|e| spawn_error("attach", e))?;
        let log_tail = LogTail::default();
        let (stdout, output_task) =
            demultiplex(spec.instance_id.clone(), attached.output, log_tail.clone());
        let stream = crate::agent_stream::AgentStream::new(
            spec.instance_id.clone(),
            StdinWriter::new(attached.input),
            stdout,
        );
        let started = self
            .docker
            .start_container(container, None::<StartContainerOptions>)
            .await;
        if let Err(e) = started {
            output_task.abort();
            return Err(spawn_error("start", e));
        }
        let grouped = async {
            let pid = self.init_pid(container).await?;
            // The meter first: it reads the container's own group, which on cgroup v2
            // the agent then leaves for a child (the group's counters include it).
            let meter = UsageMeter::for_process(&self.config.cgroup, pid)?;
            let group = self.hand_cpu_group_over(spec, pid).await?;
            Ok::<_, SandboxError>((meter, group))
        };
        let (meter, cpu_group) = match grouped.await {
            Ok(grouped) => grouped,
            Err(e) => {
                output_task.abort();
                return Err(e);
            }
        };
        let host = Container {
            container: container.to_string(),
            docker: self.docker.clone(),
            meter,
            cpu_group,
            output_task,
        };
        let mut instance = DockerInstance::new(spec.instance_id.clone(), stream, host);
        instance.log_tail = log_tail;
        instance.output_quota_mb = spec.output_quota_mb;
        Ok(instance)
    }

    /// Sends `Init` to a booted container's agent and waits for it to be ready; the
    /// instance holds the uids its container was made for. With `stem`, the agent
    /// starts the interpreter with no code and waits for `Specialize`.
    async fn init(
        &self,
        instance: DockerInstance,
        spec: &InstanceSpec,
        image: &RuntimeImage,
        stem: bool,
    ) -> Result<DockerInstance, SandboxError> {
        self.init_as(instance, spec, image, Purpose::Serve, stem)
            .await
    }

    /// [`Self::init`] for `purpose` (a build runs the toolchain, with a build's `/tmp`).
    async fn init_as(
        &self,
        mut instance: DockerInstance,
        spec: &InstanceSpec,
        image: &RuntimeImage,
        purpose: Purpose,
        stem: bool,
    ) -> Result<DockerInstance, SandboxError> {
        let Some(uids) = instance.uids.as_ref() else {
            let lost = SandboxError::Lost {
                instance: instance.id.clone(),
                message: "started without its uids".into(),
            };
            return Err(instance.with_agent_log(lost));
        };
        let init = session::init_spec(
            spec,
            AgentSetup {
                program: image.interpreter.clone(),
                root: RootSetup::Existing,
                tmp_size_mb: match purpose {
                    Purpose::Serve => self.config.limits.tmp_size_mb,
                    Purpose::Build => self.build_tmp_mb(spec),
                },
                purpose,
                function_id: uids.function,
                agent_id: uids.agent,
            },
        );
        let init = InitSpec { stem, ..init };
        // The code is already in /code: the Init frame carries no payload.
        let answer = session::handshake(
            &mut instance.stream,
            &instance.id,
            init,
            &[],
            self.config.init_timeout,
        )
        .await;
        match answer.map_err(|error| instance.with_agent_log(error)) {
            Ok(ready) => {
                tracing::debug!(
                    instance = %instance.id,
                    container = %instance.host.container,
                    agent = %ready.agent_version,
                    init_ms = ready.init_ms,
                    "container ready"
                );
                Ok(instance)
            }
            Err(error) => {
                instance.host.output_task.abort();
                Err(error)
            }
        }
    }

    /// Creates the function's CPU group of the started container whose init is `pid`
    /// (with `spec`'s quota) and hands it to its agent, which waits for it before
    /// anything else (`cpu_group.rs`). A host without a cpu controller hands nothing
    /// over, and is refused unless `--allow-missing-limits`.
    async fn hand_cpu_group_over(
        &self,
        spec: &InstanceSpec,
        pid: u32,
    ) -> Result<Option<cpu_group::ContainerCpuGroup>, SandboxError> {
        let quota = container::function_cpu_quota(spec, &self.config.limits);
        let cgroup = self.config.cgroup.clone();
        let handed = tokio::task::spawn_blocking(move || {
            let created = cpu_group::ContainerCpuGroup::create(&cgroup, pid, &quota)?;
            if created.is_none() && !cgroup.allow_missing_limits {
                return Err(SandboxError::Unavailable(
                    "this host cannot limit a container's CPU: no cpu controller in its \
                     cgroup; fix the host, or pass --allow-missing-limits"
                        .into(),
                ));
            }
            let (group, procs) = created.unzip();
            cpu_group::hand_over(&cgroup, pid, hearth_core::protocol::CPU_GROUP_SOCKET, procs)?;
            Ok(group)
        })
        .await
        .map_err(|e| SandboxError::Spawn {
            instance: spec.instance_id.clone(),
            message: format!("the CPU group handover task failed: {e}"),
        })?;
        handed.map_err(|e| SandboxError::Spawn {
            instance: spec.instance_id.clone(),
            message: e.to_string(),
        })
    }

    /// The host pid of a started container's init process (its agent).
    async fn init_pid(&self, container: &str) -> Result<u32, SandboxError> {
        let inspected = self
            .docker
            .inspect_container(container, None)
            .await
            .map_err(|e| SandboxError::Spawn {
                instance: container.to_string(),
                message: format!("inspect: {e}"),
            })?;
        let pid = inspected
            .state
            .and_then(|s| s.pid)
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0)
            .ok_or_else(|| SandboxError::Spawn {
                instance: container.to_string(),
                message: "the container has no running init process".to_string(),
            })?;
        Ok(pid)
    }
}

#[async_trait]
impl TypedBackend for DockerBackend {
    type Instance = DockerInstance;
    const NAME: &'static str = "docker";
    const BUILDS_WITH_LAYERS: bool = true;

    async fn create_instance(&self, spec: InstanceSpec) -> Result<DockerInstance, SandboxError> {
        if spec.layer.is_some() {
            // A layer is a host directory: a container must not bind it.
            return Err(SandboxError::Unavailable(format!(
                "{} has dependencies installed at deploy, which only the native sandbox \
                 mounts; with --sandbox docker, vendor them in the zip",
                spec.function_name
            )));
        }
        let image = self.images.get(&spec.runtime).ok_or_else(|| {
            SandboxError::Unavailable(format!(
                "no Docker image for {} functions: run `hearth images build`",
                spec.runtime
            ))
        })?;
        self.create_container(spec, image, Purpose::Serve).await
    }

    /// A container of the runtime's builder image, whose one invocation compiles
    /// `spec`'s source. A dependency layer (a Go module cache) is copied into its
    /// `/deps` volume.
    async fn create_build_instance(
        &self,
        spec: InstanceSpec,
    ) -> Result<DockerInstance, SandboxError> {
        let image = self.builders.get(&spec.runtime).ok_or_else(|| {
            SandboxError::Unavailable(if spec.runtime.is_compiled() {
                format!(
                    "no Docker builder image for {} functions: run `hearth images build`",
                    spec.runtime
                )
            } else {
                format!(
                    "the docker sandbox builds nothing for {} functions (dependencies are \
                     only installed by the native sandbox)",
                    spec.runtime
                )
            })
        })?;
        self.create_container(spec, image, Purpose::Build).await
    }
}

/// The tar of a dependency layer directory: its entries relative to it, links as links
/// (the worker refused any leaving it when it unpacked the layer), owned by root.
fn layer_tar(dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", dir)?;
    tar.into_inner()
}

#[cfg(test)]
mod layer_tests {
    use super::*;

    #[test]
    fn a_layer_is_packed_relative_to_its_dir_with_links_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("gomod/example.com/m@v1")).unwrap();
        std::fs::write(root.join("gomod/example.com/m@v1/m.go"), "package m\n").unwrap();
        std::os::unix::fs::symlink("m.go", root.join("gomod/example.com/m@v1/link.go")).unwrap();
        let tar = layer_tar(root).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            assert_eq!(entry.header().uid().unwrap(), 0, "{path}");
            if path.ends_with("link.go") {
                assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
            }
            seen.push(path);
        }
        assert!(
            seen.iter()
                .any(|p| p.trim_start_matches("./") == "gomod/example.com/m@v1/m.go"),
            "{seen:?}"
        );
    }
}
