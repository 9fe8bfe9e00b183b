//! Async reading and writing of `hearth_core::protocol` frames on an agent's stdio.
//!
//! The worker writes [`ToAgent`] frames to the agent's stdin and reads [`FromAgent`]
//! frames from its stdout. Every failure of the stream (the agent died, closed its
//! end, or wrote something that is not a frame) becomes [`SandboxError::Lost`]: an
//! instance whose stream broke cannot serve again.

use crate::{InvocationSink, SandboxError};
use hearth_core::protocol::{
    encode, parse_prefix, FrameError, FromAgent, InvokeOutcome, InvokeSpec, ToAgent, PREFIX_BYTES,
};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Read buffer size: a typical `Result` frame (header + small return value) arrives in
/// one `read`.
const READ_BUFFER_BYTES: usize = 64 * 1024;

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
        let mut header = vec![0u8; header_len];
        self.read_body(&mut header).await?;
        let mut payload = vec![0u8; payload_len];
        self.read_body(&mut payload).await?;
        let message =
            serde_json::from_slice(&header).map_err(|e| self.frame_error(FrameError::Json(e)))?;
        Ok((message, payload))
    }

    /// Runs one invocation's exchange: sends `Invoke` with the event, hands every
    /// `Log` and `Output` frame to `sink` as it arrives, and returns the `Result` with
    /// the handler's return value. A sink that fails (a full disk) does not break the
    /// exchange: the frames are still read to the end, then the sink's error returns.
    ///
    /// The agent enforces the invocation's timeout itself; `silence` only catches an
    /// agent that hangs: it is the longest wait for the next frame. (A whole-exchange
    /// limit would be wrong: a large output streams after the process has ended.)
    pub async fn invoke(
        &mut self,
        spec: InvokeSpec,
        event: &[u8],
        sink: &mut dyn InvocationSink,
        silence: std::time::Duration,
    ) -> Result<(InvokeOutcome, Vec<u8>), SandboxError> {
        let request_id = spec.request_id.clone();
        self.send(&ToAgent::Invoke(spec), event).await?;
        let mut sink_error = None;
        loop {
            let Ok(received) = tokio::time::timeout(silence, self.recv()).await else {
                return Err(SandboxError::Unresponsive {
                    instance: self.instance.clone(),
                    waited_ms: silence.as_millis() as u64,
                });
            };
            let (message, payload) = received?;
            let written = match message {
                FromAgent::Log(chunk) => sink.log(chunk.stream, &payload).await,
                FromAgent::Output => sink.output(&payload).await,
                FromAgent::Result(outcome) if outcome.request_id == request_id => {
                    return match sink_error {
                        None => Ok((outcome, payload)),
                        Some(e) => Err(SandboxError::Spool(format!(
                            "cannot keep the logs and outputs of {request_id}: {e}"
                        ))),
                    };
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
            };
            if let Err(e) = written {
                sink_error.get_or_insert(e);
            }
        }
    }

    /// The instance id this stream belongs to.
    pub fn instance(&self) -> &str {
        &self.instance
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
}
