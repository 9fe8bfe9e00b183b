//! Shared types of hearth, with no I/O of their own.
//!
//! Owns: the line `hearth up` announces itself with ([`announce`]), the function spec and its validation rules ([`function`]), the environment variables the platform owns ([`env`]), the runtimes
//! ([`runtime`]), the invocation record returned to clients ([`invocation`]), the
//! versioned frames spoken between the worker and the in-sandbox agent ([`protocol`]),
//! the AutoTuner's rules, figures in and advice out ([`tuning`]), the system calls a
//! sandboxed process may make ([`seccomp`]), the cap on an invocation's log ([`logs`]), where things are inside a sandbox ([`paths`]),
//! and how a tar entry is written ([`tarball`]).
//!
//! Never: touches the network, the disk or a process. Every other crate may depend on
//! this one; this one depends on no other hearth crate, so the static agent stays small.
//! The `openapi` feature (off for the agent) derives the API types' OpenAPI schemas.
//!
//! The protocol's `Invoke` frame and [`protocol::InvokeSpec`] keep the user's verb on the
//! wire; each layer above and below has its own (README "One call, followed down").
#![deny(missing_docs)]

pub mod announce;
pub mod env;
pub mod function;
pub mod invocation;
pub mod logs;
pub mod paths;
pub mod protocol;
pub mod runtime;
pub mod seccomp;
pub mod status;
pub mod tarball;
pub mod tenancy;
pub mod tuning;

pub use function::{FunctionConfig, FunctionSpec, SpecError};
pub use invocation::{CapturedOutput, Invocation, InvocationStatus};
pub use runtime::Runtime;
