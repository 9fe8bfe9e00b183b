//! The metadata store: function versions and invocation history.
//!
//! [`MetadataStore`] is the interface the controller holds (`Arc<dyn MetadataStore>`);
//! [`SqliteMetadataStore`] is the embedded implementation, one SQLite file in WAL mode.
//! A PostgreSQL implementation will sit beside it behind the same trait, so nothing in
//! the trait names a backend type.

use crate::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use hearth_core::{FunctionSpec, Invocation, InvocationStatus};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Where functions and invocation history are kept.
#[async_trait]
pub trait MetadataStore: Send + Sync {
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

    /// Deletes invocations started before `older_than`; returns how many.
    async fn prune_invocations(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE functions (
    name           TEXT PRIMARY KEY,
    created_at     TEXT NOT NULL,
    latest_version INTEGER NOT NULL
);
CREATE TABLE function_versions (
    name        TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    code_size   INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX function_versions_by_code ON function_versions (code_sha256);
CREATE TABLE invocations (
    id          TEXT PRIMARY KEY,
    function    TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    started_us  INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX invocations_by_function ON invocations (function, started_us);
CREATE INDEX invocations_by_start ON invocations (started_us);
"#,
    r#"
CREATE TABLE async_jobs (
    id              TEXT PRIMARY KEY,
    function        TEXT NOT NULL,
    event           BLOB NOT NULL,
    callback_url    TEXT,
    started_at      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_us INTEGER NOT NULL,
    claimed         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX async_jobs_due ON async_jobs (claimed, next_attempt_us);
"#,
];

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded metadata store: one SQLite file (WAL mode), or memory for tests.
#[derive(Clone)]
pub struct SqliteMetadataStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMetadataStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteMetadataStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up
    /// to date. Blocking: call it at startup or from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| db_error(path, "open", e))?;
        Self::init(conn, path.to_path_buf())
    }

    /// A private in-memory database, gone when the store is dropped.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| db_error(&path, "open", e))?;
        Self::init(conn, path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init(mut conn: Connection, path: PathBuf) -> Result<Self, StoreError> {
        let err = |op: &'static str| {
            let path = path.clone();
            move |e| db_error(&path, op, e)
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("set busy_timeout"))?;
        // WAL: readers never block the writer. synchronous=NORMAL is durable against a
        // process crash; a power loss may lose the last commits but never corrupts.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(err("set journal_mode"))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(err("set pragmas"))?;
        migrate(&mut conn, &path)?;
        Ok(SqliteMetadataStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Runs `f` on the connection in the blocking pool.
    pub(crate) async fn with_conn<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves no open transaction behind
            // (rusqlite rolls back on drop), so the connection is still sound.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task {
            path,
            op,
            reason: e.to_string(),
        })?
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: u32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| db_error(path, "read user_version", e))?;
    let supported = MIGRATIONS.len() as u32;
    if found > supported {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error(path, "migrate", e))?;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version as u32 + 1))
            .and_then(|()| tx.commit())
            .map_err(|e| db_error(path, "migrate", e))?;
    }
    Ok(())
}

pub(crate) fn db_error(path: &Path, op: &'static str, e: rusqlite::Error) -> StoreError {
    StoreError::Database {
        path: path.to_path_buf(),
        op,
        source: Box::new(e),
    }
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(what: &str, value: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            StoreError::InvalidArgument(format!(
                "{what} {value:?} is not an RFC 3339 time ({e}): use e.g. 2026-11-28T10:00:00Z"
            ))
        })
}

fn to_i64(what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::InvalidArgument(format!("{what} {value} is too large")))
}

/// A `function_versions` row joined with its function, before decoding.
struct VersionRow {
    name: String,
    version: i64,
    spec: String,
    code_sha256: String,
    code_size: i64,
    created_at: String,
    updated_at: String,
}

const VERSION_COLUMNS: &str = "v.name, v.version, v.spec, v.code_sha256, v.code_size, \
     f.created_at, v.created_at FROM function_versions v JOIN functions f ON f.name = v.name";

impl VersionRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(VersionRow {
            name: row.get(0)?,
            version: row.get(1)?,
            spec: row.get(2)?,
            code_sha256: row.get(3)?,
            code_size: row.get(4)?,
            created_at: row.get(5)?,
            updated_at: row.get(6)?,
        })
    }

    fn decode(self) -> Result<FunctionRecord, StoreError> {
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

fn decode_invocation(id: &str, body: &str) -> Result<Invocation, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        what: format!("invocation {id}"),
        reason: e.to_string(),
    })
}

fn put_version_tx(
    conn: &mut Connection,
    path: &Path,
    name: &str,
    spec_json: &str,
    code_sha256: &str,
    code_size: i64,
) -> Result<(FunctionRecord, bool), StoreError> {
    let err = |e| db_error(path, "put_version", e);
    // IMMEDIATE takes the write lock up front: two writers (even in two processes)
    // cannot both read the same latest version.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let now = now_rfc3339();
    let existing: Option<(i64, String)> = tx
        .query_row(
            "SELECT latest_version, created_at FROM functions WHERE name = ?1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(err)?;
    let (version, created_at, created) = match existing {
        Some((latest, created_at)) => {
            tx.execute(
                "UPDATE functions SET latest_version = ?2 WHERE name = ?1",
                params![name, latest + 1],
            )
            .map_err(err)?;
            (latest + 1, created_at, false)
        }
        None => {
            tx.execute(
                "INSERT INTO functions (name, created_at, latest_version) VALUES (?1, ?2, 1)",
                params![name, now],
            )
            .map_err(err)?;
            (1, now.clone(), true)
        }
    };
    tx.execute(
        "INSERT INTO function_versions (name, version, spec, code_sha256, code_size, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![name, version, spec_json, code_sha256, code_size, now],
    )
    .map_err(err)?;
    tx.commit().map_err(err)?;
    let record = VersionRow {
        name: name.to_string(),
        version,
        spec: spec_json.to_string(),
        code_sha256: code_sha256.to_string(),
        code_size,
        created_at,
        updated_at: now,
    }
    .decode()?;
    Ok((record, created))
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    async fn put_version(
        &self,
        name: &str,
        spec: &FunctionSpec,
        code_sha256: &str,
        code_size: u64,
    ) -> Result<(FunctionRecord, bool), StoreError> {
        let spec_json = serde_json::to_string(spec).map_err(|e| {
            StoreError::InvalidArgument(format!("spec of function {name} cannot be encoded: {e}"))
        })?;
        let code_size = to_i64("code_size", code_size)?;
        let (name, sha, path) = (name.to_string(), code_sha256.to_string(), self.path.clone());
        self.with_conn("put_version", move |conn| {
            put_version_tx(conn, &path, &name, &spec_json, &sha, code_size)
        })
        .await
    }

    async fn get_function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let (name, path) = (name.to_string(), self.path.clone());
        self.with_conn("get_function", move |conn| {
            conn.query_row(
                &format!(
                    "SELECT {VERSION_COLUMNS} WHERE v.name = ?1 AND v.version = f.latest_version"
                ),
                [&name],
                VersionRow::from_row,
            )
            .optional()
            .map_err(|e| db_error(&path, "get_function", e))?
            .map(VersionRow::decode)
            .transpose()
        })
        .await
    }

    async fn get_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Option<FunctionRecord>, StoreError> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        let (name, path) = (name.to_string(), self.path.clone());
        self.with_conn("get_version", move |conn| {
            conn.query_row(
                &format!("SELECT {VERSION_COLUMNS} WHERE v.name = ?1 AND v.version = ?2"),
                params![name, version],
                VersionRow::from_row,
            )
            .optional()
            .map_err(|e| db_error(&path, "get_version", e))?
            .map(VersionRow::decode)
            .transpose()
        })
        .await
    }

    async fn list_functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        let path = self.path.clone();
        self.with_conn("list_functions", move |conn| {
            let err = |e| db_error(&path, "list_functions", e);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {VERSION_COLUMNS} WHERE v.version = f.latest_version ORDER BY v.name"
                ))
                .map_err(err)?;
            let rows = stmt
                .query_map([], VersionRow::from_row)
                .map_err(err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            rows.into_iter().map(VersionRow::decode).collect()
        })
        .await
    }

    async fn delete_function(&self, name: &str) -> Result<bool, StoreError> {
        let (name, path) = (name.to_string(), self.path.clone());
        self.with_conn("delete_function", move |conn| {
            let err = |e| db_error(&path, "delete_function", e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            // Versions go with their function (ON DELETE CASCADE).
            let deleted = tx
                .execute("DELETE FROM functions WHERE name = ?1", [&name])
                .map_err(err)?;
            tx.execute("DELETE FROM invocations WHERE function = ?1", [&name])
                .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn code_in_use(&self, code_sha256: &str) -> Result<bool, StoreError> {
        let (sha, path) = (code_sha256.to_string(), self.path.clone());
        self.with_conn("code_in_use", move |conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM function_versions WHERE code_sha256 = ?1)",
                [&sha],
                |row| row.get(0),
            )
            .map_err(|e| db_error(&path, "code_in_use", e))
        })
        .await
    }

    async fn record_invocation(&self, invocation: &Invocation) -> Result<(), StoreError> {
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
        let row = (
            invocation.id.clone(),
            invocation.function.clone(),
            invocation.status.as_str(),
            invocation.started_at.clone(),
            started.timestamp_micros(),
            invocation.duration_ms,
        );
        let path = self.path.clone();
        self.with_conn("record_invocation", move |conn| {
            conn.execute(
                "INSERT INTO invocations (id, function, status, started_at, started_us, duration_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET
                    function = excluded.function, status = excluded.status,
                    started_at = excluded.started_at, started_us = excluded.started_us,
                    duration_ms = excluded.duration_ms, body = excluded.body
                 -- Writers race (the async dispatcher, the worker's reporter): an
                 -- invocation that has ended never goes back to queued or running.
                 WHERE excluded.status NOT IN ('queued', 'running')
                    OR invocations.status IN ('queued', 'running')",
                params![row.0, row.1, row.2, row.3, row.4, row.5, body],
            )
            .map_err(|e| db_error(&path, "record_invocation", e))?;
            Ok(())
        })
        .await
    }

    async fn get_invocation(&self, id: &str) -> Result<Option<Invocation>, StoreError> {
        let (id, path) = (id.to_string(), self.path.clone());
        self.with_conn("get_invocation", move |conn| {
            let body: Option<String> = conn
                .query_row("SELECT body FROM invocations WHERE id = ?1", [&id], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(|e| db_error(&path, "get_invocation", e))?;
            body.map(|body| decode_invocation(&id, &body)).transpose()
        })
        .await
    }

    async fn list_invocations(
        &self,
        function: &str,
        filter: &InvocationFilter,
    ) -> Result<Vec<Invocation>, StoreError> {
        let since_us = filter
            .since
            .as_deref()
            .map(|since| parse_time("since", since).map(|t| t.timestamp_micros()))
            .transpose()?
            .unwrap_or(i64::MIN);
        let status = filter.status.map(InvocationStatus::as_str);
        let limit = filter.effective_limit();
        let (function, path) = (function.to_string(), self.path.clone());
        self.with_conn("list_invocations", move |conn| {
            let err = |e| db_error(&path, "list_invocations", e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, body FROM invocations
                     WHERE function = ?1 AND started_us >= ?2 AND (?3 IS NULL OR status = ?3)
                     ORDER BY started_us DESC, id DESC LIMIT ?4",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map(params![function, since_us, status, limit], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            rows.iter()
                .map(|(id, body)| decode_invocation(id, body))
                .collect()
        })
        .await
    }

    async fn function_stats(&self, function: &str) -> Result<FunctionStats, StoreError> {
        let (function, path) = (function.to_string(), self.path.clone());
        self.with_conn("function_stats", move |conn| {
            let err = |e| db_error(&path, "function_stats", e);
            const FINISHED: &str = "function = ?1 AND status NOT IN ('queued', 'running')";
            let (count, errors, avg): (i64, i64, Option<f64>) = conn
                .query_row(
                    &format!(
                        "SELECT COUNT(*), COALESCE(SUM(status != 'success'), 0), AVG(duration_ms)
                         FROM invocations WHERE {FINISHED}"
                    ),
                    [&function],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .map_err(err)?;
            if count == 0 {
                return Ok(FunctionStats::default());
            }
            // Nearest rank: the smallest value with at least 95% of values at or below it.
            let rank = (count * 95 + 99) / 100;
            let p95: f64 = conn
                .query_row(
                    &format!(
                        "SELECT duration_ms FROM invocations WHERE {FINISHED}
                         ORDER BY duration_ms LIMIT 1 OFFSET ?2"
                    ),
                    params![function, rank - 1],
                    |row| row.get(0),
                )
                .map_err(err)?;
            Ok(FunctionStats {
                invocations: count.unsigned_abs(),
                errors: errors.unsigned_abs(),
                avg_duration_ms: avg.unwrap_or(0.0),
                p95_duration_ms: p95,
            })
        })
        .await
    }

    async fn prune_invocations(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        let cutoff = older_than.timestamp_micros();
        let path = self.path.clone();
        self.with_conn("prune_invocations", move |conn| {
            let deleted = conn
                .execute("DELETE FROM invocations WHERE started_us < ?1", [cutoff])
                .map_err(|e| db_error(&path, "prune_invocations", e))?;
            Ok(deleted as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::{FunctionConfig, Runtime};

    fn spec(memory_mb: u64) -> FunctionSpec {
        let config = FunctionConfig {
            runtime: Some("python".into()),
            memory_mb: Some(memory_mb),
            ..Default::default()
        };
        FunctionSpec::resolve(None, &config).unwrap()
    }

    fn invocation(
        id: &str,
        function: &str,
        status: InvocationStatus,
        started_at: &str,
        duration_ms: f64,
    ) -> Invocation {
        Invocation {
            id: id.into(),
            function: function.into(),
            version: 1,
            status,
            result: Some(serde_json::json!({"ok": true})),
            error: None,
            exit_code: Some(0),
            stdout: "out".into(),
            stderr: String::new(),
            truncated: false,
            cold_start: false,
            worker: "w-1".into(),
            started_at: started_at.into(),
            duration_ms,
            handler_duration_ms: duration_ms / 2.0,
            memory: Default::default(),
            cpu: Default::default(),
            io: Default::default(),
            outputs: vec![],
            skipped_outputs: vec![],
            advice: None,
            attempt: 1,
        }
    }

    #[tokio::test]
    async fn versions_are_made_listed_and_deleted() {
        let store = SqliteMetadataStore::open_in_memory().unwrap();
        assert_eq!(store.get_function("hello").await.unwrap(), None);

        let (v1, created) = store
            .put_version("hello", &spec(128), "aa", 10)
            .await
            .unwrap();
        assert!(created);
        assert_eq!(
            (v1.name.as_str(), v1.version, v1.code_size),
            ("hello", 1, 10)
        );
        assert_eq!(v1.spec.runtime, Runtime::Python);
        assert_eq!(v1.created_at, v1.updated_at);
        assert!(v1.created_at.ends_with('Z'), "{}", v1.created_at);

        let (v2, created) = store
            .put_version("hello", &spec(256), "bb", 20)
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(v2.version, 2);
        assert_eq!(v2.created_at, v1.created_at);
        assert_eq!(v2.spec.memory_mb, 256);

        assert_eq!(store.get_function("hello").await.unwrap(), Some(v2.clone()));
        assert_eq!(
            store.get_version("hello", 1).await.unwrap(),
            Some(v1.clone())
        );
        assert_eq!(store.get_version("hello", 3).await.unwrap(), None);
        assert_eq!(store.get_version("hello", u64::MAX).await.unwrap(), None);

        store
            .put_version("abc", &spec(128), "aa", 10)
            .await
            .unwrap();
        let names: Vec<_> = store
            .list_functions()
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.name, f.version))
            .collect();
        assert_eq!(names, [("abc".to_string(), 1), ("hello".to_string(), 2)]);

        assert!(store.code_in_use("aa").await.unwrap());
        assert!(store.delete_function("hello").await.unwrap());
        assert!(!store.delete_function("hello").await.unwrap());
        assert_eq!(store.get_function("hello").await.unwrap(), None);
        assert_eq!(store.get_version("hello", 1).await.unwrap(), None);
        assert!(store.code_in_use("aa").await.unwrap(), "abc still uses it");
        assert!(!store.code_in_use("bb").await.unwrap());

        let (again, created) = store
            .put_version("hello", &spec(128), "cc", 1)
            .await
            .unwrap();
        assert!(created);
        assert_eq!(again.version, 1);
    }

    #[tokio::test]
    async fn concurrent_updates_never_share_a_version() {
        let store = Arc::new(SqliteMetadataStore::open_in_memory().unwrap());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.put_version("f", &spec(128), "aa", 1).await })
            })
            .collect();
        let mut versions = Vec::new();
        let mut creates = 0;
        for task in tasks {
            let (record, created) = task.await.unwrap().unwrap();
            versions.push(record.version);
            creates += usize::from(created);
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=20).collect::<Vec<u64>>());
        assert_eq!(creates, 1);
    }

    #[tokio::test]
    async fn two_connections_on_one_file_never_share_a_version() {
        // The IMMEDIATE transaction and the primary key keep versions unique across
        // connections (tests/two_processes.rs does it with two real processes).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let a = SqliteMetadataStore::open(&path).unwrap();
        let b = SqliteMetadataStore::open(&path).unwrap();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store.put_version("f", &spec(128), "aa", 1).await
            }));
        }
        let mut versions = Vec::new();
        for task in tasks {
            versions.push(task.await.unwrap().unwrap().0.version);
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=10).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn versions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("meta.db");
        let first = {
            let store = SqliteMetadataStore::open(&path).unwrap();
            store
                .put_version("hello", &spec(128), "aa", 10)
                .await
                .unwrap();
            let (v2, _) = store
                .put_version("hello", &spec(512), "bb", 20)
                .await
                .unwrap();
            store
                .record_invocation(&invocation(
                    "01A",
                    "hello",
                    InvocationStatus::Success,
                    "2026-01-01T00:00:00Z",
                    3.0,
                ))
                .await
                .unwrap();
            v2
        };
        let store = SqliteMetadataStore::open(&path).unwrap();
        assert_eq!(store.get_function("hello").await.unwrap(), Some(first));
        let (v3, created) = store
            .put_version("hello", &spec(128), "cc", 30)
            .await
            .unwrap();
        assert_eq!((v3.version, created), (3, false));
        assert!(store.get_invocation("01A").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        drop(SqliteMetadataStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteMetadataStore::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn invocations_are_upserted_and_read_back() {
        let store = SqliteMetadataStore::open_in_memory().unwrap();
        let mut inv = invocation(
            "01A",
            "hello",
            InvocationStatus::Running,
            "2026-01-01T00:00:00Z",
            0.0,
        );
        store.record_invocation(&inv).await.unwrap();
        inv.status = InvocationStatus::Success;
        inv.duration_ms = 2.5;
        store.record_invocation(&inv).await.unwrap();
        assert_eq!(
            store.get_invocation("01A").await.unwrap(),
            Some(inv.clone())
        );
        assert_eq!(store.get_invocation("nope").await.unwrap(), None);
        let listed = store
            .list_invocations("hello", &InvocationFilter::default())
            .await
            .unwrap();
        assert_eq!(listed, vec![inv.clone()]);

        inv.started_at = "yesterday".into();
        assert!(matches!(
            store.record_invocation(&inv).await,
            Err(StoreError::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn listings_filter_and_order_newest_first() {
        use InvocationStatus::*;
        let store = SqliteMetadataStore::open_in_memory().unwrap();
        let rows = [
            ("01", Success, "2026-01-01T00:00:00Z"),
            ("02", Error, "2026-01-02T00:00:00Z"),
            // Same instant in another zone: ordering is by time, not by string.
            ("03", Success, "2026-01-03T01:00:00+01:00"),
            ("04", Timeout, "2026-01-04T00:00:00Z"),
        ];
        for (id, status, at) in rows {
            store
                .record_invocation(&invocation(id, "f", status, at, 1.0))
                .await
                .unwrap();
        }
        store
            .record_invocation(&invocation(
                "99",
                "other",
                Success,
                "2026-01-05T00:00:00Z",
                1.0,
            ))
            .await
            .unwrap();
        let ids = |list: Vec<Invocation>| list.into_iter().map(|i| i.id).collect::<Vec<_>>();

        let all = store
            .list_invocations("f", &InvocationFilter::default())
            .await
            .unwrap();
        assert_eq!(ids(all), ["04", "03", "02", "01"]);

        let two = InvocationFilter {
            limit: 2,
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_invocations("f", &two).await.unwrap()),
            ["04", "03"]
        );

        let ok = InvocationFilter {
            status: Some(Success),
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_invocations("f", &ok).await.unwrap()),
            ["03", "01"]
        );

        let since = InvocationFilter {
            since: Some("2026-01-03T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_invocations("f", &since).await.unwrap()),
            ["04", "03"]
        );

        let bad = InvocationFilter {
            since: Some("soon".into()),
            ..Default::default()
        };
        assert!(matches!(
            store.list_invocations("f", &bad).await,
            Err(StoreError::InvalidArgument(_))
        ));

        assert_eq!(
            InvocationFilter {
                limit: 0,
                ..Default::default()
            }
            .effective_limit(),
            50
        );
        assert_eq!(
            InvocationFilter {
                limit: 5000,
                ..Default::default()
            }
            .effective_limit(),
            1000
        );
    }

    #[tokio::test]
    async fn stats_average_and_p95() {
        use InvocationStatus::*;
        let store = SqliteMetadataStore::open_in_memory().unwrap();
        assert_eq!(
            store.function_stats("f").await.unwrap(),
            FunctionStats::default()
        );
        // Durations 1..=100 ms; every 10th is an error; one still running (ignored).
        for i in 1..=100u32 {
            let status = if i % 10 == 0 { Error } else { Success };
            let id = format!("{i:03}");
            store
                .record_invocation(&invocation(
                    &id,
                    "f",
                    status,
                    "2026-01-01T00:00:00Z",
                    f64::from(i),
                ))
                .await
                .unwrap();
        }
        store
            .record_invocation(&invocation(
                "run",
                "f",
                Running,
                "2026-01-01T00:00:00Z",
                0.0,
            ))
            .await
            .unwrap();
        let stats = store.function_stats("f").await.unwrap();
        assert_eq!(stats.invocations, 100);
        assert_eq!(stats.errors, 10);
        assert!((stats.avg_duration_ms - 50.5).abs() < 1e-9, "{stats:?}");
        assert_eq!(stats.p95_duration_ms, 95.0);

        // Small samples: p95 of [1, 2, 3] is the largest.
        for (i, d) in [3.0, 1.0, 2.0].into_iter().enumerate() {
            store
                .record_invocation(&invocation(
                    &format!("g{i}"),
                    "g",
                    Success,
                    "2026-01-01T00:00:00Z",
                    d,
                ))
                .await
                .unwrap();
        }
        let stats = store.function_stats("g").await.unwrap();
        assert_eq!((stats.invocations, stats.errors), (3, 0));
        assert_eq!((stats.avg_duration_ms, stats.p95_duration_ms), (2.0, 3.0));
    }

    #[tokio::test]
    async fn prune_drops_old_invocations_only() {
        let store = SqliteMetadataStore::open_in_memory().unwrap();
        for (id, at) in [
            ("old1", "2026-01-01T00:00:00Z"),
            ("old2", "2026-01-02T00:00:00Z"),
            ("new", "2026-02-01T00:00:00Z"),
        ] {
            store
                .record_invocation(&invocation(id, "f", InvocationStatus::Success, at, 1.0))
                .await
                .unwrap();
        }
        let cutoff = DateTime::parse_from_rfc3339("2026-01-15T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(store.prune_invocations(cutoff).await.unwrap(), 2);
        assert_eq!(store.prune_invocations(cutoff).await.unwrap(), 0);
        assert!(store.get_invocation("old1").await.unwrap().is_none());
        assert!(store.get_invocation("new").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn deleting_a_function_drops_its_history() {
        let store = SqliteMetadataStore::open_in_memory().unwrap();
        store.put_version("f", &spec(128), "aa", 1).await.unwrap();
        store
            .record_invocation(&invocation(
                "1",
                "f",
                InvocationStatus::Success,
                "2026-01-01T00:00:00Z",
                1.0,
            ))
            .await
            .unwrap();
        assert!(store.delete_function("f").await.unwrap());
        assert_eq!(store.get_invocation("1").await.unwrap(), None);
        assert_eq!(store.function_stats("f").await.unwrap().invocations, 0);
    }

    #[test]
    fn the_trait_is_object_safe() {
        let store: Arc<dyn MetadataStore> =
            Arc::new(SqliteMetadataStore::open_in_memory().unwrap());
        drop(store);
    }
}
