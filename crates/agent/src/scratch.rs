//! The scratch dirs every process of the instance may write (`/tmp`, `/dev/shm`): emptied
//! after every invocation, so nothing one caller wrote is seen by the next (nor by a
//! runtime process started later, such as a restarted zygote).
//!
//! Everything the function writes there belongs to its uid, which the agent runs as, so
//! the agent can remove it all; the removal never follows a symlink (see `output.rs`).

use crate::error::AgentError;
use crate::output;
use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The shared-memory dir, emptied like `/tmp` when the sandbox has one.
pub const SHM_DIR: &str = "/dev/shm";

/// The dirs to empty.
#[derive(Debug, Clone)]
pub struct ScratchDirs {
    dirs: Vec<(PathBuf, CString)>,
}

impl ScratchDirs {
    /// Empties `dirs` after each invocation (a dir that does not exist is left alone).
    pub fn new(dirs: &[&Path]) -> ScratchDirs {
        let dirs = dirs
            .iter()
            .filter_map(|d| {
                Some((
                    d.to_path_buf(),
                    CString::new(d.as_os_str().as_bytes()).ok()?,
                ))
            })
            .collect();
        ScratchDirs { dirs }
    }

    /// Removes everything in every dir; an error means a dir could not be emptied (the
    /// instance must not serve again).
    pub fn wipe(&self) -> Result<(), AgentError> {
        for (path, path_c) in &self.dirs {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: `path_c` is a NUL-terminated string that outlives the call.
            let fd = unsafe { libc::open(path_c.as_ptr(), flags) };
            if fd < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::NotFound {
                    continue;
                }
                return Err(AgentError::at("open", path, e));
            }
            // SAFETY: open just returned this fd; it is ours alone.
            let dir = unsafe { OwnedFd::from_raw_fd(fd) };
            match output::is_empty(&dir) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Err(AgentError::at("read", path, e)),
            }
            output::clear(&dir, 0).map_err(|e| AgentError::at("empty", path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn everything_is_removed_and_no_link_is_followed() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), "x").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join(".local/lib/site")).unwrap();
        fs::write(tmp.path().join(".local/lib/site/usercustomize.py"), "x").unwrap();
        fs::write(tmp.path().join("secret"), "x").unwrap();
        symlink(outside.path(), tmp.path().join("link")).unwrap();
        let locked = tmp.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::write(locked.join("f"), "x").unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let missing = tmp.path().join("no-such-dir");
        ScratchDirs::new(&[tmp.path(), &missing]).wipe().unwrap();
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert!(outside.path().join("keep").exists());
    }
}
