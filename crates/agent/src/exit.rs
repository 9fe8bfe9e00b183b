//! How a process ended: the wait status and rusage the agent reads with `wait4`, and how
//! an ending reads in a message. A leaf: it imports nothing of the agent, so the error
//! type and the process code can both use it.

/// How a process ended and what it used, from `wait4`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExitInfo {
    /// The raw wait status.
    pub status: i32,
    /// `ru_maxrss`, KB.
    pub maxrss_kb: u64,
    /// User CPU time, ms.
    pub user_ms: f64,
    /// System CPU time, ms.
    pub system_ms: f64,
}

impl ExitInfo {
    pub(crate) fn from_rusage(status: i32, ru: &libc::rusage) -> Self {
        let ms = |tv: libc::timeval| tv.tv_sec as f64 * 1000.0 + tv.tv_usec as f64 / 1000.0;
        ExitInfo {
            status,
            maxrss_kb: u64::try_from(ru.ru_maxrss).unwrap_or(0),
            user_ms: ms(ru.ru_utime),
            system_ms: ms(ru.ru_stime),
        }
    }

    /// An exit we know happened but could not observe (the status was lost).
    pub fn unknown() -> Self {
        ExitInfo {
            status: -1,
            maxrss_kb: 0,
            user_ms: 0.0,
            system_ms: 0.0,
        }
    }

    /// The exit code, when the process exited on its own.
    pub fn exit_code(&self) -> Option<i32> {
        (self.status >= 0 && libc::WIFEXITED(self.status)).then(|| libc::WEXITSTATUS(self.status))
    }

    /// The signal that killed the process, when one did.
    pub fn signal(&self) -> Option<i32> {
        (self.status >= 0 && libc::WIFSIGNALED(self.status)).then(|| libc::WTERMSIG(self.status))
    }
}

/// A readable name for the common signals.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGSYS => "SIGSYS",
        _ => "a signal",
    }
}

/// How a process ended, for a message: `exited with code 2`, `was killed by signal 9
/// (SIGKILL)`.
pub fn ending(exit: &ExitInfo) -> String {
    match (exit.exit_code(), exit.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (_, Some(signal)) => {
            format!("was killed by signal {signal} ({})", signal_name(signal))
        }
        _ => "ended".to_string(),
    }
}
