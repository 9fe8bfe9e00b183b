//! The Docker part of a warm function instance: the attached agent stream and the cgroup meter.
//!
//! The engine multiplexes the container's stdout and stderr on one attach connection. A
//! small task splits them: stdout bytes (the agent's frames) go through a channel that
//! [`crate::agent_stream::AgentStream`] reads like a pipe; stderr lines (the agent's log) go to `tracing` and
//! to a tail kept for error messages. stdin is written directly. Usage is read straight
//! from the container's cgroup files by a [`UsageMeter`], never through the engine.

use crate::cgroup::UsageMeter;
use crate::instance::{AgentInstance, InstanceHost};
use crate::lines::LineSplitter;
use crate::session::LogTail;
use crate::SandboxError;
use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::query_parameters::RemoveContainerOptions;
use bollard::Docker;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long `remove` waits for a container the engine is already removing to go.
const REMOVAL_WAIT: Duration = Duration::from_secs(10);

/// The container's stdin as the attach connection gives it.
type AttachInput = Pin<Box<dyn AsyncWrite + Send>>;
/// The container's multiplexed output as the attach connection gives it.
pub(super) type AttachOutput =
    Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The attach connection's write half, made `Sync` by a mutex that is never locked:
/// writes take `&mut self` and reach the writer through [`Mutex::get_mut`].
pub struct StdinWriter(Mutex<AttachInput>);

impl StdinWriter {
    pub(super) fn new(input: AttachInput) -> Self {
        Self(Mutex::new(input))
    }

    fn inner(&mut self) -> io::Result<&mut AttachInput> {
        self.0
            .get_mut()
            .map_err(|_| io::Error::other("the stdin writer is poisoned"))
    }
}

impl AsyncWrite for StdinWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().inner() {
            Ok(inner) => inner.as_mut().poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner() {
            Ok(inner) => inner.as_mut().poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner() {
            Ok(inner) => inner.as_mut().poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// The agent's stdout, as the demultiplexing task hands it over: reads like a pipe,
/// ends when the container's output does.
pub struct StdoutReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for StdoutReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.current.is_empty() {
            match this.chunks.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.current = chunk,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                // End of stream: a read of 0 bytes.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.current.len().min(buf.remaining());
        buf.put_slice(&this.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// Stdout chunks buffered between the engine's stream and the agent stream.
const STDOUT_CHUNKS_IN_FLIGHT: usize = 16;

/// Splits the attach output: stdout into the returned reader, stderr lines to `tracing`
/// and `tail`. The task ends with the output.
pub(super) fn demultiplex(
    instance: String,
    mut output: AttachOutput,
    tail: LogTail,
) -> (StdoutReader, JoinHandle<()>) {
    // Bounded: when the worker reads slowly (a large output going to disk), the
    // engine's stream, and so the agent, wait instead of piling up in memory.
    let (sender, chunks) = mpsc::channel(STDOUT_CHUNKS_IN_FLIGHT);
    let task = tokio::spawn(async move {
        let mut splitter = LineSplitter::default();
        let log = |line: &[u8]| tail.record(&instance, line);
        while let Some(item) = output.next().await {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    if sender.send(Ok(message)).await.is_err() {
                        break;
                    }
                }
                Ok(LogOutput::StdErr { message }) => splitter.feed(&message, log),
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    let _ = sender
                        .send(Err(io::Error::other(format!(
                            "the container's output broke: {e}"
                        ))))
                        .await;
                    break;
                }
            }
        }
        splitter.finish(log);
    });
    (
        StdoutReader {
            chunks,
            current: Bytes::new(),
        },
        task,
    )
}

/// Removes container `id` with its anonymous volumes, killing it if it runs. A
/// container that is gone, or that the engine is already removing (auto-remove after
/// its agent exited), counts as removed once it has disappeared.
pub(super) async fn remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..RemoveContainerOptions::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            let deadline = tokio::time::Instant::now() + REMOVAL_WAIT;
            while tokio::time::Instant::now() < deadline {
                match docker.inspect_container(id, None).await {
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => return Ok(()),
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: format!("container {id} is still being removed"),
            })
        }
        Err(e) => Err(e),
    }
}

/// The Docker part of an instance: its container, the task splitting its output, and
/// its cgroup's meter.
pub struct Container {
    pub(super) container: String,
    pub(super) docker: Docker,
    pub(super) meter: UsageMeter,
    /// The function's CPU group (none on a host without a cpu controller).
    pub(super) cpu_group: Option<super::cpu_group::ContainerCpuGroup>,
    pub(super) output_task: JoinHandle<()>,
}

/// A running function container with its agent ready.
pub type DockerInstance = AgentInstance<Container>;

#[async_trait]
impl InstanceHost for Container {
    type Writer = StdinWriter;
    type Reader = StdoutReader;

    fn meter(&mut self, _instance: &str) -> Result<&mut UsageMeter, SandboxError> {
        Ok(&mut self.meter)
    }

    /// Removes the container (and its volume); logs what fails.
    async fn teardown(instance: &mut DockerInstance) {
        let host = &instance.host;
        if let Err(e) = remove(&host.docker, &host.container).await {
            tracing::warn!(instance = %instance.id, container = %host.container, error = %e,
                "cannot remove the container");
        }
        host.output_task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn stdout_chunks_read_like_a_pipe_and_stderr_goes_to_the_tail() {
        let items: Vec<Result<LogOutput, bollard::errors::Error>> = vec![
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"abc"),
            }),
            Ok(LogOutput::StdErr {
                message: Bytes::from_static(b"hearth-agent: one\nhearth-agent: t"),
            }),
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"defgh"),
            }),
            Ok(LogOutput::StdErr {
                message: Bytes::from_static(b"wo\n"),
            }),
        ];
        let tail = LogTail::default();
        let (mut reader, task) = demultiplex(
            "i1".into(),
            Box::pin(futures::stream::iter(items)),
            tail.clone(),
        );
        let mut first = [0u8; 2];
        reader.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"ab");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"cdefgh", "end of output is end of stream");
        task.await.unwrap();
        assert_eq!(tail.joined(), "hearth-agent: one | hearth-agent: two");
    }

    #[tokio::test]
    async fn a_broken_output_is_a_read_error() {
        let items: Vec<Result<LogOutput, bollard::errors::Error>> = vec![
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"x"),
            }),
            Err(bollard::errors::Error::DockerStreamError {
                error: "reset".into(),
            }),
        ];
        let (mut reader, _task) = demultiplex(
            "i2".into(),
            Box::pin(futures::stream::iter(items)),
            LogTail::default(),
        );
        let mut buf = Vec::new();
        let err = reader.read_to_end(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("reset"), "{err}");
        assert_eq!(buf, b"x");
    }
}
