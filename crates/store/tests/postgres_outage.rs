//! A PostgreSQL outage: while the server is down every call fails promptly with
//! `StoreError::Unavailable` (the controller's 503), and once it is back the same store
//! works again, with no restart. Runs its own server (Debian's PostgreSQL 15, installed
//! by `scripts/services.sh`) on a free port, so the shared one is never stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_core::{FunctionConfig, FunctionSpec};
use hearth_store::{AsyncQueue, MetadataStore, PgMetadataStore};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL server, run as the `postgres` user (it refuses root).
struct Server {
    _dir: tempfile::TempDir,
    data: PathBuf,
    port: u16,
}

fn as_postgres(command: &str) {
    let status = Command::new("su")
        .args(["postgres", "-s", "/bin/sh", "-c", command])
        .status()
        .unwrap();
    assert!(status.success(), "`{command}` failed: {status}");
}

impl Server {
    fn init() -> Self {
        assert!(
            Path::new(PG_BIN).join("postgres").is_file(),
            "PostgreSQL 15 is not installed: run scripts/services.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pg");
        std::fs::create_dir(&data).unwrap();
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        as_postgres(&format!(
            "{PG_BIN}/initdb -D '{}' -A trust -U postgres >/dev/null",
            data.display()
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Server {
            _dir: dir,
            data,
            port,
        }
    }

    fn start(&self) {
        as_postgres(&format!(
            "{PG_BIN}/pg_ctl -D '{data}' -l '{data}/log' -w -o \"-p {port} -k '{data}' \
             -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null",
            data = self.data.display(),
            port = self.port
        ));
    }

    fn stop(&self) {
        as_postgres(&format!(
            "{PG_BIN}/pg_ctl -D '{}' -m fast -w stop >/dev/null",
            self.data.display()
        ));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c"])
            .arg(format!(
                "{PG_BIN}/pg_ctl -D '{}' -m immediate -w stop >/dev/null 2>&1",
                self.data.display()
            ))
            .status();
    }
}

fn spec() -> FunctionSpec {
    let config = FunctionConfig {
        runtime: Some("python".into()),
        ..Default::default()
    };
    FunctionSpec::resolve(None, &config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_the_pool_recovers_by_itself() {
    let server = Server::init();
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
