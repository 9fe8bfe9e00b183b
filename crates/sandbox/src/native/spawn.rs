//! Starting the agent inside its cgroup and fresh namespaces.
//!
//! What runs between `fork` and `exec` lives here, and only here: it may not allocate
//! (another thread of the worker may have held the allocator's lock at the fork), so
//! every path is a `CString` built beforehand and every call is a raw system call.
//!
//! The agent dies with the worker through `PR_SET_PDEATHSIG`, which fires when the
//! *thread* that forked it ends, not the process. Runtime threads come and go
//! (`spawn_blocking` pools, `block_in_place`), so every agent is forked by one
//! dedicated thread that lives as long as the process.

use hearth_core::protocol::FUNCTION_CGROUP_FD_ENV;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The namespaces every native sandbox gets. The agent itself is not in the new pid
/// namespace (`unshare` puts only its children there); it forks its PID 1.
const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// The only environment the agent gets: it runs the interpreter by absolute path.
const AGENT_PATH_ENV: &str = "/usr/bin:/bin";

/// Variables passed through from the worker, when set (the agent's log settings).
const PASSED_ENV: [&str; 2] = ["HEARTH_AGENT_LOG", "RUST_LOG"];

/// Spawns the agent with piped stdio, moved into the cgroups behind `procs_files` and
/// into new mount/pid/net/ipc/uts namespaces, killed if the worker process dies. Must
/// be called within a tokio runtime (the child is reaped by it).
///
/// `function_procs`: the cgroup the function's processes go to (its CPU quota); opened
/// here, as root, and inherited by the agent under the fd number it finds in
/// [`FUNCTION_CGROUP_FD_ENV`], so that it can move its children there after it has
/// dropped its privileges (the kernel checks the credentials of whoever opened it).
pub async fn spawn_agent(
    agent: &Path,
    procs_files: &[CString],
    function_procs: Option<&Path>,
) -> io::Result<Child> {
    let mut command = Command::new(agent);
    let function_cgroup = match function_procs {
        // std opens it close-on-exec: only this agent gets it, cleared in its hook.
        Some(path) => Some(OpenOptions::new().write(true).open(path)?),
        None => None,
    };

    command
        .env_clear()
        .env("PATH", AGENT_PATH_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in PASSED_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    if let Some(file) = &function_cgroup {
        command.env(FUNCTION_CGROUP_FD_ENV, file.as_raw_fd().to_string());
    }
    let procs_files = procs_files.to_vec();
    // u32 → pid_t: Linux pids fit in 22 bits.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the child between fork and exec. It only makes raw
    // system calls on memory prepared before the fork (`procs_files` and the opened
    // `function_cgroup`, moved into the closure) and builds `io::Error`s from OS codes, which does not allocate.
    unsafe {
        command.pre_exec(move || {
            enter_sandbox(&procs_files, parent)?;
            if let Some(file) = &function_cgroup {
                // SAFETY: fcntl on an fd the closure owns; no pointers.
                if libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let (reply, answer) = oneshot::channel();
    let request = SpawnRequest {
        command,
        runtime: Handle::current(),
        reply,
    };
    spawner()?
        .lock()
        .map_err(|_| io::Error::other("the spawner thread's queue is poisoned"))?
        .send(request)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    let child = answer
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))??;
    if let Some(stdin) = &child.stdin {
        widen_pipe(stdin.as_raw_fd());
    }
    Ok(child)
}

/// What the agent's stdin pipe holds: a stem's code (a compiled program is megabytes)
/// crosses in a few writes instead of one per 64 KiB, each a wake-up of both sides on
/// the cold start's path. Pages are taken only as the pipe fills.
const STDIN_PIPE_BYTES: libc::c_int = 1 << 20;

/// Grows the pipe behind `fd` to [`STDIN_PIPE_BYTES`]; where the host refuses (an
/// unprivileged worker over its pipe allowance), it keeps the default size.
fn widen_pipe(fd: std::os::fd::RawFd) {
    // SAFETY: fcntl on an fd the caller owns; no pointers.
    if unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, STDIN_PIPE_BYTES) } < 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "the agent's stdin pipe keeps its default size");
    }
}

/// One spawn for the spawner thread: the command, the runtime that will own the child,
/// and where to send it.
struct SpawnRequest {
    command: Command,
    runtime: Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The queue of the process-wide spawner thread, started on first use.
fn spawner() -> io::Result<&'static Mutex<mpsc::Sender<SpawnRequest>>> {
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnRequest>>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (sender, requests) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("hearth-spawner".into())
                .spawn(move || {
                    for mut request in requests {
                        let _runtime = request.runtime.enter();
                        // A caller that went away drops the child: kill_on_drop kills it.
                        let _ = request.reply.send(request.command.spawn());
                    }
                })
                .ok()
                .map(|_| Mutex::new(sender))
        })
        .as_ref()
        .ok_or_else(|| io::Error::other("cannot start the spawner thread"))
}

/// The `pre_exec` hook: cgroup first (so everything after is accounted and limited),
/// then the death signal, then the namespaces.
fn enter_sandbox(procs_files: &[CString], parent: libc::pid_t) -> io::Result<()> {
    for path in procs_files {
        join_cgroup(path)?;
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and changes only this process.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // The worker may have died before the death signal was armed: then nobody will
    // ever send it, so give up now.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: unshare takes a flag set and changes only this (single-threaded) process.
    if unsafe { libc::unshare(NAMESPACES) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `0` (this process) into one `cgroup.procs` file.
fn join_cgroup(procs_file: &CString) -> io::Result<()> {
    // SAFETY: `procs_file` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(procs_file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened; the buffer is one valid byte.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let error = io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    match written {
        1 => Ok(()),
        n if n < 0 => Err(error),
        _ => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}
