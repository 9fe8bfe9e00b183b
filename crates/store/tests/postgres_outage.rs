//! A PostgreSQL outage: while the server is down every call fails promptly with
//! `StoreError::Unavailable` (the controller's 503), and once it is back the same store
//! works again, with no restart. Runs its own server (`hearth_testkit::postgres::PgServer`), so the shared one is
//! never stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_core::{FunctionConfig, FunctionSpec};
use hearth_store::{AsyncQueue, MetadataStore, PgMetadataStore};
use hearth_testkit::postgres::PgServer;
use std::time::{Duration, Instant};

fn spec() -> FunctionSpec {
    let config = FunctionConfig {
        runtime: Some("python".into()),
        ..Default::default()
    };
    FunctionSpec::resolve(None, &config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_the_pool_recovers_by_itself() {
    let server = PgServer::init();
    server.start();
    let store = PgMetadataStore::connect(&server.url()).await.unwrap();
    store.put_version("f", &spec(), "aa", 1).await.unwrap();
    assert_eq!(store.pending().await.unwrap(), 0);

    server.stop();
    // Every kind of call reports the outage as such: never bad input, never a hang.
    let started = Instant::now();
    let read = store.get_function("f").await.unwrap_err();
    assert!(read.is_unavailable(), "{read}");
    let write = store.put_version("f", &spec(), "bb", 1).await.unwrap_err();
    assert!(write.is_unavailable(), "{write}");
    let queue = store.claim_due(10).await.unwrap_err();
    assert!(queue.is_unavailable(), "{queue}");
    eprintln!("three calls during the outage took {:?}", started.elapsed());
    // A new process starting meanwhile is told the same.
    let fresh = PgMetadataStore::connect(&server.url()).await.unwrap_err();
    assert!(fresh.is_unavailable(), "{fresh}");

    server.start();
    // The same store, no restart: poll until the pool has reconnected.
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        match store.get_function("f").await {
            Ok(record) => break record,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    assert_eq!(
        record.unwrap().version,
        1,
        "nothing was lost or half-written"
    );
    let (v2, _) = store.put_version("f", &spec(), "bb", 1).await.unwrap();
    assert_eq!(v2.version, 2);
}
