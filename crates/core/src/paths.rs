//! Where things are inside a sandbox, named once for the agent and both backends: the
//! code dir, the program a compiled function runs, and the dirs a build works in.

use crate::protocol::ARTIFACT_PROGRAM;
use std::path::{Path, PathBuf};

/// The function's unpacked code (read-only), the cwd of its processes.
pub const CODE_DIR: &str = "/code";

/// The dir a build works in, under the sandbox's scratch dir (`/tmp`): compiler
/// messages name files under it, so the agent strips it from them.
pub const BUILD_DIR_NAME: &str = "hearth-build";

/// The program a compiled function's instance runs: the built artifact's program,
/// unpacked into the code dir.
pub fn served_program() -> String {
    format!("{CODE_DIR}/{ARTIFACT_PROGRAM}")
}

/// The dirs of one build, under [`BUILD_DIR_NAME`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDirs {
    /// The build's own dir; removed when the build ends.
    pub root: PathBuf,
    /// A writable copy of the code: the toolchain's cwd.
    pub src: PathBuf,
    /// What the build produces (the program, or an installed dependency tree).
    pub out: PathBuf,
    /// The compiled program the build must leave, in `out`.
    pub program: PathBuf,
    /// `HOME` and `TMPDIR` of the toolchain, its caches.
    pub home: PathBuf,
}

impl BuildDirs {
    /// The build dirs under the scratch dir `tmp`.
    pub fn under(tmp: &Path) -> BuildDirs {
        let root = tmp.join(BUILD_DIR_NAME);
        let out = root.join("out");
        BuildDirs {
            src: root.join("src"),
            program: out.join(ARTIFACT_PROGRAM),
            home: root.join("home"),
            out,
            root,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_lies_in_the_code_dir_and_builds_under_tmp() {
        assert_eq!(served_program(), "/code/function");
        let dirs = BuildDirs::under(Path::new("/tmp"));
        assert_eq!(dirs.program, Path::new("/tmp/hearth-build/out/function"));
        assert!(dirs.src.starts_with(&dirs.root) && dirs.home.starts_with(&dirs.root));
    }
}
