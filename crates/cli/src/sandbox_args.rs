//! Options of the sandbox that `hearth up` and `hearth worker` share, and the data dir
//! they both make.

use anyhow::Context;
use clap::Args;
use hearth_sandbox::uids::UidRange;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// How sandboxes are made, past the backend's choice.
#[derive(Args, Clone, Debug)]
pub struct SandboxArgs {
    /// Host uids the sandboxes run under, `FIRST-LAST`: each instance takes a pair of its
    /// own (its agent's and its function's), so no two share a per-uid kernel limit.
    /// Every hearth on the host draws from the range through `/run/hearth/uids`.
    #[arg(long, value_parser = UidRange::parse, default_value = "2000000-2065535")]
    pub sandbox_uids: UidRange,
    /// Run sandboxes even where the host cannot limit their swap or CPU (swap accounting
    /// off, no cpu controller): without it, such a sandbox is refused with an error.
    #[arg(long)]
    pub allow_missing_limits: bool,
}

/// Makes the data dir, 0700 (it holds the admin key, the database, every function's
/// code), and returns its canonical path. An existing one is left as it is.
pub fn create_data_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    Ok(data_dir.canonicalize()?)
}
