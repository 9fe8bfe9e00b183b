//! Compiled functions (C++, Go): the code dir holds the artifact a build made (the
//! program and its manifest), and every invocation runs the program in a fresh process.
//! Nothing is compiled here.
//!
//! - A handler-only program ([`Kind::Handler`]) is started ahead of its invocation, like
//!   the Node.js standby: fd 0 = the invocation pipe, fds 1/2 = stdout/stderr pipes,
//!   fd 3 = the result pipe. The template's `main` writes `R` on fd 3 once running, then
//!   blocks reading fd 0. The agent writes header lines `NAME=VALUE` (the invocation's
//!   environment), an empty line and the event, and closes the pipe; the program writes
//!   `O` + the returned text (JSON when it parses, else taken as a string) or
//!   `E` + type + NUL + message [+ NUL + trace] on fd 3 and exits. The next standby is
//!   started once the result has gone out.
//! - A full program ([`Kind::Program`]) needs its event in its environment, so it starts
//!   when the event arrives (an exec of a static binary: about a millisecond): `PAYLOAD`
//!   holds the event (or, past [`PAYLOAD_ENV_LIMIT`], `PAYLOAD_FILE` names a file in
//!   `/tmp` holding it), and stdin carries it too. Its stdout is the inline stdout and
//!   the result: the whole of it as JSON, else its last line; empty is `null`. A
//!   non-zero exit code is an `error` with the end of stderr.

use crate::build::{Kind, Manifest};
use crate::channel::LogSink;
use crate::error::AgentError;
use crate::process::{self, Capture, ChildState, ExitInfo, Outbox, SpawnSpec};
use crate::run::{self, Ending, Finished, Held, Pipes, Report, MAX_RESULT_BYTES};
use crate::runtime::{unix_ms, Instance, LOAD_LIMIT};
use hearth_core::protocol::{InvokeSpec, ARTIFACT_MANIFEST, ARTIFACT_PROGRAM};
use serde_json::value::RawValue;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a killed process may take to be reapable.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The byte the handler template writes on the result pipe once it runs.
const READY: u8 = b'R';
/// Largest event passed in `PAYLOAD`; a larger one goes in `PAYLOAD_FILE` (as the
/// reference platform does: 100 KB, well under Linux's 128 KiB per variable).
pub const PAYLOAD_ENV_LIMIT: usize = 100 * 1024;
/// How much of stderr a failed program's error message quotes.
const STDERR_TAIL: usize = 2048;

/// The per-invocation environment: request id, deadline, output dir.
fn invocation_env(inst: &Instance, spec: &InvokeSpec) -> Vec<(String, String)> {
    let mut env = vec![
        ("HEARTH_REQUEST_ID".to_string(), spec.request_id.clone()),
        (
            "HEARTH_DEADLINE_MS".to_string(),
            unix_ms().saturating_add(spec.timeout_ms).to_string(),
        ),
    ];
    if let Some(dir) = inst.output_dir() {
        env.push(("OUTPUT_DIR".to_string(), dir));
    }
    // A header line ends at a newline; a value holding one (or a NUL) cannot be passed.
    env.retain(|(_, v)| !v.contains(['\n', '\0']));
    env
}

/// What the handler template wrote after its ready marker, as the result JSON that
/// [`run::finish`] reads (`{"ok": …}` / `{"error": …}`); empty when it wrote nothing.
fn handler_result(reported: &[u8]) -> Vec<u8> {
    match reported.split_first() {
        Some((b'O', text)) => ok_json(text),
        Some((b'E', rest)) => {
            let mut parts = rest.splitn(3, |b| *b == 0);
            let mut next =
                || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let (kind, message, trace) = (next(), next(), next());
            serde_json::json!({"error": {"type": kind, "message": message, "trace": trace}})
                .to_string()
                .into_bytes()
        }
        Some(_) => b"{\"ok\":".to_vec(), // garbled: finish reports it
        None => Vec::new(),
    }
}

/// `{"ok": text}` when `text` is JSON, else `{"ok": "text"}` (lossy UTF-8).
fn ok_json(text: &[u8]) -> Vec<u8> {
    let raw = std::str::from_utf8(text)
        .ok()
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok());
    match raw {
        Some(raw) => format!("{{\"ok\":{}}}", raw.get()).into_bytes(),
        None => serde_json::json!({ "ok": String::from_utf8_lossy(text) })
            .to_string()
            .into_bytes(),
    }
}

/// A full program's stdout as its result JSON: the whole of it, else its last non-empty
/// line, as JSON; empty stdout is `null`. `Err` says why it is not JSON.
fn program_result(stdout: &[u8]) -> Result<Vec<u8>, String> {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim();
    if text.is_empty() {
        return Ok(b"{\"ok\":null}".to_vec());
    }
    let whole = serde_json::from_str::<&RawValue>(text);
    let raw = match whole {
        Ok(raw) => raw.get().to_string(),
        Err(e) => {
            let last = text.lines().map(str::trim).rfind(|l| !l.is_empty());
            match last.map(serde_json::from_str::<&RawValue>) {
                Some(Ok(raw)) => raw.get().to_string(),
                _ => return Err(e.to_string()),
            }
        }
    };
    Ok(format!("{{\"ok\":{raw}}}").into_bytes())
}

/// The error JSON of a program that failed by its own account.
fn program_error(kind: &str, message: String) -> Vec<u8> {
    serde_json::json!({"error": {"type": kind, "message": message, "trace": ""}})
        .to_string()
        .into_bytes()
}

/// The last [`STDERR_TAIL`] bytes of stderr, for an error message.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim_end();
    let mut start = text.len().saturating_sub(STDERR_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// A started process of the program and its pipes.
#[derive(Debug)]
struct Proc {
    pid: i32,
    pidfd: OwnedFd,
    input: Option<OwnedFd>,
    pipes: Pipes,
    /// What it printed before its invocation (a standby).
    held: Held,
    ready: bool,
}

impl Proc {
    fn spawn(
        inst: &mut Instance,
        program: &str,
        env: &[(String, String)],
        stdout_limit: usize,
    ) -> Result<Proc, AgentError> {
        let (in_r, in_w) = process::pipe()?;
        let (out_r, out_w) = process::pipe()?;
        let (err_r, err_w) = process::pipe()?;
        let (res_r, res_w) = process::pipe()?;
        let pid = process::spawn(SpawnSpec {
            program,
            args: &[],
            env,
            cwd: &inst.layout.code,
            fds: [in_r, out_w, err_w, res_w],
        })?;
        inst.reaper.track(pid);
        process::set_nonblocking(in_w.as_raw_fd())?;
        let pipes = Pipes {
            stdout: Capture::new(out_r, stdout_limit)?,
            stderr: Capture::new(err_r, inst.output_limit)?,
            result: Capture::new(res_r, MAX_RESULT_BYTES + 2)?,
        };
        Ok(Proc {
            pid,
            pidfd: process::pidfd_open(pid)?,
            input: Some(in_w),
            pipes,
            held: Held::default(),
            ready: false,
        })
    }

    /// Waits up to `limit` for the template's ready marker.
    fn await_ready(&mut self, inst: &mut Instance, limit: Duration) -> Result<(), AgentError> {
        let until = Instant::now() + limit;
        loop {
            self.pipes.pump(&mut self.held);
            if self.pipes.result.data().first() == Some(&READY) {
                self.ready = true;
                return Ok(());
            }
            if let ChildState::Exited(info) = inst.reaper.state(self.pid) {
                self.pipes.drain(&mut self.held);
                let how = match (info.exit_code(), info.signal()) {
                    (Some(code), _) => format!("exited with code {code}"),
                    (_, Some(signal)) => {
                        format!(
                            "was killed by signal {signal} ({})",
                            run::signal_name(signal)
                        )
                    }
                    _ => "ended".to_string(),
                };
                let stderr = String::from_utf8_lossy(self.pipes.stderr.data());
                return Err(AgentError::CodeLoad(format!(
                    "the function's program {how} before it was ready: {}",
                    stderr.trim_end()
                )));
            }
            let now = Instant::now();
            if now >= until {
                return Err(AgentError::CodeLoad(format!(
                    "the function's program did not start within {} ms",
                    limit.as_millis()
                )));
            }
            let mut fds = self.pipes.pollfds();
            fds.push(process::pollfd(self.pidfd.as_raw_fd(), libc::POLLIN));
            process::poll(&mut fds, Some(until - now))?;
        }
    }

    /// Feeds `input` and watches the process until it exits or the deadline.
    fn run(
        &mut self,
        inst: &mut Instance,
        input: Vec<u8>,
        deadline: Instant,
        log: &mut dyn LogSink,
    ) -> Ending {
        let mut outbox = Outbox::new(input, 0);
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
                    return Ending::Exited(info);
                }
            }
        }
    }

    /// Kills what is left of the invocation, then reads the pipes to their end.
    fn finish_run(
        &mut self,
        inst: &mut Instance,
        ending: Ending,
        log: &mut dyn LogSink,
    ) -> (Ending, crate::sweep::SweepReport) {
        self.input = None;
        let sweep = inst.sweeper.sweep(&[], &[self.pid], &mut inst.reaper);
        let ending = match ending {
            Ending::TimedOut(_) => Ending::TimedOut(inst.reaper.await_exit(self.pid, KILL_WAIT)),
            other => other,
        };
        self.pipes.drain(log);
        inst.reaper.forget(self.pid);
        (ending, sweep)
    }

    fn kill(self, inst: &mut Instance) {
        process::kill(self.pid, libc::SIGKILL);
        let _ = process::wait4(self.pid, false);
        inst.reaper.forget(self.pid);
    }
}

/// The compiled runtime: the program, and for a handler the next standby.
#[derive(Debug)]
pub struct Binary {
    program: String,
    kind: Kind,
    standby: Option<Proc>,
}

impl Binary {
    /// Reads the artifact's manifest; for a handler, starts the first standby and waits
    /// until it runs.
    pub fn start(inst: &mut Instance) -> Result<Binary, AgentError> {
        let manifest_path = inst.layout.code.join(ARTIFACT_MANIFEST);
        let manifest: Manifest = fs::read(&manifest_path)
            .map_err(|e| AgentError::at("read", &manifest_path, e))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| {
                    AgentError::Package(format!("{ARTIFACT_MANIFEST} is not a manifest: {e}"))
                })
            })?;
        let program: PathBuf = inst.layout.code.join(ARTIFACT_PROGRAM);
        if !program.is_file() {
            return Err(AgentError::Package(format!(
                "the artifact has no {ARTIFACT_PROGRAM}"
            )));
        }
        let mut binary = Binary {
            program: program.to_string_lossy().into_owned(),
            kind: manifest.kind,
            standby: None,
        };
        if binary.kind == Kind::Handler {
            let mut standby = binary.spawn_standby(inst)?;
            if let Err(e) = standby.await_ready(inst, LOAD_LIMIT) {
                standby.kill(inst);
                return Err(e);
            }
            binary.standby = Some(standby);
        }
        Ok(binary)
    }

    fn spawn_standby(&self, inst: &mut Instance) -> Result<Proc, AgentError> {
        let env = inst.env.clone();
        Proc::spawn(inst, &self.program, &env, inst.output_limit)
    }

    /// A running standby (waiting at most `limit` for it), replacing one that died.
    fn ready_standby(&mut self, inst: &mut Instance, limit: Duration) -> Result<Proc, AgentError> {
        if let Some(standby) = self.standby.take() {
            if inst.reaper.state(standby.pid) == ChildState::Running {
                self.standby = Some(standby);
            } else {
                crate::diag!("standby (pid {}) died while waiting", standby.pid);
                inst.reaper.forget(standby.pid);
            }
        }
        let mut standby = match self.standby.take() {
            Some(standby) => standby,
            None => self.spawn_standby(inst)?,
        };
        if !standby.ready {
            if let Err(e) = standby.await_ready(inst, limit) {
                standby.kill(inst);
                return Err(e);
            }
        }
        Ok(standby)
    }

    /// Runs one invocation in a fresh process.
    pub fn invoke(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        match self.kind {
            Kind::Handler => self.invoke_handler(inst, spec, event, log),
            Kind::Program => self.invoke_program(inst, spec, event, log),
        }
    }

    fn invoke_handler(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        let limit = Duration::from_millis(spec.timeout_ms).min(LOAD_LIMIT);
        let mut standby = match self.ready_standby(inst, limit) {
            Ok(standby) => standby,
            Err(e) => {
                let why = format!("the function's program could not be started: {e}");
                return Ok(run::not_run(&spec.request_id, why));
            }
        };
        standby.held.replay(log);
        let mut input = Vec::with_capacity(event.len() + 128);
        for (name, value) in invocation_env(inst, spec) {
            input.extend_from_slice(format!("{name}={value}\n").as_bytes());
        }
        input.push(b'\n');
        input.extend_from_slice(event);

        let started = Instant::now();
        let deadline = started + Duration::from_millis(spec.timeout_ms);
        let ending = standby.run(inst, input, deadline, log);
        let duration = started.elapsed();
        let (ending, sweep) = standby.finish_run(inst, ending, log);
        let mut reported = standby.pipes.result.take();
        if reported.first() == Some(&READY) {
            reported.remove(0);
        }
        let result = if reported.len() > MAX_RESULT_BYTES {
            Vec::new() // the result capture's truncation makes this ResultTooLarge
        } else {
            handler_result(&reported)
        };
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

    fn invoke_program(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        let mut env = inst.env.clone();
        env.extend(invocation_env(inst, spec));
        let payload_file = if event.len() <= PAYLOAD_ENV_LIMIT && !event.contains(&0) {
            env.push((
                "PAYLOAD".to_string(),
                String::from_utf8_lossy(event).into_owned(),
            ));
            None
        } else {
            let path = inst
                .layout
                .tmp
                .join(format!("payload-{}.json", unique_suffix(spec)));
            fs::write(&path, event).map_err(|e| AgentError::at("write", &path, e))?;
            env.push((
                "PAYLOAD_FILE".to_string(),
                path.to_string_lossy().into_owned(),
            ));
            Some(path)
        };
        let stdout_limit = MAX_RESULT_BYTES.max(inst.output_limit);
        let started = Instant::now();
        let spawned = Proc::spawn(inst, &self.program, &env, stdout_limit);
        let mut proc = match spawned {
            Ok(proc) => proc,
            Err(e) => {
                remove_payload(payload_file);
                return Ok(run::not_run(
                    &spec.request_id,
                    format!("the function's program could not be started: {e}"),
                ));
            }
        };
        let deadline = started + Duration::from_millis(spec.timeout_ms);
        let ending = proc.run(inst, event.to_vec(), deadline, log);
        let duration = started.elapsed();
        let (ending, sweep) = proc.finish_run(inst, ending, log);
        remove_payload(payload_file);

        let exit = match &ending {
            Ending::Exited(info) => Some(*info),
            _ => None,
        };
        let result = match exit.and_then(|e: ExitInfo| e.exit_code()) {
            Some(0) if proc.pipes.stdout.truncated() => Vec::new(),
            Some(0) => program_result(proc.pipes.stdout.data()).unwrap_or_else(|why| {
                program_error(
                    "InvalidOutput",
                    format!(
                        "the program's stdout is not JSON ({why}): print the result as \
                         JSON on stdout (other text may go to stderr)"
                    ),
                )
            }),
            Some(code) => {
                let tail = stderr_tail(proc.pipes.stderr.data());
                let mut message = format!("the program exited with code {code}");
                if !tail.is_empty() {
                    message = format!("{message}: {tail}");
                }
                program_error("ExitCode", message)
            }
            None => Vec::new(),
        };
        let result_too_large =
            exit.and_then(|e| e.exit_code()) == Some(0) && proc.pipes.stdout.truncated();
        let report = Report {
            request_id: &spec.request_id,
            timeout_ms: spec.timeout_ms,
            ending,
            duration,
            sweep,
            runtime_healthy: true,
        };
        let mut finished = run::finish(report, &mut proc.pipes, &result);
        cap_inline_stdout(&mut finished, inst.output_limit);
        if result_too_large {
            finished.outcome.status = hearth_core::protocol::OutcomeStatus::Error;
            finished.outcome.error = Some(hearth_core::invocation::ErrorInfo {
                kind: "ResultTooLarge".into(),
                message: format!(
                    "the program printed more than {} MB on stdout",
                    MAX_RESULT_BYTES >> 20
                ),
                trace: String::new(),
            });
        }
        Ok(finished)
    }

    /// Starts the next standby (a handler's), once the result has gone out.
    pub fn after_result(&mut self, inst: &mut Instance) {
        if self.kind == Kind::Handler && self.standby.is_none() {
            match self.spawn_standby(inst) {
                Ok(standby) => self.standby = Some(standby),
                Err(e) => crate::diag!("could not start the next standby: {e}"),
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

/// A file-name-safe suffix for this invocation's payload file.
fn unique_suffix(spec: &InvokeSpec) -> String {
    let safe: String = spec
        .request_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    format!("{safe}-{}", unix_ms())
}

fn remove_payload(path: Option<PathBuf>) {
    if let Some(path) = path {
        if let Err(e) = fs::remove_file(&path) {
            crate::diag!("cannot remove {}: {e}", path.display());
        }
    }
}

/// A program's stdout is captured whole for its result; the inline copy keeps the cap.
fn cap_inline_stdout(finished: &mut Finished, limit: usize) {
    let stdout = &mut finished.outcome.stdout;
    if stdout.len() > limit {
        let mut cut = limit;
        while !stdout.is_char_boundary(cut) {
            cut -= 1;
        }
        stdout.truncate(cut);
        finished.outcome.truncated = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn handler_text_is_json_when_it_parses_and_a_string_otherwise() {
        assert_eq!(
            json(&handler_result(br#"O{"a": [1, 2]}"#)),
            serde_json::json!({"ok": {"a": [1, 2]}})
        );
        assert_eq!(json(&handler_result(b"O42")), serde_json::json!({"ok": 42}));
        assert_eq!(
            json(&handler_result(b"Ohello world")),
            serde_json::json!({"ok": "hello world"})
        );
        assert_eq!(
            json(&handler_result(b"O\xff\"x")),
            serde_json::json!({"ok": "\u{fffd}\"x"})
        );
        assert_eq!(json(&handler_result(b"O")), serde_json::json!({"ok": ""}));
        let raised = json(&handler_result(b"Estd::invalid_argument\0bad input: 42"));
        assert_eq!(raised["error"]["type"], "std::invalid_argument");
        assert_eq!(raised["error"]["message"], "bad input: 42");
        assert_eq!(raised["error"]["trace"], "");
        let panicked = json(&handler_result(b"Epanic\0boom\0goroutine 1"));
        assert_eq!(panicked["error"]["trace"], "goroutine 1");
        assert!(handler_result(b"").is_empty(), "nothing reported: a crash");
        assert!(serde_json::from_slice::<serde_json::Value>(&handler_result(b"?")).is_err());
    }

    #[test]
    fn program_stdout_is_the_result_whole_or_by_its_last_line() {
        let ok = |s: &str| json(&program_result(s.as_bytes()).unwrap());
        assert_eq!(ok("{\"sum\": 3}\n"), serde_json::json!({"ok": {"sum": 3}}));
        assert_eq!(
            ok("working...\nstill working\n{\"sum\": 3}\n\n"),
            serde_json::json!({"ok": {"sum": 3}})
        );
        assert_eq!(ok("  \n"), serde_json::json!({"ok": null}));
        assert_eq!(ok("\"text\""), serde_json::json!({"ok": "text"}));
        let err = program_result(b"hello world").unwrap_err();
        assert!(err.contains("expected"), "{err}");
    }

    #[test]
    fn stderr_tails_and_inline_caps_cut_on_char_boundaries() {
        let long = format!("{}é", "x".repeat(3000));
        let tail = stderr_tail(long.as_bytes());
        assert!(tail.len() <= STDERR_TAIL && tail.ends_with('é'));
        let mut finished = run::not_run("r", String::new());
        finished.outcome.stdout = "aé".repeat(10);
        cap_inline_stdout(&mut finished, 2);
        assert_eq!(finished.outcome.stdout, "a");
        assert!(finished.outcome.truncated);
    }
}
