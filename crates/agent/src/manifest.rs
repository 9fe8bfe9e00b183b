//! The manifest of a compiled function's artifact: written by the build, read by the
//! instances that serve it.

use hearth_core::Runtime;
use serde::{Deserialize, Serialize};

/// How a compiled function takes its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Only a handler: the template's `main` reads the event on stdin and reports on
    /// fd 3; it can be started ahead of its invocation.
    Handler,
    /// A full program with its own `main`: the event comes in `PAYLOAD`,
    /// `PAYLOAD_FILE` and on stdin, the JSON result goes to stdout.
    Program,
}

/// The artifact's manifest ([`hearth_core::protocol::ARTIFACT_MANIFEST`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The function's runtime.
    pub runtime: Runtime,
    /// How the program takes its event.
    pub kind: Kind,
    /// [`hearth_core::protocol::BUILD_VERSION`] of the agent that built it.
    pub build_version: u32,
}
