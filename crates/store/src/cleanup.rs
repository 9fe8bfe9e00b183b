//! Freeing objects nothing refers to any more, so the object store does not grow
//! without bound: an invocation's logs and outputs go with its history record (pruned
//! past the retention, or deleted with its function), and a code package with its
//! built artifacts once no version of any function uses it.
//!
//! Objects go first, then the records that name them: a failure half-way (the object
//! store is down) leaves records whose objects are partly gone, which the next attempt
//! finishes; never objects that no record can lead back to.

use crate::metadata::{HistoryScope, MetadataStore};
use crate::objects::invocation_prefixes;
use crate::{CodeStore, StoreError};
use chrono::{DateTime, Utc};
use hearth_core::Runtime;

/// Invocations freed per round trip to the metadata store.
const BATCH: u32 = 500;

/// What [`prune_history`] or [`delete_function`] freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    /// Invocation records deleted.
    pub invocations: u64,
    /// Log and output objects deleted.
    pub objects: u64,
}

/// Deletes the logs and outputs of invocation `id`; returns how many objects went.
pub async fn delete_invocation_objects(code: &CodeStore, id: &str) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for prefix in invocation_prefixes(id) {
        deleted += code.delete_prefix(&prefix).await?;
    }
    Ok(deleted)
}

/// Deletes the invocations in `scope` with their logs and outputs, a batch at a time.
async fn free_invocations(
    metadata: &dyn MetadataStore,
    code: &CodeStore,
    scope: HistoryScope<'_>,
) -> Result<Freed, StoreError> {
    let mut freed = Freed::default();
    loop {
        let ids = metadata.invocation_ids(scope, BATCH).await?;
        if ids.is_empty() {
            return Ok(freed);
        }
        for id in &ids {
            freed.objects += delete_invocation_objects(code, id).await?;
        }
        let deleted = metadata.delete_invocations(&ids).await?;
        freed.invocations += deleted;
        if deleted == 0 {
            // Someone else deleted them meanwhile; their objects are gone too.
            return Ok(freed);
        }
    }
}

/// Deletes the history of invocations started before `older_than`, their logs and
/// outputs first.
pub async fn prune_history(
    metadata: &dyn MetadataStore,
    code: &CodeStore,
    older_than: DateTime<Utc>,
) -> Result<Freed, StoreError> {
    free_invocations(metadata, code, HistoryScope::StartedBefore(older_than)).await
}

/// Deletes function `name`: its invocations' logs and outputs, its versions and history,
/// then each code package (and artifact) no version of any function still uses.
/// `None` when there was no such function.
pub async fn delete_function(
    metadata: &dyn MetadataStore,
    code: &CodeStore,
    name: &str,
) -> Result<Option<Freed>, StoreError> {
    let versions = metadata.list_versions(name).await?;
    if versions.is_empty() {
        return Ok(None);
    }
    let freed = free_invocations(metadata, code, HistoryScope::Function(name)).await?;
    if !metadata.delete_function(name).await? {
        return Ok(None);
    }
    // One function has one runtime; its versions may share packages.
    let mut packages: Vec<(&str, Runtime)> = Vec::new();
    for version in &versions {
        let package = (version.code_sha256.as_str(), version.spec.runtime);
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    for (sha256, runtime) in packages {
        free_code(metadata, code, sha256, runtime).await?;
    }
    Ok(Some(freed))
}

/// Deletes code package `sha256` and its artifacts for `runtime` unless a version uses
/// it; returns whether it went.
///
/// A deploy of the same code may record its version between the check and the delete:
/// so the package is read first, and put back when a version uses it after all (the
/// deploy, for its part, stores the package again once its version is recorded). An
/// artifact deleted that way is rebuilt by the first cold start that misses it.
pub async fn free_code(
    metadata: &dyn MetadataStore,
    code: &CodeStore,
    sha256: &str,
    runtime: Runtime,
) -> Result<bool, StoreError> {
    if metadata.code_in_use(sha256).await? {
        return Ok(false);
    }
    let zip = match code.get_code(sha256).await {
        Ok(zip) => Some(zip),
        Err(StoreError::CodeNotFound { .. } | StoreError::Corrupt { .. }) => None,
        Err(e) => return Err(e),
    };
    code.delete_code(sha256).await?;
    code.delete_artifacts(sha256, runtime).await?;
    if metadata.code_in_use(sha256).await? {
        if let Some(zip) = zip {
            code.put_code(sha256, zip).await?;
        }
        return Ok(false);
    }
    tracing::info!(code = %sha256, "freed a code package no version uses");
    Ok(true)
}
