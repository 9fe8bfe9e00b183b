//! Code packages in an object store, addressed by content.
//!
//! [`CodeStore`] sits on any `object_store::ObjectStore`: a local directory in the
//! embedded setup, an S3-compatible bucket in a cluster ([`CodeStore::open`] takes
//! either as a URL). Objects larger than one part go up as multipart uploads, so a big
//! package, log or output never has to fit one request. An S3 outage is
//! [`StoreError::Unavailable`].
//! A package lives at `code/{sha256}.zip`, so equal uploads share one object and an
//! object never changes once written. A compiled function's artifact (what its build
//! made from a package) lives at [`artifact_key`], keyed the same way: the same code is
//! never built twice.

use crate::StoreError;
use bytes::Bytes;
use hearth_core::protocol::{LogStream, BUILD_VERSION};
use hearth_core::Runtime;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Size of each part of a multipart upload, and the size above which an object is
/// uploaded in parts: S3's smallest part.
pub const PART_BYTES: usize = 5 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Code packages, keyed by the hex SHA-256 of their zip.
#[derive(Debug, Clone)]
pub struct CodeStore {
    store: Arc<dyn ObjectStore>,
    /// Set for [`CodeStore::local`]: the directory, to make writes durable with fsync.
    local_root: Option<PathBuf>,
    /// Set for a remote store (its URL): its failures to answer are outages.
    remote: Option<String>,
}

/// The object-store key of a code package.
pub fn code_key(sha256: &str) -> String {
    format!("code/{sha256}.zip")
}

/// The object-store key of the artifact built from code package `sha256` for
/// `runtime` by build recipe `build_version`.
pub fn artifact_key(sha256: &str, runtime: Runtime, build_version: u32) -> String {
    format!("artifacts/{sha256}-{runtime}-v{build_version}.tar")
}

/// The object-store key of invocation `id`'s full log of `stream`.
pub fn log_key(id: &str, stream: LogStream) -> String {
    let name = match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    };
    format!("logs/{id}/{name}")
}

/// The object-store key of invocation `id`'s output file at `path`.
pub fn output_key(id: &str, path: &str) -> String {
    format!("outputs/{id}/{path}")
}

/// The prefixes under which invocation `id`'s objects (logs, outputs) live.
pub fn invocation_prefixes(id: &str) -> [String; 2] {
    [format!("logs/{id}"), format!("outputs/{id}")]
}

fn check_sha256(sha256: &str) -> Result<(), StoreError> {
    let valid = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "{sha256:?} is not a code sha256: expected 64 lowercase hex digits"
        )))
    }
}

impl CodeStore {
    /// Code kept in any object store (an S3 bucket, memory in tests, …).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        CodeStore {
            store,
            local_root: None,
            remote: None,
        }
    }

    /// Opens the object store a URL names: `s3://BUCKET[/PREFIX]` (settings from the
    /// standard `AWS_*` variables: `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, keys, region),
    /// or a local directory as `file:///PATH` or a plain path.
    pub fn open(location: &str) -> Result<Self, StoreError> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            return Self::s3(bucket, prefix);
        }
        if let Some(path) = location.strip_prefix("file://") {
            return Self::local(Path::new(path));
        }
        if location.contains("://") || location.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "{location:?} is not an object store: use s3://BUCKET[/PREFIX], file:///PATH or a directory"
            )));
        }
        Self::local(Path::new(location))
    }

    /// Objects in S3 bucket `bucket`, under `prefix` (none if empty). Nothing is asked
    /// of the bucket yet: a missing bucket or an unreachable endpoint shows on first use.
    pub fn s3(bucket: &str, prefix: &str) -> Result<Self, StoreError> {
        let prefix = prefix.trim_matches('/');
        let url = match prefix {
            "" => format!("s3://{bucket}"),
            prefix => format!("s3://{bucket}/{prefix}"),
        };
        if bucket.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "{url:?} names no bucket: use s3://BUCKET[/PREFIX]"
            )));
        }
        // A few quick retries, then "unavailable": a caller waiting on an outage gets
        // an answer in seconds, not after the client's default three minutes.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        };
        // Client settings one by one: replacing the client options would drop those
        // read from the environment (AWS_ALLOW_HTTP).
        let client = |key| AmazonS3ConfigKey::Client(key);
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_config(client(ClientConfigKey::ConnectTimeout), "3s")
            .with_config(client(ClientConfigKey::Timeout), "120s")
            .build()
            .map_err(|e| StoreError::InvalidArgument(format!("object store {url}: {e}")))?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            let prefix = ObjectPath::parse(prefix).map_err(|e| {
                StoreError::InvalidArgument(format!("{url:?}: bad prefix {prefix:?}: {e}"))
            })?;
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(CodeStore {
            store,
            local_root: None,
            remote: Some(url),
        })
    }

    /// Code kept under a local directory, created if missing.
    ///
    /// `LocalFileSystem` writes each object to a staging file beside it (`<key>#<n>`)
    /// and renames it into place (object_store 0.12 `local.rs`, `put_opts`; its docs
    /// reserve `#<n>` names "to provide atomic writes"), so a crash mid-write never
    /// leaves a half-written object at the key, at worst a stray staging file that
    /// listings ignore. It does not fsync, so after each put this store fsyncs the file
    /// and its directory itself: a package is on disk before its version is recorded.
    pub fn local(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StoreError::ObjectStore {
                key: dir.display().to_string(),
                op: "open",
                source: Box::new(e),
            })?
            // Deleting an invocation's last log removes its emptied directories too.
            .with_automatic_cleanup(true);
        let root = std::fs::canonicalize(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(CodeStore {
            store: Arc::new(fs),
            local_root: Some(root),
            remote: None,
        })
    }

    /// The underlying object store, for other kinds of objects (outputs, logs).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Stores a package under `code/{sha256}.zip`, unless an object of the same size is
    /// already there. Refuses bytes whose hash is not `sha256`.
    pub async fn put_code(&self, sha256: &str, zip: Bytes) -> Result<(), StoreError> {
        check_sha256(sha256)?;
        let key = code_key(sha256);
        let actual = hex::encode(Sha256::digest(&zip));
        if actual != sha256 {
            return Err(StoreError::InvalidArgument(format!(
                "code for {key} hashes to {actual}: the sha256 does not match the bytes"
            )));
        }
        let location = ObjectPath::from(key.as_str());
        match self.store.head(&location).await {
            // A different size means an earlier write was cut short: write it again.
            Ok(meta) if meta.size == zip.len() as u64 => return Ok(()),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.object_error(&key, "head", e)),
        }
        self.put_object(&key, zip).await
    }

    /// The zip of a package. Its hash is checked, so a damaged object is an error,
    /// never wrong code.
    pub async fn get_code(&self, sha256: &str) -> Result<Bytes, StoreError> {
        check_sha256(sha256)?;
        let key = code_key(sha256);
        let location = ObjectPath::from(key.as_str());
        let bytes = match self.store.get(&location).await {
            Ok(result) => result
                .bytes()
                .await
                .map_err(|e| self.object_error(&key, "get", e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::CodeNotFound { key })
            }
            Err(e) => return Err(self.object_error(&key, "get", e)),
        };
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != sha256 {
            return Err(StoreError::Corrupt {
                what: key,
                reason: format!("its content hashes to {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Stores the artifact built from package `sha256` (see [`artifact_key`]); on a
    /// local directory it is on disk before this returns.
    pub async fn put_artifact(
        &self,
        sha256: &str,
        runtime: Runtime,
        build_version: u32,
        artifact: Bytes,
    ) -> Result<(), StoreError> {
        check_sha256(sha256)?;
        let key = artifact_key(sha256, runtime, build_version);
        self.put_object(&key, artifact).await
    }

    /// The artifact built from package `sha256`, or `None` when there is none yet.
    pub async fn get_artifact(
        &self,
        sha256: &str,
        runtime: Runtime,
        build_version: u32,
    ) -> Result<Option<Bytes>, StoreError> {
        check_sha256(sha256)?;
        let key = artifact_key(sha256, runtime, build_version);
        match self.store.get(&ObjectPath::from(key.as_str())).await {
            Ok(result) => Ok(Some(
                result
                    .bytes()
                    .await
                    .map_err(|e| self.object_error(&key, "get", e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.object_error(&key, "get", e)),
        }
    }

    /// Whether the artifact built from package `sha256` is stored.
    pub async fn has_artifact(
        &self,
        sha256: &str,
        runtime: Runtime,
        build_version: u32,
    ) -> Result<bool, StoreError> {
        check_sha256(sha256)?;
        let key = artifact_key(sha256, runtime, build_version);
        match self.store.head(&ObjectPath::from(key.as_str())).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.object_error(&key, "head", e)),
        }
    }

    /// Deletes a package; deleting one that is absent is not an error. Check
    /// `MetadataStore::code_in_use` first: packages are shared by hash
    /// ([`crate::cleanup::free_code`] does).
    pub async fn delete_code(&self, sha256: &str) -> Result<(), StoreError> {
        check_sha256(sha256)?;
        self.delete_key(&code_key(sha256)).await
    }

    /// Deletes every artifact built from package `sha256` for `runtime`, by this
    /// build recipe or an earlier one; absent ones are not an error.
    pub async fn delete_artifacts(&self, sha256: &str, runtime: Runtime) -> Result<(), StoreError> {
        check_sha256(sha256)?;
        for build_version in 1..=BUILD_VERSION {
            self.delete_key(&artifact_key(sha256, runtime, build_version))
                .await?;
        }
        Ok(())
    }

    /// Deletes every object under `prefix` (whole path segments: `logs/01J…` never
    /// matches `logs/01J…X`); returns how many went.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        use futures::TryStreamExt;
        let location = object_path(prefix)?;
        let keys: Vec<ObjectPath> = self
            .store
            .list(Some(&location))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| self.object_error(prefix, "list", e))?;
        for key in &keys {
            self.delete_key(key.as_ref()).await?;
        }
        Ok(keys.len() as u64)
    }

    async fn delete_key(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&object_path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.object_error(key, "delete", e)),
        }
    }
}

impl CodeStore {
    /// Stores `bytes` at `key` (in parts when larger than [`PART_BYTES`]); on a local
    /// directory it is on disk before this returns.
    pub async fn put_object(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let location = object_path(key)?;
        if bytes.len() <= PART_BYTES {
            self.store
                .put(&location, PutPayload::from(bytes))
                .await
                .map_err(|e| self.object_error(key, "put", e))?;
        } else {
            let mut writer = self.start_multipart(key, &location).await?;
            writer.put(bytes);
            self.finish_multipart(key, writer).await?;
        }
        self.sync_local(key).await
    }

    /// Stores the file at `path` under `key`, read and sent a part at a time, never
    /// whole in memory (logs and outputs can be large).
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let location = object_path(key)?;
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        if len <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            file.read_to_end(&mut bytes).await.map_err(io)?;
            return self.put_object(key, Bytes::from(bytes)).await;
        }
        let mut writer = self.start_multipart(key, &location).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let read = match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(read) => read,
                Err(source) => {
                    // Leave no dangling parts behind in the bucket.
                    let _ = writer.abort().await;
                    return Err(io(source));
                }
            };
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.object_error(key, "upload part", e));
            }
            writer.write(&buf[..read]);
        }
        self.finish_multipart(key, writer).await?;
        self.sync_local(key).await
    }

    /// The object at `key`, or `None` when there is none.
    pub async fn get_object(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self.store.get(&object_path(key)?).await {
            Ok(found) => Ok(Some(
                found
                    .bytes()
                    .await
                    .map_err(|e| self.object_error(key, "get", e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.object_error(key, "get", e)),
        }
    }

    /// Deletes the object at `key`; deleting one that is absent is not an error.
    pub async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&object_path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.object_error(key, "delete", e)),
        }
    }

    async fn start_multipart(
        &self,
        key: &str,
        location: &ObjectPath,
    ) -> Result<WriteMultipart, StoreError> {
        let upload = self
            .store
            .put_multipart(location)
            .await
            .map_err(|e| self.object_error(key, "start upload", e))?;
        Ok(WriteMultipart::new_with_chunk_size(upload, PART_BYTES))
    }

    async fn finish_multipart(
        &self,
        key: &str,
        mut writer: WriteMultipart,
    ) -> Result<(), StoreError> {
        // `finish` aborts the upload when completing it fails, but not when a part
        // failed: wait for the parts here, and abort then, so no parts are left behind.
        if let Err(e) = writer.wait_for_capacity(0).await {
            let _ = writer.abort().await;
            return Err(self.object_error(key, "upload part", e));
        }
        writer
            .finish()
            .await
            .map_err(|e| self.object_error(key, "finish upload", e))?;
        Ok(())
    }

    /// On a local directory, fsyncs the object at `key` and its directory.
    async fn sync_local(&self, key: &str) -> Result<(), StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = root.join(key);
        tokio::task::spawn_blocking(move || sync_file_and_dir(&file))
            .await
            .map_err(|e| StoreError::Io {
                path: root.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// Maps an object-store error: on a remote store, a failure to get an answer
    /// (connection, timeout, server error) is [`StoreError::Unavailable`].
    fn object_error(&self, key: &str, op: &'static str, e: object_store::Error) -> StoreError {
        match (&self.remote, e) {
            (Some(url), e @ object_store::Error::Generic { .. }) => StoreError::Unavailable {
                service: format!("object store {url}"),
                op,
                source: Box::new(e),
            },
            (_, e) => StoreError::ObjectStore {
                key: key.to_string(),
                op,
                source: Box::new(e),
            },
        }
    }
}

fn object_path(key: &str) -> Result<ObjectPath, StoreError> {
    ObjectPath::parse(key)
        .map_err(|e| StoreError::InvalidArgument(format!("{key:?} is not an object key: {e}")))
}

fn sync_file_and_dir(file: &Path) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    std::fs::File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(io(file))?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn put_get_delete_in_a_local_dir() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let store = CodeStore::local(&root).unwrap();
        let zip = Bytes::from_static(b"PK pretend zip");
        let hash = sha(&zip);

        assert!(matches!(
            store.get_code(&hash).await,
            Err(StoreError::CodeNotFound { .. })
        ));
        store.put_code(&hash, zip.clone()).await.unwrap();
        assert!(root.join("code").join(format!("{hash}.zip")).is_file());
        assert_eq!(store.get_code(&hash).await.unwrap(), zip);
        // A second put of the same package is a no-op.
        store.put_code(&hash, zip.clone()).await.unwrap();

        store.delete_code(&hash).await.unwrap();
        store.delete_code(&hash).await.unwrap();
        assert!(matches!(
            store.get_code(&hash).await,
            Err(StoreError::CodeNotFound { .. })
        ));
        // Nothing left behind, not even the emptied code directory.
        assert!(!root.join("code").exists());
    }

    #[tokio::test]
    async fn bad_hashes_and_damaged_objects_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::local(dir.path()).unwrap();
        let zip = Bytes::from_static(b"zip");
        let hash = sha(&zip);
        assert!(matches!(
            store.put_code(&sha(b"other"), zip.clone()).await,
            Err(StoreError::InvalidArgument(_))
        ));
        for bad in ["../../etc/passwd", "ABC", &hash.to_uppercase()] {
            assert!(matches!(
                store.get_code(bad).await,
                Err(StoreError::InvalidArgument(_))
            ));
        }

        store.put_code(&hash, zip.clone()).await.unwrap();
        let file = dir.path().join("code").join(format!("{hash}.zip"));
        std::fs::write(&file, b"zap").unwrap();
        assert!(matches!(
            store.get_code(&hash).await,
            Err(StoreError::Corrupt { .. })
        ));
        // A truncated object (size differs) is rewritten by the next put.
        std::fs::write(&file, b"z").unwrap();
        store.put_code(&hash, zip.clone()).await.unwrap();
        assert_eq!(store.get_code(&hash).await.unwrap(), zip);
    }

    #[tokio::test]
    async fn artifacts_are_kept_by_code_runtime_and_build_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::local(dir.path()).unwrap();
        let hash = sha(b"source zip");
        assert_eq!(
            store.get_artifact(&hash, Runtime::Cpp, 1).await.unwrap(),
            None
        );
        assert!(!store.has_artifact(&hash, Runtime::Cpp, 1).await.unwrap());
        let artifact = Bytes::from_static(b"program tar");
        store
            .put_artifact(&hash, Runtime::Cpp, 1, artifact.clone())
            .await
            .unwrap();
        assert!(dir
            .path()
            .join(artifact_key(&hash, Runtime::Cpp, 1))
            .is_file());
        assert!(store.has_artifact(&hash, Runtime::Cpp, 1).await.unwrap());
        assert_eq!(
            store.get_artifact(&hash, Runtime::Cpp, 1).await.unwrap(),
            Some(artifact)
        );
        assert_eq!(
            store.get_artifact(&hash, Runtime::Go, 1).await.unwrap(),
            None
        );
        assert_eq!(
            store.get_artifact(&hash, Runtime::Cpp, 2).await.unwrap(),
            None
        );
        assert!(matches!(
            store.get_artifact("../../x", Runtime::Cpp, 1).await,
            Err(StoreError::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn any_object_store_will_do() {
        let store = CodeStore::new(Arc::new(object_store::memory::InMemory::new()));
        let zip = Bytes::from_static(b"in memory");
        let hash = sha(&zip);
        store.put_code(&hash, zip.clone()).await.unwrap();
        assert_eq!(store.get_code(&hash).await.unwrap(), zip);
    }
}
