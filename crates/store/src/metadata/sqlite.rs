//! [`SqliteMetadataStore`]: the embedded metadata store, one SQLite file in WAL mode
//! (or memory, for tests). It also holds the durable async queue (`queue/sqlite.rs`).

use super::{
    decode_invocation, encode_invocation, encode_version, now_rfc3339, p95_rank, since_us,
    FunctionRecord, FunctionStats, HistoryScope, InvocationFilter, MetadataStore, VersionRow,
    UNFINISHED_STATUSES, VERSION_COLUMNS,
};
use crate::StoreError;
use async_trait::async_trait;
use hearth_core::{FunctionSpec, Invocation, InvocationStatus};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
fn migrations() -> Vec<String> {
    use super::schema::{migrations, ASYNC_JOBS, FUNCTIONS, KEYS, SQLITE};
    migrations(&SQLITE, &[&[FUNCTIONS], &[ASYNC_JOBS], &[KEYS]])
}

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries at configuring a connection while other processes hold the file's lock
/// (50 ms apart: 10 s in all).
const CONFIGURE_ATTEMPTS: u32 = 200;

/// What work on the connection fails with: SQLite itself, which [`SqliteMetadataStore::with_conn`]
/// turns into a [`StoreError::Database`] naming the file and the operation, or a store
/// error already made (a row that does not decode). Lets that work use `?` throughout.
pub(crate) enum ConnError {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for ConnError {
    fn from(e: rusqlite::Error) -> Self {
        ConnError::Sql(e)
    }
}

impl From<StoreError> for ConnError {
    fn from(e: StoreError) -> Self {
        ConnError::Store(e)
    }
}

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

fn db_error(path: &Path, op: &'static str, e: rusqlite::Error) -> StoreError {
    StoreError::Database {
        path: path.to_path_buf(),
        op,
        source: Box::new(e),
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
        let setup = |conn: &mut Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // WAL: readers never block the writer. synchronous=NORMAL is durable against
            // a process crash; a power loss may lose the last commits but never corrupts.
            let _mode: String =
                conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
            conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        };
        // Switching a new file to WAL takes an exclusive lock that SQLite does not wait
        // for through the busy handler, so processes starting together retry it.
        let mut attempts = 0;
        while let Err(e) = setup(&mut conn) {
            let busy = matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            );
            attempts += 1;
            if !busy || attempts >= CONFIGURE_ATTEMPTS {
                return Err(db_error(&path, "configure", e));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        migrate(&mut conn, &path)?;
        Ok(SqliteMetadataStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Runs `f` on the connection in the blocking pool; its SQLite errors come back as
    /// [`StoreError::Database`] for `op`.
    pub(crate) async fn with_conn<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, ConnError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let path = self.path.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves no open transaction behind
            // (rusqlite rolls back on drop), so the connection is still sound.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(ConnError::Sql(e))) => Err(db_error(&self.path, op, e)),
            Ok(Err(ConnError::Store(e))) => Err(e),
            Err(e) => Err(StoreError::Task {
                path,
                op,
                reason: e.to_string(),
            }),
        }
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let migrations = migrations();
    let supported = migrations.len() as u32;
    // The version is read inside the IMMEDIATE transaction that applies the step, so
    // processes opening one file at once take turns and never apply a step twice.
    loop {
        let step = |conn: &mut Connection| -> rusqlite::Result<Option<u32>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: u32 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
            if found >= supported {
                return Ok(Some(found));
            }
            tx.execute_batch(&migrations[found as usize])?;
            tx.pragma_update(None, "user_version", found + 1)?;
            tx.commit()?;
            Ok(None)
        };
        match step(conn).map_err(|e| db_error(path, "migrate", e))? {
            None => continue,
            Some(found) if found > supported => {
                return Err(StoreError::SchemaTooNew {
                    path: path.to_path_buf(),
                    found,
                    supported,
                })
            }
            Some(_) => return Ok(()),
        }
    }
}

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    VersionRow::read(row)
}

fn put_version_tx(
    conn: &mut Connection,
    name: &str,
    spec_json: &str,
    code_sha256: &str,
    code_size: i64,
) -> Result<(FunctionRecord, bool), ConnError> {
    // IMMEDIATE takes the write lock up front: two writers (even in two processes)
    // cannot both read the same latest version.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_rfc3339();
    let existing: Option<(i64, String)> = tx
        .query_row(
            "SELECT latest_version, created_at FROM functions WHERE name = ?1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (version, created_at, created) = match existing {
        Some((latest, created_at)) => {
            tx.execute(
                "UPDATE functions SET latest_version = ?2 WHERE name = ?1",
                params![name, latest + 1],
            )?;
            (latest + 1, created_at, false)
        }
        None => {
            tx.execute(
                "INSERT INTO functions (name, created_at, latest_version) VALUES (?1, ?2, 1)",
                params![name, now],
            )?;
            (1, now.clone(), true)
        }
    };
    tx.execute(
        "INSERT INTO function_versions (name, version, spec, code_sha256, code_size, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![name, version, spec_json, code_sha256, code_size, now],
    )?;
    tx.commit()?;
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
        let (spec_json, code_size) = encode_version(name, spec, code_size)?;
        let (name, sha) = (name.to_string(), code_sha256.to_string());
        self.with_conn("put_version", move |conn| {
            put_version_tx(conn, &name, &spec_json, &sha, code_size)
        })
        .await
    }

    async fn get_function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let name = name.to_string();
        self.with_conn("get_function", move |conn| {
            let row = conn
                .query_row(
                    &format!(
                        "SELECT {VERSION_COLUMNS} WHERE v.name = ?1 AND v.version = f.latest_version"
                    ),
                    [&name],
                    version_row,
                )
                .optional()?;
            Ok(row.map(VersionRow::decode).transpose()?)
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
        let name = name.to_string();
        self.with_conn("get_version", move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {VERSION_COLUMNS} WHERE v.name = ?1 AND v.version = ?2"),
                    params![name, version],
                    version_row,
                )
                .optional()?;
            Ok(row.map(VersionRow::decode).transpose()?)
        })
        .await
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<FunctionRecord>, StoreError> {
        let name = name.to_string();
        self.with_conn("list_versions", move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {VERSION_COLUMNS} WHERE v.name = ?1 ORDER BY v.version"
            ))?;
            let rows = stmt
                .query_map([&name], version_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .map(VersionRow::decode)
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn list_functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        self.with_conn("list_functions", move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {VERSION_COLUMNS} WHERE v.version = f.latest_version ORDER BY v.name"
            ))?;
            let rows = stmt
                .query_map([], version_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .map(VersionRow::decode)
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn delete_function(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with_conn("delete_function", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Versions go with their function (ON DELETE CASCADE).
            let deleted = tx.execute("DELETE FROM functions WHERE name = ?1", [&name])?;
            tx.execute("DELETE FROM invocations WHERE function = ?1", [&name])?;
            tx.commit()?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn code_in_use(&self, code_sha256: &str) -> Result<bool, StoreError> {
        let sha = code_sha256.to_string();
        self.with_conn("code_in_use", move |conn| {
            Ok(conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM function_versions WHERE code_sha256 = ?1)",
                [&sha],
                |row| row.get(0),
            )?)
        })
        .await
    }

    async fn record_invocation(&self, invocation: &Invocation) -> Result<(), StoreError> {
        self.record_invocations(&[invocation]).await
    }

    async fn record_invocations(&self, invocations: &[&Invocation]) -> Result<(), StoreError> {
        let rows = invocations
            .iter()
            .map(|invocation| {
                let (started_us, body) = encode_invocation(invocation)?;
                Ok((
                    invocation.id.clone(),
                    invocation.function.clone(),
                    invocation.status.as_str(),
                    invocation.started_at.clone(),
                    started_us,
                    invocation.duration_ms,
                    body,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.with_conn("record_invocation", move |conn| {
            // One transaction for the lot: one WAL commit however many rows.
            let tx = conn.transaction()?;
            {
                // Cached: history rows come all the time, so the statement is parsed
                // once per connection rather than once per row.
                let mut insert = tx.prepare_cached(&format!(
                    "INSERT INTO invocations (id, function, status, started_at, started_us, duration_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET
                        function = excluded.function, status = excluded.status,
                        started_at = excluded.started_at, started_us = excluded.started_us,
                        duration_ms = excluded.duration_ms, body = excluded.body
                     -- Writers race (the async dispatcher, the worker's reporter): an
                     -- invocation that has ended never goes back to queued or running.
                     WHERE excluded.status NOT IN {UNFINISHED_STATUSES}
                        OR invocations.status IN {UNFINISHED_STATUSES}"
                ))?;
                for row in &rows {
                    insert.execute(params![row.0, row.1, row.2, row.3, row.4, row.5, row.6])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn get_invocation(&self, id: &str) -> Result<Option<Invocation>, StoreError> {
        let id = id.to_string();
        self.with_conn("get_invocation", move |conn| {
            let body: Option<String> = conn
                .query_row("SELECT body FROM invocations WHERE id = ?1", [&id], |row| {
                    row.get(0)
                })
                .optional()?;
            Ok(body.map(|body| decode_invocation(&id, &body)).transpose()?)
        })
        .await
    }

    async fn list_invocations(
        &self,
        function: &str,
        filter: &InvocationFilter,
    ) -> Result<Vec<Invocation>, StoreError> {
        let since_us = since_us(filter)?;
        let status = filter.status.map(InvocationStatus::as_str);
        let limit = filter.effective_limit();
        let function = function.to_string();
        self.with_conn("list_invocations", move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, body FROM invocations
                 WHERE function = ?1 AND started_us >= ?2 AND (?3 IS NULL OR status = ?3)
                 ORDER BY started_us DESC, id DESC LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(params![function, since_us, status, limit], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .iter()
                .map(|(id, body)| decode_invocation(id, body))
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn function_stats(&self, function: &str) -> Result<FunctionStats, StoreError> {
        let function = function.to_string();
        self.with_conn("function_stats", move |conn| {
            let finished = format!("function = ?1 AND status NOT IN {UNFINISHED_STATUSES}");
            let (count, errors, avg): (i64, i64, Option<f64>) = conn.query_row(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(status != 'success'), 0), AVG(duration_ms)
                     FROM invocations WHERE {finished}"
                ),
                [&function],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
            if count == 0 {
                return Ok(FunctionStats::default());
            }
            let p95: f64 = conn.query_row(
                &format!(
                    "SELECT duration_ms FROM invocations WHERE {finished}
                     ORDER BY duration_ms LIMIT 1 OFFSET ?2"
                ),
                params![function, p95_rank(count) - 1],
                |row| row.get(0),
            )?;
            Ok(FunctionStats {
                invocations: count.unsigned_abs(),
                errors: errors.unsigned_abs(),
                avg_duration_ms: avg.unwrap_or(0.0),
                p95_duration_ms: p95,
            })
        })
        .await
    }

    async fn invocation_ids(
        &self,
        scope: HistoryScope<'_>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let (filter, value): (&str, rusqlite::types::Value) = match scope {
            HistoryScope::StartedBefore(t) => ("started_us < ?1", t.timestamp_micros().into()),
            HistoryScope::Function(name) => ("function = ?1", name.to_string().into()),
        };
        let sql =
            format!("SELECT id FROM invocations WHERE {filter} ORDER BY started_us, id LIMIT ?2");
        self.with_conn("invocation_ids", move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let ids = stmt
                .query_map(params![value, limit], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(ids)
        })
        .await
    }

    async fn delete_invocations(&self, ids: &[String]) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        self.with_conn("delete_invocations", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut deleted = 0;
            {
                let mut stmt = tx.prepare_cached("DELETE FROM invocations WHERE id = ?1")?;
                for id in &ids {
                    deleted += stmt.execute([id])? as u64;
                }
            }
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }
}

// Tests: `tests/metadata_store.rs` runs the same suite on this backend and on PostgreSQL.
