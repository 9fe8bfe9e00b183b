//! The metadata store: function versions and invocation history.
//!
//! [`MetadataStore`] is the interface the controller holds (`Arc<dyn MetadataStore>`);
//! each backend implements it in its own file:
//! - `sqlite.rs`: [`SqliteMetadataStore`], the embedded store, one SQLite file in WAL mode;
//! - `postgres.rs`: [`PgMetadataStore`], for a cluster of processes sharing one database;
//! - `schema.rs`: the tables both create, written once with per-dialect column types.
//!
//! Nothing in the trait names a backend type. What both backends share (the records,
//! time and JSON encoding of rows) lives here, so they store and answer alike.

mod postgres;
mod schema;
mod sqlite;

pub use postgres::PgMetadataStore;
pub use sqlite::SqliteMetadataStore;

use crate::columns::Columns;
use crate::keys::KeyStore;
use crate::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use hearth_core::{FunctionSpec, Invocation, InvocationStatus};

/// Invocations listed when a filter does not say.
pub const DEFAULT_LIST_LIMIT: u32 = 50;
/// Most invocations one listing returns.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// One immutable version of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRecord {
    /// Function name.
    pub name: String,
    /// Version number: 1 on create, previous + 1 on each update.
    pub version: u64,
    /// The version's validated settings.
    pub spec: FunctionSpec,
    /// Hex SHA-256 of the code zip (its object-store key).
    pub code_sha256: String,
    /// Size of the code zip, bytes.
    pub code_size: u64,
    /// RFC 3339 UTC time the function was first created.
    pub created_at: String,
    /// RFC 3339 UTC time this version was made.
    pub updated_at: String,
}

/// Aggregates over a function's finished invocations (those not `queued`/`running`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionStats {
    /// Finished invocations on record.
    pub invocations: u64,
    /// Those whose status is not `success`.
    pub errors: u64,
    /// Mean `duration_ms`.
    pub avg_duration_ms: f64,
    /// 95th percentile of `duration_ms` (nearest rank).
    pub p95_duration_ms: f64,
}

/// Which invocations a listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationFilter {
    /// Most invocations returned; 0 means [`DEFAULT_LIST_LIMIT`], more than
    /// [`MAX_LIST_LIMIT`] is cut to it.
    pub limit: u32,
    /// Only invocations with this status.
    pub status: Option<InvocationStatus>,
    /// Only invocations started at or after this RFC 3339 time.
    pub since: Option<String>,
}

impl Default for InvocationFilter {
    fn default() -> Self {
        InvocationFilter {
            limit: DEFAULT_LIST_LIMIT,
            status: None,
            since: None,
        }
    }
}

impl InvocationFilter {
    /// The limit actually applied.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        }
    }
}

/// Where functions and invocation history are kept (and API keys: [`KeyStore`]).
#[async_trait]
pub trait MetadataStore: KeyStore + Send + Sync {
    /// Makes a new version (1 on create, previous + 1 on update) atomically; returns it
    /// and whether the function was created by this call.
    async fn put_version(
        &self,
        name: &str,
        spec: &FunctionSpec,
        code_sha256: &str,
        code_size: u64,
    ) -> Result<(FunctionRecord, bool), StoreError>;

    /// The newest version of a function.
    async fn get_function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError>;

    /// One version of a function.
    async fn get_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Option<FunctionRecord>, StoreError>;

    /// Every version of a function, oldest first (none when there is no such function).
    async fn list_versions(&self, name: &str) -> Result<Vec<FunctionRecord>, StoreError>;

    /// The newest version of every function, by name.
    async fn list_functions(&self) -> Result<Vec<FunctionRecord>, StoreError>;

    /// Deletes a function: all its versions and its invocation history. A later create
    /// of the same name starts again at version 1. `false` if there was no such
    /// function.
    async fn delete_function(&self, name: &str) -> Result<bool, StoreError>;

    /// Whether any version of any function uses this code package; a caller deleting
    /// code from the object store checks this first (packages are shared by hash).
    async fn code_in_use(&self, code_sha256: &str) -> Result<bool, StoreError>;

    /// Inserts or replaces an invocation, by id.
    async fn record_invocation(&self, invocation: &Invocation) -> Result<(), StoreError>;

    /// [`record_invocation`](Self::record_invocation) for many, all or none: one
    /// transaction (one commit) for the lot, which is what a worker's reporter writes
    /// under load. The default writes them one by one.
    async fn record_invocations(&self, invocations: &[&Invocation]) -> Result<(), StoreError> {
        for invocation in invocations {
            self.record_invocation(invocation).await?;
        }
        Ok(())
    }

    /// One invocation.
    async fn get_invocation(&self, id: &str) -> Result<Option<Invocation>, StoreError>;

    /// A function's invocations, newest first.
    async fn list_invocations(
        &self,
        function: &str,
        filter: &InvocationFilter,
    ) -> Result<Vec<Invocation>, StoreError>;

    /// Aggregates over a function's finished invocations.
    async fn function_stats(&self, function: &str) -> Result<FunctionStats, StoreError>;

    /// Ids of up to `limit` invocations in `scope`, oldest first: what to free before
    /// their records go ([`crate::cleanup`]).
    async fn invocation_ids(
        &self,
        scope: HistoryScope<'_>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// Deletes the invocations with these ids; returns how many there were.
    async fn delete_invocations(&self, ids: &[String]) -> Result<u64, StoreError>;
}

/// Which invocations [`MetadataStore::invocation_ids`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryScope<'a> {
    /// Those started before this time: past the retention.
    StartedBefore(DateTime<Utc>),
    /// Every invocation of one function.
    Function(&'a str),
}

/// Statuses of invocations that have not ended; an ended one never goes back to them.
pub(crate) const UNFINISHED_STATUSES: &str = "('queued', 'running')";

pub(crate) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn parse_time(what: &str, value: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            StoreError::InvalidArgument(format!(
                "{what} {value:?} is not an RFC 3339 time ({e}): use e.g. 2026-11-28T10:00:00Z"
            ))
        })
}

pub(crate) fn to_i64(what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::InvalidArgument(format!("{what} {value} is too large")))
}

/// A version's spec (JSON text) and code size, as stored.
pub(crate) fn encode_version(
    name: &str,
    spec: &FunctionSpec,
    code_size: u64,
) -> Result<(String, i64), StoreError> {
    let spec = serde_json::to_string(spec).map_err(|e| {
        StoreError::InvalidArgument(format!("spec of function {name} cannot be encoded: {e}"))
    })?;
    Ok((spec, to_i64("code_size", code_size)?))
}

/// An invocation as stored: its start in microseconds since the epoch (for ordering
/// across time zones) and its JSON body.
pub(crate) fn encode_invocation(invocation: &Invocation) -> Result<(i64, String), StoreError> {
    let started = parse_time(
        &format!("started_at of invocation {}", invocation.id),
        &invocation.started_at,
    )?;
    let body = serde_json::to_string(invocation).map_err(|e| {
        StoreError::InvalidArgument(format!(
            "invocation {} cannot be encoded: {e}",
            invocation.id
        ))
    })?;
    Ok((started.timestamp_micros(), body))
}

pub(crate) fn decode_invocation(id: &str, body: &str) -> Result<Invocation, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        what: format!("invocation {id}"),
        reason: e.to_string(),
    })
}

/// The earliest start (microseconds) a filter admits.
pub(crate) fn since_us(filter: &InvocationFilter) -> Result<i64, StoreError> {
    Ok(filter
        .since
        .as_deref()
        .map(|since| parse_time("since", since).map(|t| t.timestamp_micros()))
        .transpose()?
        .unwrap_or(i64::MIN))
}

/// The 1-based nearest rank of the 95th percentile among `count` values: the smallest
/// value with at least 95% of values at or below it.
pub(crate) fn p95_rank(count: i64) -> i64 {
    (count * 95 + 99) / 100
}

/// The columns of a function version joined with its function, in [`VersionRow`] order.
pub(crate) const VERSION_COLUMNS: &str = "v.name, v.version, v.spec, v.code_sha256, \
     v.code_size, f.created_at, v.created_at FROM function_versions v \
     JOIN functions f ON f.name = v.name";

/// A `function_versions` row joined with its function, before decoding.
pub(crate) struct VersionRow {
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) spec: String,
    pub(crate) code_sha256: String,
    pub(crate) code_size: i64,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

impl VersionRow {
    /// A row of `SELECT {VERSION_COLUMNS}`, in that order.
    pub(crate) fn read<R: Columns>(row: &R) -> Result<VersionRow, R::Error> {
        let [name, spec, code_sha256, created_at, updated_at] = row.texts([0, 2, 3, 5, 6])?;
        Ok(VersionRow {
            name,
            version: row.integer(1)?,
            spec,
            code_sha256,
            code_size: row.integer(4)?,
            created_at,
            updated_at,
        })
    }

    pub(crate) fn decode(self) -> Result<FunctionRecord, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            what: format!("function {} version {}", self.name, self.version),
            reason,
        };
        let spec = serde_json::from_str(&self.spec).map_err(|e| corrupt(e.to_string()))?;
        let version = u64::try_from(self.version).map_err(|e| corrupt(e.to_string()))?;
        let code_size = u64::try_from(self.code_size).map_err(|e| corrupt(e.to_string()))?;
        Ok(FunctionRecord {
            name: self.name,
            version,
            spec,
            code_sha256: self.code_sha256,
            code_size,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
