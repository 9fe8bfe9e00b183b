//! Root file systems from Debian packages, for hosts that cannot pull images: debootstrap
//! into a scratch dir, prune what a function never needs (and what a sandbox should not
//! show: `/root`, `/home`, `/var/lib`, `/etc/shadow`), pack it as a tarball that
//! `images.rs` imports into the engine.
//!
//! The tarball is cached under a key of everything that shapes it (suite, mirror,
//! packages, this file's pruning), so a second `hearth images build` reuses it. The
//! mirror is the host's own, read from `/etc/apt/sources.list` and
//! `/etc/apt/sources.list.d/` (one-line and deb822 formats). Needs root and the
//! `debootstrap` and `tar` commands.

use super::images::{io_error, ImageError, RootfsSpec};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Paths removed from every root file system (relative to its root). Bump
/// [`PRUNE_REVISION`] when this list changes, so cached tarballs are rebuilt.
const PRUNED: &[&str] = &[
    "root",
    "home",
    "srv",
    "mnt",
    "media",
    "opt",
    "var/lib",
    "var/cache",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "etc/shadow",
    "etc/shadow-",
    "etc/gshadow",
    "etc/gshadow-",
    "etc/passwd-",
    "etc/group-",
    "debootstrap",
];
/// Revision of [`PRUNED`] and of the packing, part of the cache key.
const PRUNE_REVISION: u32 = 1;

/// Lines of a failed command's output kept for its error.
const TAIL_LINES: usize = 15;

/// The host's Debian codename (`VERSION_CODENAME` of an os-release file).
pub fn host_suite(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.strip_prefix("VERSION_CODENAME=")?;
        let value = value.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The first `deb` source of `suite` with the `main` component in the apt sources under
/// `apt_dir` (normally `/etc/apt`): `sources.list`, then `sources.list.d/*.list` and
/// `*.sources` in name order. Only `http(s)` mirrors count.
pub fn debian_mirror(apt_dir: &Path, suite: &str) -> Result<String, ImageError> {
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(entries) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|ext| ext == "list" || ext == "sources")
            })
            .collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let found = if file.extension().is_some_and(|ext| ext == "sources") {
            mirror_in_deb822(&text, suite)
        } else {
            mirror_in_one_line(&text, suite)
        };
        if let Some(mirror) = found {
            return Ok(mirror);
        }
    }
    Err(ImageError::NoMirror {
        suite: suite.to_string(),
        dir: apt_dir.display().to_string(),
    })
}

fn usable(uri: &str) -> bool {
    uri.starts_with("http://") || uri.starts_with("https://")
}

/// `deb [options] URI SUITE COMPONENT...` lines.
fn mirror_in_one_line(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("").trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        // Skip a `[arch=amd64 signed-by=…]` block.
        let rest = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let (uri, line_suite) = (words.next()?, words.next()?);
        let has_main = words.any(|c| c == "main");
        (line_suite == suite && has_main && usable(uri)).then(|| uri.to_string())
    })
}

/// deb822 stanzas: `Types: deb`, `URIs:`, `Suites:`, `Components:`.
fn mirror_in_deb822(text: &str, suite: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Vec<&str> {
            stanza
                .lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.split_whitespace().collect())
                })
                .unwrap_or_default()
        };
        if field("Enabled").contains(&"no") || !field("Types").contains(&"deb") {
            continue;
        }
        if !field("Suites").contains(&suite) || !field("Components").contains(&"main") {
            continue;
        }
        if let Some(uri) = field("URIs").into_iter().find(|u| usable(u)) {
            return Some(uri.to_string());
        }
    }
    None
}

/// What makes one root file system: its spec, suite and mirror.
#[derive(Debug, Clone)]
pub struct RootfsBuild {
    /// The packages.
    pub spec: RootfsSpec,
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Debian mirror URL.
    pub mirror: String,
}

impl RootfsBuild {
    /// First 12 hex digits of a digest of everything that shapes the tarball.
    pub fn key(&self) -> String {
        let text = format!(
            "{}\n{}\n{}\n{}\n{PRUNE_REVISION}",
            self.spec.name,
            self.suite,
            self.mirror,
            self.spec.packages.join(",")
        );
        hex::encode(&Sha256::digest(text.as_bytes())[..6])
    }

    /// The cached tarball's path under `cache_dir`.
    pub fn tarball(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(format!("rootfs-{}-{}.tar", self.spec.name, self.key()))
    }

    /// The debootstrap command line that makes it into `target`.
    pub fn debootstrap_command(&self, target: &Path) -> Command {
        let mut command = Command::new("debootstrap");
        command
            .arg("--variant=minbase")
            .arg(format!("--include={}", self.spec.packages.join(",")))
            .arg(&self.suite)
            .arg(target)
            .arg(&self.mirror);
        command
    }

    /// Makes the tarball (unless already cached) and returns its path. `on_line` gets
    /// debootstrap's progress lines. Uses `<cache_dir>/rootfs-<name>.work` as scratch.
    pub fn make(
        &self,
        cache_dir: &Path,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<PathBuf, ImageError> {
        let tarball = self.tarball(cache_dir);
        if tarball.is_file() {
            return Ok(tarball);
        }
        std::fs::create_dir_all(cache_dir).map_err(|e| io_error(cache_dir, e))?;
        let work = cache_dir.join(format!("rootfs-{}.work", self.spec.name));
        remove_dir_if_present(&work)?;
        let result = self.debootstrap_prune_pack(&work, &tarball, on_line);
        let cleaned = remove_dir_if_present(&work);
        result.and(cleaned).map(|()| tarball)
    }

    fn debootstrap_prune_pack(
        &self,
        work: &Path,
        tarball: &Path,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(), ImageError> {
        let mut command = self.debootstrap_command(work);
        run_streaming(&mut command, "debootstrap", on_line)?;
        on_line("pruning docs, caches and private dirs");
        prune(work)?;
        on_line("packing the root file system");
        let partial = tarball.with_extension("tar.partial");
        let mut tar = Command::new("tar");
        tar.arg("--numeric-owner")
            .arg("--one-file-system")
            .arg("-C")
            .arg(work)
            .args([
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
            ])
            .arg("-cf")
            .arg(&partial)
            .arg(".");
        run_streaming(&mut tar, "tar", on_line)?;
        std::fs::rename(&partial, tarball).map_err(|e| io_error(tarball, e))
    }
}

/// Removes [`PRUNED`] under `root`.
pub fn prune(root: &Path) -> Result<(), ImageError> {
    for rel in PRUNED {
        let path = root.join(rel);
        let result = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue,
        };
        result.map_err(|e| io_error(&path, e))?;
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> Result<(), ImageError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(dir, e)),
    }
}

/// Runs `command`, passing each line of its stdout to `on_line`; a failure carries the
/// last lines of stdout and of stderr.
fn run_streaming(
    command: &mut Command,
    name: &str,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Command {
            command: name.to_string(),
            message: format!("cannot start it: {e} (is it installed? apt-get install {name})"),
        })?;
    let stderr = child.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep_tail(&mut tail, line);
            }
            tail
        })
    });
    let mut tail = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            on_line(&line);
            keep_tail(&mut tail, line);
        }
    }
    let status = child.wait().map_err(|e| io_error(Path::new(name), e))?;
    let errors = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        tail.extend(errors);
        Err(ImageError::Command {
            command: name.to_string(),
            message: format!("{status}: {}", tail.join(" | ")),
        })
    }
}

fn keep_tail(tail: &mut Vec<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.remove(0);
    }
    tail.push(line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::images::ROOT_FILESYSTEMS;

    #[test]
    fn the_codename_comes_from_os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\n";
        assert_eq!(host_suite(text).as_deref(), Some("bookworm"));
        assert_eq!(host_suite("ID=debian\n"), None);
    }

    #[test]
    fn the_mirror_is_the_hosts_main_source_of_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let apt = dir.path();
        std::fs::create_dir_all(apt.join("sources.list.d")).unwrap();
        std::fs::write(
            apt.join("sources.list"),
            "# deb http://old.example/debian bookworm main\n\
             deb [arch=amd64] http://deb.example/debian-security bookworm-security main\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://security.example/debian-security\n\
             Suites: bookworm-security\nComponents: main\n\n\
             Types: deb\n# a comment\nURIs: http://deb.example/debian\n\
             Suites: bookworm bookworm-updates\nComponents: main contrib\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("sources.list.d/other.list.disabled"),
            "deb http://wrong.example bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            debian_mirror(apt, "bookworm").unwrap(),
            "http://deb.example/debian"
        );
        let err = debian_mirror(apt, "trixie").unwrap_err();
        assert!(err.to_string().contains("trixie"), "{err}");
    }

    #[test]
    fn one_line_sources_need_the_suite_and_main() {
        let text = "deb http://a.example/debian bookworm contrib\n\
                    deb-src http://b.example/debian bookworm main\n\
                    deb [signed-by=/k.gpg] https://c.example/debian bookworm main non-free\n";
        assert_eq!(
            mirror_in_one_line(text, "bookworm").as_deref(),
            Some("https://c.example/debian")
        );
    }

    #[test]
    fn the_cache_key_follows_the_packages_and_the_mirror() {
        let build = |mirror: &str| RootfsBuild {
            spec: ROOT_FILESYSTEMS[0],
            suite: "bookworm".into(),
            mirror: mirror.into(),
        };
        assert_eq!(build("http://a").key(), build("http://a").key());
        assert_ne!(build("http://a").key(), build("http://b").key());
        let tarball = build("http://a").tarball(Path::new("/cache"));
        assert!(tarball.starts_with("/cache"));
        let command = build("http://a").debootstrap_command(Path::new("/w"));
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(args[0], "--variant=minbase");
        assert!(args[1].contains("python3") && args[1].contains("nodejs"));
        assert_eq!(&args[2..], ["bookworm", "/w", "http://a"]);
    }

    #[test]
    fn pruning_removes_private_dirs_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["root", "home/u", "var/lib/dpkg", "usr/bin", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/shadow"), "root:*:").unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0").unwrap();
        prune(root).unwrap();
        for gone in ["root", "home", "var/lib", "etc/shadow"] {
            assert!(!root.join(gone).exists(), "{gone}");
        }
        assert!(root.join("usr/bin").is_dir());
        assert!(root.join("etc/passwd").is_file());
    }

    #[test]
    fn a_failing_command_reports_its_last_lines() {
        let mut lines = Vec::new();
        let err = run_streaming(
            Command::new("sh").args(["-c", "echo one; echo two >&2; exit 4"]),
            "sh",
            &mut |l: &str| lines.push(l.to_string()),
        )
        .unwrap_err();
        assert_eq!(lines, ["one"], "stdout is streamed");
        assert!(err.to_string().contains("one | two"), "{err}");
    }
}
