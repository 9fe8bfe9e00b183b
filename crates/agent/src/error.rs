//! What can go wrong inside the agent: each failure typed, with its cause kept.
//!
//! [`AgentError`] groups them by whose they are: the code package ([`PackageError`]),
//! what the worker asked for ([`ConfigError`]), the user's code failing to load
//! ([`CodeLoadError`], the one kind blamed on the user) and the runtime processes
//! ([`RuntimeError`]).

use crate::exit::{ending, ExitInfo};
use hearth_core::invocation::ErrorInfo;
use hearth_core::protocol::{FrameError, ToAgent, ARTIFACT_MANIFEST, ARTIFACT_PROGRAM};
use hearth_core::Runtime;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A failure of the agent itself (not of the user's handler, which is an outcome).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A system call failed; `what` names the call and the path or id involved.
    #[error("{what}: {source}")]
    Sys {
        /// The operation, e.g. `mount tmpfs on /run/x`.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The stream to the worker broke or carried garbage.
    #[error("agent protocol: {0}")]
    Frame(#[from] FrameError),
    /// The worker speaks another protocol version.
    #[error("protocol version mismatch: worker speaks {worker}, agent speaks {agent}")]
    Version {
        /// Version in the `Init` frame.
        worker: u32,
        /// [`hearth_core::protocol::PROTOCOL_VERSION`].
        agent: u32,
    },
    /// A frame other than `Init` came first.
    #[error("unexpected message: {0:?} before init")]
    BeforeInit(Box<ToAgent>),
    /// A second `Init` to a running instance.
    #[error("unexpected message: a second init")]
    SecondInit,
    /// A stem got something other than `Specialize` (or `Shutdown`).
    #[error("unexpected message: {0:?} in a stem")]
    InStem(Box<ToAgent>),
    /// The code tar is unsafe or unreadable.
    #[error("bad code package: {0}")]
    Package(#[from] PackageError),
    /// The unpacker process (see [`crate::code::extract_as`]) failed; `report` is what
    /// it said across the fork.
    #[error("{}{report}", if *.bad_package { "bad code package: " } else { "unpacking the code: " })]
    Unpacker {
        /// It refused the package (else something else went wrong).
        bad_package: bool,
        /// Its own message.
        report: String,
    },
    /// The setup asked for something the agent cannot do.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The seccomp filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccompiler::Error),
    /// The user's code failed to load.
    #[error(transparent)]
    CodeLoad(#[from] CodeLoadError),
    /// The runtime process misbehaved (died at start, spoke garbage).
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
}

/// Why the code package is refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The tar cannot be read.
    #[error("reading the code tar: {0}")]
    Read(#[source] io::Error),
    /// An entry's path is absolute or climbs out.
    #[error("entry {} is absolute or climbs out with ..", .0.display())]
    OutsidePath(PathBuf),
    /// A link pointing outside the code.
    #[error("{kind} {} -> {} points outside the code", .entry.display(), .target.display())]
    LinkOutside {
        /// `symlink` or `hard link`.
        kind: &'static str,
        /// The link.
        entry: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A device, fifo or other kind of entry.
    #[error("entry {} has a type hearth does not accept ({kind:?})", .entry.display())]
    EntryType {
        /// The entry.
        entry: PathBuf,
        /// Its tar type.
        kind: tar::EntryType,
    },
    /// The tar crate refused to unpack an entry inside the code dir.
    #[error("entry {} escapes the code dir", .0.display())]
    Escapes(PathBuf),
    /// Unpacking an entry failed.
    #[error("unpacking {}: {source}", .entry.display())]
    Unpack {
        /// The entry.
        entry: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A compiled function's artifact without a readable manifest.
    #[error("{ARTIFACT_MANIFEST} is not a manifest: {0}")]
    NotAManifest(#[source] serde_json::Error),
    /// A compiled function's artifact without its program.
    #[error("the artifact has no {ARTIFACT_PROGRAM}")]
    NoProgram,
}

/// The worker asked for something the agent cannot or may not do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A path no system call can take.
    #[error("path {} holds a NUL byte", .0.display())]
    NulInPath(PathBuf),
    /// The output dir belongs to someone else.
    #[error("output dir {} belongs to uid {owner}, not to uid {me} the function runs as", .path.display())]
    OutputDirOwner {
        /// The dir.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The uid the agent runs as.
        me: u32,
    },
    /// A path that should be a directory is something else.
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// After dropping privileges, root could be regained.
    #[error("privileges were not dropped: setresuid(0) still works")]
    PrivilegesKept,
    /// The parent (the worker) died while the agent changed credentials.
    #[error("the worker died")]
    WorkerDied,
    /// The cgroup fd the sandbox passed is not a usable fd number.
    #[error("bad {}={value:?}", hearth_core::protocol::FUNCTION_CGROUP_FD_ENV)]
    CgroupFd {
        /// The variable's value.
        value: OsString,
    },
    /// The worker's handover of the function's CPU group failed (see `cpu_handover.rs`).
    #[error("the CPU group handover failed: {0}")]
    CpuGroupHandover(&'static str),
    /// This agent has no such runtime.
    #[error("runtime {0} is not supported by this agent")]
    UnsupportedRuntime(Runtime),
    /// The interpreter must be named by an absolute path.
    #[error("interpreter {0:?} must be an absolute path")]
    RelativeInterpreter(String),
    /// A build instance for a runtime that builds nothing.
    #[error("runtime {0} is not compiled and installs nothing: nothing to build")]
    NothingToBuild(Runtime),
    /// The toolchain of a build is not there.
    #[error("the {runtime} toolchain {path} is missing")]
    MissingToolchain {
        /// The runtime built.
        runtime: Runtime,
        /// The toolchain's path.
        path: String,
    },
    /// A read-only dir that is not a plain absolute path.
    #[error("read-only dir {0:?} must be an absolute path without ..")]
    ReadOnlyDirPath(String),
    /// `/` asked for as a read-only dir.
    #[error("read-only dir / is not allowed")]
    ReadOnlyRoot,
    /// The dependency layer is not an existing dir by an absolute path.
    #[error("dependency layer {0:?} must be an existing directory, by an absolute path")]
    LayerPath(String),
    /// The native root's mount point is relative.
    #[error("mount point {0:?} must be absolute")]
    RelativeMountPoint(String),
    /// A stem asked to build.
    #[error("a stem only ever serves")]
    StemBuilds,
}

/// The user's code failed to load: the one failure before `Ready` that is the user's.
#[derive(Debug, thiserror::Error)]
pub enum CodeLoadError {
    /// The runtime reported the error (a traceback, or `Type: message`).
    #[error("{}", load_message(.0))]
    Reported(ErrorInfo),
    /// Loading took longer than the limit.
    #[error("{what} {}", span(.limit))]
    TooSlow {
        /// What did not happen in time, e.g. `loading main.py took longer than`.
        what: &'static str,
        /// The limit.
        limit: Duration,
    },
    /// A compiled function's program ended before it said it was ready.
    #[error("the function's program {} before it was ready: {stderr}", ending(.exit))]
    ProgramDied {
        /// How it ended.
        exit: ExitInfo,
        /// The end of its stderr.
        stderr: String,
    },
}

/// A runtime process misbehaved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A number the kernel gave does not fit.
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    /// A JSON encoding failed.
    #[error("encode {what}: {source}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// The runtime ended before loading the code, without reporting why.
    #[error("{runtime} {} before loading the code: {stderr}", ending(.exit))]
    Died {
        /// The runtime's process, e.g. `node`.
        runtime: &'static str,
        /// How it ended.
        exit: ExitInfo,
        /// The end of its stderr.
        stderr: String,
    },
    /// The pipe that starts a standby is closed.
    #[error("the standby's event pipe is closed")]
    StandbyPipeClosed,
    /// The standby could not be told to go.
    #[error("cannot start the standby")]
    StandbyNotStarted,
    /// The function's environment does not fit one message to the zygote.
    #[error("the function's environment is too large")]
    EnvironmentTooLarge,
    /// The python zygote sent a message over the size limit.
    #[error("oversized message from the python zygote")]
    ZygoteOversized,
    /// The python zygote sent a message that is not its JSON.
    #[error("unreadable message from the python zygote: {0}")]
    ZygoteGarbage(#[source] serde_json::Error),
    /// The python zygote exited while starting.
    #[error("the python zygote exited while starting: {log}")]
    ZygoteExited {
        /// What it printed.
        log: String,
    },
}

/// A limit for a message: whole seconds as `120 s`, else `250 ms`.
fn span(limit: &Duration) -> String {
    if limit.subsec_millis() == 0 && limit.as_secs() > 0 {
        format!("{} s", limit.as_secs())
    } else {
        format!("{} ms", limit.as_millis())
    }
}

impl AgentError {
    /// Wraps the current `errno` with a description of the failed call.
    pub fn last_os(what: impl Into<String>) -> Self {
        AgentError::Sys {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// Wraps an I/O error with a description of the failed call.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        AgentError::Sys {
            what: what.into(),
            source,
        }
    }

    /// Wraps an I/O error on `path`.
    pub fn at(verb: &str, path: &Path, source: io::Error) -> Self {
        AgentError::io(format!("{verb} {}", path.display()), source)
    }
}

/// Turns a `-1` return of a libc call into an [`AgentError::Sys`].
pub fn check(ret: libc::c_int, what: impl FnOnce() -> String) -> Result<libc::c_int, AgentError> {
    if ret == -1 {
        Err(AgentError::last_os(what()))
    } else {
        Ok(ret)
    }
}

/// The text of a failed code load for the worker: the runtime's traceback when it gave
/// one, else `Type: message`.
fn load_message(error: &ErrorInfo) -> String {
    if error.trace.trim().is_empty() {
        format!("{}: {}", error.kind, error.message)
    } else {
        error.trace.trim_end().to_string()
    }
}

/// Why an instance must not serve again after an early answer.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The zygote lost the thread and no new one could be started.
    #[error("the python zygote could not be restarted")]
    ZygoteLost,
    /// A process of the answered invocation survived the sweep.
    #[error("a process of the last invocation could not be killed")]
    Survivor,
    /// The scratch dirs could not be wiped.
    #[error("scratch dirs: {0}")]
    Scratch(#[source] AgentError),
    /// The output dir could not be emptied of what came after its archive.
    #[error("the output dir {path}: cannot {what}: {source}")]
    Output {
        /// The output dir.
        path: String,
        /// What failed (open, read, empty).
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}
