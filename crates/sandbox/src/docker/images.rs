//! The runtime images: which exist, what they are called, and how they are made.
//!
//! An image is two layers of work. A **root file system** ([`RootfsSpec`]: Debian
//! packages, made by `rootfs.rs` with debootstrap because nothing can be pulled here) is
//! imported into the engine once per package list. A **runtime image**
//! ([`RuntimeImageSpec`]) is then built `FROM` it (or `FROM scratch`) with the static
//! agent, the runtime files that agent expects (it writes them itself: `hearth-agent
//! --write-runtime-files`), an empty root-owned `/code`, user 65534 and the agent as
//! entrypoint. Runtime images are tagged with the agent's version and a digest of its
//! binary ([`AgentTag`]), so a new agent means new images, and a backend only ever
//! starts images made for its agent.
//!
//! Each runtime has a serving image ([`ImageRole::Serve`]). A compiled runtime (cpp, go)
//! also has a **builder image** ([`ImageRole::Build`], `hearth/<runtime>-build`) with its
//! toolchain, where its deploys compile; its serving image is `FROM scratch` with the
//! agent alone, since its programs are static (`docs/0001-compiled-runtimes.md`).
//!
//! Adding a runtime is a list entry: a [`RootfsSpec`] for its packages (or an existing
//! one) and a [`RuntimeImageSpec`] naming its interpreter.

use super::container::{AGENT_IN_IMAGE, CODE_DIR};

/// The image's default user, for anyone who runs it by hand: `nobody`. hearth's own
/// containers start as root with three capabilities and leave it at once (`container.rs`).
const IMAGE_USER: &str = "65534:65534";
use super::labels;
use bollard::query_parameters::{BuildImageOptions, CreateImageOptions};
use bollard::{body_full, body_try_stream, Docker};
use bytes::Bytes;
use futures::StreamExt;
use hearth_core::Runtime;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Repository prefix of every image hearth makes.
pub const REPOSITORY: &str = "hearth";

/// A root file system made of Debian packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootfsSpec {
    /// Short name (`hearth/rootfs-<name>`).
    pub name: &'static str,
    /// Packages installed on top of debootstrap's `minbase`.
    pub packages: &'static [&'static str],
}

/// What a runtime image's containers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageRole {
    /// Serve invocations (`hearth/<runtime>`).
    Serve,
    /// Build a compiled function's source into its program (`hearth/<runtime>-build`).
    Build,
}

/// A runtime image: a root file system (or nothing) plus the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeImageSpec {
    /// The runtime it serves or builds.
    pub runtime: Runtime,
    /// Serving or building.
    pub role: ImageRole,
    /// The [`RootfsSpec::name`] it is built from; `None`: `FROM scratch` (a compiled
    /// runtime's static programs need nothing but the agent).
    pub rootfs: Option<&'static str>,
    /// The program the agent runs (absolute): the interpreter, the toolchain's driver
    /// for a builder, the built program (in the code dir) for a compiled runtime.
    pub interpreter: &'static str,
}

/// The root file systems. One debootstrap serves both interpreted runtimes and one
/// both toolchains, which keeps CI to two downloads.
pub const ROOT_FILESYSTEMS: &[RootfsSpec] = &[
    RootfsSpec {
        name: "interp",
        packages: &["python3", "nodejs"],
    },
    RootfsSpec {
        name: "toolchains",
        packages: &["g++", "golang-go"],
    },
];

/// The program a compiled runtime's instance runs: the artifact's, in the code dir.
const BUILT_PROGRAM: &str = "/code/function";

/// The runtime images.
pub const RUNTIME_IMAGES: &[RuntimeImageSpec] = &[
    RuntimeImageSpec {
        runtime: Runtime::Python,
        role: ImageRole::Serve,
        rootfs: Some("interp"),
        interpreter: "/usr/bin/python3",
    },
    RuntimeImageSpec {
        runtime: Runtime::Nodejs,
        role: ImageRole::Serve,
        rootfs: Some("interp"),
        interpreter: "/usr/bin/node",
    },
    RuntimeImageSpec {
        runtime: Runtime::Cpp,
        role: ImageRole::Serve,
        rootfs: None,
        interpreter: BUILT_PROGRAM,
    },
    RuntimeImageSpec {
        runtime: Runtime::Go,
        role: ImageRole::Serve,
        rootfs: None,
        interpreter: BUILT_PROGRAM,
    },
    RuntimeImageSpec {
        runtime: Runtime::Cpp,
        role: ImageRole::Build,
        rootfs: Some("toolchains"),
        interpreter: "/usr/bin/g++",
    },
    RuntimeImageSpec {
        runtime: Runtime::Go,
        role: ImageRole::Build,
        rootfs: Some("toolchains"),
        interpreter: "/usr/bin/go",
    },
];

/// The root file system named `name`.
pub fn rootfs_spec(name: &str) -> Option<&'static RootfsSpec> {
    ROOT_FILESYSTEMS.iter().find(|r| r.name == name)
}

/// The serving image spec of `runtime`, when it has one.
pub fn runtime_image_spec(runtime: Runtime) -> Option<&'static RuntimeImageSpec> {
    RUNTIME_IMAGES
        .iter()
        .find(|r| r.runtime == runtime && r.role == ImageRole::Serve)
}

/// The image specs of `runtime`: its serving image, then its builder (if compiled).
pub fn image_specs(runtime: Runtime) -> impl Iterator<Item = &'static RuntimeImageSpec> {
    RUNTIME_IMAGES.iter().filter(move |r| r.runtime == runtime)
}

/// An image-building failure. Messages name the file, command or image involved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A host command failed.
    #[error("{command} failed: {message}")]
    Command {
        /// The command, as run.
        command: String,
        /// Its exit status and last lines of output.
        message: String,
    },
    /// The engine refused or failed a request.
    #[error("docker engine: {what}: {source}")]
    Engine {
        /// What was asked.
        what: String,
        /// The engine's error.
        source: bollard::errors::Error,
    },
    /// The engine reported a failure while building or importing.
    #[error("docker engine: {what}: {message}")]
    Build {
        /// What was being made.
        what: String,
        /// The engine's message.
        message: String,
    },
    /// The host's apt configuration names no usable Debian mirror.
    #[error("no Debian mirror for {suite} in {dir}: pass one with --mirror")]
    NoMirror {
        /// The suite looked for.
        suite: String,
        /// Where the sources were read.
        dir: String,
    },
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> ImageError {
    ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Which agent an image carries: its version and a digest of its binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTag {
    /// The agent's crate version (the workspace's).
    pub version: String,
    /// First 12 hex digits of the binary's SHA-256.
    pub digest: String,
}

impl AgentTag {
    /// Reads the agent binary at `path` and tags it with this crate's version (the
    /// workspace shares one version, so it is the agent's too).
    pub fn of(path: &Path) -> Result<AgentTag, ImageError> {
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        Ok(AgentTag {
            version: env!("CARGO_PKG_VERSION").to_string(),
            digest: hex::encode(&Sha256::digest(&bytes)[..6]),
        })
    }

    /// The image tag: `<version>-<digest>`.
    pub fn tag(&self) -> String {
        format!("{}-{}", self.version, self.digest)
    }
}

/// `hearth/<runtime>:<agent tag>`: the image a backend with this agent starts.
pub fn runtime_image_ref(runtime: Runtime, agent: &AgentTag) -> String {
    format!("{REPOSITORY}/{runtime}:{}", agent.tag())
}

/// `hearth/<runtime>-build:<agent tag>`: the image a compiled runtime builds in.
pub fn builder_image_ref(runtime: Runtime, agent: &AgentTag) -> String {
    format!("{REPOSITORY}/{runtime}-build:{}", agent.tag())
}

/// The reference of the image `spec` describes, for this agent.
pub fn image_ref(spec: &RuntimeImageSpec, agent: &AgentTag) -> String {
    match spec.role {
        ImageRole::Serve => runtime_image_ref(spec.runtime, agent),
        ImageRole::Build => builder_image_ref(spec.runtime, agent),
    }
}

/// `hearth/rootfs-<name>:<key>`: an imported root file system.
pub fn rootfs_image_ref(name: &str, key: &str) -> String {
    format!("{REPOSITORY}/rootfs-{name}:{key}")
}

/// Whether the engine has image `reference`.
pub async fn image_exists(docker: &Docker, reference: &str) -> Result<bool, ImageError> {
    match docker.inspect_image(reference).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(source) => Err(ImageError::Engine {
            what: format!("inspect image {reference}"),
            source,
        }),
    }
}

/// The labels of an image: `(interpreter, agent tag)` of a hearth runtime image.
pub async fn runtime_image_labels(
    docker: &Docker,
    reference: &str,
) -> Result<Option<HashMap<String, String>>, ImageError> {
    match docker.inspect_image(reference).await {
        Ok(image) => Ok(Some(
            image.config.and_then(|c| c.labels).unwrap_or_default(),
        )),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(source) => Err(ImageError::Engine {
            what: format!("inspect image {reference}"),
            source,
        }),
    }
}

/// Imports the root file system tarball at `tarball` as image `reference`, streaming it
/// from disk (it is a few hundred MB).
pub async fn import_rootfs(
    docker: &Docker,
    tarball: &Path,
    reference: &str,
) -> Result<(), ImageError> {
    let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
    let file = tokio::fs::File::open(tarball)
        .await
        .map_err(|e| io_error(tarball, e))?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let options = CreateImageOptions {
        from_src: Some("-".to_string()),
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
        message: Some("hearth root file system (debootstrap)".to_string()),
        ..CreateImageOptions::default()
    };
    let mut progress = docker.create_image(Some(options), Some(body_try_stream(body)), None);
    while let Some(item) = progress.next().await {
        item.map_err(|source| ImageError::Engine {
            what: format!("import {} as {reference}", tarball.display()),
            source,
        })?;
    }
    Ok(())
}

/// The Dockerfile of a runtime image built `FROM base`. A `scratch` image gets no
/// `/tmp`: the engine makes the mount point of the container's tmpfs, whose `mode=1777`
/// holds only then (over an image's dir, the engine copies that dir's mode up, and
/// `COPY` makes directories 0755).
pub fn dockerfile(base: &str, spec: &RuntimeImageSpec, agent: &AgentTag) -> String {
    format!(
        "FROM {base}\n\
         COPY hearth-agent {AGENT_IN_IMAGE}\n\
         COPY runtime/ /runtime/\n\
         COPY code/ {CODE_DIR}/\n\
         COPY home/ /home/\n\
         LABEL {managed}=\"true\" {runtime_label}=\"{runtime}\" {interpreter_label}=\"{interpreter}\" {agent_label}=\"{tag}\"\n\
         USER {IMAGE_USER}\n\
         WORKDIR {CODE_DIR}\n\
         ENTRYPOINT [\"{AGENT_IN_IMAGE}\"]\n",
        managed = labels::MANAGED,
        runtime_label = labels::RUNTIME,
        runtime = spec.runtime,
        interpreter_label = labels::INTERPRETER,
        interpreter = spec.interpreter,
        agent_label = labels::AGENT,
        tag = agent.tag(),
    )
}

/// The base of an image with no root file system.
pub const SCRATCH: &str = "scratch";

/// The build context of a runtime image, as a tar: the Dockerfile, the agent, the
/// runtime files the agent writes (`--write-runtime-files`), and an empty `code/`.
/// Everything is owned by root; files 0644 (the agent 0755), directories 0755.
pub fn build_context(
    agent: &Path,
    base: &str,
    spec: &RuntimeImageSpec,
    tag: &AgentTag,
) -> Result<Vec<u8>, ImageError> {
    let scratch = tempfile::tempdir().map_err(|e| io_error(&std::env::temp_dir(), e))?;
    let runtime_dir = scratch.path().join("runtime");
    std::fs::create_dir_all(&runtime_dir).map_err(|e| io_error(&runtime_dir, e))?;
    let output = std::process::Command::new(agent)
        .arg("--write-runtime-files")
        .arg(&runtime_dir)
        .output()
        .map_err(|e| io_error(agent, e))?;
    if !output.status.success() {
        return Err(ImageError::Command {
            command: format!("{} --write-runtime-files", agent.display()),
            message: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    let mut entries: Vec<(String, Option<PathBuf>)> = Vec::new();
    collect_entries(&runtime_dir, "runtime", &mut entries)?;

    let mut tar = tar::Builder::new(Vec::new());
    let tar_error = |what: &str, e: std::io::Error| io_error(Path::new(what), e);
    append(
        &mut tar,
        "Dockerfile",
        0o644,
        dockerfile(base, spec, tag).as_bytes(),
    )
    .map_err(|e| tar_error("Dockerfile", e))?;
    let agent_bytes = std::fs::read(agent).map_err(|e| io_error(agent, e))?;
    append(&mut tar, "hearth-agent", 0o755, &agent_bytes)
        .map_err(|e| tar_error("hearth-agent", e))?;
    append(&mut tar, "code/", 0o755, &[]).map_err(|e| tar_error("code/", e))?;
    // HOME: empty, and read-only to the function (nothing planted there survives).
    append(&mut tar, "home/", 0o555, &[]).map_err(|e| tar_error("home/", e))?;
    append(&mut tar, "runtime/", 0o755, &[]).map_err(|e| tar_error("runtime/", e))?;
    for (name, file) in entries {
        match file {
            None => append(&mut tar, &name, 0o755, &[]),
            Some(path) => {
                let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
                append(&mut tar, &name, 0o644, &bytes)
            }
        }
        .map_err(|e| tar_error(&name, e))?;
    }
    tar.into_inner().map_err(|e| tar_error("build context", e))
}

/// The entries under `dir`, directories (`None`, name ending in `/`) before what they
/// hold, each level sorted by name.
fn collect_entries(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, Option<PathBuf>)>,
) -> Result<(), ImageError> {
    let mut children = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_error(dir, e))?;
    children.sort();
    for path in children {
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let name = format!("{prefix}/{file_name}");
        if path.is_dir() {
            out.push((format!("{name}/"), None));
            collect_entries(&path, &name, out)?;
        } else {
            out.push((name, Some(path)));
        }
    }
    Ok(())
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    hearth_core::tarball::append_entry(tar, path, mode, data)
}

/// Builds image `reference` from a build context (see [`build_context`]); `on_line`
/// gets the engine's progress lines.
pub async fn build_image(
    docker: &Docker,
    context: Vec<u8>,
    reference: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), ImageError> {
    let options = BuildImageOptions {
        t: Some(reference.to_string()),
        rm: true,
        forcerm: true,
        ..BuildImageOptions::default()
    };
    let mut progress = docker.build_image(options, None, Some(body_full(Bytes::from(context))));
    while let Some(item) = progress.next().await {
        let info = item.map_err(|source| ImageError::Engine {
            what: format!("build {reference}"),
            source,
        })?;
        if let Some(message) = info.error_detail.and_then(|d| d.message) {
            return Err(ImageError::Build {
                what: format!("build {reference}"),
                message,
            });
        }
        if let Some(line) = info.stream {
            let line = line.trim();
            if !line.is_empty() {
                on_line(line);
            }
        }
    }
    if image_exists(docker, reference).await? {
        Ok(())
    } else {
        Err(ImageError::Build {
            what: format!("build {reference}"),
            message: "the engine finished without making the image".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_runtime_image_names_an_existing_rootfs_and_an_absolute_interpreter() {
        for spec in RUNTIME_IMAGES {
            if let Some(rootfs) = spec.rootfs {
                assert!(rootfs_spec(rootfs).is_some(), "{spec:?}");
            }
            assert!(spec.interpreter.starts_with('/'), "{spec:?}");
        }
        for runtime in Runtime::ALL {
            let serve = runtime_image_spec(runtime).unwrap();
            let roles: Vec<ImageRole> = image_specs(runtime).map(|s| s.role).collect();
            if runtime.is_compiled() {
                assert_eq!(roles, [ImageRole::Serve, ImageRole::Build], "{runtime}");
                // Static programs: the serving image has no root file system.
                assert_eq!(serve.rootfs, None);
                assert_eq!(
                    serve.interpreter,
                    format!("{CODE_DIR}/{}", hearth_core::protocol::ARTIFACT_PROGRAM)
                );
            } else {
                assert_eq!(roles, [ImageRole::Serve], "{runtime}");
            }
        }
    }

    #[test]
    fn builders_have_their_own_repository() {
        let tag = AgentTag {
            version: "1.0".into(),
            digest: "abc".into(),
        };
        let builder = image_specs(Runtime::Go).nth(1).unwrap();
        assert_eq!(image_ref(builder, &tag), "hearth/go-build:1.0-abc");
        let serve = runtime_image_spec(Runtime::Go).unwrap();
        assert_eq!(image_ref(serve, &tag), "hearth/go:1.0-abc");
        let text = dockerfile(SCRATCH, serve, &tag);
        assert!(text.starts_with("FROM scratch\n"), "{text}");
        assert!(!text.contains("/tmp"), "the engine makes /tmp: {text}");
    }

    #[test]
    fn a_different_agent_binary_is_a_different_tag() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"agent one").unwrap();
        std::fs::write(&b, b"agent two").unwrap();
        let (ta, tb) = (AgentTag::of(&a).unwrap(), AgentTag::of(&b).unwrap());
        assert_ne!(ta.tag(), tb.tag());
        assert_eq!(ta.digest.len(), 12);
        assert_eq!(
            runtime_image_ref(Runtime::Python, &ta),
            format!("hearth/python:{}-{}", env!("CARGO_PKG_VERSION"), ta.digest)
        );
    }

    #[test]
    fn the_dockerfile_runs_the_agent_as_nobody_with_its_labels() {
        let tag = AgentTag {
            version: "1.0".into(),
            digest: "abc".into(),
        };
        let text = dockerfile("hearth/rootfs-interp:k", &RUNTIME_IMAGES[0], &tag);
        assert!(text.starts_with("FROM hearth/rootfs-interp:k\n"), "{text}");
        assert!(text.contains("USER 65534:65534"), "{text}");
        assert!(
            text.contains("ENTRYPOINT [\"/usr/local/bin/hearth-agent\"]"),
            "{text}"
        );
        assert!(
            text.contains("io.hearth.interpreter=\"/usr/bin/python3\""),
            "{text}"
        );
        assert!(text.contains("io.hearth.agent=\"1.0-abc\""), "{text}");
    }

    #[test]
    fn the_build_context_holds_what_the_agent_writes() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in agent: writes one runtime file where it is told.
        let agent = dir.path().join("agent");
        std::fs::write(
            &agent,
            "#!/bin/sh\n[ \"$1\" = --write-runtime-files ] || exit 3\n\
             mkdir -p \"$2/python\" && echo boot > \"$2/python/bootstrap.py\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let tag = AgentTag::of(&agent).unwrap();
        let context = build_context(&agent, "base:1", &RUNTIME_IMAGES[0], &tag).unwrap();
        let mut entries = Vec::new();
        let mut archive = tar::Archive::new(context.as_slice());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mode = entry.header().mode().unwrap();
            let mut data = String::new();
            entry.read_to_string(&mut data).unwrap();
            entries.push((path, mode, data));
        }
        let names: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "Dockerfile",
                "hearth-agent",
                "code/",
                "home/",
                "runtime/",
                "runtime/python/",
                "runtime/python/bootstrap.py"
            ]
        );
        assert_eq!(entries[1].1, 0o755);
        assert_eq!(
            entries[6],
            ("runtime/python/bootstrap.py".into(), 0o644, "boot\n".into())
        );
    }

    #[test]
    fn an_agent_that_cannot_write_its_files_fails_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, "#!/bin/sh\necho broken >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let tag = AgentTag::of(&agent).unwrap();
        let err = build_context(&agent, "base:1", &RUNTIME_IMAGES[0], &tag).unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
    }
}
