//! A native `hearth up` killed with SIGKILL (no cleanup code runs) leaves nothing
//! behind: its sandboxes die with it (`PR_SET_PDEATHSIG`), and the cgroups they ran
//! in are swept when it starts again on its data dir. (The Docker backend's
//! equivalent is in docker.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::{eventually, Hearth};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Deadline for what must become true; polled.
const WITHIN: Duration = Duration::from_secs(60);

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every live descendant of `root`.
fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut found = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for &pid in &all {
            if !found.contains(&pid) && parent_of(pid).is_some_and(|p| found.contains(&p)) {
                found.push(pid);
                grew = true;
            }
        }
    }
    found.retain(|&p| p != root);
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with(['Z', 'X']))
}

/// The cgroup directories (on every hierarchy) that `pid` runs in under a hearth group.
fn hearth_cgroups(pid: u32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        if !path.contains("/hearth-") {
            continue;
        }
        let relative = path.trim_start_matches('/');
        let candidates = if controllers.is_empty() {
            vec![
                PathBuf::from("/sys/fs/cgroup/unified").join(relative),
                PathBuf::from("/sys/fs/cgroup").join(relative),
            ]
        } else {
            controllers
                .split(',')
                .map(|c| {
                    PathBuf::from("/sys/fs/cgroup")
                        .join(c.trim_start_matches("name="))
                        .join(relative)
                })
                .collect()
        };
        dirs.extend(candidates.into_iter().filter(|d| d.is_dir()));
    }
    dirs
}

#[test]
fn a_sigkilled_native_hearth_leaves_no_sandbox_process_or_cgroup() {
    let mut hearth = Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &["--sandbox", "native"]);
    for name in ["kept-a", "kept-b"] {
        hearth.deploy_fixture(name, "py-counter", json!({"runtime": "python"}));
        assert_eq!(hearth.invoke(name, json!({}))["status"], "success");
    }
    let sandboxes = descendants(hearth.pid());
    assert!(
        sandboxes.len() >= 2,
        "two warm sandboxes run under hearth: {sandboxes:?}"
    );
    let mut cgroups: Vec<PathBuf> = sandboxes.iter().flat_map(|&p| hearth_cgroups(p)).collect();
    cgroups.sort();
    cgroups.dedup();
    assert!(
        !cgroups.is_empty(),
        "the sandboxes run in hearth's cgroups: {sandboxes:?}"
    );

    hearth.crash_and_restart_with(|| {
        let mut left = sandboxes.clone();
        eventually(WITHIN, "every sandbox process dies with hearth", || {
            left.retain(|&p| alive(p));
            left.is_empty()
        })
        .unwrap_or_else(|e| panic!("{e}: {left:?} outlived hearth"));
    });
    let mut left = cgroups.clone();
    eventually(
        WITHIN,
        "the restarted hearth sweeps the old cgroups",
        || {
            left.retain(|d| d.exists());
            left.is_empty()
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {left:?} remain"));
    // And it serves again, from new sandboxes.
    let after = hearth.invoke("kept-a", json!({}));
    assert_eq!(after["status"], "success", "{after}");
    assert_eq!(after["cold_start"], true, "{after}");
}
