//! The function's CPU group of a container, as the native sandbox has one (`cgroup.rs`):
//! the container's own cgroup gets a CPU ceiling (the backend's per-container CPUs, or
//! the function's when more) and its child `fn` the function's quota. The agent moves
//! every process it starts into `fn` through the `cgroup.procs` fd the worker hands it
//! ([`hand_over`]), so a runtime's own start (a Node.js standby booting) runs outside
//! the function's small share and its code never does.
//!
//! cgroup v1: `fn` is created in the container's cpu hierarchy only (memory and pids
//! stay the container's). cgroup v2 (a group with children may hold no processes): the
//! container's processes (its agent alone, before `Init`) move into a child `agent`,
//! the cpu controller is enabled for the children, and `fn` gets `cpu.max`.
//!
//! The fd goes over an abstract unix socket the agent binds in the container's network
//! namespace (the engine cannot pass an fd in, and the container's cgroup file system
//! is read-only): a thread of ours enters that namespace (`setns`), connects and sends
//! it with `SCM_RIGHTS`, then ends. Nothing of the host is mounted into the container.

use crate::cgroup::mounts::{cgroup_dir, parse_mountinfo, parse_proc_cgroup};
use crate::cgroup::{allow_burst, cgroup_error, no_burst, write_file, CgroupConfig, CpuQuota};
use crate::SandboxError;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The child group that carries the function's quota.
const FUNCTION_GROUP: &str = "fn";
/// On v2, the child group the container's agent moves to.
const AGENT_GROUP: &str = "agent";
/// How long the worker tries to reach the agent's socket.
const HANDOVER_LIMIT: Duration = Duration::from_secs(10);

/// The function's CPU group of one container.
#[derive(Debug, Clone)]
pub struct ContainerCpuGroup {
    function_dir: PathBuf,
    v2: bool,
}

impl ContainerCpuGroup {
    /// Creates the group of the container whose init process is `pid` (host pid), with
    /// `quota`; returns it and its `cgroup.procs` opened for writing (for [`hand_over`]).
    /// `None`: this host has no cpu controller for containers.
    pub fn create(
        config: &CgroupConfig,
        pid: u32,
        quota: &CpuQuota,
    ) -> Result<Option<(Self, File)>, SandboxError> {
        let Some((dir, v2)) = container_cpu_dir(config, pid)? else {
            return Ok(None);
        };
        if v2 {
            let agent = dir.join(AGENT_GROUP);
            make_dir(&agent)?;
            let procs = dir.join("cgroup.procs");
            let listed = fs::read_to_string(&procs).map_err(|e| cgroup_error(&procs, e))?;
            for pid in listed.split_whitespace() {
                write_file(&agent.join("cgroup.procs"), pid)?;
            }
            write_file(&dir.join("cgroup.subtree_control"), "+cpu")?;
        }
        let group = ContainerCpuGroup {
            function_dir: dir.join(FUNCTION_GROUP),
            v2,
        };
        make_dir(&group.function_dir)?;
        group.set_quota(quota)?;
        let procs = group.function_dir.join("cgroup.procs");
        let file = OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| cgroup_error(&procs, e))?;
        Ok(Some((group, file)))
    }

    /// Sets the function's quota (a stem becoming a function's instance).
    pub fn set_quota(&self, quota: &CpuQuota) -> Result<(), SandboxError> {
        let dir = &self.function_dir;
        if self.v2 {
            no_burst(&dir.join("cpu.max.burst"));
            write_file(
                &dir.join("cpu.max"),
                &format!("{} {}", quota.quota_us, quota.period_us),
            )?;
            allow_burst(&dir.join("cpu.max.burst"), quota);
        } else {
            no_burst(&dir.join("cpu.cfs_burst_us"));
            write_file(&dir.join("cpu.cfs_period_us"), &quota.period_us.to_string())?;
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.quota_us.to_string())?;
            allow_burst(&dir.join("cpu.cfs_burst_us"), quota);
        }
        Ok(())
    }
}

fn make_dir(dir: &Path) -> Result<(), SandboxError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(cgroup_error(dir, e)),
    }
}

/// The container's cgroup directory carrying the cpu controller, and whether it is v2;
/// `None` when it has none (a v1 host without the cpu hierarchy).
fn container_cpu_dir(
    config: &CgroupConfig,
    pid: u32,
) -> Result<Option<(PathBuf, bool)>, SandboxError> {
    let read = |path: PathBuf| fs::read_to_string(&path).map_err(|e| cgroup_error(&path, e));
    let mounts: Vec<_> = parse_mountinfo(&read(config.proc_root.join("self/mountinfo"))?)
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&config.fs_root))
        .collect();
    let members = parse_proc_cgroup(&read(
        config.proc_root.join(pid.to_string()).join("cgroup"),
    )?);
    let v1_member = |controller: &str| {
        let mount = mounts.iter().find(|m| m.is_v1_with(controller))?;
        let member = members
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))?;
        Some(cgroup_dir(mount, &member.path))
    };
    // The same choice as the usage meter: v1 whenever memory is a v1 hierarchy.
    if v1_member("memory").is_some() {
        return Ok(v1_member("cpu").map(|dir| (dir, false)));
    }
    let unified = mounts.iter().find(|m| m.fstype == "cgroup2");
    let member = members.iter().find(|m| m.controllers.is_empty());
    Ok(match (unified, member) {
        (Some(mount), Some(member)) => {
            let dir = cgroup_dir(mount, &member.path);
            let controllers =
                fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            controllers
                .split_whitespace()
                .any(|c| c == "cpu")
                .then_some((dir, true))
        }
        _ => None,
    })
}

/// Hands `procs` (the group's `cgroup.procs`, or nothing when there is no group) to the
/// agent of the container whose init process is `pid`, over its abstract socket `name`.
/// Blocks (a thread of its own enters the container's network namespace).
pub fn hand_over(
    config: &CgroupConfig,
    pid: u32,
    name: &str,
    procs: Option<File>,
) -> Result<(), SandboxError> {
    let netns = config.proc_root.join(pid.to_string()).join("ns/net");
    let name = name.as_bytes().to_vec();
    let thread = std::thread::Builder::new()
        .name("cpu-group-handover".into())
        .spawn(move || -> io::Result<()> {
            let ns = File::open(&netns)?;
            // SAFETY: setns on an open namespace fd; it changes only this thread, which
            // ends right after.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
                return Err(io::Error::last_os_error());
            }
            let socket = connect_within(&name, HANDOVER_LIMIT)?;
            send(&socket, procs.as_ref().map(|f| f.as_raw_fd()))
        })
        .map_err(|e| SandboxError::Unavailable(format!("start the CPU group handover: {e}")))?;
    thread
        .join()
        .map_err(|_| SandboxError::Unavailable("the CPU group handover panicked".into()))?
        .map_err(|e| SandboxError::Unavailable(format!("hand the CPU group to the agent: {e}")))
}

/// Connects to the abstract socket `name`, retrying while the agent has not bound it.
fn connect_within(name: &[u8], limit: Duration) -> io::Result<OwnedFd> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.is_empty() || name.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad socket name",
        ));
    }
    for (slot, byte) in addr.sun_path[1..].iter_mut().zip(name) {
        *slot = *byte as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as libc::socklen_t;
    let until = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        // SAFETY: plain integer arguments.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket and is ours alone.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
        let ret = unsafe {
            libc::connect(
                socket.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if ret == 0 {
            return Ok(socket);
        }
        let error = io::Error::last_os_error();
        let not_yet = matches!(
            error.raw_os_error(),
            Some(libc::ECONNREFUSED | libc::ENOENT | libc::EAGAIN)
        );
        if !not_yet || Instant::now() >= until {
            return Err(error);
        }
        // The agent binds its socket first thing after the engine starts it.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Sends one byte, with `fd` attached when there is one.
fn send(socket: &OwnedFd, fd: Option<i32>) -> io::Result<()> {
    let mut byte = [b'C'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations; the control buffer
        // holds CMSG_SPACE(4) bytes (at most 24 here), aligned as cmsghdr.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        }
    }
    // SAFETY: `msg` points at live buffers of the lengths it names.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    match sent {
        1 => Ok(()),
        -1 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::other("short send")),
    }
}
