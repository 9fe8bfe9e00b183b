//! The `hearth` command: runs the platform (`up`) and talks to it over HTTP (`deploy`,
//! `invoke`, `ls`, `rm`, `status`, `logs`, `tune`, `keys`).
//!
//! Owns: argument parsing, wiring the embedded defaults together for `up`, and turning
//! API answers into readable lines (or `--json`). Never: implements platform logic
//! itself, or reads the API as untyped JSON; it composes the library crates and calls the
//! HTTP API like any client, with `hearth_api`'s request and response types.
//!
//! Verb (one per layer, README "One call, followed down"): `invoke`, the user's (`hearth invoke`).

mod bench;
mod client;
mod cluster;
mod commands;
mod disk;
mod images;
mod keys;
mod package;
mod sandbox_args;
mod tune;
mod up;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the client commands look for hearth when `--url` is not given.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "hearth: functions in warm, isolated sandboxes, a fresh process per call"
)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// URL of the hearth API [default: http://127.0.0.1:8080; `bench` starts its own].
    #[arg(long, global = true, env = "HEARTH_URL")]
    url: Option<String>,
    /// API key (default: read from the data dir's admin.key).
    #[arg(long, global = true, env = "HEARTH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Data directory of a local `hearth up` (for its admin key).
    #[arg(
        long,
        global = true,
        env = "HEARTH_DATA_DIR",
        default_value = ".hearth"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run controller and worker in one process on embedded defaults.
    Up(up::UpArgs),
    /// Run a cluster controller (stateless HTTP API; needs --redis, --database, --objects).
    Controller(cluster::ControllerArgs),
    /// Run a cluster worker (runs functions; needs --redis, --database, --objects).
    Worker(cluster::WorkerArgs),
    /// Deploy a function from a directory or a zip (a new version if it exists).
    Deploy(commands::DeployArgs),
    /// Invoke a function with a JSON event (an argument, `-` for stdin, or `{}`).
    Invoke(commands::InvokeArgs),
    /// List functions.
    Ls,
    /// Delete a function and its warm instances.
    Rm {
        /// Function name.
        name: String,
    },
    /// Show workers, warm pools and active invocations.
    Status,
    /// Print the full logs of a function's recent invocations.
    Logs(commands::LogsArgs),
    /// Measure warm and cold latency, throughput and baselines (DESIGN.md §8).
    Bench(bench::BenchArgs),
    /// AutoTuner: advice from history, or `--explore` sizes; `--apply` makes the version.
    Tune(tune::TuneArgs),
    /// API keys: create (with a role, namespace and limits), ls, rm (admin key needed).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Build the Docker sandbox's runtime images locally (agent included).
    Images {
        #[command(subcommand)]
        command: images::ImagesCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hearth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hearth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Up(args) = cli.command {
        up::run(args, cli.data_dir).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Controller(args) = cli.command {
        cluster::run_controller(args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Worker(args) = cli.command {
        cluster::run_worker(args, cli.data_dir).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let output = commands::Output { json: cli.json };
    if let Command::Images { command } = cli.command {
        images::run(command).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Bench(args) = cli.command {
        bench::run(args, cli.url, cli.api_key, &cli.data_dir, &output).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let url = cli.url.as_deref().unwrap_or(DEFAULT_URL);
    let client = client::Client::new(url, cli.api_key, &cli.data_dir)?;
    match cli.command {
        Command::Up(_)
        | Command::Controller(_)
        | Command::Worker(_)
        | Command::Bench(_)
        | Command::Images { .. } => {
            unreachable!("handled above")
        }
        Command::Deploy(args) => commands::deploy(&client, &output, args).await,
        Command::Invoke(args) => commands::invoke(&client, &output, args).await,
        Command::Ls => commands::list(&client, &output).await,
        Command::Rm { name } => commands::remove(&client, &output, &name).await,
        Command::Status => commands::status(&client, &output).await,
        Command::Logs(args) => commands::logs(&client, &output, args).await,
        Command::Tune(args) => tune::tune(&client, &output, args).await,
        Command::Keys { command } => keys::run(&client, &output, command).await,
    }
}
