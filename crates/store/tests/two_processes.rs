//! Two real processes on one SQLite metadata file never hand out the same version:
//! the test binary runs itself twice as a second and third process (the ignored
//! `writer` test below, selected by name), each making versions of one function at
//! the same time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_core::{FunctionConfig, FunctionSpec};
use hearth_store::{MetadataStore, SqliteMetadataStore};
use std::process::{Command, Stdio};

/// The metadata file a `writer` process works on.
const DB_VAR: &str = "HEARTH_TEST_TWO_PROCESSES_DB";
/// Versions each writer makes.
const PER_WRITER: u64 = 25;

fn spec() -> FunctionSpec {
    let config = FunctionConfig {
        runtime: Some("python".into()),
        ..Default::default()
    };
    FunctionSpec::resolve(None, &config).unwrap()
}

#[test]
#[ignore = "a helper: two_processes_never_share_a_version runs it as a child process"]
fn writer() {
    let path = std::env::var_os(DB_VAR).expect("run by two_processes_never_share_a_version");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteMetadataStore::open(std::path::Path::new(&path)).unwrap();
        for _ in 0..PER_WRITER {
            let (record, _) = store.put_version("f", &spec(), "aa", 1).await.unwrap();
            println!("version {} pid {}", record.version, std::process::id());
        }
    });
}

#[test]
fn two_processes_never_share_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    // Create the schema first, so the writers race on versions, not on setup.
    drop(SqliteMetadataStore::open(&path).unwrap());
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "writer",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(DB_VAR, &path)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut versions = Vec::new();
    let mut pids = std::collections::BTreeSet::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "a writer failed: {text}");
        for line in text.lines() {
            // libtest may print "test writer ... " on the same line first.
            if let Some((_, rest)) = line.split_once("version ") {
                let (version, pid) = rest.split_once(" pid ").unwrap();
                versions.push(version.parse::<u64>().unwrap());
                pids.insert(pid.to_string());
            }
        }
    }
    assert_eq!(pids.len(), 2, "two processes wrote: {pids:?}");
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=2 * PER_WRITER).collect::<Vec<u64>>(),
        "every version made exactly once"
    );
}
