//! After every invocation no process of it survives: find leftovers in `/proc`, SIGKILL
//! them, reap, and look again until a scan finds none.
//!
//! The `/proc` root is a parameter so the selection logic is tested against fixture trees.

use crate::process::{self, Reaper};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a sweep may take before the instance is declared unhealthy.
const SWEEP_LIMIT: Duration = Duration::from_secs(2);

/// One line of the process table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEntry {
    /// Process id.
    pub pid: i32,
    /// Parent's process id.
    pub ppid: i32,
    /// State letter from `/proc/<pid>/stat` (`R`, `S`, `Z`, ...).
    pub state: u8,
}

impl ProcEntry {
    /// Zombies and dying processes cannot be killed further, only reaped.
    fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses `/proc/<pid>/stat` (`pid (comm) state ppid ...`; comm may hold spaces and `)`).
pub fn parse_stat(text: &str) -> Option<ProcEntry> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    let state = *rest.next()?.as_bytes().first()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcEntry { pid, ppid, state })
}

/// Reads every process visible under `proc_root`; processes that vanish meanwhile are
/// skipped. Any other failure (no fd left, `/proc` unreadable) is an error: a table
/// that may be missing processes must never pass for an empty one.
pub fn read_table(proc_root: &Path) -> io::Result<Vec<ProcEntry>> {
    let mut table = Vec::new();
    for entry in fs::read_dir(proc_root)? {
        let entry = entry?;
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if is_pid {
            table.extend(read_stat(&entry.path().join("stat"))?);
        }
    }
    Ok(table)
}

/// One `read` of a stat file (they are a few hundred bytes; `read_to_string` would
/// `statx` and read it in growing chunks, which adds up over a whole `/proc`). `None`
/// when the process is gone.
fn read_stat(path: &Path) -> io::Result<Option<ProcEntry>> {
    let gone = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
    };
    let mut buf = [0u8; 1024];
    let n = match fs::File::open(path).and_then(|mut f| f.read(&mut buf)) {
        Ok(n) => n,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(None); // a process being reaped
    }
    let text = std::str::from_utf8(&buf[..n]).map_err(io::Error::other)?;
    parse_stat(text)
        .map(Some)
        .ok_or_else(|| io::Error::other(format!("unreadable {}", path.display())))
}

/// Which processes belong to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every process in the table (we are PID 1 of our own pid namespace).
    Namespace,
    /// Our descendants only (we share the pid namespace; orphans come back to us because
    /// we are a child subreaper).
    Descendants,
}

/// The live processes to kill: those in `scope` other than `me` and `keep` (the
/// descendants of a kept process are still killed).
#[cfg(test)]
pub fn targets(table: &[ProcEntry], scope: Scope, me: i32, keep: &[i32]) -> Vec<i32> {
    in_scope(table, scope, me, keep)
        .into_iter()
        .filter(|e| !e.is_dead())
        .map(|e| e.pid)
        .collect()
}

/// Every process in `scope` other than `me` and `keep`, live or dead (a zombie is
/// still a process until it is reaped), sorted by pid.
fn in_scope(table: &[ProcEntry], scope: Scope, me: i32, keep: &[i32]) -> Vec<ProcEntry> {
    let chosen: Vec<&ProcEntry> = match scope {
        Scope::Namespace => table.iter().collect(),
        Scope::Descendants => {
            let mut children: HashMap<i32, Vec<&ProcEntry>> = HashMap::new();
            for entry in table {
                children.entry(entry.ppid).or_default().push(entry);
            }
            let mut found = Vec::new();
            let mut queue = vec![me];
            let mut seen = HashSet::from([me]);
            while let Some(parent) = queue.pop() {
                for child in children.get(&parent).into_iter().flatten() {
                    if seen.insert(child.pid) {
                        found.push(*child);
                        queue.push(child.pid);
                    }
                }
            }
            found
        }
    };
    let mut entries: Vec<ProcEntry> = chosen
        .into_iter()
        .filter(|e| e.pid != me && !keep.contains(&e.pid))
        .copied()
        .collect();
    entries.sort_unstable_by_key(|e| e.pid);
    entries
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Distinct processes killed, not counting the ones named as expected.
    pub killed: u32,
    /// False when processes were still alive when the sweep gave up.
    pub converged: bool,
}

/// Kills leftovers of invocations.
#[derive(Debug, Clone)]
pub struct Sweeper {
    proc_root: PathBuf,
    scope: Scope,
    me: i32,
}

impl Sweeper {
    /// A sweeper reading `proc_root` on behalf of process `me`.
    pub fn new(proc_root: impl Into<PathBuf>, scope: Scope, me: i32) -> Self {
        Sweeper {
            proc_root: proc_root.into(),
            scope,
            me,
        }
    }

    /// Kills every process in scope except `keep`, repeating until a scan finds none (a
    /// fork bomb under the pids limit converges), reaping as it goes. Processes listed in
    /// `expected` (the invocation's own process) are killed but not counted as leftovers.
    pub fn sweep(&self, keep: &[i32], expected: &[i32], reaper: &mut Reaper) -> SweepReport {
        let started = Instant::now();
        let mut killed = HashSet::new();
        let converged = loop {
            reaper.reap_all();
            // Done only when nothing is left, zombies included: a killed process whose
            // parent died with it reaches us to be reaped a moment later, and until
            // then it still shows in /proc.
            let table = match read_table(&self.proc_root) {
                Ok(table) => table,
                Err(e) => {
                    crate::diag!("cannot read {}: {e}", self.proc_root.display());
                    break false;
                }
            };
            let left = in_scope(&table, self.scope, self.me, keep);
            if left.is_empty() {
                break true;
            }
            if started.elapsed() > SWEEP_LIMIT {
                break false;
            }
            for entry in left.iter().filter(|e| !e.is_dead()) {
                process::kill(entry.pid, libc::SIGKILL);
                killed.insert(entry.pid);
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let count = killed.iter().filter(|p| !expected.contains(p)).count();
        SweepReport {
            killed: u32::try_from(count).unwrap_or(u32::MAX),
            converged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, ppid: i32, state: u8) -> ProcEntry {
        ProcEntry { pid, ppid, state }
    }

    #[test]
    fn stat_lines_with_awkward_names_parse() {
        let e = parse_stat("42 (evil) S 7 (x)) R 1 42 42 0 -1").unwrap();
        assert_eq!(e, entry(42, 1, b'R'));
        assert_eq!(parse_stat("7 (sleep) Z 3 7 7"), Some(entry(7, 3, b'Z')));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn namespace_scope_kills_all_but_me_kept_and_zombies() {
        let table = [
            entry(1, 0, b'S'),
            entry(5, 1, b'S'),
            entry(6, 5, b'R'),
            entry(7, 1, b'Z'),
            entry(9, 6, b'S'),
        ];
        assert_eq!(targets(&table, Scope::Namespace, 1, &[5]), vec![6, 9]);
    }

    #[test]
    fn descendant_scope_ignores_strangers_and_walks_through_kept() {
        let table = [
            entry(100, 1, b'S'),   // me
            entry(101, 100, b'S'), // zygote (kept)
            entry(102, 101, b'R'), // its invocation child
            entry(103, 100, b'S'), // orphan reparented to me
            entry(104, 103, b'S'),
            entry(200, 1, b'S'), // someone else's
            entry(201, 200, b'S'),
        ];
        assert_eq!(
            targets(&table, Scope::Descendants, 100, &[101]),
            vec![102, 103, 104]
        );
    }

    #[test]
    fn the_table_is_read_from_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, stat) in [("1", "1 (init) S 0 1 1"), ("12", "12 (a b) R 1 12 12")] {
            fs::create_dir(dir.path().join(pid)).unwrap();
            fs::write(dir.path().join(pid).join("stat"), stat).unwrap();
        }
        fs::create_dir(dir.path().join("self")).unwrap();
        fs::write(dir.path().join("uptime"), "1 2").unwrap();
        let mut table = read_table(dir.path()).unwrap();
        table.sort_by_key(|e| e.pid);
        assert_eq!(table, vec![entry(1, 0, b'S'), entry(12, 1, b'R')]);
    }

    #[test]
    fn an_unreadable_proc_is_not_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-proc");
        assert!(read_table(&missing).is_err());
        let sweeper = Sweeper::new(missing, Scope::Namespace, 1);
        let report = sweeper.sweep(&[], &[], &mut Reaper::default());
        assert!(!report.converged, "a sweep that could not look converged");
        // A stat file that cannot be parsed (not a vanished process) fails too.
        fs::create_dir(dir.path().join("5")).unwrap();
        fs::write(dir.path().join("5").join("stat"), "garbage").unwrap();
        assert!(read_table(dir.path()).is_err());
    }
}
