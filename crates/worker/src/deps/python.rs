//! Python: `requirements.txt` → wheels fetched on the host, installed in a sandbox.
//!
//! The host runs `pip download --only-binary=:all:` for the sandbox's Python version,
//! ABI and platform ([`Target`]): pip resolves from wheels' metadata alone and never
//! builds a source distribution, so no package code runs; a requirement with no
//! usable wheel is refused, named. The wheels and the checked requirements then go to a
//! build sandbox (python, `Purpose::Build`) whose agent runs `pip install --no-index`
//! from them, offline, and answers with the installed tree (the layer).
//!
//! Only requirement lines are accepted: no pip options (`-r`, `--index-url`, `-e`), no
//! URLs or paths, which would make the host read a file or a server the user picked.

use super::layer::{self, Scratch, FETCH_PATH};
use super::{DepsConfig, DepsError, Installed, Manifest, Package};
use bytes::Bytes;
use hearth_core::protocol::{InvokeSpec, OutcomeStatus, DEPS_PYTHON};
use hearth_core::Runtime;
use hearth_sandbox::{DiscardSink, InstanceSpec, SandboxBackend};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Variables of the worker's environment a fetch client may see (proxies, CAs).
pub const PASSED_ENV: [&str; 12] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "PIP_DEFAULT_TIMEOUT",
];

/// The requirement lines of `text`, checked: comments and blank lines dropped, each
/// line a package name with extras, version specifiers and markers, nothing else.
pub fn requirements(text: &str) -> Result<Vec<String>, DepsError> {
    let mut out = Vec::new();
    let joined = text.replace("\\\n", " ");
    for (n, raw) in joined.lines().enumerate() {
        let line = match raw.find(" #").or(raw.starts_with('#').then_some(0)) {
            Some(i) => &raw[..i],
            None => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let refuse = |why: &str| {
            Err(DepsError::Refused(format!(
                "requirements.txt line {}: {why}: {line:?} (name packages from the index, \
                 like `numpy==1.26.4`)",
                n + 1
            )))
        };
        if line.starts_with('-') {
            return refuse("pip options are not supported");
        }
        let (spec, _markers) = line.split_once(';').unwrap_or((line, ""));
        if spec.contains("://") || spec.contains('@') {
            return refuse("URLs and direct references are not supported");
        }
        let plain = spec
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-[],<>=!~*+ ".contains(c));
        if !plain || !spec.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return refuse("not a requirement (paths and archives are not supported)");
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// Why the sandbox's Python could not be asked what it is.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The interpreter could not be run.
    #[error("{program}: {source}")]
    Run {
        /// The interpreter.
        program: String,
        /// Why it did not run.
        source: DepsError,
    },
    /// It ran and failed.
    #[error("{program} failed: {output}")]
    Failed {
        /// The interpreter.
        program: String,
        /// What it printed.
        output: String,
    },
    /// It printed something else than its platform.
    #[error("{program} gave no platform ({source}): {output}")]
    Unparsable {
        /// The interpreter.
        program: String,
        /// Why its answer did not parse.
        source: serde_json::Error,
        /// What it printed.
        output: String,
    },
}

/// The sandbox's Python: what pip must fetch wheels for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Target {
    /// `3.11`.
    pub version: String,
    /// `x86_64`.
    pub machine: String,
    /// glibc's version, `2.36`.
    pub glibc: String,
}

impl Target {
    /// Asks the sandbox's interpreter (a plain `-c`, no package imported but the
    /// standard library's).
    pub async fn probe(python: &Path) -> Result<Target, ProbeError> {
        let script = "import json, platform, sys; print(json.dumps({'version': '%d.%d' % \
                      sys.version_info[:2], 'machine': platform.machine(), 'glibc': \
                      platform.libc_ver()[1]}))";
        let args = ["-I".to_string(), "-c".to_string(), script.to_string()];
        let env = [("PATH".to_string(), FETCH_PATH.to_string())];
        let program = python.to_string_lossy().into_owned();
        let ran = match layer::run(&program, &args, &env, Path::new("/")).await {
            Ok(ran) => ran,
            Err(source) => return Err(ProbeError::Run { program, source }),
        };
        let output = ran.output.trim().to_string();
        if !ran.ok {
            return Err(ProbeError::Failed { program, output });
        }
        serde_json::from_str(&output).map_err(|source| ProbeError::Unparsable {
            program,
            source,
            output,
        })
    }

    /// `cp311`.
    pub fn abi(&self) -> String {
        format!("cp{}", self.version.replace('.', ""))
    }

    /// The wheel platforms the sandbox takes, newest first: `manylinux_2_<glibc>` down
    /// to `manylinux_2_17` and the legacy aliases.
    pub fn platforms(&self) -> Vec<String> {
        let minor: u32 = self
            .glibc
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(17);
        let arch = &self.machine;
        let mut out: Vec<String> = (5..=minor.max(5))
            .rev()
            .map(|m| format!("manylinux_2_{m}_{arch}"))
            .collect();
        for legacy in ["manylinux2014", "manylinux2010", "manylinux1"] {
            out.push(format!("{legacy}_{arch}"));
        }
        out
    }

    /// What goes into the layer's key.
    pub fn describe(&self) -> String {
        format!("{}-{}-glibc{}", self.abi(), self.machine, self.glibc)
    }
}

/// Environment of the host's pip: no config file, no user site, the worker's proxies.
fn pip_env(home: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", FETCH_PATH),
        ("PIP_CONFIG_FILE", "/dev/null"),
        ("PIP_NO_INPUT", "1"),
        ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        ("PYTHONNOUSERSITE", "1"),
        ("LC_ALL", "C.UTF-8"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.push(("HOME".into(), home.to_string_lossy().into_owned()));
    env.extend(
        PASSED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))),
    );
    env
}

/// `pip download` arguments for `target`.
fn download_args(
    config: &DepsConfig,
    target: &Target,
    dest: &Path,
    requirements: &[String],
    verbose: bool,
) -> Vec<String> {
    let mut args: Vec<String> = ["-I", "-m", "pip", "download", "--only-binary=:all:"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--python-version".into(), target.version.clone()]);
    args.extend(["--implementation".into(), "cp".into()]);
    args.extend(["--abi".into(), target.abi()]);
    for platform in target.platforms() {
        args.extend(["--platform".into(), platform]);
    }
    args.extend(["--dest".into(), dest.to_string_lossy().into_owned()]);
    args.extend(["--progress-bar".into(), "off".into()]);
    args.extend([
        "--cache-dir".into(),
        config.dir.join("cache/pip").to_string_lossy().into_owned(),
    ]);
    if let Some(index) = &config.pip_index_url {
        args.extend(["--index-url".into(), index.clone()]);
    }
    if let Some(links) = &config.pip_find_links {
        args.extend(["--find-links".into(), links.clone()]);
    }
    if verbose {
        args.extend(["--no-deps".into(), "-vv".into()]);
    }
    args.extend(requirements.iter().cloned());
    args
}

/// Why pip found nothing for `requirement`: asks again, verbosely, for it alone.
async fn why_unavailable(
    config: &DepsConfig,
    target: &Target,
    scratch: &Path,
    requirement: &str,
) -> String {
    let probe = scratch.join("probe");
    let args = download_args(config, target, &probe, &[requirement.to_string()], true);
    let output = match layer::run(
        &config.python.to_string_lossy(),
        &args,
        &pip_env(&scratch.join("home")),
        scratch,
    )
    .await
    {
        Ok(ran) => ran.output,
        Err(e) => e.to_string(),
    };
    let platform = format!("CPython {} on {} Linux", target.version, target.machine);
    // pip's reasons for skipping the files of this very project (the find-links dir
    // lists others' files too).
    let project = normalize(
        requirement
            .split(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
            .next()
            .unwrap_or(requirement),
    );
    let skipped: Vec<&str> = output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Skipping link: "))
        .filter(|l| {
            let file = l.rsplit('/').next().unwrap_or("");
            let file = file.split('#').next().unwrap_or(file);
            normalize(file).starts_with(&format!("{project}-"))
        })
        .collect();
    let wheels_elsewhere = skipped
        .iter()
        .any(|l| l.contains("none of the wheel's tags"));
    let sources = skipped.iter().any(|l| l.contains("No sources permitted"));
    match (sources, wheels_elsewhere) {
        (true, _) => format!(
            "{requirement}: only a source distribution fits {platform}{}, no wheel; hearth \
             installs wheels only and never builds a package from source (vendor it, built \
             for {platform}, in the zip instead)",
            if wheels_elsewhere {
                " (its wheels are for other platforms)"
            } else {
                ""
            }
        ),
        (false, true) => format!(
            "{requirement}: no wheel for {platform} (its wheels are for other platforms); \
             hearth installs wheels only and never builds from source"
        ),
        _ if output.contains("from versions: none") => {
            format!("{requirement}: no such package on the index")
        }
        _ => {
            let versions = output
                .lines()
                .find_map(|l| l.split_once("(from versions: ").map(|(_, v)| v))
                .map(|v| v.trim_end_matches(')').to_string())
                .unwrap_or_default();
            format!("{requirement}: no version matches (wheels for {platform}: {versions})")
        }
    }
}

/// A project or file name as PEP 503 compares them: lower case, runs of `-_.` as `-`.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Fetches and installs `manifest`'s requirements; the layer tar and what it holds.
pub async fn install(
    config: &DepsConfig,
    target: &Target,
    backend: &dyn SandboxBackend,
    function: &str,
    manifest: &Manifest,
    scratch: &Scratch,
    deadline: Instant,
) -> Result<(Vec<u8>, Installed), DepsError> {
    let text = manifest
        .file("requirements.txt")
        .ok_or_else(|| DepsError::Refused("requirements.txt is not UTF-8 text".into()))?;
    let requirements = requirements(text)?;
    let wheels = scratch.path().join("wheels");
    let home = scratch.path().join("home");
    for dir in [&wheels, &home] {
        std::fs::create_dir_all(dir).map_err(|e| DepsError::platform("scratch dir", e))?;
    }
    let args = download_args(config, target, &wheels, &requirements, false);
    let python = config.python.to_string_lossy();
    let ran = layer::run(&python, &args, &pip_env(&home), scratch.path()).await?;
    if !ran.ok {
        let missing: Vec<String> = ran
            .output
            .lines()
            .filter_map(|l| l.split_once("No matching distribution found for "))
            .map(|(_, name)| name.trim().to_string())
            .collect();
        if missing.is_empty() {
            let tail: Vec<&str> = ran
                .output
                .lines()
                .filter(|l| l.starts_with("ERROR"))
                .collect();
            return Err(DepsError::Refused(format!(
                "fetching the requirements failed:\n{}",
                if tail.is_empty() {
                    ran.output.trim().to_string()
                } else {
                    tail.join("\n")
                }
            )));
        }
        let mut reasons = Vec::new();
        for requirement in &missing {
            reasons.push(why_unavailable(config, target, scratch.path(), requirement).await);
        }
        return Err(DepsError::Refused(reasons.join("\n")));
    }
    let code_tar = install_code(&requirements, &wheels)?;
    let layer = install_in_sandbox(config, backend, function, code_tar, deadline).await?;
    let installed = describe(&layer);
    Ok((layer, installed))
}

/// What the install sandbox gets as its code: the requirements and the wheels.
fn install_code(requirements: &[String], wheels: &Path) -> Result<Bytes, DepsError> {
    let io = |e: std::io::Error| DepsError::platform("packing the wheels", e);
    let mut builder = tar::Builder::new(Vec::new());
    let text = format!("{}\n", requirements.join("\n"));
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, "requirements.txt", text.as_bytes())
        .map_err(io)?;
    let mut names: Vec<_> = std::fs::read_dir(wheels)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .collect();
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".whl") {
            return Err(DepsError::Refused(format!(
                "{name} is not a wheel: hearth installs wheels only"
            )));
        }
        builder
            .append_path_with_name(entry.path(), format!("wheels/{name}"))
            .map_err(io)?;
    }
    builder.into_inner().map(Bytes::from).map_err(io)
}

/// Runs `pip install --no-index` in a build sandbox; the layer tar it answers with.
async fn install_in_sandbox(
    config: &DepsConfig,
    backend: &dyn SandboxBackend,
    function: &str,
    code_tar: Bytes,
    deadline: Instant,
) -> Result<Vec<u8>, DepsError> {
    let id = ulid::Ulid::new().to_string().to_lowercase();
    let spec = InstanceSpec {
        instance_id: format!("deps-{function}-{id}"),
        function_name: function.to_string(),
        version: 0,
        runtime: Runtime::Python,
        memory_mb: config.memory_mb,
        output_quota_mb: 0,
        env: BTreeMap::new(),
        code_tar,
        layer: None,
        cpus: None,
    };
    let mut instance = backend.create_builder(spec).await?;
    let left = deadline.saturating_duration_since(Instant::now());
    let invoke = InvokeSpec {
        request_id: format!("deps-{id}"),
        timeout_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1),
        log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
        attempt: 1,
    };
    let run = instance
        .run_event(invoke, Bytes::new(), &mut DiscardSink)
        .await;
    instance.destroy().await;
    let run = run.map_err(|e| DepsError::platform("install sandbox", e))?;
    if run.usage.oom_killed {
        return Err(DepsError::Refused(format!(
            "installing the wheels ran out of memory (its limit is {} MB)",
            config.memory_mb
        )));
    }
    let message = run.outcome.error.map(|e| e.message).unwrap_or_default();
    match run.outcome.status {
        OutcomeStatus::Success if !run.result.is_empty() => Ok(run.result),
        OutcomeStatus::Timeout => Err(DepsError::TimedOut {
            seconds: config.timeout.as_secs(),
        }),
        _ => Err(DepsError::Refused(format!(
            "installing the wheels failed:\n{}",
            if message.is_empty() {
                run.outcome.stderr
            } else {
                message
            }
        ))),
    }
}

/// The packages of a python layer (from each `*.dist-info/RECORD`'s sizes) and its size.
pub fn describe(layer: &[u8]) -> Installed {
    let mut packages = Vec::new();
    let mut size = 0;
    let mut archive = tar::Archive::new(layer);
    if let Ok(entries) = archive.entries() {
        for mut entry in entries.flatten() {
            size += entry.header().size().unwrap_or(0);
            let Ok(path) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
                continue;
            };
            let Some(dist) = path
                .strip_prefix(&format!("{DEPS_PYTHON}/"))
                .and_then(|p| p.strip_suffix(".dist-info/RECORD"))
            else {
                continue;
            };
            let Some((name, version)) = dist.rsplit_once('-') else {
                continue;
            };
            let mut record = String::new();
            let _ = std::io::Read::read_to_string(&mut entry, &mut record);
            let bytes = record
                .lines()
                .filter_map(|l| l.rsplit(',').next()?.trim().parse::<u64>().ok())
                .sum();
            packages.push(Package {
                name: name.to_string(),
                version: version.to_string(),
                size_bytes: bytes,
            });
        }
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Installed {
        cached: false,
        manifest: "requirements.txt".into(),
        packages,
        size_bytes: size,
        duration_ms: 0.0,
        scripts_not_run: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_requirements_are_taken() {
        let ok = requirements(
            "# deps\nnumpy==1.26.4  # pinned\nrequests[socks]>=2,<3\n\nsix ; python_version >= '3'\n",
        )
        .unwrap();
        assert_eq!(
            ok,
            vec![
                "numpy==1.26.4",
                "requests[socks]>=2,<3",
                "six ; python_version >= '3'"
            ]
        );
        for bad in [
            "-r /etc/passwd",
            "--index-url http://evil/",
            "-e .",
            "pkg @ https://x/y.whl",
            "https://x/y.tar.gz",
            "./local",
            "/abs/path.whl",
            "git+https://x/y",
        ] {
            let err = requirements(bad).unwrap_err().to_string();
            assert!(err.contains("line 1"), "{bad}: {err}");
        }
    }

    #[test]
    fn names_compare_as_pep_503_says() {
        assert_eq!(
            normalize("Hearth_Sdist.Only-1.0.tar.gz"),
            "hearth-sdist-only-1-0-tar-gz"
        );
        assert_eq!(normalize("numpy"), "numpy");
    }

    #[test]
    fn the_target_takes_manylinux_down_to_the_oldest() {
        let t = Target {
            version: "3.11".into(),
            machine: "x86_64".into(),
            glibc: "2.36".into(),
        };
        assert_eq!(t.abi(), "cp311");
        let p = t.platforms();
        assert_eq!(p[0], "manylinux_2_36_x86_64");
        assert!(p.contains(&"manylinux_2_17_x86_64".to_string()));
        assert!(p.contains(&"manylinux2014_x86_64".to_string()));
        assert_eq!(t.describe(), "cp311-x86_64-glibc2.36");
    }
}
