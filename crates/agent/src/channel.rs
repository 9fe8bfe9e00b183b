//! The protocol stream to the worker, moved off fds 0 and 1 so that no child can inherit it
//! or scribble on it.

use crate::error::{check, AgentError};
use crate::process;
use hearth_core::protocol::{read_frame, write_frame, FromAgent, ToAgent};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// Lowest fd number the stream is moved to.
const HIGH_FD: RawFd = 64;
/// `close_range` flag: mark close-on-exec instead of closing.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Frames in from the worker, frames out to it.
#[derive(Debug)]
pub struct Channel {
    input: File,
    output: File,
}

impl Channel {
    /// Takes the protocol stream from stdin/stdout: both are duplicated to high
    /// close-on-exec fds, then fds 0 and 1 are pointed at `/dev/null`. Every other fd
    /// inherited from the worker is marked close-on-exec. fd 2 stays for diagnostics.
    pub fn from_stdio() -> Result<Channel, AgentError> {
        // SAFETY: close_range takes integers only; failure (old kernel) is harmless.
        unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
        }
        let dup = |fd: RawFd| {
            // SAFETY: F_DUPFD_CLOEXEC on an fd number; no pointers.
            let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
            let new = check(new, || format!("duplicate fd {fd}"))?;
            // SAFETY: fcntl just created this fd; it is ours alone.
            Ok::<File, AgentError>(unsafe { File::from_raw_fd(new) })
        };
        let input = dup(0)?;
        let output = dup(1)?;
        let null = process::dev_null()?;
        for target in [0, 1] {
            // SAFETY: dup2 between two open fds; no pointers.
            check(unsafe { libc::dup2(null.as_raw_fd(), target) }, || {
                format!("point fd {target} at /dev/null")
            })?;
        }
        Ok(Channel { input, output })
    }

    /// The fd to poll for the next frame.
    pub fn input_fd(&self) -> RawFd {
        self.input.as_raw_fd()
    }

    /// The next frame, or `None` when the worker closed the stream.
    pub fn read(&mut self) -> Result<Option<(ToAgent, Vec<u8>)>, AgentError> {
        Ok(read_frame(&mut self.input)?)
    }

    /// Sends one frame.
    pub fn send(&mut self, message: &FromAgent, payload: &[u8]) -> Result<(), AgentError> {
        Ok(write_frame(&mut self.output, message, payload)?)
    }
}
