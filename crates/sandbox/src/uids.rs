//! Host uids of instances: each instance gets a pair of its own from a reserved range,
//! so that no two sandboxes (of one tenant or of two) share the kernel's per-uid
//! accounting (pipe buffers, inotify instances, message-queue bytes, pending signals),
//! and the agent never shares a uid with the code it runs.
//!
//! Slot `k` of a [`UidRange`] is the pair `first + 2k` (the agent's real and saved uid
//! and gid) and `first + 2k + 1` (the function's). A slot is held by an exclusive
//! `flock` on `<lock_dir>/<first + 2k>`, so every hearth process on the host (several
//! workers, test runs) draws from the same range without giving out one slot twice;
//! the kernel drops the lock when a crashed process dies, so no slot leaks.

use crate::SandboxError;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A reserved range of host uids (and the gids of the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid of the range.
    pub first: u32,
    /// How many slots (pairs of uids) it holds.
    pub slots: u32,
}

/// Why a uid range given on the command line is refused.
#[derive(Debug, thiserror::Error)]
pub enum UidRangeError {
    /// Not two numbers around a dash.
    #[error("uid range {0:?} is not FIRST-LAST")]
    Shape(String),
    /// One side is not a number.
    #[error("uid range {text:?}: {part:?}: {source}")]
    Number {
        /// The whole range as given.
        text: String,
        /// The side that is not a number.
        part: String,
        /// Why it is not.
        source: std::num::ParseIntError,
    },
    /// Outside the uids a range may use, or backwards.
    #[error("uid range {0:?} must lie between 1000 and 4294967294, first ≤ last")]
    Bounds(String),
    /// Fewer than two uids.
    #[error("uid range {0:?} holds no pair of uids")]
    Empty(String),
}

impl UidRange {
    /// The default: 65 536 uids from 2 000 000, above the usual `/etc/subuid` ranges
    /// of the first users (100 000 + 65 536 each) and far below `(uid_t)-1`.
    pub const DEFAULT: UidRange = UidRange {
        first: 2_000_000,
        slots: 32_768,
    };

    /// Parses `FIRST-LAST` (inclusive; an even number of uids).
    pub fn parse(text: &str) -> Result<UidRange, UidRangeError> {
        let (first, last) = text
            .split_once('-')
            .ok_or_else(|| UidRangeError::Shape(text.to_string()))?;
        let parse = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|source| UidRangeError::Number {
                    text: text.to_string(),
                    part: part.to_string(),
                    source,
                })
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if first < 1000 || last < first || last == u32::MAX {
            return Err(UidRangeError::Bounds(text.to_string()));
        }
        let slots = (last - first).div_ceil(2);
        if slots == 0 {
            return Err(UidRangeError::Empty(text.to_string()));
        }
        Ok(UidRange { first, slots })
    }

    fn pair(&self, slot: u32) -> (u32, u32) {
        let agent = self.first + 2 * slot;
        (agent, agent + 1)
    }
}

/// The uids one instance runs under, held while the lease lives.
#[derive(Debug)]
pub struct UidLease {
    /// The agent's real and saved uid and gid.
    pub agent: u32,
    /// The function's uid and gid.
    pub function: u32,
    _lock: File,
}

/// Hands out [`UidLease`]s from a range, host-wide.
#[derive(Debug)]
pub struct UidPool {
    range: UidRange,
    lock_dir: PathBuf,
    /// Where the next search starts, so that a released slot is not the next one given
    /// (its uid's last processes may still be on their way out).
    next: AtomicU32,
}

impl UidPool {
    /// The default lock directory: host-wide, on a tmpfs, root's.
    pub const DEFAULT_LOCK_DIR: &'static str = "/run/hearth/uids";

    /// A pool over `range`, locking slots in `lock_dir` (made 0700 if missing).
    pub fn new(range: UidRange, lock_dir: &Path) -> Result<UidPool, SandboxError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(lock_dir)
            .map_err(|e| {
                SandboxError::Unavailable(format!(
                    "uid lock dir {}: {e} (hearth gives every sandbox its own host uid and \
                     needs a directory only it can write to track them)",
                    lock_dir.display()
                ))
            })?;
        // A start that differs from process to process, so that workers starting
        // together do not all fight over slot 0.
        let start = std::process::id().wrapping_mul(2_654_435_761) % range.slots;
        Ok(UidPool {
            range,
            lock_dir: lock_dir.to_path_buf(),
            next: AtomicU32::new(start),
        })
    }

    /// Takes a free slot. Fails when every slot of the range is held.
    pub fn lease(&self) -> Result<UidLease, SandboxError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for step in 0..self.range.slots {
            let slot = start.wrapping_add(step) % self.range.slots;
            let (agent, function) = self.range.pair(slot);
            let path = self.lock_dir.join(agent.to_string());
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| {
                    SandboxError::Unavailable(format!("uid lock {}: {e}", path.display()))
                })?;
            // SAFETY: flock on a descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                self.next.store(slot.wrapping_add(1), Ordering::Relaxed);
                return Ok(UidLease {
                    agent,
                    function,
                    _lock: file,
                });
            }
        }
        Err(SandboxError::Unavailable(format!(
            "every one of the {} sandbox uid slots from {} is in use",
            self.range.slots, self.range.first
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_into_pairs() {
        let range = UidRange::parse("2000000-2000009").unwrap();
        assert_eq!(range.slots, 5);
        assert_eq!(range.pair(0), (2_000_000, 2_000_001));
        assert_eq!(range.pair(4), (2_000_008, 2_000_009));
        for bad in [
            "",
            "5",
            "10-20",
            "3000-2000",
            "2000-2000",
            "1000-4294967295",
        ] {
            assert!(UidRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_slot_is_given_twice_across_pools_and_a_released_one_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let range = UidRange {
            first: 3_000_000,
            slots: 3,
        };
        // Two pools on one lock dir: two processes of the same host.
        let a = UidPool::new(range, dir.path()).unwrap();
        let b = UidPool::new(range, dir.path()).unwrap();
        let first = a.lease().unwrap();
        let second = b.lease().unwrap();
        let third = a.lease().unwrap();
        let mut agents = vec![first.agent, second.agent, third.agent];
        agents.sort();
        assert_eq!(agents, vec![3_000_000, 3_000_002, 3_000_004]);
        assert_eq!(first.function, first.agent + 1);
        assert!(b.lease().is_err(), "the range is full");
        let freed = second.agent;
        drop(second);
        assert_eq!(a.lease().unwrap().agent, freed);
    }
}
