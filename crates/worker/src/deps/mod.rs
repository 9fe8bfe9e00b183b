//! Function dependencies (`requirements.txt`, `package.json`, `go.mod`), resolved at
//! deploy without running any package's code on the host.
//!
//! A deploy whose code names dependencies gets them installed once, before a version
//! exists: fetched on the host by the ecosystem's own client told to execute nothing
//! ([`python`]: `pip download --only-binary=:all:` for the sandbox's Python; [`node`]:
//! `npm ci --ignore-scripts`; [`go`]: `go mod download`, checked against `go.sum`),
//! installed where installing means more than unpacking (Python: `pip install
//! --no-index` in a build sandbox without network), and stored as a tar (the layer) in
//! the object store under the hash of the manifest and lock files plus the runtime
//! ([`key`]): a deploy with unchanged dependencies fetches and installs nothing.
//!
//! At a cold start the version's layer is unpacked once per worker under
//! `<dir>/layers/<key>` ([`layer`]) and handed to the sandbox, which makes it visible
//! read-only at `/deps` (`hearth_core::protocol::DEPS_DIR`); a Go build sees its module
//! cache there. Nothing is copied per cold start.
//!
//! Owns: [`DepsConfig`] (indexes, limits), filling [`Installed`] (what the deploy answer
//! lists: `hearth_api`'s type),
//! [`DepsError`], and the deduplication of concurrent installs of the same set.
//! Never: runs a package's install script, build backend or code on the host, or
//! gives a sandbox any host directory but one version's own layer.

pub mod go;
pub mod layer;
pub mod node;
pub mod python;

use crate::WorkerError;
use bytes::Bytes;
use hearth_core::Runtime;
use hearth_sandbox::{SandboxBackend, SandboxError};
use hearth_store::CodeStore;
use object_store::path::Path as ObjectPath;
use object_store::PutPayload;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Version of the install recipe: layers are stored under it, so a change in how they
/// are made (and a bump) installs afresh.
pub const DEPS_VERSION: u32 = 1;

/// Where dependencies come from, and the limits of one install.
#[derive(Debug, Clone)]
pub struct DepsConfig {
    /// The worker's own directory: scratch space, download caches and unpacked layers.
    pub dir: PathBuf,
    /// The sandbox's Python (its version and platform pick the wheels).
    pub python: PathBuf,
    /// `pip --index-url` (default: pip's, PyPI).
    pub pip_index_url: Option<String>,
    /// `pip --find-links`: a directory or page of wheels beside the index.
    pub pip_find_links: Option<String>,
    /// The npm registry (default: npm's).
    pub npm_registry: Option<String>,
    /// `GOPROXY` (default: `https://proxy.golang.org`).
    pub goproxy: Option<String>,
    /// `GOSUMDB` (default: off; `go.sum` is required and checked).
    pub gosumdb: Option<String>,
    /// Largest installed set, bytes.
    pub max_bytes: u64,
    /// Longest fetch and install, together.
    pub timeout: Duration,
    /// Memory of the install sandbox, MB.
    pub memory_mb: u64,
}

impl Default for DepsConfig {
    /// Under the system temp dir, PyPI, npmjs, 250 MB, 300 s, 1 GB.
    fn default() -> Self {
        DepsConfig {
            dir: std::env::temp_dir().join("hearth-deps"),
            python: PathBuf::from("/usr/bin/python3"),
            pip_index_url: None,
            pip_find_links: None,
            npm_registry: None,
            goproxy: None,
            gosumdb: None,
            max_bytes: 250 << 20,
            timeout: Duration::from_secs(300),
            memory_mb: 1024,
        }
    }
}

/// A version's installed dependencies and each package, as the deploy answer lists
/// them: the API's own types, so what the worker records and what the user reads cannot
/// drift apart.
pub use hearth_api::functions::{Dependencies as Installed, DependencyPackage as Package};

/// Why a version's dependencies could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    /// The user's manifest or a package in it cannot be installed: the reason, naming it.
    #[error("{0}")]
    Refused(String),
    /// The installed set is too large.
    #[error("the dependencies take {size_mb} MB installed: the limit is {limit_mb} MB")]
    TooLarge {
        /// Their size.
        size_mb: u64,
        /// The limit.
        limit_mb: u64,
    },
    /// Fetching and installing took too long.
    #[error(
        "fetching and installing the dependencies took longer than {seconds} s and was stopped"
    )]
    TimedOut {
        /// The limit.
        seconds: u64,
    },
    /// This worker cannot install them (no pip/npm/go, a backend without builds).
    #[error("{0}")]
    Unavailable(String),
    /// The platform failed (disk, store, sandbox).
    #[error("{0}")]
    Platform(String),
}

impl DepsError {
    /// Whether the user's dependencies are at fault (a 422), rather than the platform.
    pub fn is_users(&self) -> bool {
        matches!(
            self,
            DepsError::Refused(_) | DepsError::TooLarge { .. } | DepsError::TimedOut { .. }
        )
    }

    pub(crate) fn platform(what: &str, e: impl std::fmt::Display) -> DepsError {
        DepsError::Platform(format!("{what}: {e}"))
    }
}

impl From<SandboxError> for DepsError {
    fn from(e: SandboxError) -> Self {
        match e {
            SandboxError::Unavailable(why) => DepsError::Unavailable(why),
            SandboxError::InitFailed { message } => DepsError::Unavailable(message),
            other => DepsError::platform("install sandbox", other),
        }
    }
}

/// The files of a code package that decide its dependencies, read from its tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The runtime they are for.
    pub runtime: Runtime,
    /// Name and content of each deciding file, sorted by name.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Manifest {
    /// The dependency manifest of `code_tar` (a checked code tar), or `None` when the
    /// code names no dependencies, or carries them vendored (`node_modules/`,
    /// `vendor/modules.txt`).
    pub fn of(code_tar: &[u8], runtime: Runtime) -> Result<Option<Manifest>, DepsError> {
        let wanted: &[&str] = match runtime {
            Runtime::Python => &["requirements.txt"],
            Runtime::Nodejs => &["package.json", "package-lock.json", "npm-shrinkwrap.json"],
            Runtime::Go => &["go.mod", "go.sum"],
            Runtime::Cpp => &[],
        };
        if wanted.is_empty() {
            return Ok(None);
        }
        let read = |e: std::io::Error| DepsError::platform("reading the code tar", e);
        let mut archive = tar::Archive::new(code_tar);
        let mut files = Vec::new();
        let mut vendored = false;
        for entry in archive.entries().map_err(read)? {
            let mut entry = entry.map_err(read)?;
            let path = entry.path().map_err(read)?.to_string_lossy().into_owned();
            let path = path.trim_start_matches("./").to_string();
            vendored |= path.starts_with("node_modules/") && runtime == Runtime::Nodejs;
            vendored |= path == "vendor/modules.txt" && runtime == Runtime::Go;
            if wanted.contains(&path.as_str()) {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).map_err(read)?;
                files.push((path, data));
            }
        }
        files.sort();
        let manifest = Manifest { runtime, files };
        let names = match runtime {
            Runtime::Python => manifest
                .file("requirements.txt")
                .map(|t| !python::requirements(t).unwrap_or_default().is_empty()),
            Runtime::Nodejs => manifest
                .file("package.json")
                .map(|t| node::has_dependencies(t).unwrap_or(true)),
            Runtime::Go => manifest.file("go.mod").map(go::has_requirements),
            Runtime::Cpp => None,
        };
        // An unreadable manifest still counts: the fetch says what is wrong with it.
        let python_unreadable = runtime == Runtime::Python
            && manifest
                .file("requirements.txt")
                .is_some_and(|t| python::requirements(t).is_err());
        Ok((!vendored && (names == Some(true) || python_unreadable)).then_some(manifest))
    }

    /// The content of file `name` (text), if the code has it.
    pub fn file(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, data)| std::str::from_utf8(data).ok())
    }

    /// The file that names the dependencies.
    pub fn main_file(&self) -> &'static str {
        match self.runtime {
            Runtime::Python => "requirements.txt",
            Runtime::Nodejs => "package.json",
            _ => "go.mod",
        }
    }

    /// The layer's key: the hash of the deciding files, the runtime, the install
    /// recipe's version and `target` (what else picks the packages: the sandbox's
    /// Python version and platform).
    pub fn key(&self, target: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(format!(
            "hearth-deps/{DEPS_VERSION}/{}/{target}\0",
            self.runtime
        ));
        for (name, data) in &self.files {
            hash.update(format!("{name}\0{}\0", data.len()));
            hash.update(data);
        }
        hex::encode(hash.finalize())
    }
}

/// What the object store holds of one layer.
fn layer_key(key: &str) -> ObjectPath {
    ObjectPath::from(format!("deps/{key}.tar"))
}

fn summary_key(key: &str) -> ObjectPath {
    ObjectPath::from(format!("deps/{key}.json"))
}

/// The dependency installs of one worker.
pub struct Dependencies {
    config: DepsConfig,
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    python_target: tokio::sync::OnceCell<Result<python::Target, python::ProbeError>>,
}

impl Dependencies {
    /// None installed yet.
    pub fn new(config: DepsConfig) -> Dependencies {
        Dependencies {
            config,
            running: Mutex::new(HashMap::new()),
            python_target: tokio::sync::OnceCell::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DepsConfig {
        &self.config
    }

    /// What, besides the manifest, picks the packages of `runtime`.
    async fn target(&self, runtime: Runtime) -> Result<String, DepsError> {
        match runtime {
            Runtime::Python => {
                let python = self.config.python.clone();
                let target = self
                    .python_target
                    .get_or_init(|| async move { python::Target::probe(&python).await })
                    .await;
                match target {
                    Ok(t) => Ok(t.describe()),
                    Err(why) => Err(DepsError::Unavailable(why.to_string())),
                }
            }
            _ => Ok(String::new()),
        }
    }

    /// The manifest of `code_tar` and the key of its layer, if it has dependencies.
    pub async fn plan(
        &self,
        code_tar: &[u8],
        runtime: Runtime,
    ) -> Result<Option<(Manifest, String)>, DepsError> {
        let Some(manifest) = Manifest::of(code_tar, runtime)? else {
            return Ok(None);
        };
        let target = self.target(runtime).await?;
        let key = manifest.key(&target);
        Ok(Some((manifest, key)))
    }

    /// Installs the dependencies `code_tar` names (or finds them installed): `None`
    /// when it names none.
    pub async fn install(
        &self,
        backend: &dyn SandboxBackend,
        store: &CodeStore,
        function: &str,
        code_tar: &[u8],
        runtime: Runtime,
    ) -> Result<Option<Installed>, DepsError> {
        let Some((manifest, key)) = self.plan(code_tar, runtime).await? else {
            return Ok(None);
        };
        // A compiled runtime's layer is for its build only (its program is static).
        let takes_layer = if runtime.is_compiled() {
            backend.builds_with_layers()
        } else {
            backend.mounts_layers()
        };
        if !takes_layer {
            return Err(DepsError::Unavailable(format!(
                "the {} sandbox does not mount dependency layers ({} names some): vendor \
                 them in the zip, or run hearth with --sandbox native",
                backend.name(),
                manifest.main_file()
            )));
        }
        let turn = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _mine = turn.lock().await;
            self.install_once(backend, store, function, &manifest, &key)
                .await
        };
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if Arc::strong_count(&turn) == 2 {
                running.remove(&key);
            }
        }
        result.map(Some)
    }

    async fn install_once(
        &self,
        backend: &dyn SandboxBackend,
        store: &CodeStore,
        function: &str,
        manifest: &Manifest,
        key: &str,
    ) -> Result<Installed, DepsError> {
        let objects = store.object_store();
        if let Ok(found) = objects.get(&summary_key(key)).await {
            let bytes = found
                .bytes()
                .await
                .map_err(|e| DepsError::platform("reading the layer's summary", e))?;
            let mut installed: Installed = serde_json::from_slice(&bytes)
                .map_err(|e| DepsError::platform("reading the layer's summary", e))?;
            if objects.head(&layer_key(key)).await.is_ok() {
                installed.cached = true;
                installed.duration_ms = 0.0;
                return Ok(installed);
            }
        }
        let started = Instant::now();
        let seconds = self.config.timeout.as_secs();
        let scratch = layer::Scratch::new(&self.config.dir)?;
        let deadline = started + self.config.timeout;
        let work = async {
            match manifest.runtime {
                Runtime::Python => {
                    let target = match self.python_target.get() {
                        Some(Ok(target)) => target.clone(),
                        _ => return Err(DepsError::Unavailable("no python target".into())),
                    };
                    python::install(
                        &self.config,
                        &target,
                        backend,
                        function,
                        manifest,
                        &scratch,
                        deadline,
                    )
                    .await
                }
                Runtime::Nodejs => node::install(&self.config, manifest, &scratch).await,
                Runtime::Go => go::install(&self.config, manifest, &scratch).await,
                Runtime::Cpp => Err(DepsError::Refused(
                    "C++ functions build with the standard library only".into(),
                )),
            }
        };
        let (tar, mut installed) = tokio::time::timeout(self.config.timeout, work)
            .await
            .map_err(|_| DepsError::TimedOut { seconds })??;
        if installed.size_bytes > self.config.max_bytes {
            return Err(DepsError::TooLarge {
                size_mb: installed.size_bytes.div_ceil(1 << 20),
                limit_mb: self.config.max_bytes >> 20,
            });
        }
        installed.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        installed.cached = false;
        let summary = serde_json::to_vec(&installed)
            .map_err(|e| DepsError::platform("encoding the layer's summary", e))?;
        objects
            .put(&layer_key(key), PutPayload::from(tar))
            .await
            .map_err(|e| DepsError::platform("storing the layer", e))?;
        objects
            .put(&summary_key(key), PutPayload::from(summary))
            .await
            .map_err(|e| DepsError::platform("storing the layer's summary", e))?;
        tracing::info!(
            function,
            runtime = %manifest.runtime,
            layer = key,
            packages = installed.packages.len(),
            size_bytes = installed.size_bytes,
            duration_ms = installed.duration_ms,
            "dependencies installed"
        );
        metrics::histogram!("hearth_deps_install_ms", "runtime" => manifest.runtime.as_str())
            .record(installed.duration_ms);
        Ok(installed)
    }

    /// The unpacked layer of `code_tar`'s dependencies on this worker, unpacking it
    /// from the object store the first time (installing it, when the store lacks it).
    pub async fn layer_dir(
        &self,
        backend: &dyn SandboxBackend,
        store: &CodeStore,
        function: &str,
        code_tar: &[u8],
        runtime: Runtime,
    ) -> Result<Option<PathBuf>, DepsError> {
        let Some((_, key)) = self.plan(code_tar, runtime).await? else {
            return Ok(None);
        };
        let dir = layer::layers_dir(&self.config.dir).join(&key);
        if dir.is_dir() {
            return Ok(Some(dir));
        }
        let objects = store.object_store();
        let tar = match objects.get(&layer_key(&key)).await {
            Ok(found) => found.bytes().await,
            Err(_) => {
                tracing::warn!(function, layer = %key, "no stored layer (a recipe change?): installing it now");
                self.install(backend, store, function, code_tar, runtime)
                    .await?;
                match objects.get(&layer_key(&key)).await {
                    Ok(found) => found.bytes().await,
                    Err(e) => Err(e),
                }
            }
        }
        .map_err(|e| DepsError::platform("reading the layer", e))?;
        let root = layer::layers_dir(&self.config.dir);
        tokio::task::spawn_blocking(move || layer::unpack_once(&tar, &root, &key))
            .await
            .map_err(|e| DepsError::platform("unpacking task", e))?
            .map(Some)
    }
}

impl crate::Worker {
    /// Installs the dependencies a deploy's code names (or finds them installed):
    /// `None` when it names none.
    pub async fn install_dependencies(
        &self,
        function: &str,
        runtime: Runtime,
        code_tar: &Bytes,
    ) -> Result<Option<Installed>, DepsError> {
        self.deps
            .install(
                self.backend.as_ref(),
                &self.code,
                function,
                code_tar,
                runtime,
            )
            .await
    }

    /// The unpacked dependency layer of a version's code, for its sandboxes.
    pub(crate) async fn layer_for(
        &self,
        function: &str,
        version: u64,
        runtime: Runtime,
        code_tar: &[u8],
    ) -> Result<Option<PathBuf>, WorkerError> {
        self.deps
            .layer_dir(
                self.backend.as_ref(),
                &self.code,
                function,
                code_tar,
                runtime,
            )
            .await
            .map_err(|e| WorkerError::Code {
                function: function.to_string(),
                version,
                source: crate::CodeError::Deps(e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, text) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, text.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn manifests_are_found_and_vendored_sets_left_alone() {
        let code = tar_of(&[("main.py", "x"), ("requirements.txt", "six==1.16.0\n")]);
        let m = Manifest::of(&code, Runtime::Python).unwrap().unwrap();
        assert_eq!(m.main_file(), "requirements.txt");
        let comments = tar_of(&[("requirements.txt", "# nothing\n\n")]);
        assert_eq!(Manifest::of(&comments, Runtime::Python).unwrap(), None);
        let node = tar_of(&[("package.json", r#"{"dependencies":{"a":"1"}}"#)]);
        assert!(Manifest::of(&node, Runtime::Nodejs).unwrap().is_some());
        let vendored = tar_of(&[
            ("package.json", r#"{"dependencies":{"a":"1"}}"#),
            ("node_modules/a/index.js", ""),
        ]);
        assert_eq!(Manifest::of(&vendored, Runtime::Nodejs).unwrap(), None);
        let go = tar_of(&[(
            "go.mod",
            "module m\n\ngo 1.19\n\nrequire example.com/x v1.0.0\n",
        )]);
        assert!(Manifest::of(&go, Runtime::Go).unwrap().is_some());
        let std_only = tar_of(&[("go.mod", "module m\n\ngo 1.19\n")]);
        assert_eq!(Manifest::of(&std_only, Runtime::Go).unwrap(), None);
        assert_eq!(Manifest::of(&code, Runtime::Cpp).unwrap(), None);
    }

    #[test]
    fn keys_follow_the_files_the_runtime_and_the_target() {
        let a = Manifest::of(&tar_of(&[("requirements.txt", "six\n")]), Runtime::Python)
            .unwrap()
            .unwrap();
        let b = Manifest::of(
            &tar_of(&[("main.py", "changed"), ("requirements.txt", "six\n")]),
            Runtime::Python,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            a.key("cp311"),
            b.key("cp311"),
            "code changes keep the layer"
        );
        assert_ne!(a.key("cp311"), a.key("cp312"));
        let c = Manifest::of(
            &tar_of(&[("requirements.txt", "six==1\n")]),
            Runtime::Python,
        )
        .unwrap()
        .unwrap();
        assert_ne!(a.key("cp311"), c.key("cp311"));
        assert_eq!(a.key("t").len(), 64);
    }
}
