//! `hearth controller` and `hearth worker`: the roles of a cluster, apart. Both reach
//! the same Redis (status, queue, replies), metadata database and object store.
//! Controllers are stateless: run any number behind any load balancer. Workers: one per
//! machine, or several on one with separate `--data-dir`s.

use crate::up::{docker_backend, find_agent, lock_data_dir, native_backend, SandboxKind};
use anyhow::{bail, Context};
use clap::Args;
use hearth_cluster::controller::RedisFleet;
use hearth_cluster::node::{NodeConfig, WorkerNode};
use hearth_cluster::RedisConfig;
use hearth_controller::AppState;
use hearth_sandbox::SandboxBackend;
use hearth_store::{CodeStore, MetadataStore, PgMetadataStore, SqliteMetadataStore};
use hearth_worker::spool::Spool;
use hearth_worker::{Worker, WorkerConfig};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a controller trusts a cached function record (other controllers deploy too).
const FUNCTION_TTL: Duration = Duration::from_secs(1);

/// Where a cluster keeps its state.
#[derive(Args, Clone)]
pub struct Backing {
    /// Redis, for live status, the invocation queue and replies.
    #[arg(long, env = "HEARTH_REDIS_URL")]
    redis: String,
    /// Prefix of hearth's Redis keys (several clusters may share one Redis).
    #[arg(long, env = "HEARTH_REDIS_PREFIX", default_value = "hearth")]
    redis_prefix: String,
    /// Metadata and history: `postgres://…`, or a SQLite file shared on one machine.
    #[arg(long, env = "HEARTH_DATABASE_URL")]
    database: String,
    /// PostgreSQL schema of hearth's tables (default: the user's own).
    #[arg(long, env = "HEARTH_DATABASE_SCHEMA")]
    database_schema: Option<String>,
    /// Code, artifacts, logs and outputs: `s3://BUCKET[/PREFIX]` (settings from the
    /// AWS_* variables), or a local directory shared on one machine.
    #[arg(long, env = "HEARTH_OBJECTS_URL")]
    objects: String,
}

impl Backing {
    fn redis(&self) -> RedisConfig {
        RedisConfig {
            url: self.redis.clone(),
            prefix: self.redis_prefix.clone(),
        }
    }

    async fn metadata(&self) -> anyhow::Result<Arc<dyn MetadataStore>> {
        let url = self.database.as_str();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store = match &self.database_schema {
                Some(schema) => PgMetadataStore::connect_in_schema(url, schema).await,
                None => PgMetadataStore::connect(url).await,
            };
            return Ok(Arc::new(
                store.context("connecting to the metadata database")?,
            ));
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        // Processes starting together race to create the schema; the loser retries.
        let mut attempts = 0;
        loop {
            match SqliteMetadataStore::open(Path::new(path)) {
                Ok(store) => return Ok(Arc::new(store)),
                Err(_) if attempts < 10 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("opening the metadata store {path}"))
                }
            }
        }
    }

    async fn objects(&self) -> anyhow::Result<CodeStore> {
        CodeStore::open(&self.objects)
            .with_context(|| format!("opening the object store {}", self.objects))
    }
}

/// `hearth controller` options.
#[derive(Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    backing: Backing,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen: String,
}

/// `hearth worker` options.
#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    backing: Backing,
    /// Where functions run.
    #[arg(long, value_enum, default_value_t = SandboxKind::Native)]
    sandbox: SandboxKind,
    /// The static agent binary (default: beside `hearth`, or the workspace build).
    #[arg(long, env = "HEARTH_AGENT")]
    agent: Option<PathBuf>,
    /// Seconds an idle instance stays warm.
    #[arg(long, default_value_t = 600)]
    idle_timeout: u64,
    /// Invocations (and builds) this worker runs at once at most.
    #[arg(long, default_value_t = 32)]
    capacity: usize,
    /// This worker's id (default: host name and a digest of the data dir).
    #[arg(long)]
    id: Option<String>,
    #[command(flatten)]
    sandbox_args: crate::sandbox_args::SandboxArgs,
    #[command(flatten)]
    disk: crate::disk::DiskArgs,
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Runs a controller until SIGTERM or Ctrl-C.
pub async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    init_tracing();
    let api_key = match std::env::var("HEARTH_API_KEY") {
        Ok(key) if !key.trim().is_empty() => key.trim().to_string(),
        _ => bail!("a controller takes its admin key from HEARTH_API_KEY: set it (the same on every controller)"),
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let metadata = args.backing.metadata().await?;
    let code = args.backing.objects().await?;
    let controller_id = format!("c-{}", ulid::Ulid::new().to_string().to_lowercase());
    let fleet = RedisFleet::start(args.backing.redis(), &controller_id)
        .await
        .context("connecting to redis")?;
    let limiter = hearth_cluster::limits::RedisLimiter::connect(args.backing.redis())
        .await
        .context("connecting to redis")?;
    let sessions = hearth_cluster::sessions::RedisSessions::connect(args.backing.redis())
        .await
        .context("connecting to redis")?;
    let state = AppState::new(metadata, code, fleet, api_key, metrics)
        .with_function_ttl(FUNCTION_TTL)
        .with_limiter(std::sync::Arc::new(limiter))
        .with_sessions(std::sync::Arc::new(sessions));
    let listener = tokio::net::TcpListener::bind((args.listen.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.listen, args.port))?;
    println!(
        "hearth controller {controller_id} listening on http://{}",
        listener.local_addr()?
    );
    hearth_controller::serve(listener, state.clone(), terminated()).await?;
    state.shutdown().await;
    Ok(())
}

/// Runs a worker until SIGTERM or Ctrl-C.
pub async fn run_worker(args: WorkerArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    init_tracing();
    let data_dir = crate::sandbox_args::create_data_dir(&data_dir)?;
    let _lock = lock_data_dir(&data_dir)?;
    let _metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let metadata = args.backing.metadata().await?;
    let code = args.backing.objects().await?;
    let agent = find_agent(args.agent.as_deref())?;
    let backend: Arc<dyn SandboxBackend> = match args.sandbox {
        SandboxKind::Native => Arc::new(native_backend(agent, &data_dir, &args.sandbox_args)?),
        SandboxKind::Docker => {
            Arc::new(docker_backend(agent, &data_dir, &args.sandbox_args).await?)
        }
    };
    let host = hostname();
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let id = args
        .id
        .unwrap_or_else(|| format!("w-{host}-{}", hex::encode(&digest[..3])));
    let worker = Worker::start(
        args.disk.apply(WorkerConfig {
            id: id.clone(),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            ..WorkerConfig::default()
        }),
        backend,
        code,
        metadata.clone(),
        Spool::open(&data_dir.join("spool")).context("opening the spool")?,
    );
    let node = WorkerNode::start(
        NodeConfig {
            redis: args.backing.redis(),
            capacity: args.capacity.max(1),
            address: format!("{host}:{}", data_dir.display()),
        },
        worker,
        metadata,
    )
    .await
    .context("joining the cluster")?;
    println!("hearth worker {id} ready");
    terminated().await;
    eprintln!("hearth worker: leaving the cluster, destroying warm instances");
    node.stop().await;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
