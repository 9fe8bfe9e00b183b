//! The code a worker hands its cold starts (a version's checked tar, or a compiled
//! version's artifact), kept in memory under a bound of bytes, least recently used first
//! out.
//!
//! Every deploy adds a version, so an unbounded cache grew for as long as the worker
//! lived. Past the bound the entries not used for longest go; an entry alone larger than
//! the bound is never kept (the next cold start fetches it again). A hit is one hash
//! lookup and a counter bump under a short lock, and hands out a reference-counted
//! [`Bytes`] (no copy): it is on every cold start.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes of code a worker keeps in memory unless told otherwise.
pub const DEFAULT_CODE_CACHE_BYTES: usize = 256 << 20;

/// Tars by key (a code hash, or an artifact's key), at most `max_bytes` in all.
pub struct CodeCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
    /// Bumped on every use; an entry's `used` is the tick of its last use.
    tick: u64,
}

struct Entry {
    tar: Bytes,
    used: u64,
}

impl CodeCache {
    /// An empty cache holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> CodeCache {
        CodeCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain data: still consistent if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tar under `key`, now the most recently used.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(key)?;
        entry.used = tick;
        Some(entry.tar.clone())
    }

    /// Keeps `tar` under `key`, dropping the least recently used entries until all fit;
    /// a tar larger than the whole bound is not kept.
    pub fn insert(&self, key: &str, tar: Bytes) {
        if tar.len() > self.max_bytes {
            tracing::debug!(
                key,
                bytes = tar.len(),
                max = self.max_bytes,
                "code larger than the whole cache: not kept"
            );
            return;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let used = inner.tick;
        let size = tar.len();
        if let Some(old) = inner.entries.insert(key.to_string(), Entry { tar, used }) {
            inner.bytes -= old.tar.len();
        }
        inner.bytes += size;
        while inner.bytes > self.max_bytes {
            // Few entries (one per version in use), so a scan beats keeping an order.
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.tar.len();
            }
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n])
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_bound_holds() {
        let cache = CodeCache::new(300);
        cache.insert("a", tar(100, b'a'));
        cache.insert("b", tar(100, b'b'));
        cache.insert("c", tar(100, b'c'));
        assert_eq!(cache.bytes(), 300);
        // `a` used last: `b` is now the oldest and goes when `d` comes.
        assert_eq!(cache.get("a").unwrap(), tar(100, b'a'));
        cache.insert("d", tar(100, b'd'));
        assert_eq!(cache.bytes(), 300);
        assert!(cache.get("b").is_none());
        assert!(cache.get("a").is_some());
        assert!(cache.get("c").is_some());
        assert!(cache.get("d").is_some());
        // A big one pushes out as many as it needs, oldest first: `d` was used last,
        // so `a` and `c` go and `d` stays; one bigger still leaves only itself.
        cache.get("d");
        cache.insert("e", tar(200, b'e'));
        assert!(cache.get("a").is_none());
        assert!(cache.get("c").is_none());
        assert!(cache.get("d").is_some());
        assert!(cache.get("e").is_some());
        assert_eq!(cache.bytes(), 300);
        cache.insert("f", tar(250, b'f'));
        assert_eq!(cache.len(), 1, "{} bytes", cache.bytes());
        assert_eq!(cache.bytes(), 250);
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_not_kept_and_evicts_nothing() {
        let cache = CodeCache::new(100);
        cache.insert("small", tar(60, 1));
        cache.insert("huge", tar(101, 2));
        assert!(cache.get("huge").is_none());
        assert!(cache.get("small").is_some());
        assert_eq!(cache.bytes(), 60);
    }

    #[test]
    fn replacing_a_key_counts_its_bytes_once() {
        let cache = CodeCache::new(100);
        cache.insert("k", tar(80, 1));
        cache.insert("k", tar(90, 2));
        assert_eq!(cache.bytes(), 90);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("k").unwrap(), tar(90, 2));
    }

    #[test]
    fn a_hit_hands_out_the_same_buffer_without_a_copy() {
        let cache = CodeCache::new(1 << 20);
        let original = tar(4096, 7);
        cache.insert("k", original.clone());
        let hit = cache.get("k").unwrap();
        assert_eq!(hit.as_ptr(), original.as_ptr());
    }
}
