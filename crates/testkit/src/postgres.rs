//! A private PostgreSQL server for tests that stop and restart one (the shared server
//! of `scripts/services.sh` is never stopped): Debian's PostgreSQL 15, run as the
//! `postgres` user on a free port, data in a temp dir, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server of one test's own.
pub struct PgServer {
    _dir: tempfile::TempDir,
    data: PathBuf,
    port: u16,
}

fn as_postgres(command: &str) {
    let status = Command::new("su")
        .args(["postgres", "-s", "/bin/sh", "-c", command])
        .status()
        .unwrap_or_else(|e| panic!("su postgres: {e}"));
    assert!(status.success(), "`{command}` failed: {status}");
}

impl PgServer {
    /// Makes a new cluster (initdb) on a free port; not started yet.
    pub fn init() -> Self {
        assert!(
            Path::new(PG_BIN).join("postgres").is_file(),
            "PostgreSQL 15 is not installed: run scripts/services.sh"
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let data = dir.path().join("pg");
        std::fs::create_dir(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap_or_else(|e| panic!("chown: {e}"));
        assert!(chown.success(), "chown {}", dir.path().display());
        as_postgres(&format!(
            "{PG_BIN}/initdb -D '{}' -A trust -U postgres >/dev/null",
            data.display()
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("free port: {e}"))
            .port();
        PgServer {
            _dir: dir,
            data,
            port,
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        as_postgres(&format!(
            "{PG_BIN}/pg_ctl -D '{data}' -l '{data}/log' -w -o \"-p {port} -k '{data}' \
             -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null",
            data = self.data.display(),
            port = self.port
        ));
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        as_postgres(&format!(
            "{PG_BIN}/pg_ctl -D '{}' -m fast -w stop >/dev/null",
            self.data.display()
        ));
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
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
