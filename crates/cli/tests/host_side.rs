//! What `hearth up` leaves on its host (issue 10.10): a data dir only its owner can
//! enter, and the admin key printed the one time it is made, never again.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{agent_path, sandbox};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Starts `hearth up` on `data_dir`, returns what it printed up to its data dir line,
/// and stops it.
fn start_and_read(data_dir: &Path) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["up", "--port", "0", "--no-sample", "--sandbox", &sandbox()])
        .arg("--data-dir")
        .arg(data_dir)
        .env("HEARTH_AGENT", agent_path())
        .env_remove("HEARTH_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("hearth up");
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let last = line.starts_with("data dir:");
        lines.push(line);
        if last {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    lines
}

#[test]
fn the_data_dir_is_private_and_the_admin_key_is_printed_only_when_made() {
    let base = tempfile::tempdir().unwrap();
    let data_dir = base.path().join("fresh").join("data");
    let first = start_and_read(&data_dir);
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "data dir mode {mode:o}");
    let key = std::fs::read_to_string(data_dir.join("admin.key")).unwrap();
    let key = key.trim();
    assert!(
        first.iter().any(|l| l.contains(key)),
        "the new key is shown once: {first:?}"
    );
    let second = start_and_read(&data_dir);
    assert!(
        !second.iter().any(|l| l.contains(key)),
        "the key is printed again: {second:?}"
    );
    assert!(
        second.iter().any(|l| l.starts_with("admin API key: in ")),
        "{second:?}"
    );
}
