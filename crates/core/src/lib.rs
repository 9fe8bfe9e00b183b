//! Shared types of hearth, with no I/O of their own.
//!
//! Owns: the function spec and its validation rules ([`function`]), the runtimes
//! ([`runtime`]), the invocation record returned to clients ([`invocation`]), the
//! versioned frames spoken between the worker and the in-sandbox agent ([`protocol`]),
//! and the AutoTuner's rules, figures in and advice out ([`tuning`]).
//!
//! Never: touches the network, the disk or a process. Every other crate may depend on
//! this one; this one depends on no other hearth crate, so the static agent stays small.
#![deny(missing_docs)]

pub mod function;
pub mod invocation;
pub mod protocol;
pub mod runtime;
pub mod tuning;

pub use function::{FunctionConfig, FunctionSpec, SpecError};
pub use invocation::{Invocation, InvocationStatus};
pub use runtime::Runtime;
