//! What can go wrong inside the agent.

use hearth_core::protocol::FrameError;
use std::io;
use std::path::Path;

/// A failure of the agent itself (not of the user's handler, which is an outcome).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A system call failed; `what` names the call and the path or id involved.
    #[error("{what}: {source}")]
    Sys {
        /// The operation, e.g. `mount tmpfs on /run/x`.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The stream to the worker broke or carried garbage.
    #[error("agent protocol: {0}")]
    Frame(#[from] FrameError),
    /// The worker speaks another protocol version.
    #[error("protocol version mismatch: worker speaks {worker}, agent speaks {agent}")]
    Version {
        /// Version in the `Init` frame.
        worker: u32,
        /// [`hearth_core::protocol::PROTOCOL_VERSION`].
        agent: u32,
    },
    /// A frame that makes no sense at this point.
    #[error("unexpected message: {0}")]
    Unexpected(String),
    /// The code tar is unsafe or unreadable.
    #[error("bad code package: {0}")]
    Package(String),
    /// The setup asked for something the agent cannot do.
    #[error("{0}")]
    Config(String),
    /// The seccomp filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// The user's code failed to load; the message is the runtime's own (a traceback).
    #[error("{0}")]
    CodeLoad(String),
    /// The runtime process misbehaved (died at start, spoke garbage).
    #[error("runtime: {0}")]
    Runtime(String),
}

impl AgentError {
    /// Wraps the current `errno` with a description of the failed call.
    pub fn last_os(what: impl Into<String>) -> Self {
        AgentError::Sys {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// Wraps an I/O error with a description of the failed call.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        AgentError::Sys {
            what: what.into(),
            source,
        }
    }

    /// Wraps an I/O error on `path`.
    pub fn at(verb: &str, path: &Path, source: io::Error) -> Self {
        AgentError::io(format!("{verb} {}", path.display()), source)
    }
}

/// Turns a `-1` return of a libc call into an [`AgentError::Sys`].
pub fn check(ret: libc::c_int, what: impl FnOnce() -> String) -> Result<libc::c_int, AgentError> {
    if ret == -1 {
        Err(AgentError::last_os(what()))
    } else {
        Ok(ret)
    }
}
