//! Storage of hearth: function metadata, invocation history, code packages, and the
//! checks a code package must pass before it is stored.
//!
//! Owns: the [`MetadataStore`] interface with its embedded SQLite implementation and
//! its PostgreSQL one for a cluster ([`metadata`]), the durable async queue on both
//! ([`queue`]), API keys (hashed secrets) and namespace quotas on both ([`keys`]); the
//! [`Limiter`] interface of rate limits and concurrency slots with its in-process
//! implementation ([`limits`]; the Redis one is `hearth-cluster`'s); the [`SessionStore`]
//! of dashboard sessions (hashes only) with its in-process implementation ([`sessions`];
//! the Redis one is `hearth-cluster`'s); content-addressed code packages and other objects (logs, outputs) in a
//! local directory or S3, multipart above one part ([`objects`]); opening both from
//! the URLs a deployment names ([`open`]); validation of uploaded zips and their
//! re-packing as a tar ([`package`]); freeing the objects that pruned history and
//! deleted functions leave behind ([`cleanup`]).
//!
//! Never: talks HTTP, runs user code, or decides API policy (names, auth, limits other
//! than a package's). The controller and the worker call in; this crate calls out only
//! to the disk, the database and the object store.
//!
//! Layout: `metadata/` (trait + records in `mod.rs`, one file per backend),
//! `queue/` (the durable queue of async invocations, likewise), `objects.rs`
//! (`CodeStore`, and `get_package`: fetch, check and re-pack a version's code), `open.rs`
//! (`open_metadata`), `package.rs` (`inspect_zip`), `cleanup.rs` (what goes when
//! history or a function goes), this file
//! (`StoreError`). Tests that run on every backend: `tests/`.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cleanup;
mod columns;
pub mod keys;
pub mod limits;
pub mod metadata;
pub mod objects;
pub mod open;
pub mod package;
pub mod queue;
pub mod sessions;

pub use keys::{KeyLimits, KeyRecord, KeyStore, NamespaceQuotas};
pub use limits::{Admission, Limiter, LocalLimiter, SLOT_RETRY_AFTER};
pub use metadata::{
    FunctionRecord, FunctionStats, HistoryScope, InvocationFilter, MetadataStore, PgMetadataStore,
    SqliteMetadataStore,
};
pub use objects::{artifact_key, code_key, CodeStore, GetPackageError, PART_BYTES};
pub use open::{open_metadata, MetadataHandles};
pub use package::{inspect_zip, CodePackage, PackageError, PackageLimits};
pub use queue::{AsyncJob, AsyncQueue};
pub use sessions::{LiveSession, LocalSessions, SessionRecord, SessionStore};

use std::path::PathBuf;

/// A failure of the metadata or object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("metadata database {}: {op} failed: {source}", path.display())]
    Database {
        /// The database (a file path, `:memory:`, or a connection string without secrets).
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database was written by a newer hearth.
    #[error("metadata database {} has schema version {found}, newer than this hearth supports ({supported}): upgrade hearth", path.display())]
    SchemaTooNew {
        /// The database.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
    /// A blocking database task did not finish (it panicked or was cancelled).
    #[error("metadata database {}: {op} did not finish: {reason}", path.display())]
    Task {
        /// The database.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// A service the store depends on (the database server, the object store) cannot
    /// be reached or did not answer; nothing is wrong with the request, so a caller
    /// answers "try again later" (503). The store reconnects by itself when it returns.
    #[error("{service} is unavailable: {op} failed: {source}")]
    Unavailable {
        /// The service, without secrets (e.g. `PostgreSQL at 127.0.0.1:5432/hearth`).
        service: String,
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A caller passed a value the store cannot take (a bad time, hash, size).
    #[error("{0}")]
    InvalidArgument(String),
    /// Stored data that does not decode or does not match its hash.
    #[error("{what} is corrupt: {reason}")]
    Corrupt {
        /// The record or object.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// No code package under this key.
    #[error("code package {key} not found in the object store")]
    CodeNotFound {
        /// The object key.
        key: String,
    },
    /// The object store failed.
    #[error("object store: {op} {key} failed: {source}")]
    ObjectStore {
        /// The object key (or the store's root when opening it).
        key: String,
        /// What was being done.
        op: &'static str,
        /// The object store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local file or directory could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the failure is an outage of a backing service (retry later), as opposed
    /// to bad input, missing or corrupt data.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
