//! `hearth up`: controller and worker in one process, on embedded defaults (SQLite file,
//! local object-store dir, native sandbox; `--sandbox docker` for containers), or on
//! PostgreSQL and S3 with `--database`/`--objects`. On a fresh
//! data dir it deploys a sample function and invokes it, so the first thing a newcomer
//! sees is a call that worked.

use crate::client::{Client, KEY_FILE};
use crate::commands;
use crate::sandbox_args::{create_data_dir, SandboxArgs};
use anyhow::{bail, Context};
use clap::Args;
use hearth_controller::AppState;
use hearth_sandbox::docker::{DockerBackend, DockerConfig};
use hearth_sandbox::native::{NativeBackend, NativeConfig};
use hearth_sandbox::SandboxBackend;
use hearth_store::{open_metadata, CodeStore};
use hearth_worker::deps::DepsConfig;
use hearth_worker::local::LocalFleet;
use hearth_worker::spool::Spool;
use hearth_worker::{Worker, WorkerConfig};
use sha2::Digest;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The sample function deployed on first start.
const SAMPLE_MAIN_PY: &str = include_str!("../samples/hello/main.py");
/// Where the static agent lands, relative to the workspace root.
const AGENT_BUILD_PATH: &str = "target/agent/x86_64-unknown-linux-gnu/release/hearth-agent";

/// `hearth up` options.
#[derive(Args)]
pub struct UpArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The static agent binary (default: beside `hearth`, or the workspace build).
    #[arg(long, env = "HEARTH_AGENT")]
    agent: Option<PathBuf>,
    /// Seconds an idle instance stays warm.
    #[arg(long, default_value_t = 600)]
    idle_timeout: u64,
    /// Pre-started generic sandboxes ("stems") kept waiting per runtime, so a cold start
    /// only loads the code (0: none; all of them together hold at most 256 MB).
    #[arg(long, default_value_t = 2)]
    stems: usize,
    /// Do not deploy and invoke the sample function on a fresh data dir.
    #[arg(long)]
    no_sample: bool,
    /// Where functions run: `native` (namespaces + cgroups, no daemon) or `docker`
    /// (warm containers; needs an engine and `hearth images build`).
    #[arg(long, value_enum, default_value_t = SandboxKind::Native)]
    sandbox: SandboxKind,
    /// Metadata database: `postgres://user@host:port/db` (default: SQLite in the data dir).
    #[arg(long, env = "HEARTH_DATABASE_URL")]
    database: Option<String>,
    /// Object store: `s3://BUCKET[/PREFIX]`, S3 settings from `AWS_*` (default: the
    /// data dir's `objects/`).
    #[arg(long, env = "HEARTH_OBJECTS_URL")]
    objects: Option<String>,
    #[command(flatten)]
    deps: DepsArgs,
    #[command(flatten)]
    sandbox_args: SandboxArgs,
    #[command(flatten)]
    disk: crate::disk::DiskArgs,
}

/// Where deploys fetch function dependencies from (on the host, executing nothing).
#[derive(Args)]
pub struct DepsArgs {
    /// Python package index for requirements.txt (default: PyPI).
    #[arg(long, env = "PIP_INDEX_URL")]
    pip_index_url: Option<String>,
    /// A directory or page of extra wheels, beside the index.
    #[arg(long, env = "HEARTH_PIP_FIND_LINKS")]
    pip_find_links: Option<String>,
    /// npm registry for package.json (default: npm's).
    #[arg(long, env = "NPM_CONFIG_REGISTRY")]
    npm_registry: Option<String>,
    /// Go module proxy for go.mod (default: https://proxy.golang.org).
    #[arg(long, env = "GOPROXY")]
    goproxy: Option<String>,
    /// Go checksum database (default: off; go.sum must list every module).
    #[arg(long, env = "GOSUMDB")]
    gosumdb: Option<String>,
    /// Largest installed dependency set of one version, MB.
    #[arg(long, default_value_t = 250)]
    deps_max_mb: u64,
    /// Longest fetch and install of one version's dependencies, seconds.
    #[arg(long, default_value_t = 300)]
    deps_timeout: u64,
}

impl DepsArgs {
    fn config(self, data_dir: &Path) -> DepsConfig {
        DepsConfig {
            dir: data_dir.join("deps"),
            pip_index_url: self.pip_index_url,
            pip_find_links: self.pip_find_links,
            npm_registry: self.npm_registry,
            goproxy: self.goproxy,
            gosumdb: self.gosumdb,
            max_bytes: self.deps_max_mb << 20,
            timeout: Duration::from_secs(self.deps_timeout),
            ..DepsConfig::default()
        }
    }
}

/// The sandbox backends `hearth up` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxKind {
    /// Linux namespaces and cgroups, driven directly.
    Native,
    /// Containers through a Docker engine.
    Docker,
}

pub async fn run(args: UpArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let data_dir = create_data_dir(&data_dir)?;
    let _lock = lock_data_dir(&data_dir)?;
    let sqlite = data_dir.join("hearth.db");
    let embedded = args.database.is_none();
    let fresh_file = !sqlite.exists();
    let database = args
        .database
        .unwrap_or_else(|| sqlite.display().to_string());
    let metrics = hearth_controller::install_metrics();
    let stores = open_metadata(&database)
        .await
        .context("opening the metadata store")?;
    // A fresh start (deploy the sample): a new data dir, or a shared database with no
    // functions yet.
    let fresh = if embedded {
        fresh_file
    } else {
        stores.metadata.list_functions().await?.is_empty()
    };
    let objects = args
        .objects
        .unwrap_or_else(|| data_dir.join("objects").display().to_string());
    let code = CodeStore::open(&objects).context("opening the object store")?;
    let (api_key, key_is_new) = load_or_create_key(&data_dir)?;
    let agent = find_agent(args.agent.as_deref())?;
    let mut docker = None;
    let backend: Arc<dyn SandboxBackend> = match args.sandbox {
        SandboxKind::Native => Arc::new(native_backend(agent, &data_dir, &args.sandbox_args)?),
        SandboxKind::Docker => {
            let backend = Arc::new(docker_backend(agent, &data_dir, &args.sandbox_args).await?);
            docker = Some(backend.clone());
            backend
        }
    };
    let worker = Worker::start(
        args.disk.apply(WorkerConfig {
            idle_timeout: Duration::from_secs(args.idle_timeout),
            deps: args.deps.config(&data_dir),
            stems: hearth_worker::stems::StemConfig {
                per_kind: args.stems,
                ..Default::default()
            },
            ..WorkerConfig::default()
        }),
        backend,
        code.clone(),
        stores.metadata.clone(),
        Spool::open(&data_dir.join("spool")).context("opening the spool")?,
    );
    let fleet = LocalFleet::start(worker, stores.queue, stores.metadata.clone());
    let state = AppState::new(stores.metadata, code, fleet, api_key.clone(), metrics);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("{}", hearth_core::announce::listening_line(&url));
    // The key is shown once, when it is made; after that it is only in the file
    // (a terminal's scrollback and a service's log are no place for a standing secret).
    if key_is_new {
        println!(
            "admin API key: {api_key}  (saved in {})",
            data_dir.join(KEY_FILE).display()
        );
    } else {
        println!("admin API key: in {}", data_dir.join(KEY_FILE).display());
    }
    println!("data dir: {}", data_dir.display());
    if fresh && !args.no_sample {
        let client = Client::new(&url, Some(api_key), &data_dir)?;
        let key_path = data_dir.join(KEY_FILE);
        tokio::spawn(async move {
            if let Err(e) = show_sample(&client, &url, &key_path).await {
                eprintln!("hearth: the sample function did not run: {e:#}");
            }
        });
    }
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    hearth_controller::serve(listener, state.clone(), shutdown).await?;
    eprintln!("hearth: shutting down, destroying warm instances");
    state.shutdown().await;
    if let Some(docker) = docker {
        let swept = docker.sweep_orphans().await;
        if swept > 0 {
            tracing::warn!(swept, "removed containers no pool owned at shutdown");
        }
    }
    Ok(())
}

/// The native sandbox, with a cgroup group of its own per data dir so that instances
/// a crashed run of this hearth left behind can be swept without touching another's.
pub(crate) fn native_backend(
    agent: PathBuf,
    data_dir: &Path,
    options: &SandboxArgs,
) -> anyhow::Result<NativeBackend> {
    let mut config = NativeConfig::new(agent, data_dir);
    config.uids = options.sandbox_uids;
    config.cgroup.allow_missing_limits = options.allow_missing_limits;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    config.cgroup.group = format!("hearth-{}", hex::encode(&digest[..6]));
    let backend = NativeBackend::new(config).context("starting the native sandbox")?;
    let swept = backend.sweep_orphans();
    if swept > 0 {
        tracing::warn!(swept, "removed instances left behind by an earlier run");
    }
    Ok(backend)
}

/// The Docker sandbox, its containers labelled with this data dir's digest so that
/// those a crashed run of this hearth left behind can be swept without touching
/// another's.
pub(crate) async fn docker_backend(
    agent: PathBuf,
    data_dir: &Path,
    options: &SandboxArgs,
) -> anyhow::Result<DockerBackend> {
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let mut config = DockerConfig::new(agent, hex::encode(&digest[..6]));
    config.uids = options.sandbox_uids;
    config.cgroup.allow_missing_limits = options.allow_missing_limits;
    let backend = DockerBackend::connect(config)
        .await
        .context("starting the docker sandbox")?;
    let swept = backend.sweep_orphans().await;
    if swept > 0 {
        tracing::warn!(swept, "removed containers left behind by an earlier run");
    }
    Ok(backend)
}

/// Tries to take the data dir's lock, 100 ms apart.
const LOCK_ATTEMPTS: u32 = 30;

/// Holds an exclusive lock on the data dir for the life of the process, so two
/// `hearth up` never share one (they would fight over its database and sandboxes).
pub(crate) fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // A hearth that was just killed may leave the lock held a moment longer: a child
    // it was forking holds a copy of the descriptor until that child execs or dies.
    for _ in 0..LOCK_ATTEMPTS {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "another hearth is already running on {}: stop it, or pass another --data-dir",
        data_dir.display()
    )
}

/// The admin key: `HEARTH_API_KEY` when set, else the data dir's, else a new one; and
/// whether it was just made (only then is it printed).
fn load_or_create_key(data_dir: &Path) -> anyhow::Result<(String, bool)> {
    let path = data_dir.join(KEY_FILE);
    let (key, made) = match std::env::var("HEARTH_API_KEY") {
        Ok(key) if !key.trim().is_empty() => (key.trim().to_string(), false),
        _ => match std::fs::read_to_string(&path) {
            Ok(key) if !key.trim().is_empty() => return Ok((key.trim().to_string(), false)),
            _ => (
                format!("hk_{}", hex::encode(rand::random::<[u8; 24]>())),
                true,
            ),
        },
    };
    let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    writeln!(file, "{key}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok((key, made))
}

/// The agent binary: the flag or env, beside this executable, or the workspace build.
pub(crate) fn find_agent(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("agent binary {} does not exist", path.display());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("hearth-agent");
    if beside.is_file() {
        return Ok(beside);
    }
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join(AGENT_BUILD_PATH);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "the hearth-agent binary was not found beside {} nor in {AGENT_BUILD_PATH}: build it with scripts/build.sh or pass --agent",
        exe.display()
    )
}

async fn show_sample(client: &Client, url: &str, key_path: &Path) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    std::fs::write(dir.join("main.py"), SAMPLE_MAIN_PY)?;
    let args = commands::DeployArgs {
        path: dir.clone(),
        name: "hello".into(),
        runtime: Some("python".into()),
        memory: None,
        timeout: None,
        max_instances: None,
        cpus: None,
        env: Vec::new(),
        description: Some("the sample function `hearth up` deploys on first start".into()),
    };
    let deployed = commands::deploy_function(client, &args).await;
    let _ = std::fs::remove_dir_all(&dir);
    deployed?;
    let event = r#"{"name": "hearth"}"#;
    let cold = commands::invoke_function(client, "hello", event.into()).await?;
    let warm = commands::invoke_function(client, "hello", event.into()).await?;
    println!();
    println!("deployed the sample function `hello` (python) and invoked it twice:");
    let result = warm.invocation.result.clone().unwrap_or_default();
    println!("  result: {result}");
    println!("  first call:  {}", commands::describe_invocation(&cold));
    println!("  second call: {}", commands::describe_invocation(&warm));
    println!();
    println!("try it yourself (in another terminal, from this directory):");
    println!(
        "  curl -s -X POST {url}/v1/functions/hello/invoke -H \"Authorization: Bearer $(cat {})\" -d '{{\"name\":\"you\"}}'",
        key_path.display()
    );
    println!("  target/release/hearth invoke hello '{{\"name\":\"you\"}}'");
    println!();
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hearth-sample-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
