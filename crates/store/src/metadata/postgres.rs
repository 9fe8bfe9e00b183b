//! [`PgMetadataStore`]: the metadata store (and the durable async queue, in
//! `queue/postgres.rs`) on a PostgreSQL server shared by any number of processes.
//!
//! It answers exactly as the SQLite store does (the shared suite in `tests/` runs on
//! both). What differs is how it keeps that promise with many writers: versions come
//! from one upsert that row-locks the function, claims use `FOR UPDATE SKIP LOCKED`,
//! and migrations run in one transaction under an advisory lock, so processes that
//! start together never migrate twice.
//!
//! Outages: the pool tests each connection before handing it out and opens new ones
//! as needed, so after the server comes back the next call simply works. Meanwhile
//! every call fails within [`ACQUIRE_TIMEOUT`] with [`StoreError::Unavailable`].

use super::{
    decode_invocation, encode_invocation, encode_version, now_rfc3339, p95_rank, since_us,
    FunctionRecord, FunctionStats, HistoryScope, InvocationFilter, MetadataStore, VersionRow,
    UNFINISHED_STATUSES, VERSION_COLUMNS,
};
use crate::StoreError;
use async_trait::async_trait;
use hearth_core::{FunctionSpec, Invocation, InvocationStatus};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Schema migrations; entry `i` takes `hearth_schema.version` from `i` to `i + 1`.
/// Ordering by text uses the "C" collation in the queries, as SQLite compares bytes.
fn migrations() -> Vec<String> {
    use super::schema::{migrations, ASYNC_JOBS, FUNCTIONS, KEYS, POSTGRES};
    migrations(&POSTGRES, &[&[FUNCTIONS, ASYNC_JOBS], &[KEYS]])
}

/// How long a call waits for a connection before answering "unavailable": short, so
/// that an outage is a prompt 503 rather than a hang.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most connections one process holds.
const MAX_CONNECTIONS: u32 = 16;

/// The metadata store on PostgreSQL. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct PgMetadataStore {
    pool: PgPool,
    /// The server and database, without secrets, for messages.
    target: String,
}

impl std::fmt::Debug for PgMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMetadataStore")
            .field("target", &self.target)
            .finish()
    }
}

/// Whether a client error means the server cannot be reached now (as opposed to a
/// statement it refused): I/O, TLS, pool exhaustion, and the SQLSTATEs of a server
/// shutting down or refusing connections.
fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: admin/crash shutdown, cannot connect
            // now; 53300: too many connections.
            code.starts_with("08") || ["57P01", "57P02", "57P03", "53300"].contains(&&*code)
        }),
        _ => false,
    }
}

/// A schema name hearth may create and quote: a plain lowercase identifier.
fn check_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let valid = schema.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "{schema:?} is not a schema name: use lowercase letters, digits and _ (at most 63)"
        )))
    }
}

impl PgMetadataStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`,
    /// with any libpq-style parameters such as `sslmode`) and brings its schema up to
    /// date. Fails with [`StoreError::Unavailable`] when the server does not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::open(url, None).await
    }

    /// As [`PgMetadataStore::connect`], with hearth's tables in `schema` (created if
    /// missing) instead of the user's default: several hearths, or tests, can share
    /// one database.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        check_schema(schema)?;
        Self::open(url, Some(schema)).await
    }

    async fn open(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::InvalidArgument(
                "the database URL must start with postgres:// (postgres://user@host:port/db)"
                    .into(),
            ));
        }
        let mut options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::InvalidArgument(format!(
                "the database URL is not a PostgreSQL URL ({e}): use postgres://user@host:port/db"
            ))
        })?;
        let target = format!(
            "PostgreSQL at {}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .map_err(|e| fail(&target, "connect", e))?;
        let store = PgMetadataStore { pool, target };
        store.migrate(schema).await?;
        Ok(store)
    }

    /// The server and database, without secrets.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Maps a client error of operation `op`: an outage to [`StoreError::Unavailable`],
    /// anything else to [`StoreError::Database`].
    pub(crate) fn err(&self, op: &'static str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| fail(&self.target, op, e)
    }

    /// Applies the missing migrations in one transaction holding an advisory lock, so
    /// that processes starting at once take turns and the second finds nothing to do.
    async fn migrate(&self, schema: Option<&str>) -> Result<(), StoreError> {
        let err = self.err("migrate");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('hearth migrations ' || $1))")
            .bind(schema.unwrap_or("(default)"))
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        if let Some(schema) = schema {
            // Checked by `check_schema`: safe to quote into the statement.
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
        }
        sqlx::query("CREATE TABLE IF NOT EXISTS hearth_schema (version INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        let found: Option<i32> = sqlx::query_scalar("SELECT version FROM hearth_schema")
            .fetch_optional(&mut *tx)
            .await
            .map_err(&err)?;
        let found = match found {
            Some(found) => u32::try_from(found).unwrap_or(0),
            None => {
                sqlx::query("INSERT INTO hearth_schema (version) VALUES (0)")
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
                0
            }
        };
        let migrations = migrations();
        let supported = migrations.len() as u32;
        if found > supported {
            return Err(StoreError::SchemaTooNew {
                path: PathBuf::from(&self.target),
                found,
                supported,
            });
        }
        // One statement at a time (a prepared statement holds one); the migrations
        // have no `;` but between statements.
        let statements = migrations[found as usize..]
            .iter()
            .flat_map(|sql| sql.split(';'))
            .map(str::trim)
            .filter(|statement| !statement.is_empty());
        for statement in statements {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
        }
        sqlx::query("UPDATE hearth_schema SET version = $1")
            .bind(supported as i32)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)
    }
}

fn fail(target: &str, op: &'static str, e: sqlx::Error) -> StoreError {
    if is_outage(&e) {
        StoreError::Unavailable {
            service: target.to_string(),
            op,
            source: Box::new(e),
        }
    } else {
        StoreError::Database {
            path: PathBuf::from(target),
            op,
            source: Box::new(e),
        }
    }
}

#[async_trait]
impl MetadataStore for PgMetadataStore {
    async fn put_version(
        &self,
        name: &str,
        spec: &FunctionSpec,
        code_sha256: &str,
        code_size: u64,
    ) -> Result<(FunctionRecord, bool), StoreError> {
        let (spec_json, code_size) = encode_version(name, spec, code_size)?;
        let err = self.err("put_version");
        let now = now_rfc3339();
        let mut tx = self.pool.begin().await.map_err(&err)?;
        // The upsert locks the function's row until commit: concurrent updates (from
        // any process) take turns, so each gets the next version.
        let (version, created_at): (i64, String) = sqlx::query_as(
            "INSERT INTO functions (name, created_at, latest_version) VALUES ($1, $2, 1)
             ON CONFLICT (name) DO UPDATE SET latest_version = functions.latest_version + 1
             RETURNING latest_version, created_at",
        )
        .bind(name)
        .bind(&now)
        .fetch_one(&mut *tx)
        .await
        .map_err(&err)?;
        sqlx::query(
            "INSERT INTO function_versions (name, version, spec, code_sha256, code_size, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(name)
        .bind(version)
        .bind(&spec_json)
        .bind(code_sha256)
        .bind(code_size)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        let record = VersionRow {
            name: name.to_string(),
            version,
            spec: spec_json,
            code_sha256: code_sha256.to_string(),
            code_size,
            created_at,
            updated_at: now,
        }
        .decode()?;
        // Deleting a function resets it: version 1 is made only by a create.
        Ok((record, version == 1))
    }

    async fn get_function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        let err = self.err("get_function");
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} WHERE v.name = $1 AND v.version = f.latest_version"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(&err)?;
        row.map(|row| VersionRow::read(&row).map_err(&err)?.decode())
            .transpose()
    }

    async fn get_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Option<FunctionRecord>, StoreError> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        let err = self.err("get_version");
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} WHERE v.name = $1 AND v.version = $2"
        ))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(&err)?;
        row.map(|row| VersionRow::read(&row).map_err(&err)?.decode())
            .transpose()
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<FunctionRecord>, StoreError> {
        let err = self.err("list_versions");
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} WHERE v.name = $1 ORDER BY v.version"
        ))
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(&err)?;
        rows.iter()
            .map(|row| VersionRow::read(row).map_err(&err)?.decode())
            .collect()
    }

    async fn list_functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        let err = self.err("list_functions");
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} WHERE v.version = f.latest_version
             ORDER BY v.name COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(&err)?;
        rows.iter()
            .map(|row| VersionRow::read(row).map_err(&err)?.decode())
            .collect()
    }

    async fn delete_function(&self, name: &str) -> Result<bool, StoreError> {
        let err = self.err("delete_function");
        let mut tx = self.pool.begin().await.map_err(&err)?;
        // Versions go with their function (ON DELETE CASCADE).
        let deleted = sqlx::query("DELETE FROM functions WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(&err)?
            .rows_affected();
        sqlx::query("DELETE FROM invocations WHERE function = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(deleted > 0)
    }

    async fn code_in_use(&self, code_sha256: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM function_versions WHERE code_sha256 = $1)")
            .bind(code_sha256)
            .fetch_one(&self.pool)
            .await
            .map_err(self.err("code_in_use"))
    }

    async fn record_invocation(&self, invocation: &Invocation) -> Result<(), StoreError> {
        self.record_invocations(&[invocation]).await
    }

    async fn record_invocations(&self, invocations: &[&Invocation]) -> Result<(), StoreError> {
        let err = self.err("record_invocation");
        let rows = invocations
            .iter()
            .map(|invocation| Ok((invocation, encode_invocation(invocation)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        // One transaction for the lot (one commit); a single row needs none.
        let mut tx = match rows.len() {
            0 => return Ok(()),
            1 => None,
            _ => Some(self.pool.begin().await.map_err(&err)?),
        };
        let sql = format!(
                "INSERT INTO invocations (id, function, status, started_at, started_us, duration_ms, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET
                    function = excluded.function, status = excluded.status,
                    started_at = excluded.started_at, started_us = excluded.started_us,
                    duration_ms = excluded.duration_ms, body = excluded.body
                 -- Writers race: an invocation that has ended never goes back to queued or
                 -- running.
                 WHERE excluded.status NOT IN {UNFINISHED_STATUSES}
                    OR invocations.status IN {UNFINISHED_STATUSES}"
            );
        for (invocation, (started_us, body)) in &rows {
            let insert = sqlx::query(&sql)
                .bind(&invocation.id)
                .bind(&invocation.function)
                .bind(invocation.status.as_str())
                .bind(&invocation.started_at)
                .bind(*started_us)
                .bind(invocation.duration_ms)
                .bind(body);
            match tx.as_mut() {
                Some(tx) => insert.execute(&mut **tx).await,
                None => insert.execute(&self.pool).await,
            }
            .map_err(&err)?;
        }
        if let Some(tx) = tx {
            tx.commit().await.map_err(&err)?;
        }
        Ok(())
    }

    async fn get_invocation(&self, id: &str) -> Result<Option<Invocation>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM invocations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err("get_invocation"))?;
        body.map(|body| decode_invocation(id, &body)).transpose()
    }

    async fn list_invocations(
        &self,
        function: &str,
        filter: &InvocationFilter,
    ) -> Result<Vec<Invocation>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, body FROM invocations
             WHERE function = $1 AND started_us >= $2 AND ($3::TEXT IS NULL OR status = $3)
             ORDER BY started_us DESC, id COLLATE \"C\" DESC LIMIT $4",
        )
        .bind(function)
        .bind(since_us(filter)?)
        .bind(filter.status.map(InvocationStatus::as_str))
        .bind(i64::from(filter.effective_limit()))
        .fetch_all(&self.pool)
        .await
        .map_err(self.err("list_invocations"))?;
        rows.iter()
            .map(|(id, body)| decode_invocation(id, body))
            .collect()
    }

    async fn function_stats(&self, function: &str) -> Result<FunctionStats, StoreError> {
        let err = self.err("function_stats");
        let finished = format!("function = $1 AND status NOT IN {UNFINISHED_STATUSES}");
        let (count, errors, avg): (i64, i64, Option<f64>) = sqlx::query_as(&format!(
            "SELECT COUNT(*),
                    COALESCE(SUM(CASE WHEN status <> 'success' THEN 1 ELSE 0 END), 0)::BIGINT,
                    AVG(duration_ms)
             FROM invocations WHERE {finished}"
        ))
        .bind(function)
        .fetch_one(&self.pool)
        .await
        .map_err(&err)?;
        if count == 0 {
            return Ok(FunctionStats::default());
        }
        let p95: f64 = sqlx::query_scalar(&format!(
            "SELECT duration_ms FROM invocations WHERE {finished}
             ORDER BY duration_ms LIMIT 1 OFFSET $2"
        ))
        .bind(function)
        .bind(p95_rank(count) - 1)
        .fetch_one(&self.pool)
        .await
        .map_err(&err)?;
        Ok(FunctionStats {
            invocations: count.unsigned_abs(),
            errors: errors.unsigned_abs(),
            avg_duration_ms: avg.unwrap_or(0.0),
            p95_duration_ms: p95,
        })
    }

    async fn invocation_ids(
        &self,
        scope: HistoryScope<'_>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let query = match scope {
            HistoryScope::StartedBefore(t) => sqlx::query_scalar(
                "SELECT id FROM invocations WHERE started_us < $1
                 ORDER BY started_us, id COLLATE \"C\" LIMIT $2",
            )
            .bind(t.timestamp_micros()),
            HistoryScope::Function(name) => sqlx::query_scalar(
                "SELECT id FROM invocations WHERE function = $1
                 ORDER BY started_us, id COLLATE \"C\" LIMIT $2",
            )
            .bind(name),
        };
        query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(self.err("invocation_ids"))
    }

    async fn delete_invocations(&self, ids: &[String]) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM invocations WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(self.err("delete_invocations"))?
            .rows_affected();
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["hearth", "_t1", "test_01abc"] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        for bad in ["", "1a", "Hearth", "a\"b", "a;drop", &"x".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_bad_url_is_bad_input_and_a_dead_server_is_an_outage() {
        let bad = PgMetadataStore::connect("mysql://x").await.unwrap_err();
        assert!(matches!(bad, StoreError::InvalidArgument(_)), "{bad}");
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let down = PgMetadataStore::connect("postgres://postgres@127.0.0.1:1/hearth")
            .await
            .unwrap_err();
        assert!(down.is_unavailable(), "{down}");
        assert!(down.to_string().contains("127.0.0.1:1/hearth"), "{down}");
    }
}
