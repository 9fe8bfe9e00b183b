//! API keys and namespace quotas, the same tests on every backend (SQLite and
//! PostgreSQL): keys are found by their secret's hash, listed, deleted at once for every
//! process sharing the store, and never hold the secret.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[allow(dead_code)] // the shared backends; this suite needs not all their helpers
mod backends;

use backends::Backend;
use hearth_store::{KeyLimits, KeyRecord, NamespaceQuotas, StoreError};

on_both_backends!(
    keys_are_found_by_hash_listed_and_deleted,
    a_deleted_key_is_gone_for_another_process,
    quotas_are_set_replaced_and_default_to_unlimited,
);

fn key(id: &str, namespace: &str, hash: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        name: format!("{id} for tests"),
        namespace: namespace.into(),
        role: "developer".into(),
        secret_sha256: hash.into(),
        limits: KeyLimits {
            rate_per_s: Some(2.5),
            burst: Some(5),
            max_concurrency: None,
        },
        created_at: format!("2026-11-28T10:00:0{}Z", id.len() % 10),
    }
}

async fn keys_are_found_by_hash_listed_and_deleted(backend: &Backend) {
    let store = backend.open().await;
    assert_eq!(store.list_keys().await.unwrap(), vec![]);
    let a = key("k_a", "team-a", &"a".repeat(64));
    let b = key("k_bb", "team-b", &"b".repeat(64));
    store.create_key(&a).await.unwrap();
    store.create_key(&b).await.unwrap();
    assert_eq!(
        store.key_by_secret(&"a".repeat(64)).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.key_by_secret(&"c".repeat(64)).await.unwrap(), None);
    assert_eq!(store.list_keys().await.unwrap(), vec![a.clone(), b.clone()]);
    // Ids are unique.
    let again = store.create_key(&key("k_a", "x", &"d".repeat(64))).await;
    assert!(
        matches!(again, Err(StoreError::InvalidArgument(_))),
        "{again:?}"
    );
    assert!(store.delete_key("k_a").await.unwrap());
    assert!(!store.delete_key("k_a").await.unwrap());
    assert_eq!(store.key_by_secret(&"a".repeat(64)).await.unwrap(), None);
    assert_eq!(store.list_keys().await.unwrap(), vec![b]);
}

async fn a_deleted_key_is_gone_for_another_process(backend: &Backend) {
    let first = backend.open().await;
    let second = backend.open().await;
    first
        .create_key(&key("k_x", "ns", &"e".repeat(64)))
        .await
        .unwrap();
    assert!(second
        .key_by_secret(&"e".repeat(64))
        .await
        .unwrap()
        .is_some());
    assert!(first.delete_key("k_x").await.unwrap());
    assert_eq!(second.key_by_secret(&"e".repeat(64)).await.unwrap(), None);
}

async fn quotas_are_set_replaced_and_default_to_unlimited(backend: &Backend) {
    let store = backend.open().await;
    assert!(store.quotas("a").await.unwrap().is_unlimited());
    let quotas = NamespaceQuotas {
        max_concurrency: Some(2),
        max_warm_instances: None,
        max_warm_memory_mb: Some(512),
    };
    store.set_quotas("a", &quotas).await.unwrap();
    assert_eq!(store.quotas("a").await.unwrap(), quotas);
    let fewer = NamespaceQuotas {
        max_concurrency: Some(1),
        ..Default::default()
    };
    store.set_quotas("a", &fewer).await.unwrap();
    assert_eq!(store.quotas("a").await.unwrap(), fewer);
    assert!(store.quotas("b").await.unwrap().is_unlimited());
}
