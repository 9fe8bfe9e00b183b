//! In a container: taking the fd of the function's CPU group from the worker.
//!
//! The engine can pass no fd into a container, and its cgroup file system is read-only
//! there, so the worker (root on the host) creates the group beside the container's own
//! and hands its `cgroup.procs`, opened on the host, over an abstract unix socket that
//! the agent binds in the container's network namespace (no path, no mount; the
//! container has no other network). The agent binds it first thing, while it is the
//! only process in the container, and takes one connection from outside its pid
//! namespace (the peer's pid reads 0), then closes the socket. One byte with no fd:
//! the host has no such group, the quota is the container's.

use crate::error::{check, AgentError, ConfigError};
use hearth_core::protocol::CPU_GROUP_SOCKET_ENV;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long the agent waits for the worker to connect.
const HANDOVER_LIMIT: Duration = Duration::from_secs(30);

/// When [`CPU_GROUP_SOCKET_ENV`] is set: waits for the worker's fd and installs it
/// ([`crate::cpu_group::install`]). Call once, at start, single-threaded.
pub fn receive() -> Result<(), AgentError> {
    let Some(name) = std::env::var_os(CPU_GROUP_SOCKET_ENV) else {
        return Ok(());
    };
    std::env::remove_var(CPU_GROUP_SOCKET_ENV);
    let listener = listen(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()))?;
    let peer = accept_within(&listener, HANDOVER_LIMIT)?;
    drop(listener);
    if peer_pid(&peer)? != 0 {
        return Err(ConfigError::CpuGroupHandover("a peer inside the container").into());
    }
    if let Some(fd) = receive_fd(&peer)? {
        crate::cpu_group::install(fd)?;
    }
    Ok(())
}

/// A listening stream socket bound to the abstract name `name`.
fn listen(name: &[u8]) -> Result<OwnedFd, AgentError> {
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    let fd = check(fd, || "socket AF_UNIX".into())?;
    // SAFETY: `fd` was just returned by socket and is ours alone.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays NUL: an abstract name.
    if name.is_empty() || name.len() >= addr.sun_path.len() {
        return Err(ConfigError::CpuGroupHandover("a bad socket name").into());
    }
    for (slot, byte) in addr.sun_path[1..].iter_mut().zip(name) {
        *slot = *byte as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed it.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    check(bound, || "bind the CPU group socket".into())?;
    // SAFETY: plain integer arguments.
    check(unsafe { libc::listen(socket.as_raw_fd(), 1) }, || {
        "listen on the CPU group socket".into()
    })?;
    Ok(socket)
}

/// The first connection to `listener` within `limit`.
fn accept_within(listener: &OwnedFd, limit: Duration) -> Result<OwnedFd, AgentError> {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConfigError::CpuGroupHandover("no worker in time").into());
        }
        let mut fds = [crate::process::pollfd(listener.as_raw_fd(), libc::POLLIN)];
        crate::process::poll(&mut fds, Some(left))?;
        if fds[0].revents == 0 {
            continue;
        }
        // SAFETY: a listening socket; null address pointers are allowed.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        let fd = check(fd, || "accept on the CPU group socket".into())?;
        // SAFETY: `fd` was just returned by accept4 and is ours alone.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// The connected peer's pid as our pid namespace sees it (0: outside it).
fn peer_pid(peer: &OwnedFd) -> Result<i32, AgentError> {
    let mut cred = libc::ucred {
        pid: -1,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let got = unsafe {
        libc::getsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    check(got, || "SO_PEERCRED".into())?;
    Ok(cred.pid)
}

/// Reads the one byte the worker sends and the fd that comes with it, if any.
fn receive_fd(peer: &OwnedFd) -> Result<Option<i32>, AgentError> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one control message carrying one fd, aligned as cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let until = Instant::now() + HANDOVER_LIMIT;
    let got = loop {
        let mut fds = [crate::process::pollfd(peer.as_raw_fd(), libc::POLLIN)];
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConfigError::CpuGroupHandover("nothing sent in time").into());
        }
        crate::process::poll(&mut fds, Some(left))?;
        if fds[0].revents == 0 {
            continue;
        }
        // SAFETY: `msg` points at live buffers of the lengths it names.
        let got = unsafe { libc::recvmsg(peer.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        break check(got as libc::c_int, || {
            "recvmsg on the CPU group socket".into()
        })?;
    };
    if got != 1 {
        return Err(ConfigError::CpuGroupHandover("an empty message").into());
    }
    let mut received = None;
    // SAFETY: walks the control buffer recvmsg filled, with the kernel's macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
                if received.is_some() {
                    libc::close(fd);
                } else {
                    received = Some(fd);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(ConfigError::CpuGroupHandover("a truncated control message").into());
    }
    Ok(received)
}
