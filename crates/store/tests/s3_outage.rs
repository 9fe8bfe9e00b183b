//! An S3 outage: while the endpoint is down, reads and writes fail promptly with
//! `StoreError::Unavailable` (the controller's 503); once it is back the same store
//! works again. Runs its own moto server (from target/venv, made by
//! `scripts/services.sh`) on a free port, so the shared one is never stopped. The only
//! test of this binary: it points `AWS_ENDPOINT_URL` at its own server.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use bytes::Bytes;
use hearth_store::CodeStore;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto {
    child: Child,
}

impl Moto {
    fn start(port: u16) -> Self {
        let venv = std::env::var("HEARTH_TEST_VENV").unwrap_or_else(|_| {
            panic!("HEARTH_TEST_VENV is not set: run eval \"$(scripts/services.sh --env)\"")
        });
        let child = Command::new(format!("{venv}/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {venv}/bin/moto_server: {e}"));
        Moto { child }
    }

    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the bucket, polling until the new server answers.
async fn create_bucket(endpoint: &str, bucket: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => return,
            other if Instant::now() > deadline => panic!("moto did not come up: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_the_store_recovers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    // The only test in this binary: nothing else reads the environment meanwhile.
    std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    for (key, default) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var_os(key).is_none() {
            std::env::set_var(key, default);
        }
    }
    let moto = Moto::start(port);
    create_bucket(&endpoint, "outage").await;
    let store = CodeStore::open("s3://outage/hearth").unwrap();
    store
        .put_object("logs/1/stdout", Bytes::from_static(b"before"))
        .await
        .unwrap();

    moto.stop();
    let started = Instant::now();
    let read = store.get_object("logs/1/stdout").await.unwrap_err();
    assert!(read.is_unavailable(), "{read}");
    let write = store
        .put_object("logs/2/stdout", Bytes::from_static(b"during"))
        .await
        .unwrap_err();
    assert!(write.is_unavailable(), "{write}");
    let code = store.get_code(&"0".repeat(64)).await.unwrap_err();
    assert!(code.is_unavailable(), "{code}");
    eprintln!("three calls during the outage took {:?}", started.elapsed());

    // Back (moto keeps nothing across a restart: the bucket is made again).
    let _moto = Moto::start(port);
    create_bucket(&endpoint, "outage").await;
    store
        .put_object("logs/3/stdout", Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(
        store.get_object("logs/3/stdout").await.unwrap(),
        Some(Bytes::from_static(b"after"))
    );
}
