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

use crate::channel::LogSink;
use crate::error::{AgentError, CodeLoadError, PackageError};
use crate::instance::{unix_ms, Instance};
use crate::manifest::{Kind, Manifest};
use crate::process::ExitInfo;
use crate::run::{self, Ending, Finished, Pipes, MAX_RESULT_BYTES};
use crate::runner::Runner;
use crate::standby::{Proc, Standby, StandbyRuntime};
use hearth_core::protocol::{InvokeSpec, ARTIFACT_MANIFEST, ARTIFACT_PROGRAM};
use serde_json::value::RawValue;
use std::fs;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Instant;

/// Largest event passed in `PAYLOAD`; a larger one goes in `PAYLOAD_FILE` (as the
/// reference platform does: 100 KB, well under Linux's 128 KiB per variable).
pub const PAYLOAD_ENV_LIMIT: usize = 100 * 1024;
/// How much of stderr a failed program's error message quotes.
const STDERR_TAIL: usize = 2048;

/// The per-invocation environment: request id, deadline, attempt, output dir.
fn invocation_env(inst: &Instance, spec: &InvokeSpec) -> Vec<(String, String)> {
    let mut env = vec![
        ("HEARTH_REQUEST_ID".to_string(), spec.request_id.clone()),
        (
            "HEARTH_DEADLINE_MS".to_string(),
            unix_ms().saturating_add(spec.timeout_ms).to_string(),
        ),
        ("HEARTH_ATTEMPT".to_string(), spec.attempt.to_string()),
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
fn program_result(stdout: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
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
                _ => return Err(e),
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

/// How a handler's standby starts, takes its event and reports its result.
#[derive(Debug)]
pub struct Handler {
    program: String,
}

impl StandbyRuntime for Handler {
    const NAME: &'static str = "standby";
    const UNAVAILABLE: &'static str = "the function's program could not be started";
    const TOO_SLOW: &'static str = "the function's program did not start within";

    fn spawn(&self, inst: &mut Instance) -> Result<Proc, AgentError> {
        let env = inst.env.clone();
        let limit = inst.output_limit;
        Proc::spawn(inst, &self.program, &[], &env, limit, MAX_RESULT_BYTES + 2)
    }

    fn died(&self, pipes: &Pipes, exit: ExitInfo) -> AgentError {
        let stderr = String::from_utf8_lossy(pipes.stderr.data());
        let stderr = stderr.trim_end().to_string();
        CodeLoadError::ProgramDied { exit, stderr }.into()
    }

    /// Header lines `NAME=VALUE`, an empty line, then the event.
    fn frame(
        &self,
        inst: &Instance,
        spec: &InvokeSpec,
        event: &[u8],
    ) -> Result<Vec<u8>, AgentError> {
        let mut input = Vec::with_capacity(event.len() + 128);
        for (name, value) in invocation_env(inst, spec) {
            input.extend_from_slice(format!("{name}={value}\n").as_bytes());
        }
        input.push(b'\n');
        input.extend_from_slice(event);
        Ok(input)
    }

    fn result(&self, reported: Vec<u8>) -> Vec<u8> {
        if reported.len() > MAX_RESULT_BYTES {
            Vec::new() // the result capture's truncation makes this ResultTooLarge
        } else {
            handler_result(&reported)
        }
    }
}

/// The compiled runtime: a handler's standby, or a full program run fresh.
#[derive(Debug)]
pub enum Binary {
    /// A handler-only program, started ahead of its invocation.
    Handler(Standby<Handler>),
    /// A full program (its path), started when the event arrives.
    Program(String),
}

impl Binary {
    /// Reads the artifact's manifest; for a handler, starts the first standby and waits
    /// until it runs.
    pub fn start(inst: &mut Instance) -> Result<Binary, AgentError> {
        let manifest_path = inst.layout.code.join(ARTIFACT_MANIFEST);
        let manifest: Manifest = fs::read(&manifest_path)
            .map_err(|e| AgentError::at("read", &manifest_path, e))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| PackageError::NotAManifest(e).into())
            })?;
        let program: PathBuf = inst.layout.code.join(ARTIFACT_PROGRAM);
        if !program.is_file() {
            return Err(PackageError::NoProgram.into());
        }
        let program = program.to_string_lossy().into_owned();
        Ok(match manifest.kind {
            Kind::Handler => Binary::Handler(Standby::start(inst, Handler { program })?),
            Kind::Program => Binary::Program(program),
        })
    }
}

impl Runner for Binary {
    fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        match self {
            Binary::Handler(standby) => standby.serve(inst, spec, event, log),
            Binary::Program(program) => serve_program(inst, program, spec, event, log),
        }
    }

    /// Starts the next standby (a handler's), once the result has gone out.
    fn after_result(&mut self, inst: &mut Instance) {
        if let Binary::Handler(standby) = self {
            standby.after_result(inst);
        }
    }

    /// The standby's pipes, drained between invocations so it never blocks on a full one.
    fn idle_fds(&self) -> Vec<RawFd> {
        match self {
            Binary::Handler(standby) => standby.idle_fds(),
            Binary::Program(_) => Vec::new(),
        }
    }

    /// Reads what the standby wrote while waiting (held for its invocation).
    fn on_idle(&mut self, _inst: &mut Instance) {
        if let Binary::Handler(standby) = self {
            standby.on_idle();
        }
    }
}

/// Runs a full program in a fresh process, its event in its environment and on stdin.
fn serve_program(
    inst: &mut Instance,
    program: &str,
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
    let spawned = Proc::spawn(inst, program, &[], &env, stdout_limit, MAX_RESULT_BYTES + 2);
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
    let report = proc.supervise(inst, spec, event.to_vec(), started, log);
    remove_payload(payload_file);

    let exit = match &report.ending {
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
        let err = program_result(b"hello world").unwrap_err().to_string();
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
