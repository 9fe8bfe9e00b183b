//! The metadata backends the store suite runs on, each test on data of its own: a
//! fresh SQLite file in a temp dir, or a fresh schema in the PostgreSQL database at
//! `HEARTH_TEST_DATABASE_URL` (`eval "$(scripts/services.sh --env)"`). A missing
//! variable or a server that does not answer fails the test: it never skips.

use hearth_store::{AsyncQueue, MetadataStore, PgMetadataStore, SqliteMetadataStore};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A metadata store that is also the async queue, as both backends are.
pub trait Store: MetadataStore + AsyncQueue {}
impl<T: MetadataStore + AsyncQueue> Store for T {}

/// Where one test's data lives; `open` may be called again to stand for a restart or a
/// second process.
pub struct Backend {
    pub target: Target,
    _dir: Option<tempfile::TempDir>,
}

/// The data of a [`Backend`], cheap to clone into tasks that open stores at once.
#[derive(Clone)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Target {
    pub async fn try_open(self) -> Result<Arc<dyn Store>, hearth_store::StoreError> {
        Ok(match self {
            Target::Sqlite(path) => Arc::new(
                tokio::task::spawn_blocking(move || SqliteMetadataStore::open(&path))
                    .await
                    .unwrap()?,
            ),
            Target::Postgres { url, schema } => {
                Arc::new(PgMetadataStore::connect_in_schema(&url, &schema).await?)
            }
        })
    }
}

/// The database of the PostgreSQL tests.
pub fn database_url() -> String {
    std::env::var("HEARTH_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "HEARTH_TEST_DATABASE_URL is not set: the store suite runs on PostgreSQL too; \
             start it with eval \"$(scripts/services.sh --env)\""
        )
    })
}

/// A schema name no other test (in this process or another) uses.
pub fn fresh_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Backend {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("hearth.db");
        Backend {
            target: Target::Sqlite(path),
            _dir: Some(dir),
        }
    }

    pub fn postgres() -> Self {
        Backend {
            target: Target::Postgres {
                url: database_url(),
                schema: fresh_schema(),
            },
            _dir: None,
        }
    }

    /// Opens a store on this backend's data (migrating it on first open).
    pub async fn open(&self) -> Arc<dyn Store> {
        self.try_open().await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn try_open(&self) -> Result<Arc<dyn Store>, hearth_store::StoreError> {
        self.target.clone().try_open().await
    }

    /// Marks the stored schema as written by a newer hearth.
    pub async fn set_schema_version(&self, version: u32) {
        match &self.target {
            Target::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.pragma_update(None, "user_version", version).unwrap();
            }
            Target::Postgres { url, schema } => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                sqlx::query(&format!(
                    "UPDATE \"{schema}\".hearth_schema SET version = $1"
                ))
                .bind(version as i32)
                .execute(&pool)
                .await
                .unwrap();
                pool.close().await;
            }
        }
    }

    /// Drops the test's schema (a SQLite file goes with its temp dir).
    pub async fn cleanup(self) {
        if let Target::Postgres { url, schema } = self.target {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

/// Turns `async fn name(backend: &Backend)` functions into one test per backend:
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let backend = $crate::backends::Backend::sqlite();
                    super::$test(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let backend = $crate::backends::Backend::postgres();
                    super::$test(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}
