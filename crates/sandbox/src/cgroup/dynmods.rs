//! Cheap moves between cgroups: the kernel's `favordynmods`.
//!
//! Moving a process into another cgroup (a write to `cgroup.procs`) takes the kernel's
//! global `cgroup_threadgroup_rwsem` for writing, which waits out an RCU grace period:
//! 6-20 ms per move measured on a loaded 2-core host (cgroup v1, kernel 6.18), against
//! 0.2 ms with `favordynmods`. hearth moves a process on the path of a call: the agent
//! into its cgroup at every instance start, a Node.js standby into the function's CPU
//! group before every invocation.
//!
//! `favordynmods` (kernel 6.0 and later) is a mount option of a cgroup hierarchy that
//! makes such moves cheap for the whole host, at the cost of a little more work in every
//! fork and exit (the kernel's documented trade). Any hierarchy that carries it is
//! enough, so hearth mounts a named v1 hierarchy of its own with it (no controller, no
//! group in it), keeps it alive through an open fd and detaches the mount at once: no
//! mount point is left behind and none of the host's mounts changes. From kernel 6.18 the
//! kernel keeps cheap moves once enabled (a one-way switch); before, they last while
//! the fd is open (this process's life). A host that refuses (no privilege, an older
//! kernel, v1 named hierarchies turned off) keeps the slow moves, with a log line.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// The fd that keeps our hierarchy alive, once made (or `None` when the host refused).
static HELD: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// Turns on cheap cgroup moves for the host, once per process; true when they are on.
pub fn favor_dynamic_moves() -> bool {
    HELD.get_or_init(|| match hold_hierarchy() {
        Ok(fd) => {
            tracing::info!("cgroup moves favoured (favordynmods): cheap moves into a cgroup");
            Some(fd)
        }
        Err(error) => {
            tracing::info!(%error, "cgroup moves stay slow: favordynmods refused");
            None
        }
    })
    .is_some()
}

/// The mount options of our hierarchy: no controller, a name of this process's own.
fn mount_options(pid: u32) -> String {
    format!("none,name=hearth_dynmods_{pid},favordynmods")
}

/// Mounts the named hierarchy on a fresh temporary dir, opens it, detaches the mount
/// and removes the dir; the open fd is all that keeps the hierarchy.
fn hold_hierarchy() -> io::Result<OwnedFd> {
    let dir = tempfile::Builder::new()
        .prefix("hearth-dynmods-")
        .tempdir()?;
    let path = CString::new(dir.path().as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let options = CString::new(mount_options(std::process::id()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: every pointer is a live NUL-terminated string.
    let mounted = unsafe {
        libc::mount(
            c"cgroup".as_ptr(),
            path.as_ptr(),
            c"cgroup".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if mounted != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a live NUL-terminated path; plain flags.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    let opened = match fd {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: `fd` was just returned by open and is ours alone.
        fd => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
    };
    // Detached whatever happened: the fd (if any) keeps the hierarchy, nothing else.
    // SAFETY: a live NUL-terminated path; plain flags.
    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    opened
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hierarchy_is_named_for_this_process_and_has_no_controller() {
        assert_eq!(
            mount_options(42),
            "none,name=hearth_dynmods_42,favordynmods"
        );
    }

    #[test]
    fn no_mount_is_left_behind_whether_or_not_the_host_allows_it() {
        let first = favor_dynamic_moves();
        assert_eq!(favor_dynamic_moves(), first, "decided once per process");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains("hearth_dynmods_") && !mounts.contains("hearth-dynmods-"),
            "{mounts}"
        );
    }
}
