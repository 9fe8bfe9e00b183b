//! The bodies of hearth's HTTP API (`/v1`), as types: the contract that
//! `docs/API.md` describes.
//!
//! Owns: the request and response bodies of every `/v1` route a client calls
//! (functions [`functions`], invocations [`invocations`], status [`status`], the
//! AutoTuner [`tuning`], keys and namespaces [`keys`], the dashboard's sign-in
//! [`session`] and per-function figures [`stats`]) and the one error body ([`error`]).
//! The dashboard's live feed (`/v1/events`) is the controller's own. The controller builds its answers from these types and serializes
//! them; the CLI (and any Rust client) deserializes the answers into them, so both
//! sides agree by construction. Each module's tests round-trip the examples of
//! `docs/API.md`.
//!
//! Never: does I/O, speaks HTTP (no axum, no reqwest), validates input (the
//! controller does) or decides anything. It depends on `hearth-core` only (for the
//! invocation record, the runtimes, the function config and the tuner's advice, which
//! are shared with the worker and the store) and is imported by the controller and
//! the CLI, never the other way round. The `openapi` feature derives the bodies'
//! OpenAPI schemas.
#![deny(missing_docs)]

pub mod error;
pub mod functions;
pub mod invocations;
pub mod keys;
pub mod session;
pub mod stats;
pub mod status;
pub mod tuning;

pub use error::{ErrorBody, ErrorDetail};
pub use functions::{FunctionList, FunctionObject};
pub use hearth_core::FunctionConfig;
pub use invocations::{InvocationList, InvocationObject, Queued};

/// The examples of `docs/API.md`, for the modules' round-trip tests.
#[cfg(test)]
pub(crate) mod examples {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// The API document, as the tests of this crate read it.
    const API_MD: &str = include_str!("../../../docs/API.md");

    /// The first ```json block after `marker` in `docs/API.md`.
    pub fn documented(marker: &str) -> String {
        let at = API_MD
            .find(marker)
            .unwrap_or_else(|| panic!("docs/API.md has no {marker:?}"));
        let rest = &API_MD[at..];
        let start = rest
            .find("```json\n")
            .expect("a json block after the marker")
            + 8;
        let end = rest[start..].find("```").expect("the block's end");
        rest[start..start + end].to_string()
    }

    /// Parses `text` as `T` and checks that `T` serializes back to the same JSON (every
    /// member, same values: nothing lost, nothing added).
    pub fn assert_round_trips<T: DeserializeOwned + Serialize>(text: &str) -> T {
        let expected: serde_json::Value = serde_json::from_str(text).expect("the example is JSON");
        let typed: T = serde_json::from_str(text).expect("the example fits the type");
        let again = serde_json::to_value(&typed).expect("the type serializes");
        assert_eq!(again, expected, "the type does not give back the example");
        typed
    }
}
