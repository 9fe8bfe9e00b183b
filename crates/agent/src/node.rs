//! Node.js: Node cannot fork, so a standby process per invocation is started (and its code
//! loaded) before the event arrives.
//!
//! The standby (`runtimes/nodejs/bootstrap.js`) has fd 0 = event pipe, fds 1/2 = this
//! invocation's stdout/stderr pipes, fd 3 = result pipe. It writes the marker `R` on fd 3
//! once `index.js` is loaded, then blocks reading its event. Warm path: write the event,
//! close the pipe, wait for the result and the exit. The next standby is started right
//! after the result has gone to the worker. What a standby prints while it loads is held
//! and logged with the invocation that uses it.

use crate::channel::LogSink;
use crate::error::AgentError;
use crate::process::{self, ChildState, ExitInfo, Outbox, SpawnSpec};
use crate::run::{self, Ending, Finished, Held, Pipes, Report};
use crate::runtime::{load_message, unix_ms, Instance, LOAD_LIMIT};
use hearth_core::invocation::ErrorInfo;
use hearth_core::protocol::InvokeSpec;
use serde::Deserialize;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long a killed standby may take to be reapable.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The byte the bootstrap writes on the result pipe once the code is loaded.
const READY: u8 = b'R';

#[derive(Deserialize)]
struct InitError {
    init_error: ErrorInfo,
}

/// A node process that is (being) loaded and waits for its event.
#[derive(Debug)]
struct Standby {
    pid: i32,
    pidfd: OwnedFd,
    event: Option<OwnedFd>,
    pipes: Pipes,
    /// Its output before the invocation.
    held: Held,
    ready: bool,
}

impl Standby {
    fn spawn(inst: &mut Instance) -> Result<Standby, AgentError> {
        let (event_r, event_w) = process::pipe()?;
        let (out_r, out_w) = process::pipe()?;
        let (err_r, err_w) = process::pipe()?;
        let (res_r, res_w) = process::pipe()?;
        let args = [
            inst.layout
                .runtime
                .join("nodejs/bootstrap.js")
                .to_string_lossy()
                .into_owned(),
            inst.layout.code.to_string_lossy().into_owned(),
        ];
        let pid = process::spawn(SpawnSpec {
            program: &inst.interpreter,
            args: &args,
            env: &inst.env,
            cwd: &inst.layout.code,
            fds: [event_r, out_w, err_w, res_w],
        })?;
        inst.reaper.track(pid);
        process::set_nonblocking(event_w.as_raw_fd())?;
        Ok(Standby {
            pid,
            pidfd: process::pidfd_open(pid)?,
            event: Some(event_w),
            pipes: Pipes::new(out_r, err_r, res_r, inst.output_limit)?,
            held: Held::default(),
            ready: false,
        })
    }

    fn state(&self, inst: &mut Instance) -> ChildState {
        inst.reaper.state(self.pid)
    }

    /// Waits up to `limit` for the ready marker; a failed load is
    /// [`AgentError::CodeLoad`].
    fn await_ready(&mut self, inst: &mut Instance, limit: Duration) -> Result<(), AgentError> {
        let until = Instant::now() + limit;
        loop {
            self.pipes.pump(&mut self.held);
            if self.pipes.result.data().first() == Some(&READY) {
                self.ready = true;
                return Ok(());
            }
            if let ChildState::Exited(info) = self.state(inst) {
                self.pipes.drain(&mut self.held);
                return Err(self.load_failure(info));
            }
            let now = Instant::now();
            if now >= until {
                return Err(AgentError::CodeLoad(format!(
                    "loading index.js took longer than {} ms",
                    limit.as_millis()
                )));
            }
            let mut fds = self.pipes.pollfds();
            fds.push(process::pollfd(self.pidfd.as_raw_fd(), libc::POLLIN));
            process::poll(&mut fds, Some(until - now))?;
        }
    }

    fn load_failure(&self, info: ExitInfo) -> AgentError {
        if let Ok(e) = serde_json::from_slice::<InitError>(self.pipes.result.data()) {
            return AgentError::CodeLoad(load_message(&e.init_error));
        }
        let how = match (info.exit_code(), info.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (_, Some(signal)) => format!("was killed by signal {signal}"),
            _ => "ended".to_string(),
        };
        let stderr = String::from_utf8_lossy(self.pipes.stderr.data());
        AgentError::Runtime(format!(
            "node {how} before loading the code: {}",
            stderr.trim_end()
        ))
    }

    /// Hands the event over and watches the process until it exits or the deadline,
    /// passing its output to `log`.
    fn run(
        &mut self,
        inst: &mut Instance,
        input: Vec<u8>,
        deadline: Instant,
        log: &mut dyn LogSink,
    ) -> Ending {
        let mut outbox = Outbox::new(input, 0);
        loop {
            if let Some(fd) = &self.event {
                outbox.pump(fd.as_raw_fd());
                if outbox.is_done() {
                    self.event = None; // EOF tells the bootstrap the event is whole
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
                if let ChildState::Exited(info) = self.state(inst) {
                    return Ending::Exited(info);
                }
            }
        }
    }

    fn kill(self, inst: &mut Instance) {
        process::kill(self.pid, libc::SIGKILL);
        let _ = process::wait4(self.pid, false);
        inst.reaper.forget(self.pid);
    }
}

/// The Node.js runtime: at most one standby, replaced after every invocation.
#[derive(Debug)]
pub struct Node {
    standby: Option<Standby>,
}

impl Node {
    /// Starts the first standby and waits until it has loaded `index.js`.
    pub fn start(inst: &mut Instance) -> Result<Node, AgentError> {
        let mut standby = Standby::spawn(inst)?;
        match standby.await_ready(inst, LOAD_LIMIT) {
            Ok(()) => Ok(Node {
                standby: Some(standby),
            }),
            Err(e) => {
                standby.kill(inst);
                Err(e)
            }
        }
    }

    /// A loaded standby (waiting at most `limit` for it to load), replacing one that died
    /// while it waited.
    fn ready_standby(
        &mut self,
        inst: &mut Instance,
        limit: Duration,
    ) -> Result<Standby, AgentError> {
        if let Some(standby) = self.standby.take() {
            if standby.state(inst) == ChildState::Running {
                self.standby = Some(standby);
            } else {
                crate::diag!("node standby (pid {}) died while waiting", standby.pid);
                inst.reaper.forget(standby.pid);
            }
        }
        let mut standby = match self.standby.take() {
            Some(standby) => standby,
            None => Standby::spawn(inst)?,
        };
        if !standby.ready {
            if let Err(e) = standby.await_ready(inst, limit) {
                standby.kill(inst);
                return Err(e);
            }
        }
        Ok(standby)
    }

    /// Runs one invocation in the standby process.
    pub fn invoke(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        // The standby started after the previous result may still be loading; that wait
        // is bounded by this invocation's own timeout.
        let limit = Duration::from_millis(spec.timeout_ms).min(LOAD_LIMIT);
        let mut standby = match self.ready_standby(inst, limit) {
            Ok(standby) => standby,
            Err(e) => {
                let why = format!("no node.js process could load the code: {e}");
                return Ok(run::not_run(&spec.request_id, why));
            }
        };
        standby.held.replay(log);
        let mut header = serde_json::json!({
            "request_id": spec.request_id,
            "deadline_ms": unix_ms().saturating_add(spec.timeout_ms),
        });
        if let Some(dir) = inst.output_dir() {
            header["output_dir"] = dir.into();
        }
        let mut input = serde_json::to_vec(&header)
            .map_err(|e| AgentError::Runtime(format!("encode the invocation header: {e}")))?;
        input.push(b'\n');
        input.extend_from_slice(event);

        let started = Instant::now();
        let ending = standby.run(
            inst,
            input,
            started + Duration::from_millis(spec.timeout_ms),
            log,
        );
        let duration = started.elapsed();

        let sweep = inst.sweeper.sweep(&[], &[standby.pid], &mut inst.reaper);
        let ending = match ending {
            Ending::TimedOut(_) => Ending::TimedOut(inst.reaper.await_exit(standby.pid, KILL_WAIT)),
            other => other,
        };
        standby.pipes.drain(log);
        inst.reaper.forget(standby.pid);
        let mut result = standby.pipes.result.take();
        if result.first() == Some(&READY) {
            result.remove(0);
        }
        let report = Report {
            request_id: &spec.request_id,
            timeout_ms: spec.timeout_ms,
            ending,
            duration,
            sweep,
            runtime_healthy: true,
        };
        Ok(run::finish(report, &mut standby.pipes, &result))
    }

    /// Starts the next standby (its code loads while the worker reads the result).
    pub fn after_result(&mut self, inst: &mut Instance) {
        if self.standby.is_none() {
            match Standby::spawn(inst) {
                Ok(standby) => self.standby = Some(standby),
                Err(e) => crate::diag!("could not start the next node standby: {e}"),
            }
        }
    }

    /// The standby's pipes, drained between invocations so it never blocks on a full one.
    pub fn idle_fds(&self) -> Vec<RawFd> {
        self.standby
            .as_ref()
            .map(|s| s.pipes.pollfds().iter().map(|p| p.fd).collect())
            .unwrap_or_default()
    }

    /// Reads what the standby wrote while waiting (held for its invocation).
    pub fn on_idle(&mut self) {
        if let Some(standby) = self.standby.as_mut() {
            standby.pipes.pump(&mut standby.held);
        }
    }
}
