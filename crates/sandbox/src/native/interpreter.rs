//! Finding each runtime's real interpreter binary on the host.
//!
//! The sandbox sees only the read-only runtime directories, and a shim (pyenv's
//! `python3` is a shell script) would cost a second interpreter start, so every
//! interpreter is resolved to a canonical ELF binary inside those directories.

use hearth_core::Runtime;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where each runtime's interpreter is looked for, in order.
fn candidates(runtime: Runtime) -> Vec<PathBuf> {
    match runtime {
        // Debian's python; never the `python3` first on PATH (a pyenv shim here).
        Runtime::Python => vec![PathBuf::from("/usr/bin/python3")],
        Runtime::Nodejs => {
            let mut paths = vec![PathBuf::from("/usr/bin/node")];
            paths.extend(on_path(OsStr::new("node")));
            paths
        }
        Runtime::Cpp | Runtime::Go => Vec::new(),
    }
}

/// `name` in each directory of `$PATH`.
fn on_path(name: &OsStr) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect()
        })
        .unwrap_or_default()
}

/// Resolves `runtime`'s interpreter to a canonical binary under one of `visible_dirs`
/// (already canonical). The error names what is missing, for the user.
pub fn resolve(runtime: Runtime, visible_dirs: &[PathBuf]) -> Result<PathBuf, String> {
    let candidates = candidates(runtime);
    if candidates.is_empty() {
        return Err(format!(
            "the native sandbox cannot run {runtime} functions yet"
        ));
    }
    let mut rejected = Vec::new();
    for candidate in &candidates {
        let Ok(real) = candidate.canonicalize() else {
            continue;
        };
        match check_binary(&real, visible_dirs) {
            Ok(()) => return Ok(real),
            Err(why) => rejected.push(format!("{} ({why})", candidate.display())),
        }
    }
    if rejected.is_empty() {
        Err(format!(
            "{runtime} functions need {}, which is missing",
            candidates[0].display()
        ))
    } else {
        Err(format!(
            "no usable interpreter for {runtime}: {}",
            rejected.join("; ")
        ))
    }
}

/// An interpreter must be an ELF executable the sandbox can see.
fn check_binary(path: &Path, visible_dirs: &[PathBuf]) -> Result<(), String> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if &magic != b"\x7fELF" {
        return Err(format!("{} is a script, not a binary", path.display()));
    }
    if !visible_dirs.iter().any(|dir| path.starts_with(dir)) {
        return Err(format!(
            "{} is outside the sandbox's read-only directories",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_invisible_binaries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("python3");
        std::fs::write(&script, "#!/bin/sh\nexec python3 \"$@\"\n").unwrap();
        let visible = vec![dir.path().canonicalize().unwrap()];
        let err = check_binary(&script.canonicalize().unwrap(), &visible).unwrap_err();
        assert!(err.contains("script"), "{err}");

        let elf = dir.path().join("node");
        std::fs::write(&elf, b"\x7fELF\x02\x01").unwrap();
        let elf = elf.canonicalize().unwrap();
        assert_eq!(check_binary(&elf, &visible), Ok(()));
        let err = check_binary(&elf, &[PathBuf::from("/usr")]).unwrap_err();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn compiled_runtimes_have_no_interpreter() {
        let err = resolve(Runtime::Go, &[PathBuf::from("/usr")]).unwrap_err();
        assert!(err.contains("go"), "{err}");
    }
}
