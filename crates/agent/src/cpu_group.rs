//! The cgroup with the function's CPU quota (native sandbox on cgroup v1, containers): the agent itself
//! stays outside it, so that reading pipes, reaping and sweeping after each invocation
//! never spend a small function's share and stall its next call; every process the agent
//! starts joins it before it runs anything (the Python zygote's forks inherit it).
//!
//! The worker opens the group's `cgroup.procs` as root and passes the fd, named by
//! [`FUNCTION_CGROUP_FD_ENV`]; the kernel checks the opener's credentials, so the write
//! still works after the agent dropped its own. The fd is close-on-exec in the agent:
//! no runtime process ever holds it. In a container the worker hands the same fd over a
//! socket instead ([`crate::cpu_handover`]). Without either (tests, a v2 native host)
//! there is no such group: the quota is the whole sandbox's.

use crate::error::{check, AgentError, ConfigError};
use hearth_core::protocol::FUNCTION_CGROUP_FD_ENV;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// Lowest fd number the group's fd is moved to (away from the 0-3 children get).
const HIGH_FD: i32 = 64;

/// The fd of the group's `cgroup.procs`, or -1.
static PROCS_FD: AtomicI32 = AtomicI32::new(-1);

/// The adopted fd of the group's `cgroup.procs`, if any.
pub fn fd() -> Option<i32> {
    Some(PROCS_FD.load(Ordering::Relaxed)).filter(|fd| *fd >= 0)
}

/// Takes the fd the worker passed, if any. Call once, at start, single-threaded.
pub fn adopt() -> Result<(), AgentError> {
    let Some(value) = std::env::var_os(FUNCTION_CGROUP_FD_ENV) else {
        return Ok(());
    };
    std::env::remove_var(FUNCTION_CGROUP_FD_ENV);
    let fd: i32 = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or_else(|| ConfigError::CgroupFd {
            value: value.clone(),
        })?;
    install(fd)
}

/// Makes `fd` (the group's `cgroup.procs`, ours alone) the group's fd: moved high,
/// close-on-exec. Call at start, single-threaded.
pub fn install(fd: i32) -> Result<(), AgentError> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd number; no pointers. A closed fd fails with EBADF.
    let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    let moved = check(moved, || format!("take the function's cgroup fd {fd}"))?;
    // SAFETY: `fd` was handed to us alone and is now duplicated.
    unsafe { libc::close(fd) };
    PROCS_FD.store(moved, Ordering::Relaxed);
    Ok(())
}

/// In a forked child before exec: joins the function's group. Async-signal-safe (one
/// `write`); an error must stop the exec, or the process would run outside its quota.
pub fn join_in_child() -> io::Result<()> {
    let fd = PROCS_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return Ok(());
    }
    // SAFETY: one valid byte written to an open fd.
    match unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } {
        1 => Ok(()),
        -1 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

/// Moves process `pid` (its every thread) into the function's group; nothing to do when
/// there is no such group.
pub fn move_into(pid: i32) -> Result<(), AgentError> {
    let fd = PROCS_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return Ok(());
    }
    let text = pid.to_string();
    // SAFETY: writes the bytes of a live string to an open fd.
    let written = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
    if written == text.len() as isize {
        Ok(())
    } else {
        Err(AgentError::last_os(format!(
            "move process {pid} into the function's CPU group"
        )))
    }
}
