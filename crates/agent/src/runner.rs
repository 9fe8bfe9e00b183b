//! What a runtime does for an instance, as the frame loop sees it: run one invocation in
//! a fresh process, then get the next one ready.

use crate::channel::LogSink;
use crate::error::{AgentError, SettleError};
use crate::instance::Instance;
use crate::run::Finished;
use hearth_core::protocol::InvokeSpec;
use std::os::fd::RawFd;

/// A runtime keeping the next invocation's process ready (a Python zygote, a standby, a
/// compiled program, a build).
pub trait Runner {
    /// Runs one invocation in a fresh process; afterwards none of its processes is
    /// alive, unless it [answered early](Runner::answered_early). What the process writes on stdout and stderr goes to `log` as it is read.
    fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        event: &[u8],
        log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError>;

    /// Whether the last [`Runner::serve`] answered before its process had ended (the
    /// process wrote its result, closed its output and is exiting): the frame loop then
    /// sends the result first and calls [`Runner::settle`] before anything else.
    fn answered_early(&self) -> bool {
        false
    }

    /// After an early answer: waits for the process's end and sweeps the invocation's
    /// leftovers, so that none of its processes is alive before the next invocation.
    /// `Err` (why) when the instance must not serve again.
    fn settle(&mut self, _inst: &mut Instance) -> Result<(), SettleError> {
        Ok(())
    }

    /// Prepares the next process, once the result has gone out.
    fn after_result(&mut self, _inst: &mut Instance) {}

    /// fds to watch between invocations (output of a process waiting for its event).
    fn idle_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Services the idle fds.
    fn on_idle(&mut self, _inst: &mut Instance) {}
}
