//! Processes fed their event on a pipe: the Node.js standby, a compiled handler's standby
//! (both started ahead of their invocation) and a compiled full program (started when its
//! event arrives).
//!
//! A [`Proc`] has fd 0 = the event pipe, fds 1/2 = this invocation's stdout/stderr pipes,
//! fd 3 = the result pipe. A standby writes [`READY`] on fd 3 once it can take its event,
//! then blocks reading fd 0. What it prints while it waits is held and logged with the
//! invocation that uses it. A booting standby first writes [`BOOTED`] and waits for
//! [`GO`], so that its runtime can start outside the function's CPU quota and be moved in
//! before the function's code loads. [`Standby`] keeps at most one such process ready and
//! replaces it after every result; a [`StandbyRuntime`] says what differs: how the process starts,
//! how the event is framed, how the result reads.

use crate::channel::LogSink;
use crate::error::{AgentError, CodeLoadError, RuntimeError};
use crate::instance::{Instance, LOAD_LIMIT};
use crate::process::{self, Capture, ChildState, ExitInfo, Outbox, SpawnSpec};
use crate::run::{self, Ending, Finished, Held, Pipes, Report};
use crate::runner::Runner;
use hearth_core::protocol::InvokeSpec;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The byte a standby writes on the result pipe once it waits for its event.
const READY: u8 = b'R';
/// The byte a booting standby writes on the result pipe once its runtime has started,
/// before any of the function's code: it then waits for [`GO`] on fd 0.
const BOOTED: u8 = b'B';
/// The byte the agent sends a booted standby once it is inside the function's CPU quota.
const GO: u8 = b'G';

/// What a standby is waited for to say.
#[derive(Debug, Clone, Copy)]
enum Marker {
    /// [`BOOTED`]: its runtime is up, no code of the function's loaded.
    Booted,
    /// [`READY`]: it waits for its event.
    Ready,
}

/// A started process, its event pipe and its output pipes.
#[derive(Debug)]
pub struct Proc {
    pid: i32,
    pidfd: OwnedFd,
    input: Option<OwnedFd>,
    /// Its stdout, stderr and result pipes.
    pub pipes: Pipes,
    /// What it printed before its invocation (a standby).
    held: Held,
    ready: bool,
    /// A booting standby (see [`Proc::spawn_booting`]) that has not had [`GO`] yet, and
    /// whether it still runs outside the function's CPU quota.
    booting: Option<bool>,
    /// Whether its result pipe starts with [`BOOTED`].
    boots: bool,
    /// Whether the end of its result pipe ends the invocation (see [`Proc::ends_with_its_result`]).
    ends_with_result: bool,
}

impl Proc {
    /// Starts `program` in the code dir; stdout keeps at most `stdout_limit` bytes, stderr
    /// the instance's output limit, the result pipe `result_limit`.
    pub fn spawn(
        inst: &mut Instance,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        stdout_limit: usize,
        result_limit: usize,
    ) -> Result<Proc, AgentError> {
        Self::start(inst, program, args, env, [stdout_limit, result_limit], None)
    }

    /// [`Proc::spawn`] for a standby that boots: it writes [`BOOTED`] once its runtime has
    /// started and waits for [`GO`] before it loads the function's code. When
    /// `outside_quota`, it starts outside the function's CPU quota (a runtime's own start
    /// is the platform's work: a small share would make it take several times as long)
    /// and is moved in before it gets [`GO`]; only for a runtime whose start runs no
    /// code the function chose.
    pub fn spawn_booting(
        inst: &mut Instance,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        limits: [usize; 2],
        outside_quota: bool,
    ) -> Result<Proc, AgentError> {
        Self::start(inst, program, args, env, limits, Some(outside_quota))
    }

    fn start(
        inst: &mut Instance,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        [stdout_limit, result_limit]: [usize; 2],
        booting: Option<bool>,
    ) -> Result<Proc, AgentError> {
        let (in_r, in_w) = process::pipe()?;
        let (out_r, out_w) = process::pipe()?;
        let (err_r, err_w) = process::pipe()?;
        let (res_r, res_w) = process::pipe()?;
        let spec = SpawnSpec {
            program,
            args,
            env,
            cwd: &inst.layout.code,
            fds: [in_r, out_w, err_w, res_w],
        };
        let pid = match booting {
            Some(true) => process::spawn_outside_quota(spec)?,
            _ => process::spawn(spec)?,
        };
        inst.reaper.track(pid);
        process::set_nonblocking(in_w.as_raw_fd())?;
        let pipes = Pipes {
            stdout: Capture::new(out_r, stdout_limit)?,
            stderr: Capture::new(err_r, inst.output_limit)?,
            result: Capture::new(res_r, result_limit)?,
        };
        Ok(Proc {
            pid,
            pidfd: process::pidfd_open(pid)?,
            input: Some(in_w),
            pipes,
            held: Held::default(),
            ready: false,
            booting,
            boots: booting.is_some(),
            ends_with_result: false,
        })
    }

    /// Makes the end of its result pipe the end of the invocation: a runtime that closes
    /// fd 3 only once its result is written and its output flushed, right before it
    /// exits with 0 (the Node.js bootstrap), is killed then instead of being waited for
    /// through its own teardown; that exit reads as the 0 it was about to be. An exit
    /// already under way keeps its own status (the kill cannot change it).
    pub fn ends_with_its_result(mut self) -> Proc {
        self.ends_with_result = true;
        self
    }

    /// What came on the result pipe after the boot marker.
    fn reported(&self) -> &[u8] {
        let data = self.pipes.result.data();
        match self.boots {
            true => data.strip_prefix(&[BOOTED]).unwrap_or(data),
            false => data,
        }
    }

    /// Once a booting standby has said [`BOOTED`]: moves it into the function's CPU quota
    /// (when outside) and sends [`GO`]. Nothing to do before that, or after.
    fn advance_boot(&mut self) -> Result<(), AgentError> {
        let Some(outside_quota) = self.booting else {
            return Ok(());
        };
        if self.pipes.result.data().first() != Some(&BOOTED) {
            return Ok(());
        }
        if outside_quota {
            crate::cpu_group::move_into(self.pid)?;
        }
        let Some(input) = &self.input else {
            return Err(RuntimeError::StandbyPipeClosed.into());
        };
        let mut go = Outbox::new(vec![GO], 0);
        // One byte into an empty pipe: it fits.
        go.pump(input.as_raw_fd());
        if !go.is_done() {
            return Err(RuntimeError::StandbyNotStarted.into());
        }
        self.booting = None;
        Ok(())
    }

    /// Writes `data` into its event pipe ahead of anything else (a stem's standby takes
    /// its function's environment there); false when the pipe did not take it all.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        let Some(input) = &self.input else {
            return false;
        };
        let mut outbox = Outbox::new(data.to_vec(), 0);
        outbox.pump(input.as_raw_fd());
        outbox.is_done()
    }

    /// Waits up to `limit` for a booting standby's [`BOOTED`], then moves it into the
    /// function's CPU group (when outside) but sends no [`GO`]: a stem's standby has
    /// booted and moved before the stem says ready, so neither is on a cold start's
    /// path (and a stem's standby reads its function's environment before its `GO`).
    pub fn await_booted<R: StandbyRuntime>(
        &mut self,
        inst: &mut Instance,
        limit: Duration,
        runtime: &R,
    ) -> Result<(), AgentError> {
        self.await_marker(inst, limit, runtime, Marker::Booted)?;
        if self.booting == Some(true) {
            crate::cpu_group::move_into(self.pid)?;
            self.booting = Some(false);
        }
        Ok(())
    }

    /// Waits up to `limit` for the ready marker; `runtime` says why there was none.
    fn await_ready<R: StandbyRuntime>(
        &mut self,
        inst: &mut Instance,
        limit: Duration,
        runtime: &R,
    ) -> Result<(), AgentError> {
        self.await_marker(inst, limit, runtime, Marker::Ready)?;
        self.ready = true;
        Ok(())
    }

    /// Waits up to `limit` for `marker` (moving a booted standby on when waiting for
    /// [`READY`]); `runtime` says why there was none.
    fn await_marker<R: StandbyRuntime>(
        &mut self,
        inst: &mut Instance,
        limit: Duration,
        runtime: &R,
        marker: Marker,
    ) -> Result<(), AgentError> {
        let until = Instant::now() + limit;
        loop {
            self.pipes.pump(&mut self.held);
            let seen = match marker {
                Marker::Booted => self.pipes.result.data().first() == Some(&BOOTED),
                Marker::Ready => {
                    self.advance_boot()?;
                    self.reported().first() == Some(&READY)
                }
            };
            if seen {
                return Ok(());
            }
            if let ChildState::Exited(info) = inst.reaper.state(self.pid) {
                self.pipes.drain(&mut self.held);
                return Err(runtime.died(&self.pipes, info));
            }
            let now = Instant::now();
            if now >= until {
                return Err(match marker {
                    Marker::Booted => RuntimeError::StandbyNotStarted.into(),
                    Marker::Ready => CodeLoadError::TooSlow {
                        what: R::TOO_SLOW,
                        limit,
                    }
                    .into(),
                });
            }
            let mut fds = self.pipes.pollfds();
            fds.push(process::pollfd(self.pidfd.as_raw_fd(), libc::POLLIN));
            process::poll(&mut fds, Some(until - now))?;
        }
    }

    /// Feeds `input` (then EOF) and watches the process until it exits or the deadline,
    /// passing its output to `log`.
    fn watch(
        &mut self,
        inst: &mut Instance,
        input: Vec<u8>,
        deadline: Instant,
        log: &mut dyn LogSink,
    ) -> Ending {
        let mut outbox = Outbox::new(input, 0);
        let mut ended_by_us = false;
        loop {
            if let Some(fd) = &self.input {
                outbox.pump(fd.as_raw_fd());
                if outbox.is_done() {
                    self.input = None; // EOF: the event is whole
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ending::TimedOut(None);
            }
            let mut fds = vec![process::pollfd(self.pidfd.as_raw_fd(), libc::POLLIN)];
            if let Some(fd) = &self.input {
                fds.push(process::pollfd(fd.as_raw_fd(), libc::POLLOUT));
            }
            fds.extend(self.pipes.pollfds());
            if let Err(e) = process::poll(&mut fds, Some(deadline - now)) {
                return Ending::Lost(e.to_string(), None);
            }
            self.pipes.pump(log);
            if fds[0].revents != 0 {
                if let ChildState::Exited(info) = inst.reaper.state(self.pid) {
                    return Ending::Exited(
                        match ended_by_us && info.signal() == Some(libc::SIGKILL) {
                            true => ExitInfo { status: 0, ..info },
                            false => info,
                        },
                    );
                }
            }
            if self.ends_with_result && !ended_by_us && self.pipes.result.raw_fd().is_none() {
                ended_by_us = process::kill(self.pid, libc::SIGKILL);
            }
        }
    }

    /// Runs one invocation: feeds `input`, watches the process until it exits or
    /// `started` + the timeout, then kills what is left of it and reads the pipes to
    /// their end.
    pub fn supervise<'a>(
        &mut self,
        inst: &mut Instance,
        spec: &'a InvokeSpec,
        input: Vec<u8>,
        started: Instant,
        log: &mut dyn LogSink,
    ) -> Report<'a> {
        let deadline = started + Duration::from_millis(spec.timeout_ms);
        let ending = self.watch(inst, input, deadline, log);
        let duration = started.elapsed();
        self.input = None;
        let (ending, sweep) = run::settle(inst, self.pid, ending, &mut self.pipes, log);
        Report {
            request_id: &spec.request_id,
            timeout_ms: spec.timeout_ms,
            ending,
            duration,
            sweep,
            runtime_healthy: true,
        }
    }

    /// What came on the result pipe, without the ready marker.
    fn take_result(&mut self) -> Vec<u8> {
        let mut result = self.pipes.result.take();
        if self.boots && result.first() == Some(&BOOTED) {
            result.remove(0);
        }
        if result.first() == Some(&READY) {
            result.remove(0);
        }
        result
    }

    pub fn kill(self, inst: &mut Instance) {
        process::kill(self.pid, libc::SIGKILL);
        let _ = process::wait4(self.pid, false);
        inst.reaper.forget(self.pid);
    }
}

/// What a runtime that keeps a standby does its own way.
pub trait StandbyRuntime {
    /// The standby's name in diagnostics.
    const NAME: &'static str;
    /// What an invocation that found no ready process says (before the cause).
    const UNAVAILABLE: &'static str;
    /// What a standby not ready in time says (before ` LIMIT ms`).
    const TOO_SLOW: &'static str;
    /// Starts a standby process.
    fn spawn(&self, inst: &mut Instance) -> Result<Proc, AgentError>;
    /// The error of a standby that ended (`info`) before it was ready.
    fn died(&self, pipes: &Pipes, info: ExitInfo) -> AgentError;
    /// What the standby reads on its fd 0 for this invocation.
    fn frame(
        &self,
        inst: &Instance,
        spec: &InvokeSpec,
        event: &[u8],
    ) -> Result<Vec<u8>, AgentError>;
    /// The result JSON that [`run::finish`] reads, from what came on the result pipe
    /// after the ready marker.
    fn result(&self, reported: Vec<u8>) -> Vec<u8>;
}

/// A runtime with at most one standby, replaced after every invocation.
#[derive(Debug)]
pub struct Standby<R> {
    runtime: R,
    next: Option<Proc>,
}

impl<R: StandbyRuntime> Standby<R> {
    /// Starts the first standby and waits until it is ready.
    pub fn start(inst: &mut Instance, runtime: R) -> Result<Standby<R>, AgentError> {
        let mut proc = runtime.spawn(inst)?;
        if let Err(e) = proc.await_ready(inst, LOAD_LIMIT, &runtime) {
            proc.kill(inst);
            return Err(e);
        }
        Ok(Standby {
            runtime,
            next: Some(proc),
        })
    }

    /// [`Standby::start`] with a process already started (a stem's).
    pub fn adopt(
        inst: &mut Instance,
        runtime: R,
        mut proc: Proc,
    ) -> Result<Standby<R>, AgentError> {
        if let Err(e) = proc.await_ready(inst, LOAD_LIMIT, &runtime) {
            proc.kill(inst);
            return Err(e);
        }
        Ok(Standby {
            runtime,
            next: Some(proc),
        })
    }

    /// A ready standby (waiting at most `limit` for it), replacing one that died while
    /// it waited.
    fn take_ready(&mut self, inst: &mut Instance, limit: Duration) -> Result<Proc, AgentError> {
        if let Some(proc) = self.next.take() {
            if inst.reaper.state(proc.pid) == ChildState::Running {
                self.next = Some(proc);
            } else {
                crate::diag!("{} (pid {}) died while waiting", R::NAME, proc.pid);
                inst.reaper.forget(proc.pid);
            }
        }
        let mut proc = match self.next.take() {
            Some(proc) => proc,
            None => self.runtime.spawn(inst)?,
        };
        if !proc.ready {
            if let Err(e) = proc.await_ready(inst, limit, &self.runtime) {
                proc.kill(inst);
                return Err(e);
            }
        }
        Ok(proc)
    }

    /// Runs one invocation in the standby process.
    pub fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        // The standby started after the previous result may still be loading; that wait
        // is bounded by this invocation's own timeout.
        let limit = Duration::from_millis(spec.timeout_ms).min(LOAD_LIMIT);
        let mut proc = match self.take_ready(inst, limit) {
            Ok(proc) => proc,
            Err(e) => {
                let why = format!("{}: {e}", R::UNAVAILABLE);
                return Ok(run::not_run(&spec.request_id, why));
            }
        };
        proc.held.replay(log);
        let input = self.runtime.frame(inst, spec, event)?;
        let report = proc.supervise(inst, spec, input, Instant::now(), log);
        let result = self.runtime.result(proc.take_result());
        Ok(run::finish(report, &mut proc.pipes, &result))
    }

    /// Starts the next standby (it gets ready while the worker reads the result).
    pub fn after_result(&mut self, inst: &mut Instance) {
        if self.next.is_none() {
            match self.runtime.spawn(inst) {
                Ok(proc) => self.next = Some(proc),
                Err(e) => crate::diag!("could not start the next {}: {e}", R::NAME),
            }
        }
    }

    /// The standby's pipes, drained between invocations so it never blocks on a full one.
    pub fn idle_fds(&self) -> Vec<RawFd> {
        self.next
            .as_ref()
            .map(|p| p.pipes.pollfds().iter().map(|p| p.fd).collect())
            .unwrap_or_default()
    }

    /// Reads what the standby wrote while waiting (held for its invocation).
    /// Moves a booted standby on (a failure kills it: the next call replaces it).
    pub fn on_idle(&mut self) {
        if let Some(proc) = self.next.as_mut() {
            proc.pipes.pump(&mut proc.held);
            if let Err(e) = proc.advance_boot() {
                crate::diag!("{} (pid {}): {e}", R::NAME, proc.pid);
                process::kill(proc.pid, libc::SIGKILL);
            }
        }
    }
}

impl<R: StandbyRuntime> Runner for Standby<R> {
    fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        Standby::serve(self, inst, spec, event, log)
    }

    fn after_result(&mut self, inst: &mut Instance) {
        Standby::after_result(self, inst);
    }

    fn idle_fds(&self) -> Vec<RawFd> {
        Standby::idle_fds(self)
    }

    fn on_idle(&mut self, _inst: &mut Instance) {
        Standby::on_idle(self);
    }
}
