//! The client commands: deploy, invoke, ls, rm, status.

use crate::client::Client;
use crate::table::{self, Column};
use anyhow::{bail, Context};
use clap::Args;
use hearth_api::status::StatusBody;
use hearth_api::{FunctionConfig, FunctionList, FunctionObject, InvocationList, InvocationObject};
use hearth_core::InvocationStatus;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// How results are printed.
pub struct Output {
    /// JSON for scripts instead of text for people.
    pub json: bool,
}

impl Output {
    /// Prints `value`: as JSON for scripts, else what `human` makes of it (nothing when
    /// that is empty).
    pub(crate) fn print<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            let text = human(value);
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }
}

/// `hearth deploy`.
#[derive(Args)]
pub struct DeployArgs {
    /// Directory (zipped on the fly) or zip file with the function's code.
    pub path: PathBuf,
    /// Function name.
    #[arg(long)]
    pub name: String,
    /// python, nodejs, cpp or go (required on create).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Memory limit, MB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Timeout, ms.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Most concurrent instances.
    #[arg(long)]
    pub max_instances: Option<u32>,
    /// CPUs of each instance (default: they follow memory, one per 1769 MB, at least 0.25).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Environment variable for the handler, K=V (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Free-text description.
    #[arg(long)]
    pub description: Option<String>,
}

/// `hearth invoke`.
#[derive(Args)]
pub struct InvokeArgs {
    /// Function name.
    pub name: String,
    /// The event as JSON; `-` reads it from stdin; default `{}`.
    pub event: Option<String>,
}

fn parse_env(pairs: &[String]) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut env = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--env {pair:?} is not K=V");
        };
        env.insert(k.to_string(), v.to_string());
    }
    Ok(Some(env))
}

/// Whether a deploy builds: the runtime asked for is compiled, or (none asked: an
/// update) the package holds a C++ or Go entrypoint.
fn will_compile(runtime: Option<&str>, zip: &[u8]) -> bool {
    if let Some(runtime) = runtime {
        return runtime
            .parse::<hearth_core::Runtime>()
            .is_ok_and(|r| r.is_compiled());
    }
    let Ok(archive) = zip::ZipArchive::new(std::io::Cursor::new(zip)) else {
        return false;
    };
    let compiled_entry = archive.file_names().any(|name| {
        let file = name.rsplit('/').next().unwrap_or(name);
        // At the root, or in the one folder the user zipped (the package's rule).
        name.matches('/').count() <= 1
            && hearth_core::Runtime::of_entrypoint(file).is_some_and(|r| r.is_compiled())
    });
    compiled_entry
}

/// The dependency manifest at the top of the zip, if any (`requirements.txt`,
/// `package.json`, `go.mod`): the deploy will fetch and install what it names.
fn dependency_manifest(zip: &[u8]) -> Option<&'static str> {
    let archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).ok()?;
    let names: Vec<&str> = archive.file_names().collect();
    ["requirements.txt", "package.json", "go.mod"]
        .into_iter()
        .find(|m| names.contains(m))
}

/// Deploys the code at `args.path`; returns the function object.
pub async fn deploy_function(client: &Client, args: &DeployArgs) -> anyhow::Result<FunctionObject> {
    let zip = crate::package::zip_path(&args.path)?;
    // Fields left out (null) keep their values on an update.
    let config = FunctionConfig {
        runtime: args.runtime.clone(),
        memory_mb: args.memory,
        timeout_ms: args.timeout,
        max_instances: args.max_instances,
        cpus: args.cpus.map(hearth_core::function::Cpus::from_f64),
        env: parse_env(&args.env)?,
        description: args.description.clone(),
        ..FunctionConfig::default()
    };
    let size = zip.len();
    let compiles = will_compile(args.runtime.as_deref(), &zip);
    let manifest = dependency_manifest(&zip);
    let form = reqwest::multipart::Form::new()
        .part(
            "code",
            reqwest::multipart::Part::bytes(zip)
                .file_name("code.zip")
                .mime_str("application/zip")?,
        )
        .text("config", serde_json::to_string(&config)?);
    let progress = indicatif::ProgressBar::new_spinner();
    if compiles || manifest.is_some() {
        // The install and the build run inside the PUT: the spinner counts their seconds.
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            progress.set_style(style);
        }
        let steps = match (manifest, compiles) {
            (Some(m), true) => format!("installing what {m} names, then building it, in sandboxes"),
            (Some(m), false) => format!("installing what {m} names (once per set)"),
            (None, _) => "building it in a sandbox".to_string(),
        };
        progress.set_message(format!(
            "uploading {} ({}) and {steps}",
            args.name,
            human_bytes(size as u64)
        ));
    } else {
        progress.set_message(format!(
            "uploading {} ({})",
            args.name,
            human_bytes(size as u64)
        ));
    }
    progress.enable_steady_tick(std::time::Duration::from_millis(100));
    let answer = client
        .send(
            client
                .request(Method::PUT, &format!("/v1/functions/{}", args.name))
                .multipart(form),
        )
        .await;
    progress.finish_and_clear();
    answer
}

pub async fn deploy(
    client: &Client,
    output: &Output,
    args: DeployArgs,
) -> anyhow::Result<ExitCode> {
    let function = deploy_function(client, &args).await?;
    output.print(&function, deployed_text);
    Ok(ExitCode::SUCCESS)
}

/// `deployed hello version 2 (python, …)`, with the build and the dependencies.
fn deployed_text(f: &FunctionObject) -> String {
    let build = match &f.build {
        Some(build) if build.cached => ", already built".to_string(),
        Some(build) => format!(", built in {:.1} s", build.duration_ms / 1000.0),
        None => String::new(),
    };
    let deps = match &f.dependencies {
        Some(deps) => {
            let listed: Vec<String> = deps
                .packages
                .iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect();
            let how = if deps.cached {
                "already installed".to_string()
            } else {
                format!("installed in {:.1} s", deps.duration_ms / 1000.0)
            };
            let mut line = format!(
                "\ndependencies: {} ({}, {how})",
                listed.join(", "),
                human_bytes(deps.size_bytes)
            );
            if !deps.scripts_not_run.is_empty() {
                line.push_str(&format!(
                    "\nwarning: install scripts not run (hearth never runs them): {}",
                    deps.scripts_not_run.join(", ")
                ));
            }
            line
        }
        None => String::new(),
    };
    format!(
        "deployed {} version {} ({}, {} MB, {} ms timeout, code {}{build}){deps}",
        f.name,
        f.version,
        f.runtime,
        f.memory_mb,
        f.timeout_ms,
        human_bytes(f.code_size),
    )
}

/// Invokes `name` with `event` (JSON text); returns the invocation object.
pub async fn invoke_function(
    client: &Client,
    name: &str,
    event: String,
) -> anyhow::Result<InvocationObject> {
    client
        .send(
            client
                .request(Method::POST, &format!("/v1/functions/{name}/invoke"))
                .header("content-type", "application/json")
                .body(event),
        )
        .await
}

/// One line describing how an invocation went.
pub fn describe_invocation(inv: &InvocationObject) -> String {
    let inv = &inv.invocation;
    format!(
        "{} in {:.2} ms ({}, handler {:.2} ms, peak {})",
        inv.status.as_str(),
        inv.duration_ms,
        if inv.cold_start { "cold" } else { "warm" },
        inv.handler_duration_ms,
        human_bytes(inv.memory.peak_bytes),
    )
}

pub async fn invoke(
    client: &Client,
    output: &Output,
    args: InvokeArgs,
) -> anyhow::Result<ExitCode> {
    let event = match args.event.as_deref() {
        None => "{}".to_string(),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the event from stdin")?;
            s
        }
        Some(text) => text.to_string(),
    };
    let inv = invoke_function(client, &args.name, event).await?;
    output.print(&inv, invocation_text);
    Ok(if inv.invocation.status == InvocationStatus::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The handler's output streams, its result or error, and a summary line.
fn invocation_text(object: &InvocationObject) -> String {
    let inv = &object.invocation;
    let mut text = String::new();
    for (stream, s) in [
        ("stdout", &inv.output.stdout),
        ("stderr", &inv.output.stderr),
    ] {
        if !s.is_empty() {
            text.push_str(&format!("--- {stream}\n{s}"));
            if !s.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    match &inv.error {
        Some(e) => text.push_str(&format!("{}: {}\n{}", e.kind, e.message, e.trace)),
        None => {
            let result = inv.result.clone().unwrap_or_default();
            text.push_str(&serde_json::to_string_pretty(&result).unwrap_or_default());
            text.push('\n');
        }
    }
    text.push_str(&format!(
        "# {} · id {}",
        describe_invocation(object),
        inv.id
    ));
    text
}

/// `hearth ls`: a function per line.
const FUNCTION_TABLE: [Column<FunctionObject>; 6] = [
    Column::left("NAME", 32, |f| f.name.clone()),
    Column::right("VERSION", 7, |f| f.version.to_string()),
    Column::left("RUNTIME", 8, |f| f.runtime.to_string()),
    Column::right("MEMORY", 7, |f| format!("{}MB", f.memory_mb)),
    Column::right("TIMEOUT", 9, |f| format!("{}ms", f.timeout_ms)),
    Column::left("UPDATED", 0, |f| f.updated_at.clone()),
];

pub async fn list(client: &Client, output: &Output) -> anyhow::Result<ExitCode> {
    let answer: FunctionList = client
        .send(client.request(Method::GET, "/v1/functions"))
        .await?;
    let hint = "no functions yet: hearth deploy DIR --name NAME --runtime python";
    output.print(&answer, |a| {
        table::render(&FUNCTION_TABLE, &a.functions, hint)
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn remove(client: &Client, output: &Output, name: &str) -> anyhow::Result<ExitCode> {
    client
        .send_empty(client.request(Method::DELETE, &format!("/v1/functions/{name}")))
        .await?;
    output.print(&json!({"deleted": name}), |_| format!("deleted {name}"));
    Ok(ExitCode::SUCCESS)
}

pub async fn status(client: &Client, output: &Output) -> anyhow::Result<ExitCode> {
    let answer: StatusBody = client
        .send(client.request(Method::GET, "/v1/status"))
        .await?;
    output.print(&answer, |s| {
        let mut text = format!(
            "{} · {} worker(s) · {} active · {} warm\n",
            s.status, s.totals.workers, s.totals.active_invocations, s.totals.warm_instances
        );
        for w in &s.workers {
            text.push_str(&format!(
                "worker {} ({}): {} active\n",
                w.id, w.backend, w.active_invocations
            ));
            for p in &w.pools {
                text.push_str(&format!(
                    "  {}@{} ({}): {} idle, {} busy, {} queued, max {}\n",
                    p.function, p.version, p.runtime, p.idle, p.busy, p.queued, p.max_instances
                ));
            }
        }
        text.trim_end().to_string()
    });
    Ok(ExitCode::SUCCESS)
}

/// `hearth logs`.
#[derive(Args)]
pub struct LogsArgs {
    /// Function name.
    pub name: String,
    /// How many recent invocations to show.
    #[arg(long, default_value_t = 10)]
    pub last: u32,
    /// Keep printing the logs of new invocations as they finish.
    #[arg(long, short)]
    pub follow: bool,
}

async fn print_logs(
    client: &Client,
    output: &Output,
    inv: &hearth_core::Invocation,
) -> anyhow::Result<()> {
    let id = &inv.id;
    let response = client
        .request(Method::GET, &format!("/v1/invocations/{id}/logs"))
        .send()
        .await
        .context("fetching logs")?;
    let text = response.text().await.unwrap_or_default();
    if output.json {
        println!(
            "{}",
            json!({"id": id, "status": inv.status, "started_at": inv.started_at, "logs": text})
        );
    } else {
        println!(
            "=== {} {} {} ({:.2} ms)",
            inv.started_at,
            id,
            inv.status.as_str(),
            inv.duration_ms
        );
        print!("{text}");
        if !text.is_empty() && !text.ends_with('\n') {
            println!();
        }
    }
    Ok(())
}

pub async fn logs(client: &Client, output: &Output, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    let list = |limit: u32| async move {
        let answer: InvocationList = client
            .send(client.request(
                Method::GET,
                &format!("/v1/functions/{name}/invocations?limit={limit}"),
            ))
            .await?;
        // Oldest first, as a log reads.
        let mut invocations: Vec<_> = answer
            .invocations
            .into_iter()
            .map(|object| object.invocation)
            .collect();
        invocations.reverse();
        anyhow::Ok(invocations)
    };
    let mut shown = std::collections::HashSet::new();
    for inv in list(args.last).await? {
        shown.insert(inv.id.clone());
        print_logs(client, output, &inv).await?;
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        for inv in list(50).await? {
            if inv.status.is_final() && shown.insert(inv.id.clone()) {
                print_logs(client, output, &inv).await?;
            }
        }
    }
}

/// `1536` → `1.5 KB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(names: &[&str]) -> Vec<u8> {
        use std::io::Write;
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for name in names {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(b"x").unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn deploys_that_build_are_told_from_the_runtime_or_the_package() {
        let cpp = zip_of(&["main.cpp", "util.h"]);
        let py = zip_of(&["main.py"]);
        assert!(will_compile(Some("cpp"), &py));
        assert!(will_compile(Some("golang"), &py));
        assert!(!will_compile(Some("python"), &cpp));
        assert!(will_compile(None, &cpp));
        assert!(will_compile(None, &zip_of(&["fn/main.go"])));
        assert!(!will_compile(None, &py));
        assert!(!will_compile(None, &zip_of(&["a/b/main.go"])));
        assert!(!will_compile(None, b"not a zip"));
    }
}
