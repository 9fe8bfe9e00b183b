//! What goes when history is pruned or a function is deleted, checked by listing the
//! object store: on a local directory (with SQLite) and on S3 (moto, with PostgreSQL;
//! `eval "$(scripts/services.sh --env)"`), each test on data of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[allow(dead_code)] // the shared helpers: this suite opens stores, it never rewrites schemas
mod backends;

use backends::{Backend, Store};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use hearth_core::protocol::{LogStream, BUILD_VERSION};
use hearth_core::{FunctionConfig, FunctionSpec, Invocation, Runtime};
use hearth_store::cleanup::{delete_function, prune_history, Freed};
use hearth_store::objects::{code_key, log_key, output_key};
use hearth_store::{artifact_key, CodeStore};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// One test's stores: metadata and objects, and what to drop afterwards.
struct Stores {
    metadata: Arc<dyn Store>,
    code: CodeStore,
    backend: Backend,
    local: Option<tempfile::TempDir>,
}

impl Stores {
    async fn local() -> Stores {
        let backend = Backend::sqlite();
        let dir = tempfile::tempdir().unwrap();
        Stores {
            metadata: backend.open().await,
            code: CodeStore::open(dir.path().to_str().unwrap()).unwrap(),
            backend,
            local: Some(dir),
        }
    }

    async fn s3() -> Stores {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let endpoint = std::env::var("HEARTH_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
            panic!("HEARTH_TEST_S3_ENDPOINT is not set: eval \"$(scripts/services.sh --env)\"")
        });
        let bucket = format!(
            "cleanup-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the S3 endpoint {endpoint} does not answer: {e}"));
        assert!(
            created.status().is_success(),
            "bucket {bucket}: {created:?}"
        );
        let backend = Backend::postgres();
        Stores {
            metadata: backend.open().await,
            code: CodeStore::open(&format!("s3://{bucket}/hearth")).unwrap(),
            backend,
            local: None,
        }
    }

    /// Every key in the object store, sorted.
    async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .code
            .object_store()
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }

    async fn put(&self, key: &str) {
        self.code
            .put_object(key, Bytes::from(format!("content of {key}")))
            .await
            .unwrap();
    }

    async fn record(&self, id: &str, function: &str, started_at: &str) {
        let mut invocation: Invocation = serde_json::from_value(serde_json::json!({
            "id": id, "function": function, "version": 1, "status": "success",
            "result": null, "error": null, "exit_code": 0, "stdout": "", "stderr": "",
            "truncated": false, "cold_start": false, "worker": "w",
            "started_at": started_at, "duration_ms": 1.0, "handler_duration_ms": 1.0,
            "memory": {"limit_mb": 128, "peak_bytes": 0, "max_rss_bytes": 0},
            "cpu": {"user_ms": 0.0, "system_ms": 0.0}, "io": {"read_bytes": 0, "write_bytes": 0},
            "outputs": [], "advice": null
        }))
        .unwrap();
        invocation.function = function.into();
        self.metadata.record_invocation(&invocation).await.unwrap();
        self.put(&log_key(id, LogStream::Stdout)).await;
        self.put(&log_key(id, LogStream::Stderr)).await;
        self.put(&output_key(id, "report/out.csv")).await;
    }

    /// Stores a code package and makes a version of `name` with it; returns its hash.
    async fn deploy(&self, name: &str, content: &str) -> String {
        let zip = Bytes::from(content.to_string());
        let sha = hex::encode(Sha256::digest(&zip));
        self.code.put_code(&sha, zip).await.unwrap();
        let config = FunctionConfig {
            runtime: Some("python".into()),
            ..Default::default()
        };
        let spec = FunctionSpec::resolve(None, &config).unwrap();
        self.metadata
            .put_version(name, &spec, &sha, content.len() as u64)
            .await
            .unwrap();
        sha
    }

    async fn cleanup(self) {
        use object_store::ObjectStore;
        if self.local.is_none() {
            for key in self.keys().await {
                let path = object_store::path::Path::from(key.as_str());
                self.code.object_store().delete(&path).await.unwrap();
            }
        }
        self.backend.cleanup().await;
    }
}

macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let stores = super::Stores::local().await;
                    super::$test(&stores).await;
                    stores.cleanup().await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let stores = super::Stores::s3().await;
                    super::$test(&stores).await;
                    stores.cleanup().await;
                }
            )*
        }
    };
}

on_both_stores!(
    pruning_history_deletes_its_logs_and_outputs,
    deleting_a_function_frees_what_no_version_uses,
);

fn keys_of(ids: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = ids
        .iter()
        .flat_map(|id| {
            [
                log_key(id, LogStream::Stderr),
                log_key(id, LogStream::Stdout),
                output_key(id, "report/out.csv"),
            ]
        })
        .collect();
    keys.sort();
    keys
}

async fn pruning_history_deletes_its_logs_and_outputs(stores: &Stores) {
    stores.record("01OLD", "f", "2026-01-01T00:00:00Z").await;
    stores.record("01OLDER", "g", "2025-12-01T00:00:00Z").await;
    // Shares the old id as a string prefix: only whole path segments may match.
    stores.record("01OLDX", "f", "2026-02-01T00:00:00Z").await;
    stores.record("01NEW", "f", "2026-02-02T00:00:00Z").await;
    assert_eq!(
        stores.keys().await,
        keys_of(&["01NEW", "01OLD", "01OLDER", "01OLDX"])
    );

    let cutoff: DateTime<Utc> = "2026-01-15T00:00:00Z".parse().unwrap();
    let freed = prune_history(stores.metadata.as_ref(), &stores.code, cutoff)
        .await
        .unwrap();
    assert_eq!(
        freed,
        Freed {
            invocations: 2,
            objects: 6
        }
    );
    assert_eq!(stores.keys().await, keys_of(&["01NEW", "01OLDX"]));
    assert!(stores
        .metadata
        .get_invocation("01OLD")
        .await
        .unwrap()
        .is_none());
    assert!(stores
        .metadata
        .get_invocation("01NEW")
        .await
        .unwrap()
        .is_some());
    if let Some(dir) = &stores.local {
        for gone in ["logs/01OLD", "outputs/01OLD", "logs/01OLDER"] {
            assert!(
                !dir.path().join(gone).exists(),
                "{gone} is left on disk, empty"
            );
        }
    }
    let again = prune_history(stores.metadata.as_ref(), &stores.code, cutoff)
        .await
        .unwrap();
    assert_eq!(again, Freed::default());
}

async fn deleting_a_function_frees_what_no_version_uses(stores: &Stores) {
    let shared = stores.deploy("f", "shared code").await;
    let own = stores.deploy("f", "f's second version").await;
    assert_eq!(stores.deploy("g", "shared code").await, shared);
    for build_version in 1..=BUILD_VERSION {
        let key = artifact_key(&own, Runtime::Python, build_version);
        stores.put(&key).await;
    }
    stores.record("01F1", "f", "2026-02-01T00:00:00Z").await;
    stores.record("01F2", "f", "2026-02-02T00:00:00Z").await;
    stores.record("01G1", "g", "2026-02-03T00:00:00Z").await;

    let metadata = stores.metadata.as_ref();
    let freed = delete_function(metadata, &stores.code, "f").await.unwrap();
    assert_eq!(
        freed,
        Some(Freed {
            invocations: 2,
            objects: 6
        })
    );
    let mut left = keys_of(&["01G1"]);
    left.push(code_key(&shared));
    left.sort();
    assert_eq!(
        stores.keys().await,
        left,
        "f's own code, its artifact and its invocations' objects are gone; g's are not"
    );
    assert!(metadata.get_function("f").await.unwrap().is_none());
    assert_eq!(
        delete_function(metadata, &stores.code, "f").await.unwrap(),
        None
    );

    delete_function(metadata, &stores.code, "g").await.unwrap();
    assert_eq!(stores.keys().await, Vec::<String>::new(), "nothing is left");
    if let Some(dir) = &stores.local {
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "empty directories are left: {left:?}");
    }
}
