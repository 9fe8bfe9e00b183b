//! One warm instance of either backend: the agent's stream and what both backends keep
//! about it, around the part that is the backend's own ([`InstanceHost`]: a container,
//! or a process and its cgroup). Running an event is written here once.

use crate::agent_stream::AgentStream;
use crate::cgroup::UsageMeter;
use crate::session::{self, LogTail, PendingSettle};
use crate::uids::UidLease;
use crate::{Instance, InstanceRun, InvocationSink, SandboxError, Settled};
use async_trait::async_trait;
use bytes::Bytes;
use hearth_core::protocol::InvokeSpec;
use tokio::io::{AsyncRead, AsyncWrite};

/// What a backend holds of a running agent besides its stream.
#[async_trait]
pub trait InstanceHost: Send + Sync + Sized + 'static {
    /// The agent's stdin, as the backend reaches it.
    type Writer: AsyncWrite + Unpin + Send + Sync + 'static;
    /// The agent's stdout, as the backend reaches it.
    type Reader: AsyncRead + Unpin + Send + Sync + 'static;

    /// The meter of the instance's cgroup; an error once the instance is gone.
    fn meter(&mut self, instance: &str) -> Result<&mut UsageMeter, SandboxError>;

    /// Kills everything in `instance` and frees what it held. Never fails: problems
    /// are logged.
    async fn teardown(instance: &mut AgentInstance<Self>);
}

/// A running agent serving one function version (or one build).
pub struct AgentInstance<H: InstanceHost> {
    pub(crate) id: String,
    // Fields drop in order: the stream first (the agent's stdin closes), then the
    // backend's part, the uids last (given back once everything in it is dead).
    pub(crate) stream: AgentStream<H::Writer, H::Reader>,
    pub(crate) host: H,
    /// The last lines the agent wrote to stderr, for error messages.
    pub(crate) log_tail: LogTail,
    /// The function's output quota, MB: bounds what an exchange may stream.
    pub(crate) output_quota_mb: u64,
    /// A build instance: its result is an artifact, up to the build's size.
    pub(crate) builder: bool,
    /// The instance's own uids (`crate::uids`).
    pub(crate) uids: Option<UidLease>,
    /// The last invocation, answered while its process was exiting, until settled.
    pub(crate) pending: Option<PendingSettle>,
}

impl<H: InstanceHost> AgentInstance<H> {
    /// A booted agent with nothing loaded yet: no quota, no uids.
    pub(crate) fn new(id: String, stream: AgentStream<H::Writer, H::Reader>, host: H) -> Self {
        Self {
            id,
            stream,
            host,
            log_tail: LogTail::default(),
            output_quota_mb: 0,
            builder: false,
            uids: None,
            pending: None,
        }
    }

    /// The instance's host uids: (the agent's, the function's).
    pub fn uids(&self) -> Option<(u32, u32)> {
        self.uids.as_ref().map(|u| (u.agent, u.function))
    }

    /// `error` with what the agent last said added to a lost or failed start's message.
    pub(crate) fn with_agent_log(&self, error: SandboxError) -> SandboxError {
        let said = self.log_tail.joined();
        if said.is_empty() {
            return error;
        }
        match error {
            SandboxError::Lost { instance, message } => SandboxError::Lost {
                instance,
                message: format!("{message}; the agent said: {said}"),
            },
            SandboxError::Spawn { instance, message } => SandboxError::Spawn {
                instance,
                message: format!("{message}; the agent said: {said}"),
            },
            other => other,
        }
    }
}

impl<H: InstanceHost> std::fmt::Debug for AgentInstance<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentInstance")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<H: InstanceHost> Instance for AgentInstance<H> {
    fn id(&self) -> &str {
        &self.id
    }

    async fn run_event(
        &mut self,
        spec: InvokeSpec,
        event: Bytes,
        sink: &mut dyn InvocationSink,
    ) -> Result<InstanceRun, SandboxError> {
        // Never a new call before the last one settled: its process may still be
        // running, and its CPU is not the next call's.
        if let Some(settled) = self.settle().await? {
            if !settled.healthy {
                return Err(SandboxError::Lost {
                    instance: self.id.clone(),
                    message: format!(
                        "the last invocation did not settle: {}",
                        settled.problem.unwrap_or_default()
                    ),
                });
            }
        }
        let limits = session::event_limits(spec.timeout_ms, self.output_quota_mb, self.builder);
        let meter = self.host.meter(&self.id)?;
        let answer = session::run_event(&mut self.stream, meter, spec, event, sink, &limits).await;
        let (run, pending) = answer.map_err(|error| self.with_agent_log(error))?;
        self.pending = pending;
        Ok(run)
    }

    async fn settle(&mut self) -> Result<Option<Settled>, SandboxError> {
        let Some(pending) = self.pending.take() else {
            return Ok(None);
        };
        let meter = self.host.meter(&self.id)?;
        let settled = session::settle(
            &mut self.stream,
            meter,
            pending,
            crate::agent_stream::SETTLE_LIMIT,
        )
        .await;
        settled
            .map(Some)
            .map_err(|error| self.with_agent_log(error))
    }

    async fn destroy(mut self: Box<Self>) {
        H::teardown(&mut self).await;
    }
}
