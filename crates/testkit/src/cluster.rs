//! A harness for cluster tests: real `hearth controller` and `hearth worker` processes
//! on free ports, on a Redis key prefix, database and object store of their own, and
//! private Redis / PostgreSQL servers for tests that stop and restart them.

use crate::{agent_path, expect_ok, sandbox, zip_files};
use anyhow::{anyhow, Context};
use reqwest::blocking::{multipart, Client, RequestBuilder, Response};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The admin key every controller of a test cluster shares.
pub const CLUSTER_KEY: &str = "hk_cluster_test_key";

/// Where a test cluster keeps its state.
#[derive(Debug, Clone)]
pub struct Backing {
    /// `redis://…`.
    pub redis: String,
    /// Key prefix, unique per cluster.
    pub prefix: String,
    /// `postgres://…` or a SQLite file.
    pub database: String,
    /// `s3://…` or a directory.
    pub objects: String,
    /// Extra environment of every process (the AWS_* settings of S3).
    pub env: Vec<(String, String)>,
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{what}{}x{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// A variable `scripts/services.sh --env` exports; missing means the services are not
/// set up, which fails the test loudly.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `eval \"$(scripts/services.sh --env)\"` first (it starts Redis, PostgreSQL and moto)")
    })
}

impl Backing {
    /// The shared Redis of `scripts/services.sh` with a fresh prefix, and a SQLite file
    /// and local object dir under `dir` (a cluster on one machine).
    pub fn local(dir: &Path) -> Backing {
        Backing {
            redis: service_env("HEARTH_TEST_REDIS_URL"),
            prefix: unique("t"),
            database: dir.join("metadata.db").display().to_string(),
            objects: dir.join("objects").display().to_string(),
            env: Vec::new(),
        }
    }

    /// The same on another Redis server.
    pub fn with_redis(mut self, url: &str) -> Backing {
        self.redis = url.to_string();
        self
    }

    /// The same on another database.
    pub fn with_database(mut self, url: &str) -> Backing {
        self.database = url.to_string();
        self
    }
}

/// One process of the cluster.
struct Proc {
    child: Option<Child>,
    /// The controller's URL, or the worker's id.
    name: String,
    args: Vec<String>,
}

impl Proc {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Controllers and workers as separate processes.
pub struct Cluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// Where its state lives.
    pub backing: Backing,
    controllers: Vec<Proc>,
    workers: Vec<Proc>,
    http: Client,
}

impl Cluster {
    /// Starts `controllers` controllers and `workers` workers on `backing`.
    pub fn start(binary: &str, backing: Backing, controllers: usize, workers: usize) -> Cluster {
        Self::start_in(binary, tempdir(), backing, controllers, workers)
    }

    /// The same with the local backing under a fresh temp dir.
    pub fn start_local(binary: &str, controllers: usize, workers: usize) -> Cluster {
        let dir = tempdir();
        let backing = Backing::local(dir.path());
        Self::start_in(binary, dir, backing, controllers, workers)
    }

    fn start_in(
        binary: &str,
        dir: tempfile::TempDir,
        backing: Backing,
        controllers: usize,
        workers: usize,
    ) -> Cluster {
        assert!(
            agent_path().is_file(),
            "the static agent is missing at {}: run scripts/build.sh (or set HEARTH_AGENT)",
            agent_path().display()
        );
        let mut cluster = Cluster {
            binary: PathBuf::from(binary),
            dir,
            backing,
            controllers: Vec::new(),
            workers: Vec::new(),
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_else(|e| panic!("http client: {e}")),
        };
        for _ in 0..workers {
            cluster.add_worker();
        }
        for _ in 0..controllers {
            cluster.add_controller();
        }
        cluster.wait_for_workers(workers);
        cluster
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env("HEARTH_AGENT", agent_path())
            .env("HEARTH_API_KEY", CLUSTER_KEY)
            .env("HEARTH_REDIS_URL", &self.backing.redis)
            .env("HEARTH_REDIS_PREFIX", &self.backing.prefix)
            .env("HEARTH_DATABASE_URL", &self.backing.database)
            .env("HEARTH_OBJECTS_URL", &self.backing.objects)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in &self.backing.env {
            command.env(name, value);
        }
        command
    }

    /// Spawns `args` and waits for the stdout line starting with `marker`; returns the
    /// child and the rest of that line.
    fn spawn(&self, args: &[String], marker: &str) -> anyhow::Result<(Child, String)> {
        let mut child = self.command(args).spawn().context("spawning hearth")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        let wanted = marker.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(&wanted) {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(rest) => Ok((child, rest)),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(anyhow!(
                    "hearth {args:?} did not print {marker:?} within 60 s"
                ))
            }
        }
    }

    fn boot_controller(&self, args: &[String]) -> Proc {
        let (child, rest) = self
            .spawn(args, "hearth controller ")
            .unwrap_or_else(|e| panic!("starting a controller: {e:#}"));
        let url = rest
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        Proc {
            child: Some(child),
            name: url,
            args: args.to_vec(),
        }
    }

    /// Starts one more controller; returns its index.
    pub fn add_controller(&mut self) -> usize {
        let args: Vec<String> = ["controller", "--port", "0"].map(String::from).to_vec();
        let proc = self.boot_controller(&args);
        self.controllers.push(proc);
        self.controllers.len() - 1
    }

    /// Starts one more worker with a data dir of its own; returns its index.
    pub fn add_worker(&mut self) -> usize {
        let data_dir = self
            .dir
            .path()
            .join(format!("worker-{}", self.workers.len()));
        let args: Vec<String> = vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "worker".into(),
            "--sandbox".into(),
            sandbox(),
            // Small enough that a burst of async calls spreads over the workers.
            "--capacity".into(),
            "12".into(),
        ];
        let (child, id) = self
            .spawn(&args, "hearth worker ")
            .unwrap_or_else(|e| panic!("starting a worker: {e:#}"));
        let id = id.trim_end_matches(" ready").to_string();
        self.workers.push(Proc {
            child: Some(child),
            name: id,
            args,
        });
        self.workers.len() - 1
    }

    /// The URL of controller `i`.
    pub fn url(&self, i: usize) -> &str {
        &self.controllers[i].name
    }

    /// The id of worker `i`.
    pub fn worker_id(&self, i: usize) -> &str {
        &self.workers[i].name
    }

    /// The index of the worker with `id`.
    pub fn worker_index(&self, id: &str) -> usize {
        self.workers
            .iter()
            .position(|w| w.name == id)
            .unwrap_or_else(|| panic!("no worker {id}"))
    }

    /// The pid of worker `i`.
    pub fn worker_pid(&self, i: usize) -> u32 {
        self.workers[i].child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILLs worker `i`.
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].kill();
    }

    /// SIGKILLs controller `i`.
    pub fn kill_controller(&mut self, i: usize) {
        self.controllers[i].kill();
    }

    /// Starts controller `i` again (a new port).
    pub fn restart_controller(&mut self, i: usize) {
        self.controllers[i].kill();
        let args = self.controllers[i].args.clone();
        self.controllers[i] = self.boot_controller(&args);
    }

    /// Polls controller 0's status until `n` workers are live.
    pub fn wait_for_workers(&self, n: usize) {
        if self.controllers.is_empty() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.get(0, "/v1/status");
            if status["workers"].as_array().map(Vec::len) == Some(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} workers never showed: {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An authorised request to controller `i`.
    pub fn request(&self, i: usize, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url(i)))
            .bearer_auth(CLUSTER_KEY)
    }

    /// GET `path` on controller `i`, expecting success.
    pub fn get(&self, i: usize, path: &str) -> Value {
        expect_ok(
            self.request(i, reqwest::Method::GET, path)
                .send()
                .unwrap_or_else(|e| panic!("GET {path}: {e}")),
            &format!("GET {path}"),
        )
    }

    /// Deploys `files` as `name` through controller `i`.
    pub fn deploy_files(
        &self,
        i: usize,
        name: &str,
        files: &[(&str, &str)],
        config: Value,
    ) -> Value {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
        let form = multipart::Form::new()
            .part(
                "code",
                multipart::Part::bytes(zip_files(&files)).file_name("code.zip"),
            )
            .text("config", config.to_string());
        expect_ok(
            self.request(i, reqwest::Method::PUT, &format!("/v1/functions/{name}"))
                .multipart(form)
                .send()
                .unwrap_or_else(|e| panic!("deploy {name}: {e}")),
            &format!("deploy {name}"),
        )
    }

    /// Invokes `name` through controller `i`; returns the raw response.
    pub fn invoke_raw(&self, i: usize, name: &str, event: &Value) -> Response {
        self.request(
            i,
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/invoke"),
        )
        .json(event)
        .send()
        .unwrap_or_else(|e| panic!("invoke {name}: {e}"))
    }

    /// Invokes `name` through controller `i`, expecting an invocation.
    pub fn invoke(&self, i: usize, name: &str, event: &Value) -> Value {
        expect_ok(self.invoke_raw(i, name, event), &format!("invoke {name}"))
    }

    /// Starts an async invocation through controller `i`; returns its id.
    pub fn invoke_async(&self, i: usize, name: &str, event: &Value) -> String {
        let accepted = expect_ok(
            self.request(
                i,
                reqwest::Method::POST,
                &format!("/v1/functions/{name}/invoke?async=true"),
            )
            .json(event)
            .send()
            .unwrap_or_else(|e| panic!("invoke {name}: {e}")),
            &format!("invoke {name} async"),
        );
        accepted["id"].as_str().unwrap_or_default().to_string()
    }

    /// Polls GET `path` on controller `i` until `done` holds, for at most `within`.
    pub fn poll(
        &self,
        i: usize,
        path: &str,
        within: Duration,
        done: impl Fn(u16, &str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (status, text) = match self.request(i, reqwest::Method::GET, path).send() {
                Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
                Err(e) => (0, e.to_string()),
            };
            if done(status, &text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path}: never done; last {status} {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in self.controllers.iter_mut().chain(self.workers.iter_mut()) {
            if let Some(child) = &proc.child {
                // SAFETY: kill(2) on our own child's pid has no memory effects.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
        }
        for proc in self.controllers.iter_mut().chain(self.workers.iter_mut()) {
            if let Some(mut child) = proc.child.take() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hearth-cluster-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir: {e}"))
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A private `redis-server` on a free port, for tests that stop and restart it.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one (no persistence: a restart forgets everything, the hard case).
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempdir(),
        };
        server.boot();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn boot(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server is missing (scripts/services.sh installs it): {e}")
            });
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    /// Stops it (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something listens on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
