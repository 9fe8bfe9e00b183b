//! What a runtime does for an instance, as the frame loop sees it: run one invocation in
//! a fresh process, then get the next one ready.

use crate::channel::LogSink;
use crate::error::AgentError;
use crate::instance::Instance;
use crate::run::Finished;
use hearth_core::protocol::InvokeSpec;
use std::os::fd::RawFd;

/// A runtime keeping the next invocation's process ready (a Python zygote, a standby, a
/// compiled program, a build).
pub trait Runner {
    /// Runs one invocation in a fresh process; afterwards none of its processes is
    /// alive. What the process writes on stdout and stderr goes to `log` as it is read.
    fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError>;

    /// Prepares the next process, once the result has gone out.
    fn after_result(&mut self, _inst: &mut Instance) {}

    /// fds to watch between invocations (output of a process waiting for its event).
    fn idle_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Services the idle fds.
    fn on_idle(&mut self, _inst: &mut Instance) {}
}
