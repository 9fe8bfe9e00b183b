//! Opening the stores a deployment names by URL, as the command line gives them
//! (`--database`, `--objects`): one place, so every role reads URLs alike.

use crate::{AsyncQueue, MetadataStore, PgMetadataStore, SqliteMetadataStore, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

/// The metadata store and the async queue of one database (both backends hold both).
#[derive(Clone)]
pub struct MetadataHandles {
    /// Functions and invocation history.
    pub metadata: Arc<dyn MetadataStore>,
    /// The durable queue of async invocations.
    pub queue: Arc<dyn AsyncQueue>,
}

/// Opens the metadata database `location` names: `postgres://…` (or `postgresql://…`),
/// or a SQLite file as `sqlite://PATH` or a plain path. Schemas are brought up to date.
pub async fn open_metadata(location: &str) -> Result<MetadataHandles, StoreError> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        let store = PgMetadataStore::connect(location).await?;
        return Ok(MetadataHandles {
            metadata: Arc::new(store.clone()),
            queue: Arc::new(store),
        });
    }
    let path = PathBuf::from(location.strip_prefix("sqlite://").unwrap_or(location));
    if location.is_empty() || (!location.starts_with("sqlite://") && location.contains("://")) {
        return Err(StoreError::InvalidArgument(format!(
            "{location:?} is not a metadata database: use postgres://user@host:port/db or a SQLite file path"
        )));
    }
    let store = tokio::task::spawn_blocking(move || SqliteMetadataStore::open(&path))
        .await
        .map_err(|e| StoreError::Task {
            path: PathBuf::from(location),
            op: "open",
            reason: e.to_string(),
        })??;
    Ok(MetadataHandles {
        metadata: Arc::new(store.clone()),
        queue: Arc::new(store),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn locations_pick_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.db");
        open_metadata(file.to_str().unwrap()).await.unwrap();
        assert!(file.is_file());
        let url = format!("sqlite://{}", dir.path().join("b.db").display());
        open_metadata(&url).await.unwrap();
        assert!(dir.path().join("b.db").is_file());
        for bad in ["", "mysql://x/y"] {
            let Err(err) = open_metadata(bad).await else {
                panic!("{bad:?} was opened");
            };
            assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
        }
    }
}
