//! The tables of the metadata store, written once for both backends: each step is a
//! template whose column types are filled in per SQL dialect. The backends number
//! their migrations differently (PostgreSQL was born with the async queue), so each
//! lists which steps make up each of its migrations.

/// Column types of one SQL dialect.
pub(super) struct Dialect {
    /// A 64-bit integer.
    int: &'static str,
    /// A double.
    real: &'static str,
    /// Raw bytes.
    bytes: &'static str,
    /// A boolean and its false value.
    flag: &'static str,
}

/// SQLite's types (integers are 64-bit; booleans are integers).
pub(super) const SQLITE: Dialect = Dialect {
    int: "INTEGER",
    real: "REAL",
    bytes: "BLOB",
    flag: "INTEGER NOT NULL DEFAULT 0",
};

/// PostgreSQL's types.
pub(super) const POSTGRES: Dialect = Dialect {
    int: "BIGINT",
    real: "DOUBLE PRECISION",
    bytes: "BYTEA",
    flag: "BOOLEAN NOT NULL DEFAULT FALSE",
};

/// Functions, their versions, and the invocation history.
pub(super) const FUNCTIONS: &str = r#"
CREATE TABLE functions (
    name           TEXT PRIMARY KEY,
    created_at     TEXT NOT NULL,
    latest_version {int} NOT NULL
);
CREATE TABLE function_versions (
    name        TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    version     {int} NOT NULL,
    spec        TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    code_size   {int} NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX function_versions_by_code ON function_versions (code_sha256);
CREATE TABLE invocations (
    id          TEXT PRIMARY KEY,
    function    TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    started_us  {int} NOT NULL,
    duration_ms {real} NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX invocations_by_function ON invocations (function, started_us);
CREATE INDEX invocations_by_start ON invocations (started_us);
"#;

/// The durable async queue.
pub(super) const ASYNC_JOBS: &str = r#"
CREATE TABLE async_jobs (
    id              TEXT PRIMARY KEY,
    function        TEXT NOT NULL,
    event           {bytes} NOT NULL,
    callback_url    TEXT,
    started_at      TEXT NOT NULL,
    attempts        {int} NOT NULL DEFAULT 0,
    next_attempt_us {int} NOT NULL,
    claimed         {flag}
);
CREATE INDEX async_jobs_due ON async_jobs (claimed, next_attempt_us);
"#;

/// API keys (secrets as SHA-256 only) and namespace quotas (`keys/`).
pub(super) const KEYS: &str = r#"
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    namespace     TEXT NOT NULL,
    role          TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    limits        TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE TABLE namespaces (
    name   TEXT PRIMARY KEY,
    quotas TEXT NOT NULL
);
"#;

/// The migrations of `dialect`: entry `i` takes the schema from version `i` to
/// `i + 1` and is the concatenation of `steps[i]`.
pub(super) fn migrations(dialect: &Dialect, steps: &[&[&str]]) -> Vec<String> {
    steps
        .iter()
        .map(|parts| {
            parts
                .iter()
                .map(|part| {
                    part.replace("{int}", dialect.int)
                        .replace("{real}", dialect.real)
                        .replace("{bytes}", dialect.bytes)
                        .replace("{flag}", dialect.flag)
                })
                .collect::<String>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_in() {
        for dialect in [&SQLITE, &POSTGRES] {
            for sql in migrations(dialect, &[&[FUNCTIONS, ASYNC_JOBS, KEYS]]) {
                assert!(!sql.contains('{'), "{sql}");
            }
        }
        let pg = migrations(&POSTGRES, &[&[ASYNC_JOBS]]);
        assert!(pg[0].contains("claimed         BOOLEAN NOT NULL DEFAULT FALSE"));
    }
}
