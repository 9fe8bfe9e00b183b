//! Test fixtures shared by hearth's suites.
//!
//! Owns: the function fixture directories (`tests/fixtures/functions/<name>` at the
//! workspace root), zipping them, and [`Hearth`], a harness that runs a real
//! `hearth up` on a free port with its own data dir and talks to it over HTTP.
//! Never: fakes a part of the platform; every test goes through the real binary.
//!
//! Verb (one per layer, README "One call, followed down"): `invoke` ([`Hearth::invoke`]), the
//! user's, like the CLI.

pub mod backends;
pub mod cases;
pub mod cluster;
pub mod gate;
pub mod postgres;

use anyhow::{anyhow, bail, Context};
use reqwest::blocking::{multipart, Client, Response};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The directory of a function fixture.
pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/functions").join(name)
}

/// Zips `files` (path → content) in memory.
pub fn zip_files(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content) in files {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .and_then(|_| writer.write_all(content).map_err(Into::into))
            .unwrap_or_else(|e| panic!("zipping {name}: {e}"));
    }
    writer
        .finish()
        .unwrap_or_else(|e| panic!("finishing zip: {e}"))
        .into_inner()
}

/// Zips a fixture directory (files at the root of the zip).
pub fn zip_fixture(name: &str) -> Vec<u8> {
    let dir = fixture(name);
    let mut files = Vec::new();
    collect(&dir, "", &mut files);
    assert!(
        !files.is_empty(),
        "fixture {} is empty or missing",
        dir.display()
    );
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    zip_files(&refs)
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            collect(&path, &format!("{name}/"), out);
        } else {
            out.push((name, std::fs::read(&path).unwrap_or_default()));
        }
    }
}

/// The static agent the platform under test uses.
pub fn agent_path() -> PathBuf {
    if let Some(path) = std::env::var_os("HEARTH_AGENT") {
        return PathBuf::from(path);
    }
    workspace_root().join("target/agent/x86_64-unknown-linux-gnu/release/hearth-agent")
}

/// The sandbox backend the end-to-end suites run against: `$HEARTH_TEST_SANDBOX`
/// (`native` or `docker`), `native` when unset. `scripts/test.sh` runs the suites once
/// per backend.
pub fn sandbox() -> String {
    std::env::var("HEARTH_TEST_SANDBOX")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "native".to_string())
}

/// A runtime and the prefix of its fixtures (`{prefix}-fail`, `{prefix}-hostile`, …),
/// as the shared, parametrised suites run them.
pub type RuntimeCase = (&'static str, &'static str);

/// Every runtime with its fixture prefix.
pub const ALL_RUNTIMES: [RuntimeCase; 4] = [
    ("python", "py"),
    ("nodejs", "node"),
    ("cpp", "cpp"),
    ("go", "go"),
];

/// The runtimes the end-to-end suites cover on [`sandbox`]: all of them, on either
/// backend (the Docker backend builds C++ and Go in its builder images).
pub fn runtimes() -> Vec<RuntimeCase> {
    ALL_RUNTIMES.to_vec()
}

/// [`runtimes`] without those named in `except` (a fixture some runtime lacks).
pub fn runtimes_except(except: &[&str]) -> Vec<RuntimeCase> {
    runtimes()
        .into_iter()
        .filter(|(runtime, _)| !except.contains(runtime))
        .collect()
}

/// A running `hearth up`, stopped when dropped.
pub struct Hearth {
    binary: PathBuf,
    data_dir: tempfile::TempDir,
    child: Option<Child>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The admin API key.
    pub key: String,
    http: Client,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    sample: bool,
}

impl Hearth {
    /// Starts `hearth up` (the binary at `binary`, usually `env!("CARGO_BIN_EXE_hearth")`)
    /// with a fresh data dir.
    pub fn start(binary: &str) -> Hearth {
        Self::start_with(binary, &[])
    }

    /// Same, with extra `hearth up` arguments.
    pub fn start_with(binary: &str, extra_args: &[&str]) -> Hearth {
        Self::start_inner(binary, extra_args, &[], false)
    }

    /// Same, with extra arguments and environment variables of its own (say, an
    /// `AWS_ENDPOINT_URL` that only this hearth uses).
    pub fn start_with_env(binary: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Hearth {
        Self::start_inner(binary, extra_args, env, false)
    }

    /// Starts `hearth up` as a newcomer does (`scripts/up.sh`): on a fresh data dir it
    /// deploys the sample function `hello` and invokes it.
    pub fn start_with_sample(binary: &str) -> Hearth {
        Self::start_inner(binary, &[], &[], true)
    }

    fn start_inner(
        binary: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
        sample: bool,
    ) -> Hearth {
        let agent = agent_path();
        assert!(
            agent.is_file(),
            "the static agent is missing at {}: run scripts/build.sh (or set HEARTH_AGENT)",
            agent.display()
        );
        let data_dir = tempfile::Builder::new()
            .prefix("hearth-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut hearth = Hearth {
            binary: PathBuf::from(binary),
            data_dir,
            child: None,
            url: String::new(),
            key: String::new(),
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_else(|e| panic!("http client: {e}")),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sample,
        };
        hearth
            .boot()
            .unwrap_or_else(|e| panic!("starting hearth: {e:#}"));
        hearth
    }

    /// The process id of `hearth up`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The data dir of this hearth.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    fn boot(&mut self) -> anyhow::Result<()> {
        // The suite's backend, unless the test chose one itself.
        let sandbox = if self.extra_args.iter().any(|a| a == "--sandbox") {
            Vec::new()
        } else {
            vec!["--sandbox".to_string(), sandbox()]
        };
        let no_sample = if self.sample {
            None
        } else {
            Some("--no-sample")
        };
        let mut child = Command::new(&self.binary)
            .args(["up", "--port", "0"])
            .args(no_sample)
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(&sandbox)
            .args(&self.extra_args)
            .env("HEARTH_AGENT", agent_path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("HEARTH_API_KEY")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning hearth up")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = hearth_core::announce::listening_url(&line) {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        self.child = Some(child);
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .context("hearth up did not print its address within 60 s")?;
        self.url = url;
        self.key = std::fs::read_to_string(self.data_dir.path().join("admin.key"))?
            .trim()
            .to_string();
        Ok(())
    }

    /// Stops the process (SIGTERM, then waits) and starts it again on the same data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.boot()
            .unwrap_or_else(|e| panic!("restarting hearth: {e:#}"));
    }

    /// Kills the process with SIGKILL (no cleanup at all) and starts it again on the
    /// same data dir: what a crash and a restart look like.
    pub fn crash_and_restart(&mut self) {
        self.crash_and_restart_with(|| {});
    }

    /// Like [`crash_and_restart`](Self::crash_and_restart), running `between` while
    /// hearth is down.
    pub fn crash_and_restart_with(&mut self, between: impl FnOnce()) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        between();
        self.boot()
            .unwrap_or_else(|e| panic!("restarting hearth: {e:#}"));
    }

    /// Sends SIGTERM and waits for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            for _ in 0..200 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An authorised request builder.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// A request without any key.
    pub fn anonymous(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// PUTs a function; returns the raw response.
    pub fn deploy_zip(&self, name: &str, zip: Vec<u8>, config: Value) -> Response {
        let form = multipart::Form::new()
            .part("code", multipart::Part::bytes(zip).file_name("code.zip"))
            .text("config", config.to_string());
        self.request(reqwest::Method::PUT, &format!("/v1/functions/{name}"))
            .multipart(form)
            .send()
            .unwrap_or_else(|e| panic!("deploy {name}: {e}"))
    }

    /// Deploys a fixture directory and asserts success; returns the function object.
    pub fn deploy_fixture(&self, name: &str, fixture_name: &str, config: Value) -> Value {
        let response = self.deploy_zip(name, zip_fixture(fixture_name), config);
        expect_ok(response, &format!("deploy {name}"))
    }

    /// Deploys inline files and asserts success.
    pub fn deploy_files(&self, name: &str, files: &[(&str, &str)], config: Value) -> Value {
        let bytes: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
        expect_ok(
            self.deploy_zip(name, zip_files(&bytes), config),
            &format!("deploy {name}"),
        )
    }

    /// Invokes synchronously and asserts an HTTP 200; returns the invocation.
    pub fn invoke(&self, name: &str, event: Value) -> Value {
        let response = self.invoke_raw(name, event.to_string().into_bytes());
        expect_ok(response, &format!("invoke {name}"))
    }

    /// Invokes with a raw body; returns the raw response.
    pub fn invoke_raw(&self, name: &str, body: Vec<u8>) -> Response {
        self.request(
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/invoke"),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap_or_else(|e| panic!("invoke {name}: {e}"))
    }

    /// Instances of `name` holding a call on the (only) worker, from `/v1/status`.
    pub fn busy_instances(&self, name: &str) -> u64 {
        self.get("/v1/status")["workers"][0]["pools"]
            .as_array()
            .map(|pools| {
                pools
                    .iter()
                    .filter(|p| p["function"] == name)
                    .filter_map(|p| p["busy"].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Waits until no instance of `name` is busy: the calls answered so far have also
    /// settled (an instance answered early stays busy until then), so the next call
    /// takes a warm instance and `busy_instances` counts only calls made after this.
    pub fn wait_settled(&self, name: &str) {
        eventually(Duration::from_secs(60), "the answered calls settle", || {
            self.busy_instances(name) == 0
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// GETs a path and asserts a 2xx; returns the JSON.
    pub fn get(&self, path: &str) -> Value {
        expect_ok(
            self.request(reqwest::Method::GET, path)
                .send()
                .unwrap_or_else(|e| panic!("GET {path}: {e}")),
            &format!("GET {path}"),
        )
    }
}

impl Drop for Hearth {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `name=value` of the session cookie a dashboard sign-in set.
pub fn session_cookie(signed_in: &Response) -> String {
    signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no session cookie was set"))
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Asserts a 2xx and returns the JSON body (Null when empty).
pub fn expect_ok(response: Response, what: &str) -> Value {
    let status = response.status();
    let text = response.text().unwrap_or_default();
    assert!(status.is_success(), "{what}: HTTP {status}: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
    }
}

/// Asserts an error answer with `status` and `code`; returns its message.
pub fn expect_error(response: Response, status: u16, code: &str) -> String {
    let got = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    assert_eq!(got, status, "unexpected status, body: {text}");
    assert_eq!(body["error"]["code"], json!(code), "body: {text}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!message.is_empty(), "error without a message: {text}");
    message
}

/// Fails unless `cond` holds within `timeout`, polling.
pub fn eventually(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what}: not true within {timeout:?}")
}
