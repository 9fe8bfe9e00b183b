//! The protocol stream to the worker, moved off fds 0 and 1 so that no child can inherit it
//! or scribble on it. Every frame the agent sends goes through [`Channel`], one whole
//! frame per `write`, so frames never interleave.

use crate::error::{check, AgentError};
use crate::process;
use hearth_core::protocol::{
    read_frame, write_frame, FrameError, FromAgent, LogChunk, LogStream, ToAgent,
};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// Lowest fd number the stream is moved to.
const HIGH_FD: RawFd = 64;

/// Without `close_range` (a kernel before 5.9): closes fds 3 up to the open-file limit.
fn close_inherited_one_by_one(keep: Option<u32>) {
    // SAFETY: sysconf takes an integer.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max = if max > 0 {
        max.min(1 << 20) as RawFd
    } else {
        1024
    };
    for fd in (3..max).filter(|fd| keep.map(|k| k as RawFd) != Some(*fd)) {
        // SAFETY: closing an fd number nothing of ours uses yet; EBADF is expected.
        unsafe { libc::close(fd) };
    }
}

/// Where an invocation's stdout and stderr go as they are read.
pub trait LogSink {
    /// Takes `bytes` (never empty) just read from the process's `stream`.
    fn log(&mut self, stream: LogStream, bytes: &[u8]);
}

/// Frames in from the worker, frames out to it.
#[derive(Debug)]
pub struct Channel {
    input: File,
    output: File,
    /// Set when a frame could not be written; every later send fails with it.
    broken: Option<String>,
}

impl Channel {
    /// Takes the protocol stream from stdin/stdout: both are duplicated to high
    /// close-on-exec fds, then fds 0 and 1 are pointed at `/dev/null`. Every other fd
    /// inherited from the worker but `keep` (the adopted cgroup fd) is closed (not only marked close-on-exec: the agent's
    /// own forks, and the agent itself, must hold nothing of the host's). fd 2 stays for
    /// diagnostics.
    pub fn from_stdio(keep: Option<RawFd>) -> Result<Channel, AgentError> {
        let keep = keep
            .and_then(|fd| u32::try_from(fd).ok())
            .filter(|fd| *fd > 3);
        let ranges = match keep {
            Some(fd) => [(3, fd - 1), (fd + 1, u32::MAX)],
            None => [(3, u32::MAX), (1, 0)],
        };
        for (first, last) in ranges.into_iter().filter(|(f, l)| f <= l) {
            // SAFETY: close_range takes integers only; nothing of ours is open there.
            let closed = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
            if closed != 0 {
                close_inherited_one_by_one(keep);
                break;
            }
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
        Ok(Channel {
            input,
            output,
            broken: None,
        })
    }

    /// The fd to poll for the next frame.
    pub fn input_fd(&self) -> RawFd {
        self.input.as_raw_fd()
    }

    /// The next frame, or `None` when the worker closed the stream.
    pub fn read(&mut self) -> Result<Option<(ToAgent, Vec<u8>)>, AgentError> {
        Ok(read_frame(&mut self.input)?)
    }

    /// Sends one frame. Once a write failed, the stream is broken for good (a frame may
    /// have gone out in part) and every later send fails too.
    pub fn send(&mut self, message: &FromAgent, payload: &[u8]) -> Result<(), AgentError> {
        if let Some(why) = &self.broken {
            return Err(AgentError::io(
                "send to the worker",
                io::Error::new(io::ErrorKind::BrokenPipe, why.clone()),
            ));
        }
        write_frame(&mut self.output, message, payload).map_err(|e| {
            if let FrameError::Io(io) = &e {
                self.broken = Some(io.to_string());
            }
            AgentError::from(e)
        })
    }

    /// Sends one piece of the output tar as an `Output` frame.
    pub fn send_output(&mut self, piece: &[u8]) -> io::Result<()> {
        self.send(&FromAgent::Output, piece)
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
    }
}

impl LogSink for Channel {
    /// Sends the bytes as a `Log` frame at once. A failure is kept: the stream is
    /// broken, and the invocation's `Result` will fail to go out with it.
    fn log(&mut self, stream: LogStream, bytes: &[u8]) {
        if self.broken.is_none() {
            let _ = self.send(&FromAgent::Log(LogChunk { stream }), bytes);
        }
    }
}
