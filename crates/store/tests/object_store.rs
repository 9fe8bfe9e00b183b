//! `CodeStore` on every object store hearth runs on, the same tests on each: a local
//! directory, and S3 (moto's server at `HEARTH_TEST_S3_ENDPOINT`, settings from the
//! `AWS_*` variables of `eval "$(scripts/services.sh --env)"`), each test in a bucket
//! of its own. A missing variable or a server that does not answer fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use bytes::Bytes;
use hearth_core::Runtime;
use hearth_store::{CodeStore, StoreError};
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where one test's objects live.
enum Objects {
    Local(tempfile::TempDir),
    S3 { endpoint: String, bucket: String },
}

fn s3_endpoint() -> String {
    std::env::var("HEARTH_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "HEARTH_TEST_S3_ENDPOINT is not set: the object-store suite runs on S3 too; \
             start moto with eval \"$(scripts/services.sh --env)\""
        )
    })
}

/// Creates a bucket on moto (which takes unsigned requests).
async fn create_bucket(endpoint: &str, bucket: &str) {
    let response = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the S3 endpoint {endpoint} does not answer: {e}"));
    assert!(
        response.status().is_success(),
        "creating bucket {bucket}: {}",
        response.status()
    );
}

impl Objects {
    fn local() -> Self {
        Objects::Local(tempfile::tempdir().unwrap())
    }

    async fn s3() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let endpoint = s3_endpoint();
        let bucket = format!(
            "test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        create_bucket(&endpoint, &bucket).await;
        Objects::S3 { endpoint, bucket }
    }

    /// The store, opened from its URL as `hearth up --objects` does; on S3 under a
    /// prefix, so prefixes are exercised too.
    fn open(&self) -> CodeStore {
        match self {
            Objects::Local(dir) => CodeStore::open(dir.path().to_str().unwrap()).unwrap(),
            Objects::S3 { bucket, .. } => {
                CodeStore::open(&format!("s3://{bucket}/hearth")).unwrap()
            }
        }
    }

    fn is_s3(&self) -> bool {
        matches!(self, Objects::S3 { .. })
    }

    /// Drops the test's bucket (a directory goes with its temp dir).
    async fn cleanup(self, store: &CodeStore) {
        if let Objects::S3 { endpoint, bucket } = self {
            use futures::TryStreamExt;
            let keys: Vec<_> = store
                .object_store()
                .list(None)
                .map_ok(|meta| meta.location)
                .try_collect()
                .await
                .unwrap();
            for key in keys {
                store.object_store().delete(&key).await.unwrap();
            }
            let _ = reqwest::Client::new()
                .delete(format!("{endpoint}/{bucket}"))
                .send()
                .await;
        }
    }
}

macro_rules! on_both_object_stores {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let objects = super::Objects::local();
                    let store = objects.open();
                    super::$test(&objects, &store).await;
                    objects.cleanup(&store).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let objects = super::Objects::s3().await;
                    let store = objects.open();
                    super::$test(&objects, &store).await;
                    objects.cleanup(&store).await;
                }
            )*
        }
    };
}

on_both_object_stores!(
    code_round_trips_and_is_checked,
    artifacts_round_trip,
    logs_and_outputs_round_trip,
    large_objects_go_up_in_parts,
);

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `len` bytes that differ part to part (so a misplaced part shows).
fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i / 7 % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

async fn code_round_trips_and_is_checked(_: &Objects, store: &CodeStore) {
    let zip = Bytes::from_static(b"PK pretend zip");
    let hash = sha(&zip);
    assert!(matches!(
        store.get_code(&hash).await,
        Err(StoreError::CodeNotFound { .. })
    ));
    store.put_code(&hash, zip.clone()).await.unwrap();
    assert_eq!(store.get_code(&hash).await.unwrap(), zip);
    store.put_code(&hash, zip.clone()).await.unwrap();
    assert!(matches!(
        store.put_code(&sha(b"other"), zip.clone()).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.get_code("../../etc/passwd").await,
        Err(StoreError::InvalidArgument(_))
    ));
    // A damaged object is an error, never wrong code.
    store
        .put_object(&format!("code/{hash}.zip"), Bytes::from_static(b"zap"))
        .await
        .unwrap();
    assert!(matches!(
        store.get_code(&hash).await,
        Err(StoreError::Corrupt { .. })
    ));
    store.delete_code(&hash).await.unwrap();
    store.delete_code(&hash).await.unwrap();
    assert!(matches!(
        store.get_code(&hash).await,
        Err(StoreError::CodeNotFound { .. })
    ));
}

async fn artifacts_round_trip(_: &Objects, store: &CodeStore) {
    let hash = sha(b"source zip");
    assert_eq!(
        store.get_artifact(&hash, Runtime::Go, 1).await.unwrap(),
        None
    );
    assert!(!store.has_artifact(&hash, Runtime::Go, 1).await.unwrap());
    let artifact = Bytes::from_static(b"program tar");
    store
        .put_artifact(&hash, Runtime::Go, 1, artifact.clone())
        .await
        .unwrap();
    assert!(store.has_artifact(&hash, Runtime::Go, 1).await.unwrap());
    assert_eq!(
        store.get_artifact(&hash, Runtime::Go, 1).await.unwrap(),
        Some(artifact)
    );
    assert_eq!(
        store.get_artifact(&hash, Runtime::Go, 2).await.unwrap(),
        None
    );
}

async fn logs_and_outputs_round_trip(_: &Objects, store: &CodeStore) {
    // The worker's keys: logs/{id}/{stream}, outputs/{id}/{path}.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stdout");
    std::fs::write(&log, b"line 1\nline 2\n").unwrap();
    store.put_file("logs/01ABC/stdout", &log).await.unwrap();
    let empty = dir.path().join("stderr");
    std::fs::write(&empty, b"").unwrap();
    store.put_file("logs/01ABC/stderr", &empty).await.unwrap();
    store
        .put_object(
            "outputs/01ABC/report/result.json",
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();

    assert_eq!(
        store
            .get_object("logs/01ABC/stdout")
            .await
            .unwrap()
            .unwrap(),
        Bytes::from_static(b"line 1\nline 2\n")
    );
    assert_eq!(
        store
            .get_object("logs/01ABC/stderr")
            .await
            .unwrap()
            .unwrap(),
        Bytes::new()
    );
    assert_eq!(
        store
            .get_object("outputs/01ABC/report/result.json")
            .await
            .unwrap()
            .unwrap(),
        Bytes::from_static(b"{}")
    );
    assert_eq!(store.get_object("logs/01XYZ/stdout").await.unwrap(), None);
    assert!(matches!(
        store.get_object("outputs/../../etc/passwd").await,
        Err(StoreError::InvalidArgument(_))
    ));
    store.delete_object("logs/01ABC/stdout").await.unwrap();
    store.delete_object("logs/01ABC/stdout").await.unwrap();
    assert_eq!(store.get_object("logs/01ABC/stdout").await.unwrap(), None);
}

async fn large_objects_go_up_in_parts(objects: &Objects, store: &CodeStore) {
    // From memory: a 12 MiB output (3 parts of 5 MiB, the last smaller).
    let big = pattern(12 << 20);
    store
        .put_object("outputs/01BIG/big.bin", big.clone())
        .await
        .unwrap();
    assert_eq!(
        store
            .get_object("outputs/01BIG/big.bin")
            .await
            .unwrap()
            .unwrap(),
        big
    );
    // From a file, streamed: an 11 MiB + 3 byte log.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stdout");
    let log_bytes = pattern((11 << 20) + 3);
    std::fs::write(&log, &log_bytes).unwrap();
    store.put_file("logs/01BIG/stdout", &log).await.unwrap();
    assert_eq!(
        store
            .get_object("logs/01BIG/stdout")
            .await
            .unwrap()
            .unwrap(),
        log_bytes
    );
    // A 6 MiB code package (the hash check covers every byte).
    let zip = pattern(6 << 20);
    let hash = sha(&zip);
    store.put_code(&hash, zip.clone()).await.unwrap();
    assert_eq!(store.get_code(&hash).await.unwrap(), zip);

    if objects.is_s3() {
        // S3 names a multipart object's ETag after its part count ("...-3").
        for (key, parts) in [
            ("outputs/01BIG/big.bin", 3),
            ("logs/01BIG/stdout", 3),
            (&*format!("code/{hash}.zip"), 2),
        ] {
            let meta = store
                .object_store()
                .head(&ObjectPath::from(key))
                .await
                .unwrap();
            let etag = meta.e_tag.unwrap_or_default();
            assert!(
                etag.trim_matches('"').ends_with(&format!("-{parts}")),
                "{key}: ETag {etag} is not that of a {parts}-part upload"
            );
        }
    }
}

#[test]
fn object_store_urls_are_checked() {
    for bad in ["", "ftp://host/x", "s3://", "s3:///prefix"] {
        let err = CodeStore::open(bad).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidArgument(_)),
            "{bad}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("objects").display());
    CodeStore::open(&url).unwrap();
    assert!(dir.path().join("objects").is_dir());
}
