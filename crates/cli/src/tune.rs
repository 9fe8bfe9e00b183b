//! `hearth tune`: the AutoTuner's advice, applying it, and active exploration with a
//! progress bar (one API call per size, so the bar moves as sizes finish).

use crate::client::Client;
use crate::commands::Output;
use anyhow::Context;
use clap::Args;
use hearth_api::tuning::{AdviceBody, ExploreAnswer, TuningApply, TuningExplore};
use hearth_api::FunctionObject;
use hearth_core::tuning::{self, ExploreRow, Strategy};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;

/// `hearth tune`.
#[derive(Args)]
pub struct TuneArgs {
    /// Function name.
    pub name: String,
    /// Run the function at each of `--sizes` and compare (instead of advising from history).
    #[arg(long)]
    pub explore: bool,
    /// JSON file with the event to explore with (`-` for stdin; default `{}`).
    #[arg(long, requires = "explore")]
    pub event: Option<PathBuf>,
    /// Memory sizes to explore, MB.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128,256,512,1024",
        requires = "explore"
    )]
    pub sizes: Vec<u64>,
    /// Measured runs per size (after one cold start).
    #[arg(long, default_value_t = 10, requires = "explore")]
    pub runs: usize,
    /// What the pick optimises: cost, speed or balanced.
    #[arg(long, default_value = "balanced", requires = "explore")]
    pub strategy: Strategy,
    /// Make a new version at the recommended (or picked) size.
    #[arg(long)]
    pub apply: bool,
}

/// Runs `hearth tune`.
pub async fn tune(
    client: &Client,
    output: &Output,
    args: TuneArgs,
) -> anyhow::Result<std::process::ExitCode> {
    if args.explore {
        explore(client, output, args).await?;
    } else {
        advise(client, output, &args).await?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn advise(client: &Client, output: &Output, args: &TuneArgs) -> anyhow::Result<()> {
    let path = format!("/v1/functions/{}/tuning", args.name);
    let advice: AdviceBody = client.send(client.request(Method::GET, &path)).await?;
    output.print(&advice, advice_text);
    if args.apply {
        let body = TuningApply {
            memory_mb: advice.advice.current_memory_mb,
            to_memory_mb: None,
        };
        let applied: FunctionObject = client
            .send(
                client
                    .request(Method::POST, &format!("{path}/apply"))
                    .json(&body),
            )
            .await?;
        output.print(&applied, |f| {
            format!(
                "applied: {} version {} at {} MB (reverted by itself if its next calls fail)",
                f.name, f.version, f.memory_mb
            )
        });
    }
    Ok(())
}

fn advice_text(body: &AdviceBody) -> String {
    let advice = &body.advice;
    let stats = &advice.stats;
    let peak = &stats.peak_mb;
    let recommended = match advice.recommended_memory_mb {
        Some(mb) => format!("{mb} MB"),
        None => "no recommendation yet".into(),
    };
    let mut text = format!(
        "{} v{}: {} MB -> {recommended}  ({}, confidence {})\n  {}\n  \
         {} calls in {} days: peak MB p50 {} p95 {} p99 {} max {}; OOM kills {}; timeouts {}; \
         CPU/duration p50 {}; I/O p50 {} bytes",
        body.function,
        body.version,
        advice.current_memory_mb,
        advice.class.as_str(),
        advice.confidence.as_str(),
        advice.reason,
        stats.n,
        stats.window_days,
        peak.p50,
        peak.p95,
        peak.p99,
        peak.max,
        stats.oom_kills,
        stats.timeouts,
        stats.cpu_ratio_p50,
        stats.io_bytes_p50,
    );
    if let Some(saving) = advice.saving_gb_s_per_1000 {
        text.push_str(&format!("\n  saves {saving} GB-s per 1000 calls"));
    }
    text
}

fn read_event(path: Option<&PathBuf>) -> anyhow::Result<Value> {
    let Some(path) = path else {
        return Ok(Value::Object(Default::default()));
    };
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the event from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the event from {}", path.display()))?
    };
    serde_json::from_str(&text).context("the event is not JSON")
}

async fn explore(client: &Client, output: &Output, args: TuneArgs) -> anyhow::Result<()> {
    let event = read_event(args.event.as_ref())?;
    let function_path = format!("/v1/functions/{}", args.name);
    let function: FunctionObject = client
        .send(client.request(Method::GET, &function_path))
        .await?;
    let bar = if output.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.sizes.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} sizes {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut rows: Vec<ExploreRow> = Vec::with_capacity(args.sizes.len());
    for size in &args.sizes {
        bar.set_message(format!("running at {size} MB x {}", args.runs + 1));
        let body = TuningExplore {
            event: Some(event.clone()),
            sizes: Some(vec![*size]),
            runs: Some(args.runs),
            strategy: Some(args.strategy),
            apply: false,
        };
        let answer: anyhow::Result<ExploreAnswer> = client
            .send(
                client
                    .request(Method::POST, &format!("{function_path}/tuning/explore"))
                    .json(&body),
            )
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        rows.extend(answer.rows);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let pick = tuning::pick(&rows, args.strategy);
    let mut result = ExploreAnswer {
        function: function.name.clone(),
        version: function.version,
        strategy: args.strategy,
        rows,
        pick,
        applied: None,
    };
    if let Some(pick) = pick.filter(|p| args.apply && *p != function.memory_mb) {
        let body = TuningApply {
            memory_mb: function.memory_mb,
            to_memory_mb: Some(pick),
        };
        let applied: FunctionObject = client
            .send(
                client
                    .request(Method::POST, &format!("{function_path}/tuning/apply"))
                    .json(&body),
            )
            .await?;
        result.applied = Some(applied);
    }
    output.print(&result, table);
    Ok(())
}

fn table(result: &ExploreAnswer) -> String {
    let (rows, strategy, pick) = (&result.rows, result.strategy, result.pick);
    let mut text = format!(
        "{:>9} {:>5} {:>5} {:>8} {:>10} {:>8} {:>12}\n",
        "memory_mb", "cpus", "runs", "status", "p50_ms", "peak_mb", "gb_s_per_call"
    );
    for row in rows.iter() {
        let status = serde_json::to_value(row.status).unwrap_or_default();
        text.push_str(&format!(
            "{:>9} {:>5.2} {:>5} {:>8} {:>10.1} {:>8} {:>12.6}{}\n",
            row.memory_mb,
            row.cpus,
            row.runs,
            status.as_str().unwrap_or_default(),
            row.p50_duration_ms,
            row.peak_mb,
            row.gb_s_per_call,
            if Some(row.memory_mb) == pick {
                "  <- pick"
            } else {
                ""
            },
        ));
    }
    let strategy = serde_json::to_value(strategy).unwrap_or_default();
    let strategy = strategy.as_str().unwrap_or_default();
    match pick {
        Some(mb) => text.push_str(&format!("pick ({strategy}): {mb} MB")),
        None => text.push_str(&format!("pick ({strategy}): none, no size succeeded")),
    }
    if let Some(applied) = &result.applied {
        text.push_str(&format!(
            "\napplied: version {} at {} MB",
            applied.version, applied.memory_mb
        ));
    }
    text
}
