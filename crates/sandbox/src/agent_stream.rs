//! Async reading and writing of `hearth_core::protocol` frames on an agent's stdio.
//!
//! The worker writes [`ToAgent`] frames to the agent's stdin and reads [`FromAgent`]
//! frames from its stdout. Every failure of the stream (the agent died, closed its
//! end, or wrote something that is not a frame) becomes [`SandboxError::Lost`]: an
//! instance whose stream broke cannot serve again.

use crate::{InvocationSink, SandboxError};
use hearth_core::protocol::{
    encode, parse_prefix, FrameError, FromAgent, InvokeOutcome, InvokeSpec, SettleReport, ToAgent,
    PREFIX_BYTES,
};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Read buffer size: a typical `Result` frame (header + small return value) arrives in
/// one `read`.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Largest frame header during an invocation (a `Result` carries the inline stdout and
/// stderr, 1 MB each, JSON-escaped).
const MAX_EXCHANGE_HEADER: usize = 16 << 20;
/// Largest `Result` payload of an invocation (the handler's return value; the agent caps
/// it at 16 MB).
const MAX_RESULT_PAYLOAD: u64 = 17 << 20;
/// Largest `Result` payload of a build: a compiled program or an installed dependency
/// set (250 MB at most by default; the build sandbox's scratch space is 512 MB).
const MAX_BUILD_RESULT_PAYLOAD: u64 = 512 << 20;
/// Log bytes one invocation may send (or its own log cap, when larger): the agent caps
/// its logs below this; only a forged stream reaches it.
const MAX_EXCHANGE_LOG_BYTES: u64 = 64 << 20;
/// The tar stream's overhead over the output quota: a header and padding per entry, for
/// the agent's most entries (100,000; a long name takes a second header), plus the end.
const OUTPUT_TAR_OVERHEAD: u64 = 100_000 * 2048 + (64 << 10);
/// The slowest an output may stream before the exchange's deadline passes, bytes/s.
const SLOWEST_OUTPUT_RATE: u64 = 4 << 20;

/// The longest the worker waits for the agent's `Settled` frame: the agent waits 1 s
/// for the answered process to exit, kills it, 5 s for the zygote's report, and may
/// restart a zygote that lost the thread (loading the code again).
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Largest `Settled` header (an id and a short reason).
const MAX_SETTLED_HEADER: usize = 64 << 10;

/// A frame's kind, for an error message (never its content: the agent's stream may be
/// its function's by then).
fn frame_kind(message: &FromAgent) -> &'static str {
    match message {
        FromAgent::Ready(_) => "ready",
        FromAgent::Log(_) => "log",
        FromAgent::Output => "output",
        FromAgent::Result(_) => "result",
        FromAgent::Settled(_) => "settled",
        FromAgent::Failed(_) => "failed",
    }
}

/// Bounds on one invocation's exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeLimits {
    /// The longest wait for the next frame.
    pub silence: std::time::Duration,
    /// The longest the whole exchange may take.
    pub deadline: std::time::Duration,
    /// Most `Log` payload bytes.
    pub log_bytes: u64,
    /// Most `Output` payload bytes.
    pub output_bytes: u64,
    /// Most `Result` payload bytes.
    pub result_bytes: u64,
}

impl ExchangeLimits {
    /// The limits of an invocation with `timeout_ms` whose function may write
    /// `output_quota_mb` of outputs: frames may pause for the timeout plus `grace`; the
    /// exchange ends within that plus the time to stream the whole quota at the slowest
    /// rate allowed.
    pub fn for_invocation(
        timeout_ms: u64,
        grace: std::time::Duration,
        output_quota_mb: u64,
    ) -> Self {
        let silence = std::time::Duration::from_millis(timeout_ms).saturating_add(grace);
        let output_bytes =
            output_quota_mb
                .saturating_mul(1 << 20)
                .saturating_add(if output_quota_mb > 0 {
                    OUTPUT_TAR_OVERHEAD
                } else {
                    0
                });
        let streaming = std::time::Duration::from_secs(output_bytes / SLOWEST_OUTPUT_RATE);
        ExchangeLimits {
            silence,
            deadline: silence.saturating_add(grace).saturating_add(streaming),
            log_bytes: MAX_EXCHANGE_LOG_BYTES,
            output_bytes,
            result_bytes: MAX_RESULT_PAYLOAD,
        }
    }

    /// The same limits for a build, whose answer is the program or dependency set it made.
    pub fn for_build(self) -> Self {
        ExchangeLimits {
            result_bytes: MAX_BUILD_RESULT_PAYLOAD,
            ..self
        }
    }
}

/// The two directions of one agent's stdio, speaking frames.
pub struct AgentStream<W, R> {
    instance: String,
    writer: W,
    reader: BufReader<R>,
}

impl<W, R> AgentStream<W, R>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    /// Wraps the agent's stdin (`writer`) and stdout (`reader`); `instance` names the
    /// instance in errors.
    pub fn new(instance: impl Into<String>, writer: W, reader: R) -> Self {
        Self {
            instance: instance.into(),
            writer,
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, reader),
        }
    }

    /// Sends one message with its payload as a single write, then flushes.
    pub async fn send(&mut self, message: &ToAgent, payload: &[u8]) -> Result<(), SandboxError> {
        let frame =
            encode(message, payload).map_err(|e| self.lost(format!("cannot encode: {e}")))?;
        self.writer
            .write_all(&frame)
            .await
            .map_err(|e| self.lost(format!("cannot write to the agent: {e}")))?;
        self.writer
            .flush()
            .await
            .map_err(|e| self.lost(format!("cannot write to the agent: {e}")))
    }

    /// Receives one message and its payload. An end of stream, clean or not, is
    /// [`SandboxError::Lost`].
    pub async fn recv(&mut self) -> Result<(FromAgent, Vec<u8>), SandboxError> {
        self.recv_bounded(usize::MAX, |_| usize::MAX).await
    }

    /// [`Self::recv`], refusing (as [`SandboxError::Lost`], before allocating) a header
    /// longer than `max_header` or a payload longer than `max_payload` allows for its
    /// message.
    async fn recv_bounded(
        &mut self,
        max_header: usize,
        max_payload: impl Fn(&FromAgent) -> usize,
    ) -> Result<(FromAgent, Vec<u8>), SandboxError> {
        let mut prefix = [0u8; PREFIX_BYTES];
        let mut filled = 0;
        while filled < PREFIX_BYTES {
            let n = self
                .reader
                .read(&mut prefix[filled..])
                .await
                .map_err(|e| self.lost(format!("cannot read from the agent: {e}")))?;
            if n == 0 {
                let message = if filled == 0 {
                    "the agent closed its stream".to_string()
                } else {
                    format!("the agent's stream ended {filled} bytes into a frame")
                };
                return Err(self.lost(message));
            }
            filled += n;
        }
        let (header_len, payload_len) = parse_prefix(prefix).map_err(|e| self.frame_error(e))?;
        if header_len > max_header {
            return Err(self.lost(format!(
                "a frame header of {header_len} bytes is over the {max_header} allowed"
            )));
        }
        let mut header = vec![0u8; header_len];
        self.read_body(&mut header).await?;
        let message: FromAgent =
            serde_json::from_slice(&header).map_err(|e| self.frame_error(FrameError::Json(e)))?;
        let allowed = max_payload(&message);
        if payload_len > allowed {
            return Err(self.lost(format!(
                "a frame payload of {payload_len} bytes is over the {allowed} allowed"
            )));
        }
        let mut payload = vec![0u8; payload_len];
        self.read_body(&mut payload).await?;
        Ok((message, payload))
    }

    /// Runs one invocation's exchange: sends `Invoke` with the event, hands every
    /// `Log` and `Output` frame to `sink` as it arrives, and returns the `Result` with
    /// the handler's return value. A sink that fails (a full disk) does not break the
    /// exchange: the frames are still read to the end, then the sink's error returns.
    ///
    /// The agent enforces the invocation's timeout itself; `limits` catch an agent that
    /// hangs (`silence`, the longest wait for the next frame) and one that was taken over
    /// by its function: a stream that sends more than the limits allow, or that holds
    /// the exchange open past its deadline, is [`SandboxError::Lost`] (the instance is
    /// destroyed) before anything past the limits is allocated.
    pub async fn exchange(
        &mut self,
        spec: InvokeSpec,
        event: &[u8],
        sink: &mut dyn InvocationSink,
        limits: &ExchangeLimits,
    ) -> Result<(InvokeOutcome, Vec<u8>), SandboxError> {
        let request_id = spec.request_id.clone();
        let deadline = tokio::time::Instant::now() + limits.deadline;
        // The agent sends at most the invocation's log cap and its marker.
        let log_cap = spec
            .log_limit_bytes
            .saturating_add(hearth_core::logs::MARKER_ALLOWANCE_BYTES);
        self.send(&ToAgent::Invoke(spec), event).await?;
        let mut sink_error = None;
        let (mut log_left, mut output_left) = (limits.log_bytes.max(log_cap), limits.output_bytes);
        loop {
            let wait = limits
                .silence
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let budget = |message: &FromAgent| match message {
                FromAgent::Log(_) => usize::try_from(log_left).unwrap_or(usize::MAX),
                FromAgent::Output => usize::try_from(output_left).unwrap_or(usize::MAX),
                FromAgent::Result(_) => usize::try_from(limits.result_bytes).unwrap_or(usize::MAX),
                _ => 0,
            };
            let received =
                tokio::time::timeout(wait, self.recv_bounded(MAX_EXCHANGE_HEADER, budget));
            let Ok(received) = received.await else {
                if tokio::time::Instant::now() >= deadline {
                    return Err(self.lost(format!(
                        "the exchange of {request_id} passed its deadline of {} ms",
                        limits.deadline.as_millis()
                    )));
                }
                return Err(SandboxError::Unresponsive {
                    instance: self.instance.clone(),
                    waited_ms: wait.as_millis() as u64,
                });
            };
            let (message, payload) = received?;
            let written = match message {
                FromAgent::Log(chunk) => {
                    log_left = log_left.saturating_sub(payload.len() as u64);
                    sink.log(chunk.stream, &payload).await
                }
                FromAgent::Output => {
                    output_left = output_left.saturating_sub(payload.len() as u64);
                    sink.output(&payload).await
                }
                FromAgent::Result(outcome) if outcome.request_id == request_id => {
                    let Some(source) = sink_error else {
                        return Ok((outcome, payload));
                    };
                    // The call is refused but its instance serves on: the settle that
                    // follows its result is read now, or the next call would meet it.
                    if outcome.settles {
                        self.settled(&request_id, SETTLE_LIMIT).await?;
                    }
                    return Err(SandboxError::Spool { request_id, source });
                }
                FromAgent::Result(outcome) => {
                    return Err(self.lost(format!(
                        "result for {} while waiting for {request_id}",
                        outcome.request_id
                    )))
                }
                FromAgent::Failed(failure) => {
                    return Err(self.lost(format!(
                        "the agent failed ({}): {}",
                        failure.phase, failure.message
                    )))
                }
                FromAgent::Ready(_) => return Err(self.lost("unexpected ready".into())),
                FromAgent::Settled(_) => return Err(self.lost("settled before a result".into())),
            };
            if let Err(e) = written {
                sink_error.get_or_insert(e);
            }
        }
    }

    /// After a `Result` that [settles](InvokeOutcome::settles): waits at most `limit`
    /// for the agent's `Settled` frame of `request_id`. Anything else, or nothing in
    /// time, and the instance cannot serve again ([`SandboxError::Lost`],
    /// [`SandboxError::Unresponsive`]).
    pub async fn settled(
        &mut self,
        request_id: &str,
        limit: std::time::Duration,
    ) -> Result<SettleReport, SandboxError> {
        let received = tokio::time::timeout(limit, self.recv_bounded(MAX_SETTLED_HEADER, |_| 0));
        let Ok(received) = received.await else {
            return Err(SandboxError::Unresponsive {
                instance: self.instance.clone(),
                waited_ms: limit.as_millis() as u64,
            });
        };
        match received?.0 {
            FromAgent::Settled(report) if report.request_id == request_id => Ok(report),
            FromAgent::Settled(report) => Err(self.lost(format!(
                "settled {} while waiting for {request_id}",
                report.request_id
            ))),
            other => Err(self.lost(format!(
                "expected the settle of {request_id}, got {}",
                frame_kind(&other)
            ))),
        }
    }

    async fn read_body(&mut self, buf: &mut [u8]) -> Result<(), SandboxError> {
        match self.reader.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.lost("the agent's stream ended inside a frame".to_string()))
            }
            Err(e) => Err(self.lost(format!("cannot read from the agent: {e}"))),
        }
    }

    fn frame_error(&self, error: FrameError) -> SandboxError {
        self.lost(format!("protocol error: {error}"))
    }

    fn lost(&self, message: String) -> SandboxError {
        SandboxError::Lost {
            instance: self.instance.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::protocol::{InvokeSpec, ReadyInfo, PROTOCOL_VERSION};
    use tokio::io::duplex;

    fn ready() -> FromAgent {
        FromAgent::Ready(ReadyInfo {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "test".into(),
            init_ms: 1.5,
        })
    }

    #[tokio::test]
    async fn frames_cross_the_stream_with_their_payloads() {
        // worker side: writes into `to_agent`, reads from `from_agent`.
        let (worker_out, mut agent_in) = duplex(1024);
        let (mut agent_out, worker_in) = duplex(1024);
        let mut stream = AgentStream::new("i1", worker_out, worker_in);

        let invoke = ToAgent::Invoke(InvokeSpec {
            request_id: "r1".into(),
            timeout_ms: 1000,
            log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
            attempt: 1,
        });
        stream.send(&invoke, b"{\"n\":1}").await.unwrap();
        let mut got = vec![0u8; encode(&invoke, b"{\"n\":1}").unwrap().len()];
        agent_in.read_exact(&mut got).await.unwrap();
        assert_eq!(got, encode(&invoke, b"{\"n\":1}").unwrap());

        // Two frames written in small pieces arrive as two messages.
        let mut bytes = encode(&ready(), b"").unwrap();
        bytes.extend(
            encode(
                &FromAgent::Ready(ReadyInfo {
                    protocol_version: 9,
                    agent_version: "x".into(),
                    init_ms: 0.0,
                }),
                b"payload",
            )
            .unwrap(),
        );
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(3) {
                agent_out.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            agent_out
        });
        let (first, payload) = stream.recv().await.unwrap();
        assert_eq!((first, payload.len()), (ready(), 0));
        let (second, payload) = stream.recv().await.unwrap();
        assert!(matches!(
            second,
            FromAgent::Ready(ReadyInfo {
                protocol_version: 9,
                ..
            })
        ));
        assert_eq!(payload, b"payload");
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_settle_that_hangs_or_answers_wrong_loses_the_instance() {
        let settled = |id: &str, healthy: bool| {
            FromAgent::Settled(SettleReport {
                request_id: id.into(),
                healthy,
                problem: (!healthy).then(|| "a survivor".to_string()),
            })
        };
        // Its own Settled frame, healthy or not, is the answer.
        for healthy in [true, false] {
            let (worker_out, _agent_in) = duplex(1024);
            let (mut agent_out, worker_in) = duplex(1024);
            let mut stream = AgentStream::new("i", worker_out, worker_in);
            let frame = encode(&settled("r1", healthy), b"").unwrap();
            agent_out.write_all(&frame).await.unwrap();
            let report = stream
                .settled("r1", std::time::Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(report.healthy, healthy);
        }
        // Nothing in time: unresponsive, never a wait without end.
        let (worker_out, _agent_in) = duplex(1024);
        let (_agent_out, worker_in) = duplex(1024);
        let mut stream = AgentStream::new("i", worker_out, worker_in);
        let err = stream
            .settled("r1", std::time::Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, SandboxError::Unresponsive { .. }), "{err:?}");
        // Another call's settle, or another frame: lost.
        for wrong in [settled("r0", true), ready()] {
            let (worker_out, _agent_in) = duplex(1024);
            let (mut agent_out, worker_in) = duplex(1024);
            let mut stream = AgentStream::new("i", worker_out, worker_in);
            agent_out
                .write_all(&encode(&wrong, b"").unwrap())
                .await
                .unwrap();
            let err = stream
                .settled("r1", std::time::Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(matches!(err, SandboxError::Lost { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn a_clean_end_of_stream_is_lost() {
        let (worker_out, _agent_in) = duplex(64);
        let (agent_out, worker_in) = duplex(64);
        drop(agent_out);
        let mut stream = AgentStream::new("i2", worker_out, worker_in);
        let err = stream.recv().await.unwrap_err();
        assert!(
            matches!(&err, SandboxError::Lost { instance, message }
                if instance == "i2" && message.contains("closed")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn truncated_and_garbage_frames_are_lost() {
        let frame = encode(&ready(), b"abc").unwrap();
        for bytes in [
            frame[..frame.len() - 1].to_vec(),
            frame[..5].to_vec(),
            vec![0xff; 8],
            {
                let mut bad = frame.clone();
                bad[8] = b'!';
                bad
            },
        ] {
            let (worker_out, _agent_in) = duplex(64);
            let (mut agent_out, worker_in) = duplex(1024);
            agent_out.write_all(&bytes).await.unwrap();
            drop(agent_out);
            let mut stream = AgentStream::new("i3", worker_out, worker_in);
            let err = stream.recv().await.unwrap_err();
            assert!(matches!(err, SandboxError::Lost { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn writing_to_a_gone_agent_is_lost() {
        let (worker_out, agent_in) = duplex(16);
        let (_agent_out, worker_in) = duplex(16);
        drop(agent_in);
        let mut stream = AgentStream::new("i4", worker_out, worker_in);
        let err = stream.send(&ToAgent::Shutdown, b"").await.unwrap_err();
        assert!(matches!(err, SandboxError::Lost { .. }), "{err:?}");
    }

    fn limits() -> ExchangeLimits {
        ExchangeLimits {
            silence: std::time::Duration::from_secs(30),
            deadline: std::time::Duration::from_secs(30),
            log_bytes: 1000,
            output_bytes: 1000,
            result_bytes: 1000,
        }
    }

    /// Runs one exchange against an "agent" that writes `frames` and then keeps its end
    /// open without a word.
    async fn exchange_with(frames: Vec<u8>, limits: ExchangeLimits) -> SandboxError {
        let (worker_out, mut agent_in) = duplex(1 << 16);
        let (mut agent_out, worker_in) = duplex(1 << 16);
        let forger = tokio::spawn(async move {
            let mut invoke = vec![0u8; 64];
            let _ = agent_in.read(&mut invoke).await;
            agent_out.write_all(&frames).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            (agent_in, agent_out)
        });
        let mut stream = AgentStream::new("forged", worker_out, worker_in);
        let spec = InvokeSpec {
            request_id: "r".into(),
            timeout_ms: 1000,
            log_limit_bytes: 0, // below the limits, which then apply
            attempt: 1,
        };
        let err = stream
            .exchange(spec, b"{}", &mut crate::DiscardSink, &limits)
            .await
            .unwrap_err();
        forger.abort();
        err
    }

    fn log_frame(bytes: usize) -> Vec<u8> {
        let chunk = hearth_core::protocol::LogChunk {
            stream: hearth_core::protocol::LogStream::Stdout,
        };
        encode(&FromAgent::Log(chunk), &vec![b'x'; bytes]).unwrap()
    }

    #[tokio::test]
    async fn a_forged_stream_cannot_send_more_than_the_limits() {
        // One frame over the log budget, announced before it is allocated.
        let mut prefix_only = log_frame(0);
        prefix_only[4..8].copy_from_slice(&(400u32 << 20).to_be_bytes());
        let err = exchange_with(prefix_only, limits()).await;
        assert!(
            matches!(&err, SandboxError::Lost { message, .. } if message.contains("over the")),
            "{err:?}"
        );
        // Many small frames adding up past it.
        let many: Vec<u8> = (0..20).flat_map(|_| log_frame(100)).collect();
        let err = exchange_with(many, limits()).await;
        assert!(
            matches!(&err, SandboxError::Lost { message, .. } if message.contains("over the")),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_stream_cannot_hold_the_exchange_open() {
        // A frame every 20 s, each within the silence limit, never a result.
        let limits = ExchangeLimits {
            deadline: std::time::Duration::from_secs(60),
            log_bytes: u64::MAX,
            ..limits()
        };
        let (worker_out, mut agent_in) = duplex(1 << 16);
        let (mut agent_out, worker_in) = duplex(1 << 16);
        let trickler = tokio::spawn(async move {
            let mut invoke = vec![0u8; 64];
            let _ = agent_in.read(&mut invoke).await;
            loop {
                agent_out.write_all(&log_frame(1)).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_secs(20)).await;
            }
        });
        let mut stream = AgentStream::new("trickle", worker_out, worker_in);
        let spec = InvokeSpec {
            request_id: "r".into(),
            timeout_ms: 1000,
            log_limit_bytes: hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES,
            attempt: 1,
        };
        let err = stream
            .exchange(spec, b"{}", &mut crate::DiscardSink, &limits)
            .await
            .unwrap_err();
        trickler.abort();
        assert!(
            matches!(&err, SandboxError::Lost { message, .. } if message.contains("deadline")),
            "{err:?}"
        );
    }

    #[test]
    fn the_deadline_leaves_room_for_the_whole_output_quota() {
        let grace = std::time::Duration::from_secs(2);
        let small = ExchangeLimits::for_invocation(1000, grace, 0);
        assert_eq!(small.output_bytes, 0);
        assert_eq!(small.silence, std::time::Duration::from_secs(3));
        let big = ExchangeLimits::for_invocation(1000, grace, 2048);
        assert!(big.output_bytes > 2048 << 20);
        assert!(
            big.deadline >= std::time::Duration::from_secs(512),
            "{big:?}"
        );
    }
}
