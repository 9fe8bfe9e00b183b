//! `hearth images build`: makes the Docker sandbox's runtime images on this host, with
//! the agent inside, since nothing can be pulled here.
//!
//! Each root file system (Debian packages, `hearth_sandbox::docker::images::
//! ROOT_FILESYSTEMS`) is debootstrapped from the host's own Debian mirror, pruned, packed
//! as a tarball cached under `--cache-dir` (inside the project's `target/` by default) and
//! imported into the engine; each runtime image is then built from it (or from
//! `scratch`: the compiled runtimes' serving images) with the agent, and each compiled
//! runtime gets a builder image with its toolchain (`hearth/<runtime>-build`).
//! Images are tagged with the agent's version and digest, so what exists for this agent
//! is skipped and a new agent gets new images. Steps show a spinner on a terminal and
//! one line each in a log.

use crate::up::find_agent;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hearth_core::Runtime;
use hearth_sandbox::docker::images::{self, AgentTag, RuntimeImageSpec};
use hearth_sandbox::docker::rootfs::{self, RootfsBuild};
use hearth_sandbox::docker::{self, Docker};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `hearth images` subcommands.
#[derive(Subcommand)]
pub enum ImagesCommand {
    /// Build the runtime images this agent needs (skips those that exist).
    Build(BuildArgs),
}

/// `hearth images build` options.
#[derive(Args)]
pub struct BuildArgs {
    /// Runtimes to build (default: every runtime with an image).
    #[arg(long = "runtime", value_delimiter = ',')]
    runtimes: Vec<String>,
    /// The static agent binary (default: beside `hearth`, or the workspace build).
    #[arg(long, env = "HEARTH_AGENT")]
    agent: Option<PathBuf>,
    /// Where root file system tarballs are cached.
    #[arg(
        long,
        env = "HEARTH_IMAGE_CACHE",
        default_value = "target/hearth-images"
    )]
    cache_dir: PathBuf,
    /// Debian mirror (default: the host's apt sources).
    #[arg(long)]
    mirror: Option<String>,
    /// Debian suite (default: the host's codename).
    #[arg(long)]
    suite: Option<String>,
    /// Rebuild the runtime images even when they exist (cached root file systems are
    /// reused; delete the cache dir to debootstrap again).
    #[arg(long)]
    force: bool,
}

pub async fn run(command: ImagesCommand) -> anyhow::Result<()> {
    match command {
        ImagesCommand::Build(args) => build(args).await,
    }
}

async fn build(args: BuildArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let agent = find_agent(args.agent.as_deref())?;
    let tag = AgentTag::of(&agent)?;
    let wanted = selected_specs(&args.runtimes)?;
    let docker = docker::connect(&docker::default_socket()).await?;
    println!(
        "images: agent {} ({}), images {}",
        tag.tag(),
        agent.display(),
        wanted
            .iter()
            .map(|s| images::image_ref(s, &tag))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut todo = Vec::new();
    for spec in wanted {
        let reference = images::image_ref(spec, &tag);
        if !args.force && images::image_exists(&docker, &reference).await? {
            println!("images: {reference} exists");
        } else {
            todo.push((spec, reference));
        }
    }
    if todo.is_empty() {
        println!("images: all up to date");
        return Ok(());
    }

    let suite = match &args.suite {
        Some(suite) => suite.clone(),
        None => std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| rootfs::host_suite(&text))
            .unwrap_or_else(|| "bookworm".to_string()),
    };
    let mirror = match &args.mirror {
        Some(mirror) => mirror.clone(),
        None => rootfs::debian_mirror(Path::new("/etc/apt"), &suite)?,
    };
    let mut bases: Vec<(&str, String)> = Vec::new();
    for (spec, _) in &todo {
        let Some(rootfs) = spec.rootfs else { continue };
        if bases.iter().any(|(name, _)| *name == rootfs) {
            continue;
        }
        let rootfs_spec = images::rootfs_spec(rootfs)
            .with_context(|| format!("no root file system named {rootfs}"))?;
        let build = RootfsBuild {
            spec: *rootfs_spec,
            suite: suite.clone(),
            mirror: mirror.clone(),
        };
        let base = ensure_rootfs(&docker, &build, &args.cache_dir).await?;
        bases.push((rootfs, base));
    }

    for (spec, reference) in todo {
        let base = match spec.rootfs {
            None => images::SCRATCH.to_string(),
            Some(rootfs) => bases
                .iter()
                .find(|(name, _)| *name == rootfs)
                .map(|(_, base)| base.clone())
                .context("root file system missing")?,
        };
        let step = Step::start(&format!("build {reference}"));
        let context = {
            let (agent, base, tag) = (agent.clone(), base.clone(), tag.clone());
            tokio::task::spawn_blocking(move || images::build_context(&agent, &base, spec, &tag))
                .await??
        };
        let bar = step.bar.clone();
        let mut on_line = move |line: &str| bar.set_message(line.to_string());
        images::build_image(&docker, context, &reference, &mut on_line).await?;
        step.done();
    }
    println!("images: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The image specs (serving and builder) of the runtimes named (all when none is).
fn selected_specs(names: &[String]) -> anyhow::Result<Vec<&'static RuntimeImageSpec>> {
    if names.is_empty() {
        return Ok(images::RUNTIME_IMAGES.iter().collect());
    }
    let mut specs = Vec::new();
    for name in names {
        let runtime: Runtime = name
            .parse()
            .map_err(|e| anyhow::anyhow!("runtime {name:?}: {e}"))?;
        let before = specs.len();
        specs.extend(images::image_specs(runtime));
        if specs.len() == before {
            bail!("there is no Docker image for {runtime} functions yet");
        }
    }
    Ok(specs)
}

/// Makes sure the root file system's image exists: debootstraps and packs it unless
/// its tarball is cached, then imports it. Returns the image reference.
async fn ensure_rootfs(
    docker: &Docker,
    build: &RootfsBuild,
    cache_dir: &Path,
) -> anyhow::Result<String> {
    let reference = images::rootfs_image_ref(build.spec.name, &build.key());
    if images::image_exists(docker, &reference).await? {
        println!("images: {reference} exists");
        return Ok(reference);
    }
    let tarball = build.tarball(cache_dir);
    if tarball.is_file() {
        println!("images: using cached {}", tarball.display());
    } else {
        let step = Step::start(&format!(
            "debootstrap {} with {} from {} (a few minutes)",
            build.suite,
            build.spec.packages.join(", "),
            build.mirror
        ));
        let bar = step.bar.clone();
        let (build, cache_dir) = (build.clone(), cache_dir.to_path_buf());
        tokio::task::spawn_blocking(move || {
            build.make(&cache_dir, &mut |line: &str| {
                bar.set_message(line.to_string())
            })
        })
        .await??;
        step.done();
    }
    let step = Step::start(&format!("import {} as {reference}", tarball.display()));
    images::import_rootfs(docker, &tarball, &reference).await?;
    step.done();
    Ok(reference)
}

/// One step: a spinner with the latest progress line on a terminal, and a line when
/// it starts and ends either way.
struct Step {
    what: String,
    bar: ProgressBar,
    started: Instant,
}

impl Step {
    fn start(what: &str) -> Step {
        println!("images: {what}");
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("  {spinner} [{elapsed}] {wide_msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Step {
            what: what.to_string(),
            bar,
            started: Instant::now(),
        }
    }

    fn done(self) {
        self.bar.finish_and_clear();
        println!(
            "images: {} done in {:.1} s",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
    }
}
