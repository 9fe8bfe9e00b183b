//! Processes and pipes: spawning runtime processes, pumping their pipes without blocking,
//! waiting for them with `wait4` (for the rusage), reaping whatever else dies.

use crate::error::{check, AgentError, RuntimeError};
pub use crate::exit::ExitInfo;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A new pipe as (read end, write end), both close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd), AgentError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(ret, || "pipe2".into())?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected unix stream socket pair, both ends close-on-exec and blocking.
pub fn socket_pair() -> Result<(OwnedFd, OwnedFd), AgentError> {
    let mut fds = [0 as RawFd; 2];
    let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    let ret = unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) };
    check(ret, || "socketpair".into())?;
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Opens `/dev/null` read-write, close-on-exec.
pub fn dev_null() -> Result<OwnedFd, AgentError> {
    // SAFETY: the path is a NUL-terminated literal.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    let fd = check(fd, || "open /dev/null".into())?;
    // SAFETY: open succeeded; the fd is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Puts `fd`, a pipe end or socket this agent made (no other status flag set), in
/// non-blocking mode: one `F_SETFL`, without reading the flags first (they are known).
pub fn set_nonblocking(fd: RawFd) -> Result<(), AgentError> {
    // SAFETY: F_SETFL on an fd we own; no pointers involved.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    check(ret, || format!("fcntl F_SETFL fd {fd}"))?;
    Ok(())
}

/// An fd that becomes readable when process `pid` (our child) exits.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, AgentError> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(AgentError::last_os(format!("pidfd_open {pid}")));
    }
    let fd = RawFd::try_from(fd).map_err(|_| RuntimeError::OutOfRange("pidfd"))?;
    // SAFETY: the kernel just returned this fd; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to `pid` (a negative pid names a process group); false if it failed.
pub fn kill(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// What one non-blocking read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadState {
    /// This many bytes.
    Data(usize),
    /// The writer side is closed.
    Eof,
    /// Nothing to read right now.
    WouldBlock,
}

/// One `read(2)` on a non-blocking fd, retried on EINTR.
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<ReadState> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            return Ok(ReadState::Data(n.unsigned_abs()));
        }
        if n == 0 {
            return Ok(ReadState::Eof);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(ReadState::WouldBlock),
            _ => return Err(err),
        }
    }
}

/// `poll(2)` over `fds`; `None` waits forever. EINTR counts as "nothing ready".
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> Result<usize, AgentError> {
    let ms = match timeout {
        None => -1,
        // Round up so a deadline 0.4 ms away is not polled with 0 in a busy loop.
        Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
    };
    let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(AgentError::io("poll", err));
    }
    Ok(n.unsigned_abs() as usize)
}

/// A `pollfd` asking for `events` on `fd`.
pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Most bytes one [`Capture::pump_chunk`] returns: the largest `Log` frame payload.
pub const MAX_CHUNK: usize = 1 << 20;

/// The read end of an output pipe and what came out of it, kept up to a cap.
#[derive(Debug)]
pub struct Capture {
    fd: Option<OwnedFd>,
    data: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capture {
    /// Starts capturing from `fd` (made non-blocking), keeping at most `limit` bytes.
    pub fn new(fd: OwnedFd, limit: usize) -> Result<Self, AgentError> {
        set_nonblocking(fd.as_raw_fd())?;
        Ok(Capture {
            fd: Some(fd),
            data: Vec::new(),
            limit,
            truncated: false,
        })
    }

    /// The fd to poll, until the pipe has hit EOF.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reads what is there now (up to 1 MiB per call, to stay fair to the other pipes);
    /// returns how many bytes came. Closes the pipe at EOF or on a read error.
    pub fn pump(&mut self) -> usize {
        self.read_available(None)
    }

    /// [`Capture::pump`], also returning every byte read (at most [`MAX_CHUNK`]), past
    /// the cap too: the piece of the full log. Empty (no allocation) when nothing came.
    pub fn pump_chunk(&mut self) -> Vec<u8> {
        let mut chunk = Vec::new();
        self.read_available(Some(&mut chunk));
        chunk
    }

    fn read_available(&mut self, mut chunk: Option<&mut Vec<u8>>) -> usize {
        let Some(fd) = self.raw_fd() else { return 0 };
        let mut buf = [0u8; 64 * 1024];
        let mut total = 0;
        while total < MAX_CHUNK {
            let want = buf.len().min(MAX_CHUNK - total);
            match read_fd(fd, &mut buf[..want]) {
                Ok(ReadState::Data(n)) => {
                    total += n;
                    let room = self.limit.saturating_sub(self.data.len());
                    if n > room {
                        self.truncated = true;
                    }
                    self.data.extend_from_slice(&buf[..n.min(room)]);
                    if let Some(chunk) = chunk.as_deref_mut() {
                        chunk.extend_from_slice(&buf[..n]);
                    }
                }
                Ok(ReadState::WouldBlock) => break,
                Ok(ReadState::Eof) | Err(_) => {
                    self.fd = None;
                    break;
                }
            }
        }
        total
    }

    /// Whether more was written than the cap kept.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The bytes kept so far.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Hands over the bytes kept so far and starts again from empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.truncated = false;
        std::mem::take(&mut self.data)
    }
}

/// Bytes waiting to go out on a non-blocking fd.
#[derive(Debug, Default)]
pub struct Outbox {
    data: Vec<u8>,
    sent: usize,
}

impl Outbox {
    /// `data` to send, of which the first `already_sent` bytes went out already.
    pub fn new(data: Vec<u8>, already_sent: usize) -> Self {
        Outbox {
            data,
            sent: already_sent,
        }
    }

    /// Whether everything went out.
    pub fn is_done(&self) -> bool {
        self.sent >= self.data.len()
    }

    /// Writes as much as the fd takes now. A reader that went away ends the outbox
    /// (the process will fail in its own visible way).
    pub fn pump(&mut self, fd: RawFd) {
        while !self.is_done() {
            let rest = &self.data[self.sent..];
            // SAFETY: `rest` is valid for reads of `rest.len()` bytes.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n >= 0 {
                self.sent += n.unsigned_abs();
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return,
                _ => {
                    self.sent = self.data.len();
                    return;
                }
            }
        }
    }
}

/// `wait4(pid)`: `Ok(None)` while the child runs (with `nohang`), `Err` with ECHILD when
/// there is no such child.
pub fn wait4(pid: i32, nohang: bool) -> io::Result<Option<(i32, ExitInfo)>> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` and `ru` are valid for writes.
        let got = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        if got > 0 {
            return Ok(Some((got, ExitInfo::from_rusage(status, &ru))));
        }
        if got == 0 {
            return Ok(None);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Where a child we care about stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChildState {
    /// Still running.
    Running,
    /// Exited (reaped now or earlier).
    Exited(ExitInfo),
}

/// Reaps every child that dies (as PID 1 or subreaper we inherit orphans) without losing
/// the status of the runtime processes we track.
#[derive(Debug, Default)]
pub struct Reaper {
    tracked: HashMap<i32, Option<ExitInfo>>,
}

impl Reaper {
    /// Keeps the exit status of `pid` when a sweep reaps it.
    pub fn track(&mut self, pid: i32) {
        self.tracked.insert(pid, None);
    }

    /// Stops tracking `pid` (its status, if already reaped, is dropped).
    pub fn forget(&mut self, pid: i32) {
        self.tracked.remove(&pid);
    }

    /// Reaps every exited child, remembering the tracked ones; returns how many.
    pub fn reap_all(&mut self) -> usize {
        let mut count = 0;
        while let Ok(Some((pid, info))) = wait4(-1, true) {
            count += 1;
            if let Some(slot) = self.tracked.get_mut(&pid) {
                *slot = Some(info);
            }
        }
        count
    }

    /// Where tracked child `pid` stands, reaping it if it just exited.
    pub fn state(&mut self, pid: i32) -> ChildState {
        if let Some(Some(info)) = self.tracked.get(&pid) {
            return ChildState::Exited(*info);
        }
        match wait4(pid, true) {
            Ok(None) => ChildState::Running,
            Ok(Some((_, info))) => {
                self.tracked.insert(pid, Some(info));
                ChildState::Exited(info)
            }
            Err(_) => ChildState::Exited(ExitInfo::unknown()),
        }
    }
}

impl Reaper {
    /// Waits up to `limit` for tracked child `pid` to be reapable (a killed multi-threaded
    /// process lingers as a zombie leader until its last thread is gone).
    pub fn await_exit(&mut self, pid: i32, limit: Duration) -> Option<ExitInfo> {
        let until = std::time::Instant::now() + limit;
        loop {
            if let ChildState::Exited(info) = self.state(pid) {
                return Some(info);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// How to start one runtime process.
pub struct SpawnSpec<'a> {
    /// Absolute path of the program.
    pub program: &'a str,
    /// Its arguments (without argv\[0\]).
    pub args: &'a [String],
    /// Its whole environment.
    pub env: &'a [(String, String)],
    /// Its working directory.
    pub cwd: &'a Path,
    /// fds 0, 1, 2 and 3 of the new process.
    pub fds: [OwnedFd; 4],
}

/// Starts a process in its own session with exactly the fds of `spec` (every other fd of
/// the agent is close-on-exec) and returns its pid. It is never waited on by std: the
/// caller reaps it with [`wait4`] to get its rusage.
/// It joins the function's CPU group ([`crate::cpu_group`]) before it runs anything.
pub fn spawn(spec: SpawnSpec<'_>) -> Result<i32, AgentError> {
    spawn_in(spec, true)
}

/// [`spawn`], but the process stays outside the function's CPU group: only for a
/// runtime's own start, which the caller moves in ([`crate::cpu_group::move_into`]) before
/// it loads any of the function's code.
pub fn spawn_outside_quota(spec: SpawnSpec<'_>) -> Result<i32, AgentError> {
    spawn_in(spec, false)
}

fn spawn_in(spec: SpawnSpec<'_>, join_function_group: bool) -> Result<i32, AgentError> {
    let [stdin, stdout, stderr, fd3] = spec.fds;
    let fd3_raw = fd3.as_raw_fd();
    let mut cmd = Command::new(spec.program);
    cmd.args(spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.cwd)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (write, dup2, fcntl, setsid, set*id) on an fd that stays open in the
    // parent until `spawn` returns. std has already placed fds 0-2 (all > 3 or equal to
    // the targets, since the agent keeps 0-2 open on /dev/null).
    unsafe {
        cmd.pre_exec(move || {
            if join_function_group {
                crate::cpu_group::join_in_child()?;
            }
            if fd3_raw == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd3_raw, 3) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            crate::privileges::become_effective_ids()
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| AgentError::io(format!("spawn {}", spec.program), e))?;
    drop(fd3);
    i32::try_from(child.id()).map_err(|_| RuntimeError::OutOfRange("pid").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_cap_and_drains_past_it() {
        let (r, w) = pipe().unwrap();
        let mut cap = Capture::new(r, 4).unwrap();
        let mut outbox = Outbox::new(b"hello world".to_vec(), 0);
        outbox.pump(w.as_raw_fd());
        assert!(outbox.is_done());
        assert_eq!(cap.pump(), 11);
        assert_eq!(cap.data(), b"hell");
        assert!(cap.truncated());
        assert!(cap.raw_fd().is_some(), "the writer is still open");
        drop(w);
        cap.pump();
        assert!(cap.raw_fd().is_none(), "EOF closes the capture");
    }

    #[test]
    fn chunks_hold_every_byte_and_stop_at_a_mebibyte() {
        let (r, w) = pipe().unwrap();
        let mut cap = Capture::new(r, 4).unwrap();
        assert!(cap.pump_chunk().is_empty(), "nothing written yet");
        let data: Vec<u8> = (0..3 * MAX_CHUNK / 2).map(|i| (i % 251) as u8).collect();
        let writer = std::thread::spawn(move || {
            let mut outbox = Outbox::new(data, 0);
            let fd = w.as_raw_fd();
            // The pipe is blocking on this side: pump writes all of it.
            outbox.pump(fd);
            assert!(outbox.is_done());
        });
        let mut got = Vec::new();
        while got.len() < 3 * MAX_CHUNK / 2 {
            let mut fds = [pollfd(cap.raw_fd().unwrap(), libc::POLLIN)];
            poll(&mut fds, Some(Duration::from_secs(5))).unwrap();
            let chunk = cap.pump_chunk();
            assert!(chunk.len() <= MAX_CHUNK);
            got.extend_from_slice(&chunk);
        }
        writer.join().unwrap();
        let expected: Vec<u8> = (0..3 * MAX_CHUNK / 2).map(|i| (i % 251) as u8).collect();
        assert!(got == expected, "the chunks are the bytes, in order");
        assert_eq!(cap.data(), &expected[..4]);
        assert!(cap.truncated());
    }

    #[test]
    fn exit_info_decodes_wait_statuses() {
        let exited = ExitInfo {
            status: 3 << 8,
            ..ExitInfo::unknown()
        };
        assert_eq!((exited.exit_code(), exited.signal()), (Some(3), None));
        let killed = ExitInfo {
            status: libc::SIGKILL,
            ..ExitInfo::unknown()
        };
        assert_eq!((killed.exit_code(), killed.signal()), (None, Some(9)));
        assert_eq!(ExitInfo::unknown().exit_code(), None);
    }
}
