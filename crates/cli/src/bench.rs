//! `hearth bench`: the performance figures of DESIGN.md §8, each beside a baseline
//! measured in the same run on the same handler.
//!
//! It starts its own `hearth up` on a free port and a scratch data dir (or measures
//! the hearth at `--url`), deploys trivial handlers, and measures through HTTP like any client.
//! Figures are medians and percentiles of many samples; no timing is ever asserted.
//! `--smoke` (CI) fails when a figure is broken: missing, short of samples, not a
//! number, or measured with errors (a failed baseline included).

mod floors;
mod goals;
mod settle;

use crate::client::Client;
use crate::commands::{self, Output};
use anyhow::{bail, Context};
use clap::Args;
use hearth_api::{FunctionConfig, FunctionObject, InvocationObject};
use hearth_core::{Invocation, InvocationStatus};
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON_HANDLER: &str =
    "def handler(event, context):\n    return {\"ok\": True, \"echo\": event}\n";
const NODE_HANDLER: &str = "exports.handler = (event) => ({ ok: true, echo: event });\n";
const CPP_HANDLER: &str = "#include <string>\nstd::string handler(const std::string& event) {\n  return \"{\\\"ok\\\":true,\\\"echo\\\":\" + event + \"}\";\n}\n";
const GO_HANDLER: &str = "package main\n\nfunc Handler(event interface{}) (interface{}, error) {\n\treturn map[string]interface{}{\"ok\": true, \"echo\": event}, nil\n}\n";

/// CPUs of the functions the warm figures are measured on: a whole one, so that a warm
/// figure is hearth's own path and not the CFS quota of a small function (which the
/// default-size figure beside it shows).
const WARM_CPUS: f64 = 1.0;

/// `hearth bench` options.
#[derive(Args)]
pub struct BenchArgs {
    /// Sequential warm invocations per runtime.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Seconds of the sustained-throughput run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent clients in the throughput run.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Cold starts measured per runtime.
    #[arg(long, default_value_t = 10)]
    cold_samples: usize,
    /// A run of a few seconds that exercises every figure (CI uses it; timings are
    /// meaningless at that size).
    #[arg(long)]
    smoke: bool,
    /// Sandbox backend of the hearth the bench starts (ignored with `--url`).
    #[arg(long, value_enum, default_value_t = crate::up::SandboxKind::Native)]
    sandbox: crate::up::SandboxKind,
    /// Stems per runtime of the hearth the bench starts (`hearth up --stems`; 0: cold
    /// starts make their sandbox on the call's path).
    #[arg(long, default_value_t = 2)]
    stems: usize,
    /// Only these runtimes (repeatable; default: every runtime the sandbox runs). For
    /// short A/B runs: the goals of the runtimes left out show as not measured.
    #[arg(long = "runtime")]
    runtimes: Vec<String>,
    /// Parts of the run to leave out (repeatable), for short A/B runs.
    #[arg(long, value_enum)]
    skip: Vec<Part>,
}

/// The parts of a bench run that `--skip` can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The sustained-throughput run.
    Throughput,
    /// The cold starts.
    Cold,
    /// The fresh-interpreter and Docker baselines.
    Baselines,
    /// The worker's RSS under a large output.
    Output,
}

impl BenchArgs {
    fn sized(mut self) -> BenchArgs {
        if self.smoke {
            self.requests = self.requests.min(20);
            self.duration = self.duration.min(1);
            self.clients = self.clients.min(2);
            self.cold_samples = self.cold_samples.min(2);
        }
        self
    }
}

/// Latency percentiles, ms.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    samples: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if ms.is_empty() {
                return f64::NAN;
            }
            let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
            ms[i.min(ms.len() - 1)]
        };
        Latency {
            samples: ms.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Debug, Serialize)]
struct Throughput {
    clients: usize,
    seconds: f64,
    completed: usize,
    per_second: f64,
    errors: usize,
    /// What the first few errors were (status and message), so that one can be chased.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    error_samples: Vec<String>,
    latency: Latency,
}

#[derive(Debug, Serialize)]
struct Baseline {
    what: String,
    median_ms: Option<f64>,
    note: Option<String>,
}

/// What hearth adds over the floor, ms.
#[derive(Debug, Clone, Default, Serialize)]
struct Overhead {
    /// Warm python p50 through HTTP − (HTTP round trip + python fork), ms.
    python_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// Warm calls to a function with [`WARM_CPUS`] CPUs.
    warm: BTreeMap<String, Latency>,
    /// Server-side duration (request in → result out inside hearth), ms.
    warm_server_side: BTreeMap<String, Latency>,
    /// Warm python calls to a function of the default size (128 MB, hence 0.25 CPU
    /// with CPU following memory): what the CFS quota adds to the warm figure.
    warm_default_size: BTreeMap<String, Latency>,
    throughput: Throughput,
    cold_start: BTreeMap<String, Latency>,
    /// Server-side duration of the cold starts (request in → result out), ms.
    cold_start_server_side: BTreeMap<String, Latency>,
    /// Time to build each compiled runtime's trivial handler at deploy, ms.
    build_ms: BTreeMap<String, f64>,
    baselines: Vec<Baseline>,
    memory_reading_us: Option<f64>,
    memory_reading_note: Option<String>,
    output_rss_growth_mb: Option<f64>,
    output_rss_note: Option<String>,
    /// The physical floor under a warm python call, measured in this run.
    floor: floors::Floors,
    overhead: Overhead,
    /// The Docker backend's figures (`--sandbox docker` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    docker: Option<goals::DockerFigures>,
    /// Each goal of DESIGN.md §8 beside its floor or baseline.
    goals: Vec<goals::Goal>,
}

/// A `hearth up` started for the bench, stopped on drop.
struct OwnPlatform {
    child: Child,
    data_dir: PathBuf,
    url: String,
}

impl OwnPlatform {
    fn start(sandbox: crate::up::SandboxKind, stems: usize) -> anyhow::Result<OwnPlatform> {
        let sandbox = match sandbox {
            crate::up::SandboxKind::Native => "native",
            crate::up::SandboxKind::Docker => "docker",
        };
        let data_dir = std::env::temp_dir().join(format!("hearth-bench-{}", std::process::id()));
        std::fs::create_dir_all(&data_dir)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["up", "--port", "0", "--no-sample", "--sandbox", sandbox])
            .args(["--stems", &stems.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .env_remove("HEARTH_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting hearth up for the bench")?;
        let stdout = child.stdout.take().context("no stdout from hearth up")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = hearth_core::announce::listening_url(&line) {
                        break url.to_string();
                    }
                }
                _ => bail!("hearth up exited before listening"),
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(OwnPlatform {
            child,
            data_dir,
            url,
        })
    }
}

impl Drop for OwnPlatform {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub async fn run(
    args: BenchArgs,
    target: Option<String>,
    api_key: Option<String>,
    data_dir: &Path,
    output: &Output,
) -> anyhow::Result<()> {
    let args = args.sized();
    let own = match &target {
        Some(_) => None,
        None => {
            let (sandbox, stems) = (args.sandbox, args.stems);
            Some(tokio::task::spawn_blocking(move || OwnPlatform::start(sandbox, stems)).await??)
        }
    };
    let (url, key_dir) = match (&target, &own) {
        (Some(url), _) => (url.clone(), data_dir.to_path_buf()),
        (None, Some(own)) => (own.url.clone(), own.data_dir.clone()),
        (None, None) => unreachable!("own platform started above"),
    };
    let key = if own.is_some() { None } else { api_key };
    let client = Client::new(&url, key, &key_dir)?;
    let progress = |what: &str| eprintln!("bench: {what}");

    progress("deploying trivial handlers");
    // Both sandboxes build C++ and Go (Docker in its builder images).
    let mut handlers = vec![
        ("python", "main.py", PYTHON_HANDLER),
        ("nodejs", "index.js", NODE_HANDLER),
        ("cpp", "main.cpp", CPP_HANDLER),
        ("go", "main.go", GO_HANDLER),
    ];
    handlers.retain(|(runtime, _, _)| {
        args.runtimes.is_empty() || args.runtimes.iter().any(|r| r == runtime)
    });
    let handlers = handlers;
    let skips = |part: Part| args.skip.contains(&part);
    let mut build_ms = BTreeMap::new();
    for &(runtime, file, code) in &handlers {
        let function = deploy(
            &client,
            &format!("bench-{runtime}"),
            runtime,
            file,
            code,
            None,
        )
        .await?;
        if let Some(build) = function.build.filter(|build| !build.cached) {
            build_ms.insert(runtime.to_string(), build.duration_ms);
        }
        let name = format!("bench-warm-{runtime}");
        deploy(&client, &name, runtime, file, code, Some(WARM_CPUS)).await?;
    }

    let mut warm = BTreeMap::new();
    let mut warm_server = BTreeMap::new();
    for &(runtime, _, _) in &handlers {
        progress(&format!(
            "warm latency, {runtime} ({WARM_CPUS} CPU), {} sequential calls",
            args.requests
        ));
        let name = format!("bench-warm-{runtime}");
        let (client_ms, server_ms) = warm_latency(&client, &name, args.requests).await?;
        warm.insert(runtime.to_string(), client_ms);
        warm_server.insert(runtime.to_string(), server_ms);
    }
    let mut warm_default_size = BTreeMap::new();
    if handlers.iter().any(|(runtime, _, _)| *runtime == "python") {
        progress(&format!(
            "warm latency, python at the default size (128 MB, 0.25 CPU), {} sequential calls",
            args.requests
        ));
        let (client_ms, _) = warm_latency(&client, "bench-python", args.requests).await?;
        warm_default_size.insert("python".to_string(), client_ms);
    }

    progress(&format!(
        "throughput, {} clients for {} s (python)",
        args.clients, args.duration
    ));
    let length = match skips(Part::Throughput) {
        true => Duration::ZERO,
        false => Duration::from_secs(args.duration),
    };
    let throughput = throughput(&client, "bench-python", args.clients, length).await;

    let mut cold = BTreeMap::new();
    let mut cold_server = BTreeMap::new();
    let mut cold_unsettled = 0;
    for &(runtime, file, code) in handlers.iter().filter(|_| !skips(Part::Cold)) {
        progress(&format!(
            "cold start, {runtime}, {} samples",
            args.cold_samples
        ));
        let name = format!("bench-cold-{runtime}");
        let mut samples = Vec::new();
        let mut server_ms = Vec::new();
        for i in 0..args.cold_samples {
            // A new version retires the warm instances: its first call is cold.
            let code = format!(
                "{code}\n{} sample {i}\n",
                if runtime == "python" { "#" } else { "//" }
            );
            deploy(&client, &name, runtime, file, &code, None).await?;
            // Each sample is a first call after a quiet spell, as a caller sees it: the
            // worker's background refill of its stems (which the previous sample
            // started) is over and one waits. A hearth that does not say gets a pause.
            if !settle::stems(&client, Duration::from_secs(10)).await {
                cold_unsettled += 1;
                tokio::time::sleep(Duration::from_millis(if args.smoke { 50 } else { 300 })).await;
            }
            let (ms, inv) = invoke_timed(&client, &name).await?;
            if !inv.cold_start {
                bail!("cold-start sample {i} of {runtime} was warm: {}", inv.id);
            }
            samples.push(ms);
            server_ms.push(inv.duration_ms);
        }
        cold.insert(runtime.to_string(), Latency::of(samples));
        cold_server.insert(runtime.to_string(), Latency::of(server_ms));
    }
    if cold_unsettled > 0 {
        progress(&format!(
            "{cold_unsettled} cold-start samples did not see the stems settle (no \
             hearth_stems_making gauge, or still making after 10 s): paused instead"
        ));
    }

    progress("baselines");
    let samples = if args.smoke { 3 } else { 20 };
    let baselines = match skips(Part::Baselines) {
        true => Vec::new(),
        false => vec![
            fresh_process_baseline(
                "python3 -c (fresh interpreter per call)",
                "/usr/bin/python3",
                &[
                    "-c",
                    &format!("{PYTHON_HANDLER}import json\nprint(json.dumps(handler({{}}, None)))"),
                ],
                samples,
            ),
            fresh_process_baseline(
                "node -e (fresh interpreter per call)",
                "node",
                &[
                    "-e",
                    &format!("{NODE_HANDLER}console.log(JSON.stringify(exports.handler({{}})))"),
                ],
                samples,
            ),
        ]
        .into_iter()
        .chain(docker_baselines(samples))
        .collect::<Vec<_>>(),
    };

    let output_mb = if args.smoke { 32 } else { 2048 };
    progress(&format!(
        "worker RSS while a function writes a {output_mb} MB output"
    ));
    let (output_rss_growth_mb, output_rss_note) = match &own {
        _ if skips(Part::Output) => (None, Some("skipped (--skip output)".into())),
        None => (
            None,
            Some("needs the bench's own hearth (not --url): its RSS is read from /proc".into()),
        ),
        Some(own) => match output_rss_growth(&client, own.child.id(), output_mb).await {
            Ok(mb) => (Some(mb), Some(format!("{output_mb} MB output"))),
            Err(e) => (None, Some(format!("{e:#}"))),
        },
    };

    let (memory_reading_us, memory_reading_note) =
        match memory_reading_cost(if args.smoke { 100 } else { 10_000 }) {
            Ok(us) => (Some(us), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };

    progress("floors: HTTP round trip to /healthz, python fork outside any sandbox");
    let floor = floors::measure(&client, args.requests).await;
    let overhead = Overhead {
        python_ms: floor
            .python_call_ms()
            .zip(warm.get("python").map(|l| l.p50))
            .map(|(floor, p50)| p50 - floor),
    };

    let docker = matches!(args.sandbox, crate::up::SandboxKind::Docker) && target.is_none();
    let mut report = Report {
        warm,
        warm_server_side: warm_server,
        warm_default_size,
        throughput,
        cold_start: cold,
        cold_start_server_side: cold_server,
        build_ms,
        baselines,
        memory_reading_us,
        memory_reading_note,
        output_rss_growth_mb,
        output_rss_note,
        floor,
        overhead,
        docker: None,
        goals: Vec::new(),
    };
    if docker {
        report.docker = Some(goals::docker_figures(&report));
    }
    report.goals = goals::goals(&report, docker);
    if own.is_none() {
        // Someone else's hearth: take the bench's functions away again.
        let mut names: Vec<String> = handlers
            .iter()
            .flat_map(|(runtime, _, _)| {
                [
                    format!("bench-{runtime}"),
                    format!("bench-warm-{runtime}"),
                    format!("bench-cold-{runtime}"),
                ]
            })
            .collect();
        names.push("bench-output".into());
        for name in names {
            let _ = client
                .send_empty(client.request(Method::DELETE, &format!("/v1/functions/{name}")))
                .await;
        }
    }
    if output.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
        println!();
        goals::print(&report.goals);
    }
    if args.smoke {
        let expected = Expected {
            runtimes: handlers.iter().map(|(runtime, _, _)| *runtime).collect(),
            requests: args.requests,
            cold_samples: args.cold_samples,
            own_platform: own.is_some(),
        };
        let problems = smoke_problems(&report, &expected);
        if !problems.is_empty() {
            bail!(
                "bench smoke: {} figure(s) broken:\n  - {}",
                problems.len(),
                problems.join("\n  - ")
            );
        }
        eprintln!("bench: smoke run complete, every figure measured");
    }
    Ok(())
}

/// What a complete run holds: every runtime's figures, every sample taken.
struct Expected<'a> {
    runtimes: Vec<&'a str>,
    requests: usize,
    cold_samples: usize,
    /// The bench started its own hearth (so it built every handler fresh and can read
    /// the worker's RSS).
    own_platform: bool,
}

/// The figures of `report` that are missing, short of samples, not numbers, or came
/// with errors: a smoke run with any of these fails (it asserts no timing).
fn smoke_problems(report: &Report, expected: &Expected<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let latency = |figure: String, latency: Option<&Latency>, samples: usize| match latency {
        None => Some(format!("{figure}: missing")),
        Some(l) if l.samples != samples => {
            Some(format!("{figure}: {} of {samples} samples", l.samples))
        }
        Some(l) if ![l.p50, l.p90, l.p99, l.max].iter().all(|v| v.is_finite()) => {
            Some(format!("{figure}: not a number ({l:?})"))
        }
        Some(_) => None,
    };
    for &runtime in &expected.runtimes {
        problems.extend(latency(
            format!("warm {runtime}"),
            report.warm.get(runtime),
            expected.requests,
        ));
        problems.extend(latency(
            format!("warm inside hearth {runtime}"),
            report.warm_server_side.get(runtime),
            expected.requests,
        ));
        if runtime == "python" {
            problems.extend(latency(
                "warm python at the default size".into(),
                report.warm_default_size.get(runtime),
                expected.requests,
            ));
        }
        problems.extend(latency(
            format!("cold start {runtime}"),
            report.cold_start.get(runtime),
            expected.cold_samples,
        ));
        let compiled = matches!(runtime, "cpp" | "go");
        if compiled && expected.own_platform && !report.build_ms.contains_key(runtime) {
            problems.push(format!("build at deploy {runtime}: missing"));
        }
    }
    let t = &report.throughput;
    if t.errors > 0 || t.completed == 0 || !t.per_second.is_finite() {
        problems.push(format!(
            "throughput: {} completed, {} errors",
            t.completed, t.errors
        ));
    }
    for b in &report.baselines {
        if !b.median_ms.is_some_and(f64::is_finite) {
            problems.push(format!(
                "baseline {}: {}",
                b.what,
                b.note.as_deref().unwrap_or("no figure")
            ));
        }
    }
    for (figure, value) in [
        ("floor.http_rtt_ms", report.floor.http_rtt_ms),
        ("floor.python_fork_ms", report.floor.python_fork_ms),
        ("overhead.python_ms", report.overhead.python_ms),
    ] {
        if !value.is_some_and(f64::is_finite) {
            problems.push(format!(
                "{figure}: {}",
                report.floor.note.as_deref().unwrap_or("no figure")
            ));
        }
    }
    if !report.memory_reading_us.is_some_and(f64::is_finite) {
        problems.push(format!(
            "cgroup memory-peak reading: {}",
            report.memory_reading_note.as_deref().unwrap_or("no figure")
        ));
    }
    if expected.own_platform && !report.output_rss_growth_mb.is_some_and(f64::is_finite) {
        problems.push(format!(
            "worker RSS during an output: {}",
            report.output_rss_note.as_deref().unwrap_or("no figure")
        ));
    }
    problems
}

/// `requests` sequential calls to `name` after 5 unmeasured ones: the latency through
/// HTTP and the invocations' own `duration_ms`.
async fn warm_latency(
    client: &Client,
    name: &str,
    requests: usize,
) -> anyhow::Result<(Latency, Latency)> {
    for _ in 0..5.min(requests) {
        invoke_timed(client, name).await?;
    }
    let mut client_ms = Vec::with_capacity(requests);
    let mut server_ms = Vec::with_capacity(requests);
    for _ in 0..requests {
        let (ms, inv) = invoke_timed(client, name).await?;
        client_ms.push(ms);
        server_ms.push(inv.duration_ms);
    }
    Ok((Latency::of(client_ms), Latency::of(server_ms)))
}

/// Deploys `code` as `name`; `cpus` fixes its CPUs (default: they follow memory).
async fn deploy(
    client: &Client,
    name: &str,
    runtime: &str,
    file: &str,
    code: &str,
    cpus: Option<f64>,
) -> anyhow::Result<FunctionObject> {
    let dir = std::env::temp_dir().join(format!("hearth-bench-fn-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(file), code)?;
    let args = commands::DeployArgs {
        path: dir.clone(),
        name: name.into(),
        runtime: Some(runtime.into()),
        memory: None,
        timeout: None,
        max_instances: None,
        cpus,
        env: Vec::new(),
        description: None,
    };
    let result = commands::deploy_function(client, &args).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

const OUTPUT_WRITER: &str = "import os\n\ndef handler(event, context):\n    chunk = b'x' * (1 << 20)\n    with open(os.path.join(os.environ['OUTPUT_DIR'], 'big.bin'), 'wb') as f:\n        for _ in range(event['mb']):\n            f.write(chunk)\n    return {'mb': event['mb']}\n";

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Peak growth of the worker's RSS (sampled from /proc every 10 ms) while a function
/// writes an `mb` MB output and it is uploaded and downloaded again, MB.
async fn output_rss_growth(client: &Client, pid: u32, mb: u64) -> anyhow::Result<f64> {
    let memory = mb + 512;
    let dir = std::env::temp_dir().join(format!("hearth-bench-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("main.py"), OUTPUT_WRITER)?;
    let config = FunctionConfig {
        runtime: Some("python".into()),
        memory_mb: Some(memory),
        output_quota_mb: Some(memory),
        timeout_ms: Some(300_000),
        ..FunctionConfig::default()
    };
    let deployed: anyhow::Result<FunctionObject> = client
        .send(
            client
                .request(Method::PUT, "/v1/functions/bench-output")
                .multipart(
                    reqwest::multipart::Form::new()
                        .part(
                            "code",
                            reqwest::multipart::Part::bytes(crate::package::zip_path(&dir)?)
                                .file_name("code.zip"),
                        )
                        .text("config", serde_json::to_string(&config)?),
                ),
        )
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    deployed?;
    commands::invoke_function(client, "bench-output", json!({"mb": 1}).to_string()).await?;
    let before = rss_mb(pid);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_mb(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    // Sampled through the output's whole life: written, uploaded in the background,
    // downloaded back through hearth.
    let through = async {
        let inv = commands::invoke_function(client, "bench-output", json!({"mb": mb}).to_string())
            .await?;
        let inv = inv.invocation;
        if inv.status != InvocationStatus::Success {
            bail!("the output writer failed: {:?}", inv.error);
        }
        let downloaded = download_output(client, &inv.id, "big.bin").await?;
        if downloaded != mb << 20 {
            bail!("downloaded {downloaded} bytes of a {mb} MB output");
        }
        Ok(())
    }
    .await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))?;
    through?;
    Ok((peak - before).max(0.0))
}

/// Waits (up to 10 minutes) for the reporter to upload an output, then streams it
/// down; returns its size in bytes.
async fn download_output(client: &Client, id: &str, path: &str) -> anyhow::Result<u64> {
    let url = format!("/v1/invocations/{id}/outputs/{path}");
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut response = loop {
        let response = client.request(Method::GET, &url).send().await?;
        match response.status().as_u16() {
            200 => break response,
            404 | 503 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            status => bail!("GET {url}: HTTP {status}"),
        }
    };
    let mut bytes = 0u64;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
    }
    Ok(bytes)
}

async fn invoke_timed(client: &Client, name: &str) -> anyhow::Result<(f64, Invocation)> {
    let started = Instant::now();
    let inv = commands::invoke_function(client, name, "{}".into()).await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let inv = inv.invocation;
    if inv.status != InvocationStatus::Success {
        bail!(
            "bench invocation of {name} failed ({}): {:?}",
            inv.status.as_str(),
            inv.error
        );
    }
    Ok((ms, inv))
}

async fn throughput(client: &Client, name: &str, clients: usize, length: Duration) -> Throughput {
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let request = client.request(Method::POST, &format!("/v1/functions/{name}/invoke"));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < deadline {
                let Some(request) = request.try_clone() else {
                    break;
                };
                let t = Instant::now();
                match call_once(request).await {
                    Ok(()) => latencies.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(error) => errors.push(format!(
                        "after {:.1} s, {:.0} ms into the call: {error}",
                        started.elapsed().as_secs_f64(),
                        t.elapsed().as_secs_f64() * 1e3
                    )),
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        if let Ok((latencies, e)) = task.await {
            all.extend(latencies);
            errors.extend(e);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Throughput {
        clients,
        seconds,
        completed: all.len(),
        per_second: all.len() as f64 / seconds,
        errors: errors.len(),
        error_samples: errors.into_iter().take(THROUGHPUT_ERROR_SAMPLES).collect(),
        latency: Latency::of(all),
    }
}

/// Errors of the throughput run kept with their reason.
const THROUGHPUT_ERROR_SAMPLES: usize = 5;

/// One call of the throughput run: a successful invocation, or why not.
async fn call_once(request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request
        .body("{}")
        .send()
        .await
        .map_err(|e| format!("request failed: {e:#}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("{status}, body unreadable: {e:#}"))?;
    let text = || {
        String::from_utf8_lossy(&body)
            .chars()
            .take(300)
            .collect::<String>()
    };
    if !status.is_success() {
        return Err(format!("{status}: {}", text()));
    }
    match serde_json::from_slice::<InvocationObject>(&body) {
        Ok(v) if v.invocation.status == InvocationStatus::Success => Ok(()),
        Ok(_) => Err(format!("invocation failed: {}", text())),
        Err(e) => Err(format!("{status}, not an invocation ({e}): {}", text())),
    }
}

fn fresh_process_baseline(what: &str, program: &str, args: &[&str], samples: usize) -> Baseline {
    let mut ms = Vec::new();
    for _ in 0..samples {
        let started = Instant::now();
        // The environment a sandboxed process gets, not the caller's: a variable such as
        // NODE_EXTRA_CA_CERTS (set on some build machines) makes node's own start 2.5x
        // dearer here, and no function instance ever has it unless its owner sets it.
        match Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(status) if status.success() => ms.push(started.elapsed().as_secs_f64() * 1e3),
            Ok(status) => {
                return Baseline {
                    what: what.into(),
                    median_ms: None,
                    note: Some(format!("{program} exited with {status}")),
                }
            }
            Err(e) => {
                return Baseline {
                    what: what.into(),
                    median_ms: None,
                    note: Some(format!("cannot run {program}: {e}")),
                }
            }
        }
    }
    Baseline {
        what: what.into(),
        median_ms: Some(Latency::of(ms).p50),
        note: None,
    }
}

/// `docker exec` into a warm container and a bare `docker run`, each running the same
/// trivial Python handler in hearth's own python image (user 65534, no network), timed
/// through the docker CLI like a user would. Notes instead of figures when there is no
/// engine or no image (`hearth images build`).
fn docker_baselines(samples: usize) -> Vec<Baseline> {
    const EXEC: &str = "docker exec into a warm container (python3 -c)";
    const RUN: &str = "bare docker run --rm (python3 -c)";
    let unavailable = |note: String| {
        [EXEC, RUN]
            .into_iter()
            .map(|what| Baseline {
                what: what.into(),
                median_ms: None,
                note: Some(note.clone()),
            })
            .collect()
    };
    let docker = |args: &[&str]| -> anyhow::Result<String> {
        let output = Command::new("docker").args(args).output()?;
        if !output.status.success() {
            bail!(
                "docker {}: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    if docker(&["info", "--format", "{{.ServerVersion}}"]).is_err() {
        return unavailable("no Docker engine reachable on this host".into());
    }
    let agent = std::env::var_os("HEARTH_AGENT").map(PathBuf::from);
    let image = match crate::up::find_agent(agent.as_deref()).and_then(|agent| {
        let tag = hearth_sandbox::docker::images::AgentTag::of(&agent)?;
        Ok(hearth_sandbox::docker::images::runtime_image_ref(
            hearth_core::Runtime::Python,
            &tag,
        ))
    }) {
        Ok(image) if docker(&["image", "inspect", &image]).is_ok() => image,
        Ok(image) => return unavailable(format!("no image {image}: run `hearth images build`")),
        Err(e) => return unavailable(format!("{e:#}")),
    };
    let code = format!("{PYTHON_HANDLER}import json\nprint(json.dumps(handler({{}}, None)))");
    let hardened = ["--network", "none", "--user", "65534:65534", "--read-only"];
    let time = |args: &[&str]| -> anyhow::Result<f64> {
        let started = Instant::now();
        docker(args)?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    let measure = |what: &str, args: &[&str]| -> Baseline {
        let mut ms = Vec::with_capacity(samples);
        for _ in 0..samples {
            match time(args) {
                Ok(sample) => ms.push(sample),
                Err(e) => {
                    return Baseline {
                        what: what.into(),
                        median_ms: None,
                        note: Some(format!("{e:#}")),
                    }
                }
            }
        }
        Baseline {
            what: what.into(),
            median_ms: Some(Latency::of(ms).p50),
            note: None,
        }
    };

    let mut run_args = vec!["run", "--rm"];
    run_args.extend(hardened);
    run_args.extend(["--entrypoint", "/usr/bin/python3", &image, "-c", &code]);
    let run = measure(RUN, &run_args);

    let mut start_args = vec!["run", "-d", "--rm"];
    start_args.extend(hardened);
    start_args.extend(["--entrypoint", "/bin/sleep", &image, "3600"]);
    let exec = match docker(&start_args) {
        Ok(container) => {
            let exec = measure(EXEC, &["exec", &container, "/usr/bin/python3", "-c", &code]);
            let _ = docker(&["rm", "-f", &container]);
            exec
        }
        Err(e) => Baseline {
            what: EXEC.into(),
            median_ms: None,
            note: Some(format!("cannot start the warm container: {e:#}")),
        },
    };
    vec![exec, run]
}

/// The cost of one reset + read of a cgroup's memory peak, on a cgroup of its own.
fn memory_reading_cost(rounds: u32) -> anyhow::Result<f64> {
    use hearth_sandbox::cgroup::{
        time_peak_reading, CgroupConfig, CgroupHost, CgroupLimits, CpuQuota,
    };
    let config = CgroupConfig {
        group: "hearth-bench".into(),
        ..CgroupConfig::default()
    };
    let host = CgroupHost::detect(&config)?;
    host.prepare()?;
    let limits = CgroupLimits {
        memory_bytes: 64 << 20,
        pids_max: 8,
        cpu: CpuQuota::cpus(1.0),
    };
    let mut cgroup = host.create(&format!("reading-{}", std::process::id()), &limits)?;
    let timed = time_peak_reading(cgroup.meter()?, rounds);
    cgroup.destroy();
    Ok(timed?.as_secs_f64() * 1e6)
}

fn ratio(baseline: Option<f64>, ours: f64) -> String {
    match baseline {
        Some(b) if ours > 0.0 => format!("{:.1}×", b / ours),
        _ => "n/a".into(),
    }
}

/// One row of the table: a latency's percentiles, with `decimals` digits after the point.
fn print_latency_row(figure: &str, l: &Latency, decimals: usize) {
    println!(
        "{figure:<58} {:>10.decimals$} {:>10.decimals$} {:>10.decimals$} {:>10.decimals$}",
        l.p50, l.p90, l.p99, l.max
    );
}

fn print_table(r: &Report) {
    let p50 = |runtime: &str| r.warm.get(runtime).map(|l| l.p50).unwrap_or(f64::NAN);
    let (py_warm, node_warm) = (p50("python"), p50("nodejs"));
    println!(
        "{:<58} {:>10} {:>10} {:>10} {:>10}",
        "figure", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (runtime, l) in &r.warm {
        let figure = format!(
            "warm invoke through HTTP, {runtime}, {WARM_CPUS} CPU ({} calls)",
            l.samples
        );
        print_latency_row(&figure, l, 3);
    }
    for (runtime, l) in &r.warm_server_side {
        let figure = format!("  of which inside hearth (duration_ms), {runtime}");
        print_latency_row(&figure, l, 3);
    }
    for (runtime, l) in &r.warm_default_size {
        let figure = format!("warm invoke, {runtime} at the default 128 MB = 0.25 CPU");
        print_latency_row(&figure, l, 3);
    }
    for (runtime, l) in &r.cold_start {
        let figure = format!("cold start through HTTP, {runtime} ({} samples)", l.samples);
        print_latency_row(&figure, l, 1);
    }
    for (runtime, l) in &r.cold_start_server_side {
        let figure = format!("  of which inside hearth (duration_ms), cold {runtime}");
        print_latency_row(&figure, l, 1);
    }
    for (runtime, ms) in &r.build_ms {
        println!(
            "{:<58} {:>10.1}",
            format!("build at deploy, trivial {runtime} handler"),
            ms
        );
    }
    let t = &r.throughput;
    println!(
        "{:<58} {:>10.3} {:>10} {:>10.3} {:>10.3}",
        format!("under load: {} clients, {:.0} s", t.clients, t.seconds),
        t.latency.p50,
        "",
        t.latency.p99,
        t.latency.max
    );
    println!();
    println!(
        "throughput: {:.0} invocations/s ({} completed, {} errors, {} clients, python)",
        t.per_second, t.completed, t.errors, t.clients
    );
    for sample in &t.error_samples {
        println!("  error: {sample}");
    }
    println!();
    println!(
        "{:<58} {:>10} {:>18}",
        "baseline (same handler, same run)", "median ms", "hearth warm is"
    );
    for b in &r.baselines {
        let ours = if b.what.starts_with("node") {
            node_warm
        } else {
            py_warm
        };
        match b.median_ms {
            Some(ms) => println!(
                "{:<58} {:>10.2} {:>18}",
                b.what,
                ms,
                format!("{} faster", ratio(Some(ms), ours))
            ),
            None => println!(
                "{:<58} {:>10} {:>18}  ({})",
                b.what,
                "-",
                "n/a",
                b.note.as_deref().unwrap_or("")
            ),
        }
    }
    println!();
    match r.memory_reading_us {
        Some(us) => println!("cgroup memory-peak reading (reset + read): {us:.2} µs"),
        None => println!(
            "cgroup memory-peak reading: n/a ({})",
            r.memory_reading_note.as_deref().unwrap_or("")
        ),
    }
    let note = r.output_rss_note.as_deref().unwrap_or("");
    match r.output_rss_growth_mb {
        Some(mb) => {
            println!("worker RSS growth while a function writes an output: {mb:.1} MB ({note})")
        }
        None => println!("worker RSS growth while a function writes an output: n/a ({note})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(samples: usize) -> Latency {
        Latency::of((0..samples).map(|i| i as f64 + 1.0).collect())
    }

    fn complete() -> Report {
        let per_runtime = |samples: usize| {
            ["python", "cpp"]
                .into_iter()
                .map(|r| (r.to_string(), latency(samples)))
                .collect::<BTreeMap<_, _>>()
        };
        Report {
            warm: per_runtime(20),
            warm_server_side: per_runtime(20),
            warm_default_size: BTreeMap::from([("python".to_string(), latency(20))]),
            throughput: Throughput {
                clients: 2,
                seconds: 1.0,
                completed: 50,
                per_second: 50.0,
                errors: 0,
                error_samples: Vec::new(),
                latency: latency(50),
            },
            cold_start: per_runtime(2),
            cold_start_server_side: per_runtime(1),
            build_ms: BTreeMap::from([("cpp".to_string(), 300.0)]),
            baselines: vec![Baseline {
                what: "python3 -c".into(),
                median_ms: Some(15.0),
                note: None,
            }],
            memory_reading_us: Some(1.0),
            memory_reading_note: None,
            output_rss_growth_mb: Some(1.0),
            output_rss_note: None,
            floor: floors::Floors {
                http_rtt_ms: Some(0.2),
                python_fork_ms: Some(0.5),
                note: None,
            },
            overhead: Overhead {
                python_ms: Some(0.3),
            },
            docker: None,
            goals: Vec::new(),
        }
    }

    fn expected() -> Expected<'static> {
        Expected {
            runtimes: vec!["python", "cpp"],
            requests: 20,
            cold_samples: 2,
            own_platform: true,
        }
    }

    #[test]
    fn a_complete_report_has_no_problems() {
        assert_eq!(
            smoke_problems(&complete(), &expected()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_broken_figure_is_a_problem() {
        type Breakage = (&'static str, Box<dyn Fn(&mut Report)>);
        let breakages: Vec<Breakage> = vec![
            (
                "warm cpp: missing",
                Box::new(|r| {
                    r.warm.remove("cpp");
                }),
            ),
            (
                "warm inside hearth python: not a number",
                Box::new(|r| {
                    r.warm_server_side
                        .insert("python".into(), Latency::of(vec![f64::NAN; 20]));
                }),
            ),
            (
                "cold start python: 1 of 2 samples",
                Box::new(|r| {
                    r.cold_start.insert("python".into(), latency(1));
                }),
            ),
            (
                "build at deploy cpp: missing",
                Box::new(|r| r.build_ms.clear()),
            ),
            (
                "throughput: 50 completed, 3 errors",
                Box::new(|r| r.throughput.errors = 3),
            ),
            (
                "baseline python3 -c: cannot run python3",
                Box::new(|r| {
                    r.baselines[0].median_ms = None;
                    r.baselines[0].note = Some("cannot run python3".into());
                }),
            ),
            (
                "cgroup memory-peak reading: no figure",
                Box::new(|r| r.memory_reading_us = None),
            ),
            (
                "worker RSS during an output: no figure",
                Box::new(|r| r.output_rss_growth_mb = None),
            ),
            (
                "floor.python_fork_ms: no figure",
                Box::new(|r| r.floor.python_fork_ms = None),
            ),
        ];
        for (problem, break_it) in breakages {
            let mut report = complete();
            break_it(&mut report);
            let problems = smoke_problems(&report, &expected());
            assert_eq!(problems.len(), 1, "{problem}: {problems:?}");
            assert!(problems[0].starts_with(problem), "{problems:?}");
        }
    }

    #[test]
    fn goals_stand_beside_their_floor_or_baseline() {
        let mut report = complete();
        report
            .warm
            .insert("python".into(), Latency::of(vec![0.9; 5]));
        report
            .cold_start
            .insert("python".into(), Latency::of(vec![6.0; 2]));
        let native = goals::goals(&report, false);
        let warm = native
            .iter()
            .find(|g| g.figure.starts_with("warm python p50"))
            .unwrap();
        assert_eq!(warm.against_value, Some(0.7));
        assert_eq!(warm.met, Some(true));
        let cold = native
            .iter()
            .find(|g| g.figure == "cold start python")
            .unwrap();
        assert_eq!(cold.ratio, Some(6.0 / 15.0));
        assert_eq!(cold.met, Some(true));
        // On Docker the cold start is judged against a bare `docker run`, here missing.
        let docker = goals::goals(&report, true);
        let cold = docker
            .iter()
            .find(|g| g.figure == "cold start, Docker python")
            .unwrap();
        assert_eq!((cold.ratio, cold.met), (None, None));
        let figures = goals::docker_figures(&report);
        assert_eq!(figures.warm_p50_ms["python"], 0.9);
        assert_eq!(figures.cold_python_vs_bare_run, None);
    }

    #[test]
    fn another_hearths_cached_builds_and_rss_are_not_expected() {
        let mut report = complete();
        report.build_ms.clear();
        report.output_rss_growth_mb = None;
        let expected = Expected {
            own_platform: false,
            ..expected()
        };
        assert_eq!(smoke_problems(&report, &expected), Vec::<String>::new());
    }
}
