//! What both backends do with an agent once its stdio is connected: the `Init`
//! handshake, one invocation metered by the instance's cgroup, and the tail of the
//! agent's stderr kept for error messages.
//!
//! The backends differ only in how the agent is started and where its root comes from
//! ([`RootSetup`]); everything said to it afterwards is written here, once.

use crate::agent_stream::{AgentStream, ExchangeLimits};
use crate::cgroup::{Counters, UsageMeter};
use crate::{InstanceRun, InstanceSpec, InvocationSink, SandboxError, Settled};
use bytes::Bytes;
use hearth_core::protocol::{
    FailurePhase, FromAgent, InitSpec, InvokeSpec, Purpose, ReadyInfo, RootSetup, SpecializeSpec,
    ToAgent, PROTOCOL_VERSION,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Cap on inline stdout and stderr of one invocation, bytes each.
pub(crate) const INLINE_OUTPUT_LIMIT: u64 = 1 << 20;
/// The agent enforces the real timeout; the worker waits this much longer.
pub(crate) const INVOKE_GRACE: Duration = Duration::from_millis(2000);
/// Lines of the agent's stderr kept for error messages.
const LOG_TAIL_LINES: usize = 20;
/// Longest stderr line kept in the tail, characters.
const LOG_TAIL_LINE_CHARS: usize = 1000;

/// How a backend starts its agent: the program it runs, where its root comes from, the
/// size of its `/tmp` before the memory cap.
pub(crate) struct AgentSetup {
    /// The interpreter, toolchain or built program.
    pub(crate) program: String,
    /// How the agent gets its root file system.
    pub(crate) root: RootSetup,
    /// `/tmp` size, MB (capped here at the instance's memory: tmpfs pages count).
    pub(crate) tmp_size_mb: u64,
    /// Serving or building.
    pub(crate) purpose: Purpose,
    /// The function's uid and gid: the instance's own (`crate::uids`).
    pub(crate) function_id: u32,
    /// The agent's real and saved uid and gid (`InitSpec::agent_id`).
    pub(crate) agent_id: u32,
}

/// The `Init` message for `spec` started with `setup`.
pub(crate) fn init_spec(spec: &InstanceSpec, setup: AgentSetup) -> InitSpec {
    InitSpec {
        protocol_version: PROTOCOL_VERSION,
        runtime: spec.runtime,
        function_name: spec.function_name.clone(),
        version: spec.version,
        memory_limit_mb: spec.memory_mb,
        env: spec.env.clone(),
        interpreter: setup.program,
        root: setup.root,
        tmp_size_mb: setup.tmp_size_mb.min(spec.memory_mb),
        inline_output_limit: INLINE_OUTPUT_LIMIT,
        output_size_mb: spec.output_quota_mb,
        uid: setup.function_id,
        gid: setup.function_id,
        agent_id: Some(setup.agent_id),
        purpose: setup.purpose,
        stem: false,
    }
}

/// Sends `init` (with `payload`, the code tar when the agent unpacks it) and waits at
/// most `timeout` for `Ready`. Errors come back as they are: the caller adds what the
/// agent said on stderr.
pub(crate) async fn handshake<W, R>(
    stream: &mut AgentStream<W, R>,
    instance: &str,
    init: InitSpec,
    payload: &[u8],
    timeout: Duration,
) -> Result<ReadyInfo, SandboxError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    await_ready(stream, instance, ToAgent::Init(init), payload, timeout).await
}

/// Sends `message` (with `payload`) and waits at most `timeout` for the agent's `Ready`.
async fn await_ready<W, R>(
    stream: &mut AgentStream<W, R>,
    instance: &str,
    message: ToAgent,
    payload: &[u8],
    timeout: Duration,
) -> Result<ReadyInfo, SandboxError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let exchange = async {
        stream.send(&message, payload).await?;
        stream.recv().await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(answer) => expect_ready(instance, answer?.0),
        Err(_) => Err(SandboxError::Unresponsive {
            instance: instance.to_string(),
            waited_ms: timeout.as_millis() as u64,
        }),
    }
}

/// Sends `Specialize` to a stem's agent (that answered `Init` already) and waits at most
/// `timeout` for its second `Ready`; `payload` is the code tar when the agent unpacks it.
pub(crate) async fn specialize<W, R>(
    stream: &mut AgentStream<W, R>,
    instance: &str,
    spec: &InstanceSpec,
    payload: &[u8],
    timeout: Duration,
) -> Result<ReadyInfo, SandboxError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let function = SpecializeSpec {
        function_name: spec.function_name.clone(),
        version: spec.version,
        memory_limit_mb: spec.memory_mb,
        env: spec.env.clone(),
    };
    await_ready(
        stream,
        instance,
        ToAgent::Specialize(function),
        payload,
        timeout,
    )
    .await
}

/// The agent's answer to `Init`: `Ready` in our protocol version, or an error.
pub(crate) fn expect_ready(instance: &str, message: FromAgent) -> Result<ReadyInfo, SandboxError> {
    let spawn_error = |message: String| SandboxError::Spawn {
        instance: instance.to_string(),
        message,
    };
    match message {
        FromAgent::Ready(ready) if ready.protocol_version == PROTOCOL_VERSION => Ok(ready),
        FromAgent::Ready(ready) => Err(spawn_error(format!(
            "the agent speaks protocol {}, this worker {PROTOCOL_VERSION}",
            ready.protocol_version
        ))),
        // Only a failed load is the user's code's fault; the rest is the platform's.
        FromAgent::Failed(failure) => Err(match failure.phase {
            FailurePhase::CodeLoad => SandboxError::InitFailed {
                message: failure.message,
            },
            FailurePhase::Setup => SandboxError::Setup {
                instance: instance.to_string(),
                message: failure.message,
            },
            FailurePhase::Runtime => spawn_error(format!(
                "the agent failed ({}): {}",
                failure.phase, failure.message
            )),
        }),
        FromAgent::Result(_) | FromAgent::Log(_) | FromAgent::Output | FromAgent::Settled(_) => {
            Err(SandboxError::Lost {
                instance: instance.to_string(),
                message: "the agent sent invocation frames before ready".into(),
            })
        }
    }
}

/// What one event of an instance may take: its deadline plus [`INVOKE_GRACE`], the output
/// quota, and for a builder the larger allowances of a build.
pub(crate) fn event_limits(timeout_ms: u64, output_quota_mb: u64, builder: bool) -> ExchangeLimits {
    let limits = ExchangeLimits::for_invocation(timeout_ms, INVOKE_GRACE, output_quota_mb);
    if builder {
        limits.for_build()
    } else {
        limits
    }
}

/// An invocation answered while its process was exiting, until its `Settled` frame.
#[derive(Debug)]
pub(crate) struct PendingSettle {
    request_id: String,
    /// The counters at its start (the peak was reset then).
    before: Counters,
}

/// One invocation: resets the cgroup's peak, exchanges the frames within `limits`,
/// reads what the invocation used. A result that [settles](hearth_core::protocol::InvokeOutcome::settles)
/// comes with what [`settle`] needs.
pub(crate) async fn run_event<W, R>(
    stream: &mut AgentStream<W, R>,
    meter: &mut UsageMeter,
    spec: InvokeSpec,
    event: Bytes,
    sink: &mut dyn InvocationSink,
    limits: &ExchangeLimits,
) -> Result<(InstanceRun, Option<PendingSettle>), SandboxError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let before = meter.begin()?;
    let (outcome, result) = stream.exchange(spec, &event, sink, limits).await?;
    let usage = meter.finish(&before)?;
    let pending = outcome.settles.then(|| PendingSettle {
        request_id: outcome.request_id.clone(),
        before,
    });
    let run = InstanceRun {
        settling: pending.is_some(),
        outcome,
        result,
        usage,
    };
    Ok((run, pending))
}

/// Waits (at most `limit`) for the `Settled` frame of `pending`, then reads what its
/// invocation used from its start: the CPU its process spent after the answer, its
/// exit and the sweep are the invocation's, never the next one's.
pub(crate) async fn settle<W, R>(
    stream: &mut AgentStream<W, R>,
    meter: &mut UsageMeter,
    pending: PendingSettle,
    limit: Duration,
) -> Result<Settled, SandboxError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let report = stream.settled(&pending.request_id, limit).await?;
    let usage = meter.finish(&pending.before)?;
    Ok(Settled {
        usage,
        healthy: report.healthy,
        problem: report.problem,
    })
}

/// Keeps the last lines the agent wrote on stderr, for error messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    /// Logs one stderr line of `instance`'s agent to `tracing` and keeps it.
    pub(crate) fn record(&self, instance: &str, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        tracing::info!(target: "hearth::agent", instance = %instance, "{text}");
        self.push(text.chars().take(LOG_TAIL_LINE_CHARS).collect());
    }

    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == LOG_TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    /// The kept lines, oldest first, joined by ` | ` (empty when the agent said nothing).
    pub(crate) fn joined(&self) -> String {
        self.0
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_in_our_protocol_starts_an_instance() {
        use hearth_core::protocol::AgentFailure;
        let ready = |protocol_version| {
            FromAgent::Ready(ReadyInfo {
                protocol_version,
                agent_version: "t".into(),
                init_ms: 1.0,
            })
        };
        let failed = |phase: FailurePhase| {
            FromAgent::Failed(AgentFailure {
                phase,
                message: "SyntaxError: expected ':'".into(),
            })
        };
        assert!(expect_ready("i", ready(PROTOCOL_VERSION)).is_ok());
        let err = expect_ready("i", ready(PROTOCOL_VERSION + 1)).unwrap_err();
        assert!(matches!(err, SandboxError::Spawn { .. }), "{err:?}");
        let err = expect_ready("i", failed(FailurePhase::CodeLoad)).unwrap_err();
        assert!(
            matches!(&err, SandboxError::InitFailed { message } if message.contains("SyntaxError")),
            "{err:?}"
        );
        let err = expect_ready("i", failed(FailurePhase::Setup)).unwrap_err();
        assert!(matches!(err, SandboxError::Setup { .. }), "{err:?}");
        assert!(err.to_string().contains("not the function's code"), "{err}");
        let err = expect_ready("i", failed(FailurePhase::Runtime)).unwrap_err();
        assert!(matches!(err, SandboxError::Spawn { .. }), "{err:?}");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let tail = LogTail::default();
        for i in 0..30 {
            tail.record("i", format!("line {i}\n").as_bytes());
        }
        let joined = tail.joined();
        assert!(joined.starts_with("line 10 |"), "{joined}");
        assert!(joined.ends_with("line 29"), "{joined}");
    }

    #[test]
    fn the_init_message_caps_tmp_at_the_memory() {
        let spec = InstanceSpec {
            instance_id: "i".into(),
            function_name: "f".into(),
            version: 3,
            runtime: hearth_core::Runtime::Python,
            memory_mb: 48,
            cpus: None,
            output_quota_mb: 5,
            env: Default::default(),
            code_tar: Bytes::new(),
            layer: None,
        };
        let init = init_spec(
            &spec,
            AgentSetup {
                program: "/usr/bin/python3".into(),
                root: RootSetup::Existing,
                tmp_size_mb: 64,
                function_id: 2_000_001,
                agent_id: 2_000_000,
                purpose: Purpose::Serve,
            },
        );
        assert_eq!(init.tmp_size_mb, 48);
        assert_eq!(init.output_size_mb, 5);
        assert_eq!((init.uid, init.gid), (2_000_001, 2_000_001));
        assert_eq!(init.agent_id, Some(2_000_000));
        assert_eq!(init.inline_output_limit, INLINE_OUTPUT_LIMIT);
    }
}
