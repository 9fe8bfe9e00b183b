//! Finding each runtime's real interpreter, and each compiled runtime's toolchain, on
//! the host.
//!
//! The sandbox sees only the read-only runtime directories, and a shim (pyenv's
//! `python3` is a shell script) would cost a second interpreter start, so every
//! interpreter is resolved to a canonical ELF binary inside those directories. Compiled
//! runtimes (cpp, go) have no interpreter: their instances run the built program; their
//! toolchain's driver (`g++`, `go`) is resolved the same way, for builds.

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

/// Where each compiled runtime's toolchain driver is looked for, in order.
fn toolchain_candidates(runtime: Runtime) -> Vec<PathBuf> {
    let name = match runtime {
        Runtime::Cpp => "g++",
        Runtime::Go => "go",
        Runtime::Python | Runtime::Nodejs => return Vec::new(),
    };
    let mut paths = vec![Path::new("/usr/bin").join(name)];
    if runtime == Runtime::Go {
        // Debian's golang-go links /usr/bin/go into /usr/lib/go-<version>.
        paths.push(PathBuf::from("/usr/lib/go/bin/go"));
    }
    paths.extend(on_path(OsStr::new(name)));
    paths
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
/// (already canonical): `None` for a compiled runtime, whose instances run the built
/// program. The error names what is missing, for the user.
pub fn resolve(runtime: Runtime, visible_dirs: &[PathBuf]) -> Result<Option<PathBuf>, String> {
    if runtime.is_compiled() {
        return Ok(None);
    }
    first_usable(runtime, &candidates(runtime), visible_dirs).map(Some)
}

/// Resolves a compiled runtime's toolchain driver (`g++`, `go`) the same way.
pub fn toolchain(runtime: Runtime, visible_dirs: &[PathBuf]) -> Result<PathBuf, String> {
    let candidates = toolchain_candidates(runtime);
    if candidates.is_empty() {
        return Err(format!("{runtime} functions are not compiled"));
    }
    first_usable(runtime, &candidates, visible_dirs).map_err(|why| {
        format!("{why} (builds of {runtime} functions need it: run scripts/setup.sh)")
    })
}

/// The first of `candidates` that resolves to a usable binary.
fn first_usable(
    runtime: Runtime,
    candidates: &[PathBuf],
    visible_dirs: &[PathBuf],
) -> Result<PathBuf, String> {
    let mut rejected = Vec::new();
    for candidate in candidates {
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
            "no usable {} for {runtime}: {}",
            if runtime.is_compiled() {
                "toolchain"
            } else {
                "interpreter"
            },
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
    fn compiled_runtimes_have_no_interpreter_but_a_toolchain() {
        let usr = [PathBuf::from("/usr")];
        assert_eq!(resolve(Runtime::Go, &usr), Ok(None));
        assert_eq!(resolve(Runtime::Cpp, &usr), Ok(None));
        let err = toolchain(Runtime::Python, &usr).unwrap_err();
        assert!(err.contains("not compiled"), "{err}");
        // Outside the visible dirs a toolchain is refused like an interpreter.
        if let Ok(gxx) = Path::new("/usr/bin/g++").canonicalize() {
            assert_eq!(toolchain(Runtime::Cpp, &usr), Ok(gxx));
            let err = toolchain(Runtime::Cpp, &[PathBuf::from("/opt")]).unwrap_err();
            assert!(err.contains("outside"), "{err}");
        }
    }
}
