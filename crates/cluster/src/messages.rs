//! The messages that cross Redis between controllers and workers: serialised JSON in
//! one field (`m`) of a stream entry.

use hearth_core::{FunctionSpec, Invocation, Runtime};
use hearth_store::AsyncJob;
use hearth_worker::fleet::Refusal;
use serde::{Deserialize, Serialize};

/// The stream field that holds a message.
pub const FIELD: &str = "m";

/// Work for a worker, from a controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Task {
    /// A sync invocation: run at most once (claimed with `SET NX` first).
    Invoke {
        /// Invocation id.
        id: String,
        /// Function name.
        function: String,
        /// Version.
        version: u64,
        /// Its settings.
        spec: FunctionSpec,
        /// Its code in the object store.
        code_sha256: String,
        /// The event, JSON text.
        event: String,
        /// RFC 3339 time the controller accepted it.
        started_at: String,
        /// Which dispatch this is (a call no worker started is dispatched again).
        dispatch: u32,
        /// The controller's reply stream.
        reply_to: String,
    },
    /// A build of compiled code stored under `code_sha256`.
    Build {
        /// Request id (the reply's key).
        id: String,
        /// Function name.
        function: String,
        /// Runtime.
        runtime: Runtime,
        /// The code zip's hash.
        code_sha256: String,
        /// The controller's reply stream.
        reply_to: String,
    },
}

/// An async job on its stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AsyncTask {
    /// Invocation id.
    pub id: String,
    /// Function name.
    pub function: String,
    /// The event, JSON text.
    pub event: String,
    /// Where to POST the finished invocation.
    pub callback_url: Option<String>,
    /// RFC 3339 time it was accepted.
    pub started_at: String,
    /// The attempt this entry starts with (a redelivery adds its deliveries).
    pub attempt: u32,
    /// Not to run before this time (ms since the epoch): the retry's backoff.
    pub not_before_ms: u64,
}

impl AsyncTask {
    /// The store's view of the job.
    pub fn job(&self) -> AsyncJob {
        AsyncJob {
            id: self.id.clone(),
            function: self.function.clone(),
            event: self.event.clone().into_bytes(),
            callback_url: self.callback_url.clone(),
            started_at: self.started_at.clone(),
            attempts: self.attempt.saturating_sub(1),
        }
    }
}

/// A worker's answer, on the controller's reply stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The task's id.
    pub id: String,
    /// How it ended.
    pub outcome: ReplyOutcome,
}

/// The body of a [`Reply`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyOutcome {
    /// The invocation ran.
    Invoked {
        /// It.
        invocation: Box<Invocation>,
    },
    /// The build produced or found an artifact (`None` for interpreted runtimes).
    Built {
        /// Whether it was already stored.
        cached: Option<bool>,
        /// Time spent compiling, ms.
        duration_ms: f64,
    },
    /// The worker refused or failed.
    Refused {
        /// What kind.
        refusal: Refusal,
        /// Its message.
        message: String,
    },
}

/// Reads the message of a stream entry.
pub fn decode<T: serde::de::DeserializeOwned>(entry: &redis::streams::StreamId) -> Option<T> {
    let raw: Vec<u8> = entry.get(FIELD)?;
    match serde_json::from_slice(&raw) {
        Ok(message) => Some(message),
        Err(error) => {
            tracing::warn!(id = %entry.id, %error, "undecodable stream entry skipped");
            None
        }
    }
}
