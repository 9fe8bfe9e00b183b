//! The client commands: deploy, invoke, ls, rm, status.

use crate::client::Client;
use anyhow::{bail, Context};
use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};
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
    pub(crate) fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
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
        name.matches('/').count() <= 1 && (file == "main.cpp" || file == "main.go")
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
pub async fn deploy_function(client: &Client, args: &DeployArgs) -> anyhow::Result<Value> {
    let zip = crate::package::zip_path(&args.path)?;
    let mut config = serde_json::Map::new();
    let mut set = |k: &str, v: Value| {
        config.insert(k.to_string(), v);
    };
    if let Some(r) = &args.runtime {
        set("runtime", json!(r));
    }
    if let Some(m) = args.memory {
        set("memory_mb", json!(m));
    }
    if let Some(t) = args.timeout {
        set("timeout_ms", json!(t));
    }
    if let Some(n) = args.max_instances {
        set("max_instances", json!(n));
    }
    if let Some(env) = parse_env(&args.env)? {
        set("env", json!(env));
    }
    if let Some(d) = &args.description {
        set("description", json!(d));
    }
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
        .text("config", Value::Object(config).to_string());
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
    output.print(&function, |f| {
        let build = match (
            f["build"]["cached"].as_bool(),
            f["build"]["duration_ms"].as_f64(),
        ) {
            (Some(true), _) => ", already built".to_string(),
            (Some(false), Some(ms)) => format!(", built in {:.1} s", ms / 1000.0),
            _ => String::new(),
        };
        let deps = &f["dependencies"];
        let deps = match deps["packages"].as_array() {
            Some(packages) => {
                let listed: Vec<String> = packages
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {}",
                            p["name"].as_str().unwrap_or_default(),
                            p["version"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                let how = if deps["cached"].as_bool() == Some(true) {
                    "already installed".to_string()
                } else {
                    format!(
                        "installed in {:.1} s",
                        deps["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0
                    )
                };
                let mut line = format!(
                    "\ndependencies: {} ({}, {how})",
                    listed.join(", "),
                    human_bytes(deps["size_bytes"].as_u64().unwrap_or(0))
                );
                if let Some(skipped) = deps["scripts_not_run"].as_array() {
                    let names: Vec<&str> = skipped.iter().filter_map(|s| s.as_str()).collect();
                    if !names.is_empty() {
                        line.push_str(&format!(
                            "\nwarning: install scripts not run (hearth never runs them): {}",
                            names.join(", ")
                        ));
                    }
                }
                line
            }
            None => String::new(),
        };
        format!(
            "deployed {} version {} ({}, {} MB, {} ms timeout, code {}{build}){deps}",
            f["name"].as_str().unwrap_or_default(),
            f["version"],
            f["runtime"].as_str().unwrap_or_default(),
            f["memory_mb"],
            f["timeout_ms"],
            human_bytes(f["code_size"].as_u64().unwrap_or(0)),
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Invokes `name` with `event` (JSON text); returns the invocation object.
pub async fn invoke_function(client: &Client, name: &str, event: String) -> anyhow::Result<Value> {
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
pub fn describe_invocation(inv: &Value) -> String {
    format!(
        "{} in {:.2} ms ({}, handler {:.2} ms, peak {})",
        inv["status"].as_str().unwrap_or("?"),
        inv["duration_ms"].as_f64().unwrap_or(0.0),
        if inv["cold_start"].as_bool() == Some(true) {
            "cold"
        } else {
            "warm"
        },
        inv["handler_duration_ms"].as_f64().unwrap_or(0.0),
        human_bytes(inv["memory"]["peak_bytes"].as_u64().unwrap_or(0)),
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
    output.print(&inv, |inv| {
        let mut text = String::new();
        for stream in ["stdout", "stderr"] {
            if let Some(s) = inv[stream].as_str().filter(|s| !s.is_empty()) {
                text.push_str(&format!("--- {stream}\n{}", s));
                if !s.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
        if !inv["error"].is_null() {
            let e = &inv["error"];
            text.push_str(&format!(
                "{}: {}\n{}",
                e["type"].as_str().unwrap_or("Error"),
                e["message"].as_str().unwrap_or(""),
                e["trace"].as_str().unwrap_or("")
            ));
        } else {
            text.push_str(&serde_json::to_string_pretty(&inv["result"]).unwrap_or_default());
            text.push('\n');
        }
        text.push_str(&format!(
            "# {} · id {}",
            describe_invocation(inv),
            inv["id"].as_str().unwrap_or("?")
        ));
        text
    });
    Ok(if inv["status"] == "success" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub async fn list(client: &Client, output: &Output) -> anyhow::Result<ExitCode> {
    let answer = client
        .send(client.request(Method::GET, "/v1/functions"))
        .await?;
    output.print(&answer, |a| {
        let functions = a["functions"].as_array().cloned().unwrap_or_default();
        if functions.is_empty() {
            return "no functions yet: hearth deploy DIR --name NAME --runtime python".into();
        }
        let mut text = format!(
            "{:<32} {:>7} {:<8} {:>7} {:>9}  UPDATED\n",
            "NAME", "VERSION", "RUNTIME", "MEMORY", "TIMEOUT"
        );
        for f in functions {
            text.push_str(&format!(
                "{:<32} {:>7} {:<8} {:>5}MB {:>7}ms  {}\n",
                // JSON values ignore width and alignment: format them as strings.
                f["name"].as_str().unwrap_or_default(),
                f["version"].to_string(),
                f["runtime"].as_str().unwrap_or_default(),
                f["memory_mb"].to_string(),
                f["timeout_ms"].to_string(),
                f["updated_at"].as_str().unwrap_or_default(),
            ));
        }
        text.trim_end().to_string()
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn remove(client: &Client, output: &Output, name: &str) -> anyhow::Result<ExitCode> {
    client
        .send(client.request(Method::DELETE, &format!("/v1/functions/{name}")))
        .await?;
    output.print(&json!({"deleted": name}), |_| format!("deleted {name}"));
    Ok(ExitCode::SUCCESS)
}

pub async fn status(client: &Client, output: &Output) -> anyhow::Result<ExitCode> {
    let answer = client
        .send(client.request(Method::GET, "/v1/status"))
        .await?;
    output.print(&answer, |s| {
        let mut text = format!(
            "{} · {} worker(s) · {} active · {} warm\n",
            s["status"].as_str().unwrap_or("?"),
            s["totals"]["workers"],
            s["totals"]["active_invocations"],
            s["totals"]["warm_instances"]
        );
        for w in s["workers"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "worker {} ({}): {} active\n",
                w["id"].as_str().unwrap_or("?"),
                w["backend"].as_str().unwrap_or("?"),
                w["active_invocations"]
            ));
            for p in w["pools"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "  {}@{} ({}): {} idle, {} busy, {} queued, max {}\n",
                    p["function"].as_str().unwrap_or("?"),
                    p["version"],
                    p["runtime"].as_str().unwrap_or("?"),
                    p["idle"],
                    p["busy"],
                    p["queued"],
                    p["max_instances"]
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

async fn print_logs(client: &Client, output: &Output, inv: &Value) -> anyhow::Result<()> {
    let id = inv["id"].as_str().unwrap_or_default();
    let response = client
        .request(Method::GET, &format!("/v1/invocations/{id}/logs"))
        .send()
        .await
        .context("fetching logs")?;
    let text = response.text().await.unwrap_or_default();
    if output.json {
        println!(
            "{}",
            json!({"id": id, "status": inv["status"], "started_at": inv["started_at"], "logs": text})
        );
    } else {
        println!(
            "=== {} {} {} ({:.2} ms)",
            inv["started_at"].as_str().unwrap_or_default(),
            id,
            inv["status"].as_str().unwrap_or_default(),
            inv["duration_ms"].as_f64().unwrap_or(0.0)
        );
        print!("{text}");
        if !text.is_empty() && !text.ends_with('\n') {
            println!();
        }
    }
    Ok(())
}

pub async fn logs(client: &Client, output: &Output, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let list = |limit: u32| {
        client.send(client.request(
            Method::GET,
            &format!("/v1/functions/{}/invocations?limit={limit}", args.name),
        ))
    };
    let recent = list(args.last).await?;
    let mut shown = std::collections::HashSet::new();
    let mut invocations = recent["invocations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    invocations.reverse();
    for inv in &invocations {
        shown.insert(inv["id"].as_str().unwrap_or_default().to_string());
        print_logs(client, output, inv).await?;
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let mut fresh = list(50).await?["invocations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        fresh.reverse();
        for inv in fresh {
            let id = inv["id"].as_str().unwrap_or_default().to_string();
            let finished = !matches!(inv["status"].as_str(), Some("queued" | "running"));
            if finished && shown.insert(id) {
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
