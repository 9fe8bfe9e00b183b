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

/// Why a runtime has no usable interpreter or toolchain on this host. Cloned into each
/// call that needs the program, so it keeps what matters of an I/O error (its kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// A toolchain was asked of a runtime that is not compiled.
    #[error("{runtime} functions are not compiled")]
    NotCompiled {
        /// The runtime.
        runtime: Runtime,
    },
    /// None of the candidates exists.
    #[error("{runtime} functions need {}, which is missing", path.display())]
    Missing {
        /// The runtime.
        runtime: Runtime,
        /// The first place looked at.
        path: PathBuf,
    },
    /// Candidates exist, but none can run in the sandbox.
    #[error("no usable {} for {runtime}: {}", program_kind(*runtime), rejected_list(rejected))]
    Unusable {
        /// The runtime.
        runtime: Runtime,
        /// Each candidate with why it was refused.
        rejected: Vec<(PathBuf, Rejection)>,
    },
    /// A compiled runtime's toolchain is missing or unusable: builds need it.
    #[error("{cause} (builds of {runtime} functions need it: run scripts/setup.sh)")]
    NoToolchain {
        /// The runtime.
        runtime: Runtime,
        /// Why its toolchain is unusable.
        cause: Box<ProgramError>,
    },
}

/// Why one candidate binary cannot run in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// It cannot be read.
    #[error("cannot read {}: {kind}", path.display())]
    Unreadable {
        /// The binary.
        path: PathBuf,
        /// The I/O error's kind.
        kind: std::io::ErrorKind,
    },
    /// It is a script (a shim), not an ELF binary.
    #[error("{} is a script, not a binary", path.display())]
    Script {
        /// The file.
        path: PathBuf,
    },
    /// It lies outside the directories the sandbox sees.
    #[error("{} is outside the sandbox's read-only directories", path.display())]
    Invisible {
        /// The binary.
        path: PathBuf,
    },
}

fn program_kind(runtime: Runtime) -> &'static str {
    if runtime.is_compiled() {
        "toolchain"
    } else {
        "interpreter"
    }
}

fn rejected_list(rejected: &[(PathBuf, Rejection)]) -> String {
    rejected
        .iter()
        .map(|(candidate, why)| format!("{} ({why})", candidate.display()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Resolves `runtime`'s interpreter to a canonical binary under one of `visible_dirs`
/// (already canonical): `None` for a compiled runtime, whose instances run the built
/// program. The error names what is missing, for the user.
pub fn resolve(
    runtime: Runtime,
    visible_dirs: &[PathBuf],
) -> Result<Option<PathBuf>, ProgramError> {
    if runtime.is_compiled() {
        return Ok(None);
    }
    first_usable(runtime, &candidates(runtime), visible_dirs).map(Some)
}

/// Resolves a compiled runtime's toolchain driver (`g++`, `go`) the same way.
pub fn toolchain(runtime: Runtime, visible_dirs: &[PathBuf]) -> Result<PathBuf, ProgramError> {
    let candidates = toolchain_candidates(runtime);
    if candidates.is_empty() {
        return Err(ProgramError::NotCompiled { runtime });
    }
    first_usable(runtime, &candidates, visible_dirs).map_err(|cause| ProgramError::NoToolchain {
        runtime,
        cause: Box::new(cause),
    })
}

/// The first of `candidates` that resolves to a usable binary.
fn first_usable(
    runtime: Runtime,
    candidates: &[PathBuf],
    visible_dirs: &[PathBuf],
) -> Result<PathBuf, ProgramError> {
    let mut rejected = Vec::new();
    for candidate in candidates {
        let Ok(real) = candidate.canonicalize() else {
            continue;
        };
        match check_binary(&real, visible_dirs) {
            Ok(()) => return Ok(real),
            Err(why) => rejected.push((candidate.clone(), why)),
        }
    }
    match candidates.first() {
        Some(first) if rejected.is_empty() => Err(ProgramError::Missing {
            runtime,
            path: first.clone(),
        }),
        _ => Err(ProgramError::Unusable { runtime, rejected }),
    }
}

/// An interpreter must be an ELF executable the sandbox can see.
fn check_binary(path: &Path, visible_dirs: &[PathBuf]) -> Result<(), Rejection> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| Rejection::Unreadable {
            path: path.to_path_buf(),
            kind: e.kind(),
        })?;
    if &magic != b"\x7fELF" {
        return Err(Rejection::Script {
            path: path.to_path_buf(),
        });
    }
    if !visible_dirs.iter().any(|dir| path.starts_with(dir)) {
        return Err(Rejection::Invisible {
            path: path.to_path_buf(),
        });
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
        assert!(matches!(err, Rejection::Script { .. }), "{err}");

        let elf = dir.path().join("node");
        std::fs::write(&elf, b"\x7fELF\x02\x01").unwrap();
        let elf = elf.canonicalize().unwrap();
        assert_eq!(check_binary(&elf, &visible), Ok(()));
        let err = check_binary(&elf, &[PathBuf::from("/usr")]).unwrap_err();
        assert!(matches!(err, Rejection::Invisible { .. }), "{err}");
    }

    #[test]
    fn compiled_runtimes_have_no_interpreter_but_a_toolchain() {
        let usr = [PathBuf::from("/usr")];
        assert_eq!(resolve(Runtime::Go, &usr), Ok(None));
        assert_eq!(resolve(Runtime::Cpp, &usr), Ok(None));
        let err = toolchain(Runtime::Python, &usr).unwrap_err();
        assert!(err.to_string().contains("not compiled"), "{err}");
        // Outside the visible dirs a toolchain is refused like an interpreter.
        if let Ok(gxx) = Path::new("/usr/bin/g++").canonicalize() {
            assert_eq!(toolchain(Runtime::Cpp, &usr), Ok(gxx));
            let err = toolchain(Runtime::Cpp, &[PathBuf::from("/opt")]).unwrap_err();
            assert!(err.to_string().contains("outside"), "{err}");
        }
    }
}
