//! Python: a zygote that has loaded the user's code forks one fresh process per invocation.
//!
//! The zygote (`runtimes/python/bootstrap.py`) talks over a unix stream socket on its
//! fd 3. After each sweep the agent says "prepare" with the next process's four pipe ends
//! attached (SCM_RIGHTS: stdout, stderr, result write ends, the event pipe's read end);
//! the zygote forks that "spare" with CLONE_PARENT, so it is the agent's own child, and
//! reports its pid. The invocation then never touches the zygote: the agent writes the
//! header and the event straight into the spare's event pipe (the zygote never holds an
//! event, so none is left in the memory later forks inherit), sees the spare exit on a
//! pidfd and takes its status and rusage from its own `wait4`. Warm path: one `write`.

use crate::channel::LogSink;
use crate::error::AgentError;
use crate::instance::{load_message, unix_ms, Instance, LOAD_LIMIT};
use crate::process::{self, Capture, ChildState, Outbox, ReadState, SpawnSpec};
use crate::run::{self, Ending, Finished, Held, Pipes, Report};
use crate::runner::Runner;
use hearth_core::invocation::ErrorInfo;
use hearth_core::protocol::InvokeSpec;
use serde::Deserialize;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long a killed process may take to be reapable.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How much of the zygote's own output is kept for error messages.
const LOG_KEEP: usize = 16 * 1024;
/// How long the zygote may take to fork a spare, or to read a "prepare".
const STATUS_WAIT: Duration = Duration::from_secs(10);
/// Largest message the zygote may send.
const MAX_MESSAGE: usize = 1 << 20;

/// One message from the zygote (see the bootstrap's doc for the shapes).
#[derive(Debug, Default, Deserialize)]
struct Message {
    ready: Option<bool>,
    init_error: Option<ErrorInfo>,
    spare: Option<i32>,
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
            return Some(Err(AgentError::Runtime(
                "oversized message from the python zygote".into(),
            )));
        }
        let body = self.buf.get(4..4 + len)?;
        let message = serde_json::from_slice(body).map_err(|e| {
            AgentError::Runtime(format!("unreadable message from the python zygote: {e}"))
        });
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

/// What goes into the spare's event pipe: `[u32 BE header length][header JSON][event]`;
/// `output_dir` becomes the process's `$OUTPUT_DIR`.
fn invocation_message(
    spec: &InvokeSpec,
    event: &[u8],
    output_dir: Option<String>,
) -> Result<Vec<u8>, AgentError> {
    let mut header = serde_json::json!({
        "request_id": spec.request_id,
        "deadline_ms": unix_ms().saturating_add(spec.timeout_ms),
        "attempt": spec.attempt,
        "event_len": event.len(),
    });
    if let Some(dir) = output_dir {
        header["output_dir"] = dir.into();
    }
    let header = serde_json::to_vec(&header)
        .map_err(|e| AgentError::Runtime(format!("encode the invocation header: {e}")))?;
    let len = u32::try_from(header.len())
        .map_err(|_| AgentError::Runtime("invocation header too large".into()))?;
    let mut message = Vec::with_capacity(4 + header.len() + event.len());
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(&header);
    message.extend_from_slice(event);
    Ok(message)
}

/// A spare asked of the zygote: our ends of its pipes, until its pid arrives.
#[derive(Debug)]
struct Asked {
    event: OwnedFd,
    pipes: Pipes,
}

/// The next invocation's process, forked by the zygote as our child and waiting for its
/// event.
#[derive(Debug)]
struct Spare {
    pid: i32,
    pidfd: OwnedFd,
    event: Option<OwnedFd>,
    pipes: Pipes,
    /// What it printed before its invocation (at-fork hooks of the user's module).
    held: Held,
}

impl Spare {
    /// Feeds `message` (then EOF) and watches the process until it exits or the
    /// deadline, passing its output to `log`.
    fn watch(
        &mut self,
        inst: &mut Instance,
        message: Vec<u8>,
        deadline: Instant,
        log: &mut dyn LogSink,
    ) -> Ending {
        let mut outbox = Outbox::new(message, 0);
        loop {
            if let Some(fd) = &self.event {
                outbox.pump(fd.as_raw_fd());
                if outbox.is_done() {
                    self.event = None; // EOF: the event is whole
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ending::TimedOut(None);
            }
            let mut fds = vec![process::pollfd(self.pidfd.as_raw_fd(), libc::POLLIN)];
            if let Some(fd) = &self.event {
                fds.push(process::pollfd(fd.as_raw_fd(), libc::POLLOUT));
            }
            fds.extend(self.pipes.pollfds());
            if let Err(e) = process::poll(&mut fds, Some(deadline - now)) {
                return Ending::Lost(e.to_string(), None);
            }
            self.pipes.pump(log);
            if fds[0].revents != 0 {
                if let ChildState::Exited(info) = inst.reaper.state(self.pid) {
                    return Ending::Exited(info);
                }
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
        let (ours, theirs) = process::socket_pair()?;
        let (log_r, log_w) = process::pipe()?;
        let log_w2 = log_w
            .try_clone()
            .map_err(|e| AgentError::io("dup the zygote log pipe", e))?;
        let args = [
            "-B".to_string(),
            "-s".to_string(),
            inst.layout
                .runtime
                .join("python/bootstrap.py")
                .to_string_lossy()
                .into_owned(),
            inst.layout.code.to_string_lossy().into_owned(),
        ];
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
                    return Err(AgentError::CodeLoad(load_message(&error)));
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
                return Err(AgentError::Runtime(format!(
                    "the python zygote exited while starting: {log}"
                )));
            }
            let now = Instant::now();
            if now >= until {
                return Err(AgentError::CodeLoad(format!(
                    "loading main.py took longer than {} s",
                    LOAD_LIMIT.as_secs()
                )));
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

    /// Asks for the next spare: makes its pipes and hands the zygote its ends.
    fn prepare(&mut self, inst: &Instance) -> Result<Asked, AgentError> {
        let (out_r, out_w) = process::pipe()?;
        let (err_r, err_w) = process::pipe()?;
        let (res_r, res_w) = process::pipe()?;
        let (event_r, event_w) = process::pipe()?;
        process::set_nonblocking(event_w.as_raw_fd())?;
        let pipes = Pipes::new(out_r, err_r, res_r, inst.output_limit)?;
        let header = br#"{"prepare":true}"#;
        let mut message = (header.len() as u32).to_be_bytes().to_vec();
        message.extend_from_slice(header);
        let ends = [
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            res_w.as_raw_fd(),
            event_r.as_raw_fd(),
        ];
        let sock = self.sock.as_raw_fd();
        let deadline = Instant::now() + STATUS_WAIT;
        let sent = send_with_fds(sock, &message, &ends, deadline)
            .map_err(|e| AgentError::io("ask the python zygote for a process", e))?;
        // A few bytes into an idle socket: the rest (if any) fits at once.
        let mut rest = Outbox::new(message, sent);
        rest.pump(sock);
        if !rest.is_done() {
            return Err(AgentError::Runtime(
                "the python zygote does not read its socket".into(),
            ));
        }
        Ok(Asked {
            event: event_w,
            pipes,
        })
    }

    /// Reads what the zygote sent: the pid of the spare asked for, if it came.
    fn take_messages(&mut self) -> Result<Option<i32>, AgentError> {
        self.inbox.pump(self.sock.as_raw_fd());
        let mut spare = None;
        while let Some(message) = self.inbox.next() {
            spare = message?.spare.or(spare);
        }
        Ok(spare)
    }

    /// Waits until `until` for the spare's pid.
    fn await_spare(&mut self, until: Instant) -> Result<i32, AgentError> {
        loop {
            if let Some(pid) = self.take_messages()? {
                return Ok(pid);
            }
            if self.inbox.eof {
                return Err(AgentError::Runtime(
                    "the python zygote died before forking".into(),
                ));
            }
            let now = Instant::now();
            if now >= until {
                return Err(AgentError::Runtime(
                    "the python zygote did not fork in time".into(),
                ));
            }
            let mut fds = vec![process::pollfd(self.sock.as_raw_fd(), libc::POLLIN)];
            fds.extend(
                self.log
                    .raw_fd()
                    .map(|fd| process::pollfd(fd, libc::POLLIN)),
            );
            process::poll(&mut fds, Some(until - now))?;
            self.forward_log();
        }
    }

    fn kill(&mut self, inst: &mut Instance) {
        process::kill(self.pid, libc::SIGKILL);
        let _ = process::wait4(self.pid, false);
        inst.reaper.forget(self.pid);
        self.forward_log();
    }
}

/// The Python runtime: one zygote, restarted when it dies, and the next invocation's
/// process.
#[derive(Debug)]
pub struct Python {
    zygote: Option<Zygote>,
    /// A spare asked for, its pid not yet reported.
    asked: Option<Asked>,
    spare: Option<Spare>,
}

impl Python {
    /// Starts the zygote and asks for the first spare; a failing import of `main.py` is
    /// [`AgentError::CodeLoad`].
    pub fn start(inst: &mut Instance) -> Result<Python, AgentError> {
        let mut python = Python {
            zygote: Some(Zygote::start(inst)?),
            asked: None,
            spare: None,
        };
        python.after_result(inst);
        Ok(python)
    }

    /// A spare waiting for its event: the one ready, else the one asked for (waiting at
    /// most until `until` for its pid), else a new one.
    fn take_spare(&mut self, inst: &mut Instance, until: Instant) -> Result<Spare, AgentError> {
        if let Some(spare) = self.spare.take() {
            if inst.reaper.state(spare.pid) == ChildState::Running {
                return Ok(spare);
            }
            crate::diag!("python spare (pid {}) died while waiting", spare.pid);
            inst.reaper.forget(spare.pid);
        }
        let Some(zygote) = self.zygote.as_mut() else {
            return Err(AgentError::Runtime("no python zygote".into()));
        };
        let asked = match self.asked.take() {
            Some(asked) => asked,
            None => zygote.prepare(inst)?,
        };
        let pid = zygote.await_spare(until)?;
        self.adopt(inst, asked, pid)?;
        self.spare
            .take()
            .ok_or_else(|| AgentError::Runtime("no python spare".into()))
    }

    /// Makes the reported `pid` the spare, with the pipes asked for it.
    fn adopt(&mut self, inst: &mut Instance, asked: Asked, pid: i32) -> Result<(), AgentError> {
        inst.reaper.track(pid);
        let pidfd = match process::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                inst.reaper.forget(pid);
                return Err(e);
            }
        };
        self.spare = Some(Spare {
            pid,
            pidfd,
            event: Some(asked.event),
            pipes: asked.pipes,
            held: Held::default(),
        });
        Ok(())
    }

    /// Runs one invocation in the process forked ahead for it.
    pub fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(spec.timeout_ms);
        if self.zygote.is_none() && !self.ensure_zygote(inst, false) {
            let why = "the python zygote died and could not be restarted".to_string();
            return Ok(run::not_run(&spec.request_id, why));
        }
        let mut spare = match self.take_spare(inst, deadline) {
            Ok(spare) => spare,
            Err(e) => {
                // Whatever the zygote was doing, start it over for the next call.
                self.asked = None;
                self.ensure_zygote(inst, true);
                let why = format!("no python process could be prepared: {e}");
                return Ok(run::not_run(&spec.request_id, why));
            }
        };
        spare.held.replay(log);
        let message = invocation_message(spec, event, inst.output_dir())?;
        let ending = spare.watch(inst, message, deadline, log);
        let duration = started.elapsed();
        spare.event = None;

        let keep: Vec<i32> = self.zygote.as_ref().map(|z| z.pid).into_iter().collect();
        let sweep = inst.sweeper.sweep(&keep, &[spare.pid], &mut inst.reaper);
        let ending = match ending {
            Ending::TimedOut(_) => Ending::TimedOut(inst.reaper.await_exit(spare.pid, KILL_WAIT)),
            other => other,
        };
        spare.pipes.drain(log);
        inst.reaper.forget(spare.pid);
        let runtime_healthy = self.ensure_zygote(inst, false);
        let result = spare.pipes.result.take();
        let report = Report {
            request_id: &spec.request_id,
            timeout_ms: spec.timeout_ms,
            ending,
            duration,
            sweep,
            runtime_healthy,
        };
        Ok(run::finish(report, &mut spare.pipes, &result))
    }

    /// Makes sure a working zygote is there, restarting it when it died or when `restart`;
    /// false when it cannot be brought back. A restart drops the spare asked of the old one.
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
            self.asked = None;
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

    /// Asks the zygote for the next invocation's process now that the sweep is over (a
    /// spare forked earlier would have been swept as a leftover). Its pid is read while
    /// idle, or by the next call.
    pub fn after_result(&mut self, inst: &mut Instance) {
        if self.spare.is_some() || self.asked.is_some() {
            return;
        }
        let Some(zygote) = self.zygote.as_mut() else {
            return;
        };
        match zygote.prepare(inst) {
            Ok(asked) => self.asked = Some(asked),
            // The next call finds no spare and tries again (restarting the zygote).
            Err(e) => crate::diag!("could not ask for the next python process: {e}"),
        }
    }

    /// The zygote's socket and log, and the spare's pipes, watched between invocations.
    pub fn idle_fds(&self) -> Vec<RawFd> {
        let mut fds = Vec::new();
        if let Some(zygote) = &self.zygote {
            fds.push(zygote.sock.as_raw_fd());
            fds.extend(zygote.log.raw_fd());
        }
        if let Some(spare) = &self.spare {
            fds.extend(spare.pipes.pollfds().iter().map(|p| p.fd));
        }
        fds
    }

    /// Forwards the zygote's log, takes the spare's pid when it comes, holds what the
    /// spare prints; notices the zygote's death (it is restarted at the next call).
    pub fn on_idle(&mut self, inst: &mut Instance) {
        if let Some(spare) = self.spare.as_mut() {
            spare.pipes.pump(&mut spare.held);
        }
        let Some(zygote) = self.zygote.as_mut() else {
            return;
        };
        zygote.forward_log();
        let reported = zygote.take_messages();
        if zygote.inbox.eof || reported.is_err() {
            crate::diag!("python zygote (pid {}) died while idle", zygote.pid);
            zygote.kill(inst);
            self.zygote = None;
            self.asked = None;
            return;
        }
        if let (Ok(Some(pid)), Some(asked)) = (reported, self.asked.take()) {
            if let Err(e) = self.adopt(inst, asked, pid) {
                crate::diag!("python spare (pid {pid}): {e}");
                process::kill(pid, libc::SIGKILL);
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

    fn after_result(&mut self, inst: &mut Instance) {
        Python::after_result(self, inst);
    }

    fn idle_fds(&self) -> Vec<RawFd> {
        Python::idle_fds(self)
    }

    fn on_idle(&mut self, inst: &mut Instance) {
        Python::on_idle(self, inst);
    }
}
