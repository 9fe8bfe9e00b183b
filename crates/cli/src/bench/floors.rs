//! The physical floor under a warm python call, measured in the same run as the call:
//! an HTTP keep-alive round trip to `/healthz` (no auth, no function) plus a warm CPython
//! forking, running the same trivial handler and being reaped, outside any sandbox.
//! What hearth adds on top of both is its overhead.

use super::{Latency, PYTHON_HANDLER};
use crate::client::Client;
use anyhow::{bail, Context};
use reqwest::Method;
use serde::Serialize;
use std::process::Command;
use std::time::Instant;

/// The floors, ms (p50 of many samples); `None` with a note when one could not run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Floors {
    /// HTTP keep-alive round trip to `/healthz`, same client as the invocations.
    pub http_rtt_ms: Option<f64>,
    /// A warm CPython's fork + handler + exit + `waitpid`, no sandbox.
    pub python_fork_ms: Option<f64>,
    /// Why a floor is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Floors {
    /// The floor of a warm python call: both parts, when both were measured.
    pub fn python_call_ms(&self) -> Option<f64> {
        Some(self.http_rtt_ms? + self.python_fork_ms?)
    }
}

/// Measures both floors with `samples` samples each (after a short warm-up).
pub async fn measure(client: &Client, samples: usize) -> Floors {
    let mut notes = Vec::new();
    let http_rtt_ms = match http_rtt(client, samples).await {
        Ok(ms) => Some(ms),
        Err(e) => {
            notes.push(format!("http round trip: {e:#}"));
            None
        }
    };
    let python_fork_ms = match tokio::task::spawn_blocking(move || python_fork(samples)).await {
        Ok(Ok(ms)) => Some(ms),
        Ok(Err(e)) => {
            notes.push(format!("python fork: {e:#}"));
            None
        }
        Err(e) => {
            notes.push(format!("python fork: {e}"));
            None
        }
    };
    Floors {
        http_rtt_ms,
        python_fork_ms,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

async fn http_rtt(client: &Client, samples: usize) -> anyhow::Result<f64> {
    let once = || async {
        let started = Instant::now();
        let response = client.request(Method::GET, "/healthz").send().await?;
        let status = response.status();
        response.bytes().await?;
        if !status.is_success() {
            bail!("GET /healthz: HTTP {}", status.as_u16());
        }
        Ok::<f64, anyhow::Error>(started.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..5 {
        once().await?;
    }
    let mut ms = Vec::with_capacity(samples);
    for _ in 0..samples {
        ms.push(once().await?);
    }
    Ok(Latency::of(ms).p50)
}

/// Forks `ROUNDS` times, each child running the handler once; prints the median of
/// all but the first five rounds, ms.
const FORK_LOOP: &str = r#"
import json, os, time
samples = []
for i in range(ROUNDS):
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        json.dumps(handler({}, None))
        os._exit(0)
    os.waitpid(pid, 0)
    if i >= 5:
        samples.append((time.perf_counter() - started) * 1e3)
samples.sort()
print(samples[len(samples) // 2])
"#;

/// The python floor, timed inside one interpreter (so its own start is not in it).
fn python_fork(samples: usize) -> anyhow::Result<f64> {
    let rounds = (samples.max(1) + 5).to_string();
    let script = format!("{PYTHON_HANDLER}{}", FORK_LOOP.replace("ROUNDS", &rounds));
    let output = Command::new("/usr/bin/python3")
        .args(["-I", "-c", &script])
        .output()
        .context("running /usr/bin/python3")?;
    if !output.status.success() {
        bail!(
            "/usr/bin/python3 exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse::<f64>()
        .with_context(|| format!("unreadable python floor {text:?}"))
}
