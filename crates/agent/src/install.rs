//! Installing a Python function's dependencies: the instance was started with
//! `Purpose::Build` for the python runtime, its code is what the worker fetched on the
//! host (`requirements.txt`, already checked, and the wheels under `wheels/`), and its
//! one invocation runs `pip install --no-index` from those wheels into a scratch dir,
//! with no network, under the same limits, sweep and deadline as any invocation. The
//! `Result`'s payload is a tar of the installed tree, rooted at `python/`
//! ([`DEPS_PYTHON`]): the version's dependency layer.
//!
//! Only wheels are there, so installing runs no package code (pip unpacks them and
//! compiles their bytecode); this happens in the sandbox all the same.

use crate::error::AgentError;
use hearth_core::protocol::DEPS_PYTHON;
use std::path::Path;

/// The wheel directory inside the code the worker sends.
pub const WHEELS_DIR: &str = "wheels";
/// The checked requirements inside that code.
pub const REQUIREMENTS: &str = "requirements.txt";
/// pip's output lines kept in an error when it names none as `ERROR:`.
const TAIL_LINES: usize = 20;

/// `python3 -m pip install` from the wheels in `code` into `target`, nothing else.
pub fn args(code: &Path, target: &Path) -> Vec<String> {
    let code = code.to_string_lossy();
    [
        "-m",
        "pip",
        "install",
        "--no-index",
        "--only-binary=:all:",
        "--find-links",
        &format!("{code}/{WHEELS_DIR}"),
        "--target",
        &target.to_string_lossy(),
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--progress-bar",
        "off",
        "--requirement",
        &format!("{code}/{REQUIREMENTS}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Where the installed tree goes, under the build's `out` dir.
pub fn target(out: &Path) -> std::path::PathBuf {
    out.join(DEPS_PYTHON)
}

/// Environment of pip (besides PATH, HOME, TMPDIR, LC_ALL): no config files, no prompt.
pub fn env() -> Vec<(String, String)> {
    [
        ("PIP_CONFIG_FILE", "/dev/null"),
        ("PIP_NO_INPUT", "1"),
        ("PYTHONNOUSERSITE", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The layer: an uncompressed tar of `target` under `python/`, links kept as links.
pub fn pack(target: &Path) -> Result<Vec<u8>, AgentError> {
    if !target.is_dir() {
        std::fs::create_dir_all(target).map_err(|e| AgentError::at("mkdir", target, e))?;
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder
        .append_dir_all(DEPS_PYTHON, target)
        .and_then(|_| builder.into_inner())
        .map_err(|e| AgentError::at("tar", target, e))
}

/// pip's complaint for the API: its `ERROR:` lines, else its last lines.
pub fn message(output: &str) -> String {
    let errors: Vec<&str> = output.lines().filter(|l| l.starts_with("ERROR:")).collect();
    let lines: Vec<&str> = if errors.is_empty() {
        let all: Vec<&str> = output.lines().collect();
        all[all.len().saturating_sub(TAIL_LINES)..].to_vec()
    } else {
        errors
    };
    let text = lines.join("\n").trim().to_string();
    if text.is_empty() {
        "pip failed without a message".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_installs_offline_from_the_wheels_only() {
        let args = args(Path::new("/code"), Path::new("/tmp/b/out/python"));
        for flag in ["--no-index", "--only-binary=:all:"] {
            assert!(args.contains(&flag.to_string()), "{args:?}");
        }
        let at = |f: &str| args[args.iter().position(|a| a == f).unwrap() + 1].clone();
        assert_eq!(at("--find-links"), "/code/wheels");
        assert_eq!(at("--target"), "/tmp/b/out/python");
        assert_eq!(at("--requirement"), "/code/requirements.txt");
    }

    #[test]
    fn messages_keep_pips_errors() {
        let out = "Looking in links: /code/wheels\nProcessing x\nERROR: No matching distribution found for numpy\n";
        assert_eq!(
            message(out),
            "ERROR: No matching distribution found for numpy"
        );
        assert_eq!(message("a\nb\n"), "a\nb");
        assert_eq!(message(""), "pip failed without a message");
    }

    #[test]
    fn the_layer_is_rooted_at_python() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("python");
        std::fs::create_dir_all(target.join("pkg")).unwrap();
        std::fs::write(target.join("pkg/__init__.py"), "X = 1\n").unwrap();
        let tar = pack(&target).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.contains(&"python/pkg/__init__.py".to_string()),
            "{names:?}"
        );
    }
}
