//! The cap on one invocation's full log: a [`LogSink`] in front of the channel that
//! forwards stdout and stderr until the invocation's `log_limit_bytes`, then the
//! truncation marker once, then nothing. The pipes are still read to their end, so a
//! handler that prints in a loop never blocks on a full pipe; it only stops reaching the
//! worker's disk.

use crate::channel::LogSink;
use hearth_core::logs::truncation_marker;
use hearth_core::protocol::LogStream;

/// Forwards at most `limit` bytes of log to `inner`, then marks the cut.
pub struct LogCap<'a> {
    inner: &'a mut dyn LogSink,
    limit: u64,
    sent: u64,
    dropped: u64,
}

impl<'a> LogCap<'a> {
    /// A cap of `limit` bytes (stdout and stderr together) in front of `inner`.
    pub fn new(inner: &'a mut dyn LogSink, limit: u64) -> Self {
        LogCap {
            inner,
            limit,
            sent: 0,
            dropped: 0,
        }
    }

    /// Whether anything was dropped.
    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }

    /// Bytes dropped past the cap.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl LogSink for LogCap<'_> {
    fn log(&mut self, stream: LogStream, bytes: &[u8]) {
        if self.dropped > 0 {
            self.dropped += bytes.len() as u64;
            return;
        }
        let room = usize::try_from(self.limit.saturating_sub(self.sent)).unwrap_or(usize::MAX);
        if bytes.len() <= room {
            self.sent += bytes.len() as u64;
            self.inner.log(stream, bytes);
            return;
        }
        if room > 0 {
            self.inner.log(stream, &bytes[..room]);
        }
        self.sent += room as u64;
        self.dropped = (bytes.len() - room) as u64;
        self.inner
            .log(stream, truncation_marker(self.limit).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collected(Vec<(LogStream, Vec<u8>)>);

    impl LogSink for Collected {
        fn log(&mut self, stream: LogStream, bytes: &[u8]) {
            self.0.push((stream, bytes.to_vec()));
        }
    }

    #[test]
    fn the_log_is_cut_at_the_limit_across_both_streams_and_marked_once() {
        let mut out = Collected::default();
        let mut cap = LogCap::new(&mut out, 10);
        cap.log(LogStream::Stdout, b"0123");
        cap.log(LogStream::Stderr, b"456");
        assert!(!cap.truncated());
        cap.log(LogStream::Stdout, b"789abc");
        cap.log(LogStream::Stderr, b"more and more");
        assert!(cap.truncated());
        assert_eq!(cap.dropped(), 3 + 13);
        let got = out.0;
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[2], (LogStream::Stdout, b"789".to_vec()));
        let marker = String::from_utf8(got[3].1.clone()).unwrap();
        assert!(marker.contains("log truncated"), "{marker}");
        assert!(marker.contains("more than 10 bytes"), "{marker}");
        let kept: usize = got[..3].iter().map(|(_, b)| b.len()).sum();
        assert_eq!(kept, 10);
    }

    #[test]
    fn a_log_that_fits_exactly_is_not_marked() {
        let mut out = Collected::default();
        let mut cap = LogCap::new(&mut out, 4);
        cap.log(LogStream::Stdout, b"abcd");
        assert!(!cap.truncated());
        assert_eq!(out.0.len(), 1);
    }
}
