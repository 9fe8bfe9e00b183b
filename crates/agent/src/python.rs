//! Python: a zygote that has loaded the user's code forks one fresh process per invocation.
//!
//! The zygote (`runtimes/python/bootstrap.py`) talks over a unix stream socket on its
//! fd 3; each invocation message carries the child's stdout, stderr and result pipe ends
//! and the read end of its event pipe as SCM_RIGHTS. The event goes into that pipe, never
//! through the zygote, so no caller's event is left in the memory later forks inherit. The zygote hands them to a process it forked ahead of time (after the
//! previous invocation's sweep, when the agent says "prepare"), reports its pid, then its
//! wait status and rusage after `wait4`. Warm path: two `sendmsg`s, no fork, no exec.

use crate::channel::LogSink;
use crate::error::SettleError;
use crate::error::{AgentError, CodeLoadError, RuntimeError};
use crate::instance::{unix_ms, Instance, LOAD_LIMIT};
use crate::output::OutputDir;
use crate::process::{self, Capture, ChildState, ExitInfo, Outbox, ReadState, SpawnSpec};
use crate::run::{self, Ending, Finished, Pipes, Report};
use crate::runner::Runner;
use crate::sweep::SweepReport;
use hearth_core::invocation::ErrorInfo;
use hearth_core::protocol::InvokeSpec;
use serde::Deserialize;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long to wait for the zygote's report after the agent killed a timed-out child.
const STATUS_LIMIT: Duration = Duration::from_secs(5);
/// How long a process that answered may take to exit before the sweep kills it (its
/// exit runs under the function's CPU quota: a throttled period is 100 ms).
const EXIT_WAIT: Duration = Duration::from_secs(1);
/// How much of the zygote's own output is kept for error messages.
const LOG_KEEP: usize = 16 * 1024;
/// Largest message the zygote may send.
const MAX_MESSAGE: usize = 1 << 20;

/// One message from the zygote (see the bootstrap's doc for the shapes).
#[derive(Debug, Default, Deserialize)]
struct Message {
    ready: Option<bool>,
    init_error: Option<ErrorInfo>,
    pid: Option<i32>,
    status: Option<i32>,
    maxrss_kb: Option<u64>,
    utime: Option<f64>,
    stime: Option<f64>,
}

impl Message {
    fn exit_info(&self) -> Option<ExitInfo> {
        Some(ExitInfo {
            status: self.status?,
            maxrss_kb: self.maxrss_kb.unwrap_or(0),
            user_ms: self.utime.unwrap_or(0.0) * 1000.0,
            system_ms: self.stime.unwrap_or(0.0) * 1000.0,
        })
    }
}

/// What the invocation's process reports of itself beside its result (`usage`), so that
/// it can be answered before it has exited: its own `getrusage` just before it closed
/// its output. It says nothing the worker trusts: CPU is read from the cgroup.
#[derive(Debug, Deserialize)]
struct SelfReport {
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    maxrss_kb: u64,
    utime: f64,
    stime: f64,
}

/// The ending of an invocation whose process has written its result and closed every
/// output pipe (stdout, stderr, result) while the event and the zygote's message are
/// all sent, and whose output dir is empty: it is only exiting now, so the invocation
/// can be answered before its end (the sweep follows at once, before the next call).
/// `None` while any of that is not so, for a result without the process's own usage
/// (a crash, or an older bootstrap), or when the output dir holds files (they are
/// archived only once the process is gone).
fn answered(pipes: &Pipes, sent: bool, output: Option<&OutputDir>) -> Option<ExitInfo> {
    let open = [&pipes.stdout, &pipes.stderr, &pipes.result];
    if !sent || open.iter().any(|c| c.raw_fd().is_some()) || pipes.result.truncated() {
        return None;
    }
    let usage = serde_json::from_slice::<SelfReport>(pipes.result.data())
        .ok()?
        .usage?;
    if !output.is_none_or(OutputDir::is_clean) {
        return None;
    }
    Some(ExitInfo {
        status: 0,
        maxrss_kb: usage.maxrss_kb,
        user_ms: usage.utime * 1000.0,
        system_ms: usage.stime * 1000.0,
    })
}

/// Length-prefixed JSON messages arriving on the non-blocking control socket.
#[derive(Debug, Default)]
struct Inbox {
    buf: Vec<u8>,
    eof: bool,
}

impl Inbox {
    fn pump(&mut self, fd: RawFd) {
        let mut chunk = [0u8; 4096];
        loop {
            match process::read_fd(fd, &mut chunk) {
                Ok(ReadState::Data(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(ReadState::WouldBlock) => return,
                Ok(ReadState::Eof) | Err(_) => {
                    self.eof = true;
                    return;
                }
            }
        }
    }

    fn next(&mut self) -> Option<Result<Message, AgentError>> {
        let prefix: [u8; 4] = self.buf.get(..4)?.try_into().ok()?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_MESSAGE {
            self.eof = true;
            return Some(Err(RuntimeError::ZygoteOversized.into()));
        }
        let body = self.buf.get(4..4 + len)?;
        let message = serde_json::from_slice(body)
            .map_err(|e| AgentError::from(RuntimeError::ZygoteGarbage(e)));
        self.buf.drain(..4 + len);
        Some(message)
    }
}

/// Sends `data` with `fds` attached (SCM_RIGHTS) on a non-blocking socket; returns how
/// many bytes went (at least one, so the fds travel), waiting for room until `deadline`.
fn send_with_fds(
    sock: RawFd,
    data: &[u8],
    fds: &[RawFd; 4],
    deadline: Instant,
) -> io::Result<usize> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE and CMSG_LEN are pure size computations.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(fd_bytes as u32) as usize,
            libc::CMSG_LEN(fd_bytes as u32) as usize,
        )
    };
    // u64 elements keep the control buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` zeroed, aligned bytes: room for one cmsghdr
    // followed by the fds, which is what CMSG_FIRSTHDR/CMSG_DATA address.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::other("no room for the control message"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), fd_bytes);
    }
    loop {
        // SAFETY: `msg` and the buffers it points at are alive for the call; sendmsg only
        // reads them.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                let mut fds = [process::pollfd(sock, libc::POLLOUT)];
                process::poll(&mut fds, Some(deadline - now)).map_err(io::Error::other)?;
            }
            _ => return Err(err),
        }
    }
}

/// `[u32 BE header length][header JSON]` for the zygote (the event's `event_len` bytes go
/// on the event pipe); `output_dir` becomes the process's `$OUTPUT_DIR`.
fn invocation_message(
    spec: &InvokeSpec,
    event_len: usize,
    output_dir: Option<String>,
) -> Result<Vec<u8>, AgentError> {
    let mut header = serde_json::json!({
        "request_id": spec.request_id,
        "deadline_ms": unix_ms().saturating_add(spec.timeout_ms),
        "attempt": spec.attempt,
        "event_len": event_len,
    });
    if let Some(dir) = output_dir {
        header["output_dir"] = dir.into();
    }
    let header = serde_json::to_vec(&header).map_err(|source| RuntimeError::Encode {
        what: "the invocation header",
        source,
    })?;
    let len = u32::try_from(header.len())
        .map_err(|_| RuntimeError::OutOfRange("invocation header size"))?;
    let mut message = Vec::with_capacity(4 + header.len());
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(&header);
    Ok(message)
}

/// The event on its way into the invocation's event pipe; the pipe closes once it is all
/// written.
#[derive(Debug)]
struct EventPipe {
    outbox: Outbox,
    fd: Option<OwnedFd>,
}

impl EventPipe {
    fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    fn pump(&mut self) {
        if let Some(fd) = &self.fd {
            self.outbox.pump(fd.as_raw_fd());
            if self.outbox.is_done() {
                self.fd = None;
            }
        }
    }
}

/// The running zygote.
#[derive(Debug)]
struct Zygote {
    pid: i32,
    sock: OwnedFd,
    inbox: Inbox,
    log: Capture,
}

impl Zygote {
    /// Starts `python3 -B -s bootstrap.py CODE_DIR` (no bytecode written, no user site)
    /// and waits until it has loaded the code.
    fn start(inst: &mut Instance) -> Result<Zygote, AgentError> {
        Zygote::start_with(inst, false)
    }

    /// [`Zygote::start`], or with `stem` a zygote that imports the runtime but no code
    /// and waits for a `load` message (`bootstrap.py --stem CODE_DIR`).
    fn start_with(inst: &mut Instance, stem: bool) -> Result<Zygote, AgentError> {
        let (ours, theirs) = process::socket_pair()?;
        let (log_r, log_w) = process::pipe()?;
        let log_w2 = log_w
            .try_clone()
            .map_err(|e| AgentError::io("dup the zygote log pipe", e))?;
        let mut args = vec![
            "-B".to_string(),
            "-s".to_string(),
            inst.layout
                .runtime
                .join("python/bootstrap.py")
                .to_string_lossy()
                .into_owned(),
        ];
        if stem {
            args.push("--stem".to_string());
        }
        args.push(inst.layout.code.to_string_lossy().into_owned());
        let pid = process::spawn(SpawnSpec {
            program: &inst.interpreter,
            args: &args,
            env: &inst.env,
            cwd: &inst.layout.code,
            fds: [process::dev_null()?, log_w, log_w2, theirs],
        })?;
        inst.reaper.track(pid);
        let mut zygote = Zygote {
            pid,
            inbox: Inbox::default(),
            log: Capture::new(log_r, LOG_KEEP)?,
            sock: ours,
        };
        process::set_nonblocking(zygote.sock.as_raw_fd())?;
        match zygote.await_ready() {
            Ok(()) => Ok(zygote),
            Err(e) => {
                zygote.kill(inst);
                Err(e)
            }
        }
    }

    fn await_ready(&mut self) -> Result<(), AgentError> {
        let until = Instant::now() + LOAD_LIMIT;
        loop {
            while let Some(message) = self.inbox.next() {
                let message = message?;
                if let Some(error) = message.init_error {
                    return Err(CodeLoadError::Reported(error).into());
                }
                if message.ready == Some(true) {
                    self.forward_log();
                    return Ok(());
                }
            }
            if self.inbox.eof {
                self.log.pump();
                let log = String::from_utf8_lossy(self.log.data())
                    .trim_end()
                    .to_string();
                return Err(RuntimeError::ZygoteExited { log }.into());
            }
            let now = Instant::now();
            if now >= until {
                return Err(CodeLoadError::TooSlow {
                    what: "loading main.py took longer than",
                    limit: LOAD_LIMIT,
                }
                .into());
            }
            let mut fds = vec![process::pollfd(self.sock.as_raw_fd(), libc::POLLIN)];
            fds.extend(
                self.log
                    .raw_fd()
                    .map(|fd| process::pollfd(fd, libc::POLLIN)),
            );
            process::poll(&mut fds, Some(until - now))?;
            self.log.pump();
            self.inbox.pump(self.sock.as_raw_fd());
        }
    }

    /// Passes what the zygote itself printed (at import time, or dying) to our stderr.
    fn forward_log(&mut self) {
        self.log.pump();
        let data = self.log.take();
        for line in String::from_utf8_lossy(&data).lines() {
            crate::diag!("python zygote: {line}");
        }
    }

    /// Watches one invocation until the zygote reports the child's end, the child has
    /// [answered](answered), the deadline, or the zygote's death, passing its output to
    /// `log`. Returns the ending, the child's pid when it was reported, and whether the
    /// child may still be exiting (it answered).
    fn watch(
        &mut self,
        pipes: &mut Pipes,
        mut outbox: Outbox,
        mut event: EventPipe,
        deadline: Instant,
        output: Option<&OutputDir>,
        log: &mut dyn LogSink,
    ) -> (Ending, Option<i32>, bool) {
        let sock = self.sock.as_raw_fd();
        let mut child = None;
        loop {
            // Before the zygote's report, which may be in already: answered, the sweep
            // and the rest wait until after the answer either way. Not once the zygote
            // is seen gone: that invocation is lost.
            let sent = outbox.is_done() && event.fd.is_none();
            if let Some(info) = answered(pipes, sent && !self.inbox.eof, output) {
                return (Ending::Exited(info), child, true);
            }
            while let Some(message) = self.inbox.next() {
                match message {
                    Ok(m) => {
                        if let Some(info) = m.exit_info() {
                            return (Ending::Exited(info), child.or(m.pid), false);
                        }
                        child = m.pid.or(child);
                    }
                    Err(e) => return (Ending::Lost(e.to_string(), None), child, false),
                }
            }
            if self.inbox.eof {
                let why = "the python zygote died during the invocation".to_string();
                return (Ending::Lost(why, None), child, false);
            }
            let now = Instant::now();
            if now >= deadline {
                return (Ending::TimedOut(None), child, false);
            }
            let mut fds = pipes.pollfds();
            let events = if outbox.is_done() {
                libc::POLLIN
            } else {
                libc::POLLIN | libc::POLLOUT
            };
            fds.push(process::pollfd(sock, events));
            fds.extend(
                self.log
                    .raw_fd()
                    .map(|fd| process::pollfd(fd, libc::POLLIN)),
            );
            fds.extend(event.raw_fd().map(|fd| process::pollfd(fd, libc::POLLOUT)));
            if let Err(e) = process::poll(&mut fds, Some(deadline - now)) {
                return (Ending::Lost(e.to_string(), None), child, false);
            }
            pipes.pump(log);
            self.forward_log();
            if !outbox.is_done() {
                outbox.pump(sock);
            }
            event.pump();
            self.inbox.pump(sock);
        }
    }

    /// After a kill: the zygote's report on the child, if it comes in time.
    fn await_status(&mut self, until: Instant) -> Option<ExitInfo> {
        let sock = self.sock.as_raw_fd();
        loop {
            while let Some(message) = self.inbox.next() {
                if let Some(info) = message.ok()?.exit_info() {
                    return Some(info);
                }
            }
            let now = Instant::now();
            if self.inbox.eof || now >= until {
                return None;
            }
            let mut fds = [process::pollfd(sock, libc::POLLIN)];
            process::poll(&mut fds, Some(until - now)).ok()?;
            self.inbox.pump(sock);
        }
    }

    fn kill(&mut self, inst: &mut Instance) {
        process::kill(self.pid, libc::SIGKILL);
        let _ = process::wait4(self.pid, false);
        inst.reaper.forget(self.pid);
        self.forward_log();
    }
}

/// The Python runtime: one zygote, restarted when it dies.
#[derive(Debug)]
pub struct Python {
    zygote: Option<Zygote>,
    /// The last invocation was answered while its process (this pid, when the zygote
    /// had reported it) was still exiting: [`Python::settle`] has not run yet.
    exiting: Option<Option<i32>>,
}

impl Python {
    /// Starts the zygote; a failing import of `main.py` is [`AgentError::CodeLoad`].
    pub fn start(inst: &mut Instance) -> Result<Python, AgentError> {
        Ok(Python {
            zygote: Some(Zygote::start(inst)?),
            exiting: None,
        })
    }

    /// Runs one invocation in a process forked from the zygote.
    pub fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        if self.zygote.is_none() && !self.ensure_zygote(inst, false) {
            let why = "the python zygote died and could not be restarted".to_string();
            return Ok(run::not_run(&spec.request_id, why));
        }
        let Some(zygote) = self.zygote.as_mut() else {
            return Ok(run::not_run(&spec.request_id, "no python zygote".into()));
        };
        let (out_r, out_w) = process::pipe()?;
        let (err_r, err_w) = process::pipe()?;
        let (res_r, res_w) = process::pipe()?;
        let (event_r, event_w) = process::pipe()?;
        process::set_nonblocking(event_w.as_raw_fd())?;
        let mut pipes = Pipes::new(out_r, err_r, res_r, inst.output_limit)?;
        let message = invocation_message(spec, event.len(), inst.output_dir())?;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(spec.timeout_ms);
        let ends = [
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            res_w.as_raw_fd(),
            event_r.as_raw_fd(),
        ];
        let sent = send_with_fds(zygote.sock.as_raw_fd(), &message, &ends, deadline);
        drop((out_w, err_w, res_w, event_r));
        let mut event_pipe = EventPipe {
            outbox: Outbox::new(event.to_vec(), 0),
            fd: Some(event_w),
        };
        event_pipe.pump();
        let (ending, child, exiting) = match sent {
            Ok(n) => zygote.watch(
                &mut pipes,
                Outbox::new(message, n),
                event_pipe,
                deadline,
                inst.output.as_ref(),
                log,
            ),
            Err(e) => {
                let why = format!("could not hand the event to the python zygote: {e}");
                (Ending::Lost(why, None), None, false)
            }
        };
        let duration = started.elapsed();
        if exiting {
            // Answered now; the sweep and the zygote's report come in `settle`.
            self.exiting = Some(child);
            let result = pipes.result.take();
            let report = Report {
                request_id: &spec.request_id,
                timeout_ms: spec.timeout_ms,
                ending,
                duration,
                sweep: SweepReport {
                    killed: 0,
                    converged: true,
                },
                runtime_healthy: true,
            };
            return Ok(run::finish(report, &mut pipes, &result));
        }

        let expected: Vec<i32> = child.into_iter().collect();
        let sweep = inst
            .sweeper
            .sweep(&[zygote.pid], &expected, &mut inst.reaper);
        let ending = match ending {
            Ending::TimedOut(_) => {
                Ending::TimedOut(zygote.await_status(Instant::now() + STATUS_LIMIT))
            }
            other => other,
        };
        // A zygote that lost the thread (no report after a kill, or it died) starts over.
        let desynced = matches!(ending, Ending::TimedOut(None) | Ending::Lost(..));
        pipes.drain(log);
        let runtime_healthy = self.ensure_zygote(inst, desynced);
        let result = pipes.result.take();
        let report = Report {
            request_id: &spec.request_id,
            timeout_ms: spec.timeout_ms,
            ending,
            duration,
            sweep,
            runtime_healthy,
        };
        Ok(run::finish(report, &mut pipes, &result))
    }

    /// After an early answer: sweeps (the answered process, still exiting, and anything
    /// it left), takes the zygote's report on it, and restarts a zygote that lost the
    /// thread. `Err` when a process could not be killed or no zygote can be had.
    fn settle(&mut self, inst: &mut Instance) -> Result<(), SettleError> {
        let Some(child) = self.exiting.take() else {
            return Ok(());
        };
        let Some(zygote) = self.zygote.as_mut() else {
            return Ok(());
        };
        // The zygote reports the exit once it has reaped the child: waiting for that
        // (a poll, not the sweep's rescans while a throttled zygote gets no CPU) leaves
        // the sweep nothing to do unless the child stayed (it closed its pipes and went
        // on), which is then killed.
        let mut reported = zygote.await_status(Instant::now() + EXIT_WAIT);
        let expected: Vec<i32> = child.into_iter().collect();
        let sweep = inst
            .sweeper
            .sweep(&[zygote.pid], &expected, &mut inst.reaper);
        if reported.is_none() {
            reported = zygote.await_status(Instant::now() + STATUS_LIMIT);
        }
        if sweep.killed > 0 {
            crate::diag!(
                "killed {} leftover process(es) after an answered invocation",
                sweep.killed
            );
        }
        if !self.ensure_zygote(inst, reported.is_none()) {
            return Err(SettleError::ZygoteLost);
        }
        if !sweep.converged {
            return Err(SettleError::Survivor);
        }
        Ok(())
    }

    /// Makes sure a working zygote is there, restarting it when it died or when `restart`;
    /// false when it cannot be brought back.
    fn ensure_zygote(&mut self, inst: &mut Instance, restart: bool) -> bool {
        if let Some(zygote) = self.zygote.as_mut() {
            let alive = !restart
                && !zygote.inbox.eof
                && inst.reaper.state(zygote.pid) == ChildState::Running;
            if alive {
                return true;
            }
            zygote.kill(inst);
            self.zygote = None;
        }
        match Zygote::start(inst) {
            Ok(zygote) => {
                crate::diag!("python zygote restarted (pid {})", zygote.pid);
                self.zygote = Some(zygote);
                true
            }
            Err(e) => {
                crate::diag!("python zygote could not be restarted: {e}");
                false
            }
        }
    }

    /// Tells the zygote to fork the next invocation's process now that the sweep is over
    /// (a spare forked earlier would have been swept as a leftover).
    pub fn after_result(&mut self) {
        let Some(zygote) = &self.zygote else { return };
        let header = br#"{"prepare":true}"#;
        let mut message = (header.len() as u32).to_be_bytes().to_vec();
        message.extend_from_slice(header);
        let mut outbox = Outbox::new(message, 0);
        // A few bytes into an idle socket: they fit. A dead zygote shows at the next call.
        outbox.pump(zygote.sock.as_raw_fd());
    }

    /// The zygote's socket and log, watched between invocations.
    pub fn idle_fds(&self) -> Vec<RawFd> {
        let Some(zygote) = &self.zygote else {
            return Vec::new();
        };
        let mut fds = vec![zygote.sock.as_raw_fd()];
        fds.extend(zygote.log.raw_fd());
        fds
    }

    /// Forwards the zygote's log; notices its death (it is restarted at the next call).
    pub fn on_idle(&mut self, inst: &mut Instance) {
        let Some(zygote) = self.zygote.as_mut() else {
            return;
        };
        zygote.forward_log();
        zygote.inbox.pump(zygote.sock.as_raw_fd());
        while zygote.inbox.next().is_some() {}
        if zygote.inbox.eof {
            crate::diag!("python zygote (pid {}) died while idle", zygote.pid);
            zygote.kill(inst);
            self.zygote = None;
        }
    }
}

/// A stem's zygote: the interpreter and the runtime's modules, no code, started with
/// the environment of no function.
#[derive(Debug)]
pub struct PrestartedZygote {
    zygote: Zygote,
    env: Vec<(String, String)>,
}

/// Whether `key` changes how the interpreter starts (flags, paths, locale), so that a
/// zygote started without it is not the one the function would get.
fn shapes_startup(key: &str) -> bool {
    key.starts_with("PYTHON") || key.starts_with("LC_") || key == "LANG"
}

impl Python {
    /// Starts a stem's zygote: no code, waiting for [`Python::specialize`].
    pub fn prestart(inst: &mut Instance) -> Result<PrestartedZygote, AgentError> {
        Ok(PrestartedZygote {
            zygote: Zygote::start_with(inst, true)?,
            env: inst.env.clone(),
        })
    }

    /// Has the stem's zygote load the code now in place with the function's
    /// environment (`inst.env`). A zygote that died while it waited, or whose start the
    /// function's environment would have changed, is replaced by a fresh one.
    pub fn specialize(
        prestarted: PrestartedZygote,
        inst: &mut Instance,
    ) -> Result<Python, AgentError> {
        let PrestartedZygote { mut zygote, env } = prestarted;
        let startup = |env: &[(String, String)]| -> Vec<(String, String)> {
            env.iter()
                .filter(|(key, _)| shapes_startup(key))
                .cloned()
                .collect()
        };
        if startup(&env) != startup(&inst.env) {
            zygote.kill(inst);
            return Python::start(inst);
        }
        let env: serde_json::Map<String, serde_json::Value> = inst
            .env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().into()))
            .collect();
        let header = serde_json::to_vec(&serde_json::json!({ "load": true, "env": env })).map_err(
            |source| RuntimeError::Encode {
                what: "the load message",
                source,
            },
        )?;
        let len = u32::try_from(header.len()).map_err(|_| RuntimeError::EnvironmentTooLarge)?;
        let mut message = len.to_be_bytes().to_vec();
        message.extend_from_slice(&header);
        let mut outbox = Outbox::new(message, 0);
        let until = Instant::now() + LOAD_LIMIT;
        let sock = zygote.sock.as_raw_fd();
        outbox.pump(sock);
        while !outbox.is_done() && Instant::now() < until {
            let mut fds = [process::pollfd(sock, libc::POLLOUT)];
            process::poll(&mut fds, Some(until - Instant::now()))?;
            outbox.pump(sock);
        }
        match zygote.await_ready() {
            Ok(()) => Ok(Python {
                zygote: Some(zygote),
                exiting: None,
            }),
            Err(AgentError::CodeLoad(message)) => {
                zygote.kill(inst);
                Err(AgentError::CodeLoad(message))
            }
            Err(e) => {
                crate::diag!("the stem's python zygote failed ({e}); starting a fresh one");
                zygote.kill(inst);
                Python::start(inst)
            }
        }
    }
}

impl Runner for Python {
    fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        Python::serve(self, inst, spec, event, log)
    }

    fn answered_early(&self) -> bool {
        self.exiting.is_some()
    }

    fn settle(&mut self, inst: &mut Instance) -> Result<(), SettleError> {
        Python::settle(self, inst)
    }

    fn after_result(&mut self, _inst: &mut Instance) {
        Python::after_result(self);
    }

    fn idle_fds(&self) -> Vec<RawFd> {
        Python::idle_fds(self)
    }

    fn on_idle(&mut self, inst: &mut Instance) {
        Python::on_idle(self, inst);
    }
}
