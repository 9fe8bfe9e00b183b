//! One invocation's pipes, and how what came out of them becomes an [`InvokeOutcome`].

use crate::channel::LogSink;
use crate::error::AgentError;
use crate::exit::signal_name;
use crate::instance::Instance;
use crate::process::{self, Capture, ExitInfo, MAX_CHUNK};
use crate::sweep::SweepReport;
use hearth_core::invocation::{CapturedOutput, ErrorInfo};
use hearth_core::protocol::{InvokeOutcome, LogStream, OutcomeStatus};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// Largest result a handler may return.
pub const MAX_RESULT_BYTES: usize = 16 << 20;
/// How long to keep reading pipes after the sweep, when a writer somehow survived.
const DRAIN_LIMIT: Duration = Duration::from_millis(200);
/// How long a killed process may take to be reapable.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Most output a process waiting for its event may leave for its invocation's log.
const HELD_LIMIT: usize = 1 << 20;

/// The read ends of an invocation's stdout, stderr and result pipes.
#[derive(Debug)]
pub struct Pipes {
    /// The process's stdout, capped.
    pub stdout: Capture,
    /// The process's stderr, capped.
    pub stderr: Capture,
    /// What the runtime wrote on its result fd.
    pub result: Capture,
}

impl Pipes {
    /// Wraps three read ends; stdout and stderr keep at most `limit` bytes each.
    pub fn new(
        stdout: OwnedFd,
        stderr: OwnedFd,
        result: OwnedFd,
        limit: usize,
    ) -> Result<Self, AgentError> {
        Ok(Pipes {
            stdout: Capture::new(stdout, limit)?,
            stderr: Capture::new(stderr, limit)?,
            result: Capture::new(result, MAX_RESULT_BYTES)?,
        })
    }

    /// `pollfd`s for the pipes still open.
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        [&self.stdout, &self.stderr, &self.result]
            .into_iter()
            .filter_map(Capture::raw_fd)
            .map(|fd| process::pollfd(fd, libc::POLLIN))
            .collect()
    }

    /// Reads whatever is waiting on every pipe; what came on stdout and stderr goes to
    /// `log` as well, one piece per stream (nothing for a stream that had nothing).
    pub fn pump(&mut self, log: &mut dyn LogSink) {
        for (capture, stream) in [
            (&mut self.stdout, LogStream::Stdout),
            (&mut self.stderr, LogStream::Stderr),
        ] {
            let chunk = capture.pump_chunk();
            if !chunk.is_empty() {
                log.log(stream, &chunk);
            }
        }
        self.result.pump();
    }

    /// Reads until every pipe is at EOF (all writers are dead after the sweep), or a
    /// short limit passes.
    pub fn drain(&mut self, log: &mut dyn LogSink) {
        let until = Instant::now() + DRAIN_LIMIT;
        loop {
            self.pump(log);
            let mut fds = self.pollfds();
            let now = Instant::now();
            if fds.is_empty() || now >= until {
                return;
            }
            if process::poll(&mut fds, Some(until - now)).is_err() {
                return;
            }
        }
    }
}

/// Output of a process read before its invocation began (a Node.js standby loading its
/// code), kept to be logged with that invocation. Past [`HELD_LIMIT`] it is dropped, so
/// a chatty standby never grows the agent or blocks on a full pipe.
#[derive(Debug, Default)]
pub struct Held {
    chunks: Vec<(LogStream, Vec<u8>)>,
    bytes: usize,
    dropped: usize,
}

impl Held {
    /// Hands everything held to `log`, in the order it was read, and starts again.
    pub fn replay(&mut self, log: &mut dyn LogSink) {
        for (stream, bytes) in self.chunks.drain(..) {
            log.log(stream, &bytes);
        }
        if self.dropped > 0 {
            crate::diag!(
                "dropped {} bytes a process printed before its invocation",
                self.dropped
            );
        }
        self.bytes = 0;
        self.dropped = 0;
    }
}

impl LogSink for Held {
    fn log(&mut self, stream: LogStream, bytes: &[u8]) {
        let keep = bytes.len().min(HELD_LIMIT.saturating_sub(self.bytes));
        self.dropped += bytes.len() - keep;
        if keep == 0 {
            return;
        }
        self.bytes += keep;
        match self.chunks.last_mut() {
            Some((last, held)) if *last == stream && held.len() + keep <= MAX_CHUNK => {
                held.extend_from_slice(&bytes[..keep]);
            }
            _ => self.chunks.push((stream, bytes[..keep].to_vec())),
        }
    }
}

/// How the invocation's process ended, as far as the agent could tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// It exited (or was killed by something other than the deadline).
    Exited(ExitInfo),
    /// The deadline passed and the agent killed it.
    TimedOut(Option<ExitInfo>),
    /// The runtime process lost track of it (the zygote died, the standby broke).
    Lost(String, Option<ExitInfo>),
}

/// After the invocation's process `pid` ended (or the deadline passed): kills what is
/// left of the invocation, waits for a timed-out process's status, then reads the pipes
/// to their end (passing the output to `log`) and forgets `pid`.
pub fn settle(
    inst: &mut Instance,
    pid: i32,
    ending: Ending,
    pipes: &mut Pipes,
    log: &mut dyn LogSink,
) -> (Ending, SweepReport) {
    let sweep = inst.sweeper.sweep(&[], &[pid], &mut inst.reaper);
    let ending = match ending {
        Ending::TimedOut(_) => Ending::TimedOut(inst.reaper.await_exit(pid, KILL_WAIT)),
        other => other,
    };
    pipes.drain(log);
    inst.reaper.forget(pid);
    (ending, sweep)
}

/// An invocation's end, ready to be sent.
#[derive(Debug)]
pub struct Finished {
    /// The `Result` frame's header.
    pub outcome: InvokeOutcome,
    /// The handler's return value as JSON, empty when there is none.
    pub payload: Vec<u8>,
}

/// What the runtime wrote on the result fd.
#[derive(Debug, PartialEq)]
enum Reported {
    Value(Vec<u8>),
    Raised(ErrorInfo),
    Nothing,
    Garbled(String),
    TooLarge,
}

fn parse_result(bytes: &[u8], truncated: bool) -> Reported {
    if truncated {
        return Reported::TooLarge;
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Reported::Nothing;
    }
    let fields: BTreeMap<String, &RawValue> = match serde_json::from_slice(bytes) {
        Ok(fields) => fields,
        Err(e) => return Reported::Garbled(format!("unreadable result from the runtime: {e}")),
    };
    if let Some(error) = fields.get("error") {
        return match serde_json::from_str::<ErrorInfo>(error.get()) {
            Ok(info) => Reported::Raised(info),
            Err(e) => Reported::Garbled(format!("unreadable error from the runtime: {e}")),
        };
    }
    let value = fields.get("ok").map_or("null", |v| v.get());
    Reported::Value(value.as_bytes().to_vec())
}

fn error(kind: &str, message: String) -> Option<ErrorInfo> {
    Some(ErrorInfo {
        kind: kind.into(),
        message,
        trace: String::new(),
    })
}

/// Everything needed to describe one invocation's end.
pub struct Report<'a> {
    /// The invocation id.
    pub request_id: &'a str,
    /// Its wall-clock limit.
    pub timeout_ms: u64,
    /// How the process ended.
    pub ending: Ending,
    /// From handing the event over to the process's end.
    pub duration: Duration,
    /// What the leftover sweep did.
    pub sweep: SweepReport,
    /// Whether the runtime process is fit to serve again.
    pub runtime_healthy: bool,
}

/// Builds the outcome from the ending and what the pipes carried. `result` is the
/// result pipe's content without any readiness marker.
pub fn finish(report: Report<'_>, pipes: &mut Pipes, result: &[u8]) -> Finished {
    let exit = match &report.ending {
        Ending::Exited(info) => Some(*info),
        Ending::TimedOut(info) | Ending::Lost(_, info) => *info,
    };
    let mut payload = Vec::new();
    let (status, error) = match &report.ending {
        Ending::TimedOut(_) => (
            OutcomeStatus::Timeout,
            error(
                "Timeout",
                format!("invocation timed out after {} ms", report.timeout_ms),
            ),
        ),
        Ending::Lost(why, _) => (OutcomeStatus::Crashed, error("RuntimeError", why.clone())),
        Ending::Exited(info) => match parse_result(result, pipes.result.truncated()) {
            Reported::Value(value) => {
                payload = value;
                (OutcomeStatus::Success, None)
            }
            Reported::Raised(info) => (OutcomeStatus::Error, Some(info)),
            Reported::TooLarge => (
                OutcomeStatus::Error,
                error(
                    "ResultTooLarge",
                    format!(
                        "the handler's return value is larger than {} MB",
                        MAX_RESULT_BYTES >> 20
                    ),
                ),
            ),
            Reported::Garbled(why) => (OutcomeStatus::Crashed, error("RuntimeError", why)),
            Reported::Nothing => (OutcomeStatus::Crashed, crash_error(info)),
        },
    };
    let truncated = pipes.stdout.truncated() || pipes.stderr.truncated();
    let stdout = pipes.stdout.take();
    let stderr = pipes.stderr.take();
    let outcome = InvokeOutcome {
        request_id: report.request_id.to_string(),
        status,
        error,
        exit_code: exit.and_then(|e| e.exit_code()),
        signal: exit.and_then(|e| e.signal()),
        output: CapturedOutput {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            truncated,
        },
        handler_duration_ms: report.duration.as_secs_f64() * 1000.0,
        max_rss_bytes: exit.map_or(0, |e| e.maxrss_kb.saturating_mul(1024)),
        user_cpu_ms: exit.map_or(0.0, |e| e.user_ms),
        system_cpu_ms: exit.map_or(0.0, |e| e.system_ms),
        leftovers_killed: report.sweep.killed,
        healthy: report.runtime_healthy && report.sweep.converged,
        output_bytes: 0,
        output_quota_exceeded: false,
        settles: false,
    };
    Finished { outcome, payload }
}

fn crash_error(info: &ExitInfo) -> Option<ErrorInfo> {
    if let Some(signal) = info.signal() {
        return error(
            "Killed",
            format!(
                "process killed by signal {signal} ({})",
                signal_name(signal)
            ),
        );
    }
    match info.exit_code() {
        Some(code) => error(
            "Exited",
            format!("process exited with code {code} without returning a result"),
        ),
        None => error(
            "Exited",
            "process ended without returning a result".to_string(),
        ),
    }
}

/// An invocation that never reached a process (the runtime could not be brought up).
pub fn not_run(request_id: &str, why: String) -> Finished {
    Finished {
        outcome: InvokeOutcome {
            request_id: request_id.to_string(),
            status: OutcomeStatus::Crashed,
            error: error("RuntimeError", why),
            exit_code: None,
            signal: None,
            output: Default::default(),
            handler_duration_ms: 0.0,
            max_rss_bytes: 0,
            user_cpu_ms: 0.0,
            system_cpu_ms: 0.0,
            leftovers_killed: 0,
            healthy: false,
            output_bytes: 0,
            output_quota_exceeded: false,
            settles: false,
        },
        payload: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl LogSink for Vec<(LogStream, Vec<u8>)> {
        fn log(&mut self, stream: LogStream, bytes: &[u8]) {
            self.push((stream, bytes.to_vec()));
        }
    }

    #[test]
    fn held_output_replays_in_order_and_stays_bounded() {
        let mut held = Held::default();
        held.log(LogStream::Stdout, b"ab");
        held.log(LogStream::Stdout, b"c");
        held.log(LogStream::Stderr, b"!");
        held.log(LogStream::Stdout, &vec![b'x'; HELD_LIMIT]);
        let mut got = Vec::new();
        held.replay(&mut got);
        assert_eq!(got[0], (LogStream::Stdout, b"abc".to_vec()));
        assert_eq!(got[1], (LogStream::Stderr, b"!".to_vec()));
        assert_eq!(got[2].1.len(), HELD_LIMIT - 4, "cut at the limit");
        assert_eq!(got.len(), 3);
        got.clear();
        held.log(LogStream::Stderr, b"again");
        held.replay(&mut got);
        assert_eq!(got, vec![(LogStream::Stderr, b"again".to_vec())]);
    }

    #[test]
    fn pipes_log_what_they_read_and_nothing_for_silence() {
        let (out_r, out_w) = process::pipe().unwrap();
        let (err_r, err_w) = process::pipe().unwrap();
        let (res_r, res_w) = process::pipe().unwrap();
        let mut pipes = Pipes::new(out_r, err_r, res_r, 3).unwrap();
        let mut log: Vec<(LogStream, Vec<u8>)> = Vec::new();
        pipes.pump(&mut log);
        assert!(log.is_empty());
        let write = |fd: &std::os::fd::OwnedFd, bytes: &[u8]| {
            let mut outbox = process::Outbox::new(bytes.to_vec(), 0);
            outbox.pump(std::os::fd::AsRawFd::as_raw_fd(fd));
            assert!(outbox.is_done());
        };
        write(&out_w, b"hello");
        write(&err_w, b"oops");
        write(&res_w, b"{}");
        drop((out_w, err_w, res_w));
        pipes.drain(&mut log);
        assert_eq!(
            log,
            vec![
                (LogStream::Stdout, b"hello".to_vec()),
                (LogStream::Stderr, b"oops".to_vec())
            ]
        );
        assert_eq!(pipes.stdout.data(), b"hel");
        assert!(pipes.stdout.truncated());
        assert_eq!(pipes.result.data(), b"{}");
    }

    #[test]
    fn results_parse_into_values_errors_and_garbage() {
        assert_eq!(
            parse_result(br#"{"ok": {"a": [1, 2]}}"#, false),
            Reported::Value(br#"{"a": [1, 2]}"#.to_vec())
        );
        assert_eq!(
            parse_result(br#"{"ok":null}"#, false),
            Reported::Value(b"null".to_vec())
        );
        assert_eq!(
            parse_result(b"{}", false),
            Reported::Value(b"null".to_vec())
        );
        let raised = parse_result(
            br#"{"error":{"type":"ValueError","message":"bad","trace":"t"}}"#,
            false,
        );
        assert!(
            matches!(raised, Reported::Raised(ErrorInfo { ref kind, .. }) if kind == "ValueError")
        );
        assert_eq!(parse_result(b"", false), Reported::Nothing);
        assert!(matches!(
            parse_result(b"{\"ok\":", false),
            Reported::Garbled(_)
        ));
        assert_eq!(parse_result(b"{}", true), Reported::TooLarge);
    }

    #[test]
    fn crashes_say_what_happened() {
        let killed = ExitInfo {
            status: libc::SIGKILL,
            ..ExitInfo::unknown()
        };
        let e = crash_error(&killed).unwrap();
        assert_eq!(e.kind, "Killed");
        assert_eq!(e.message, "process killed by signal 9 (SIGKILL)");
        let exited = ExitInfo {
            status: 3 << 8,
            ..ExitInfo::unknown()
        };
        assert!(crash_error(&exited).unwrap().message.contains("code 3"));
    }
}
