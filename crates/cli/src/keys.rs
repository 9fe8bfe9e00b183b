//! `hearth keys create|ls|rm`: API keys with a role, a namespace and limits (admin key
//! needed), over `/v1/keys`.

use crate::client::Client;
use crate::commands::Output;
use crate::table::{self, Column};
use clap::{Args, Subcommand};
use hearth_api::keys::{CreateKey, KeyLimits, KeyList, KeyObject};
use reqwest::Method;
use serde_json::json;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a key; its secret is printed once (use it as the Bearer token).
    Create(CreateArgs),
    /// List keys (never their secrets).
    Ls,
    /// Revoke a key: its next request, on any controller, is refused.
    Rm {
        /// The key's id (`k_…`).
        id: String,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// The namespace the key acts in.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// admin (everything), developer (deploy, invoke, read) or invoker (invoke, read).
    #[arg(long, default_value = "developer")]
    role: String,
    /// A label for people.
    #[arg(long, default_value = "")]
    name: String,
    /// Requests per second (token bucket).
    #[arg(long)]
    rate: Option<f64>,
    /// Requests at once the bucket allows (default: the rate rounded up).
    #[arg(long)]
    burst: Option<u32>,
    /// Invocations of this key running at once.
    #[arg(long)]
    max_concurrency: Option<u32>,
}

pub async fn run(
    client: &Client,
    output: &Output,
    command: KeysCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(args) => create(client, output, args).await,
        KeysCommand::Ls => list(client, output).await,
        KeysCommand::Rm { id } => {
            client
                .send_empty(client.request(Method::DELETE, &format!("/v1/keys/{id}")))
                .await?;
            output.print(&json!({"revoked": id}), |_| format!("revoked {id}"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn create(client: &Client, output: &Output, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let body = CreateKey {
        name: args.name,
        namespace: Some(args.namespace),
        role: args.role,
        limits: Some(KeyLimits {
            rate_per_s: args.rate,
            burst: args.burst,
            max_concurrency: args.max_concurrency,
        }),
    };
    let answer: KeyObject = client
        .send(client.request(Method::POST, "/v1/keys").json(&body))
        .await?;
    output.print(&answer, |k| {
        format!(
            "key {} ({} in {})\nsecret: {}\n(shown once: keep it now; use it as HEARTH_API_KEY or --api-key)",
            k.id,
            k.role,
            k.namespace,
            k.secret.as_deref().unwrap_or("?"),
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `hearth keys ls`: a key per line (never its secret: the server keeps only a hash).
const KEY_TABLE: [Column<KeyObject>; 6] = [
    Column::left("ID", 20, |k| k.id.clone()),
    Column::left("NAMESPACE", 20, |k| k.namespace.clone()),
    Column::left("ROLE", 10, |k| k.role.to_string()),
    Column::left("NAME", 20, |k| k.name.clone()),
    Column::left("LIMITS", 24, |k| limits_text(&k.limits)),
    Column::left("CREATED", 0, |k| k.created_at.clone()),
];

fn limits_text(limits: &KeyLimits) -> String {
    let mut parts = Vec::new();
    if let Some(rate) = limits.rate_per_s {
        let burst = limits
            .burst
            .map(|b| format!(" burst {b}"))
            .unwrap_or_default();
        parts.push(format!("{rate}/s{burst}"));
    }
    if let Some(max) = limits.max_concurrency {
        parts.push(format!("{max} at once"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

async fn list(client: &Client, output: &Output) -> anyhow::Result<ExitCode> {
    let answer: KeyList = client.send(client.request(Method::GET, "/v1/keys")).await?;
    let hint = "no keys yet: hearth keys create --namespace NS --role developer";
    output.print(&answer, |a| table::render(&KEY_TABLE, &a.keys, hint));
    Ok(ExitCode::SUCCESS)
}
