//! hearth-agent: PID 1 of every sandbox. It turns a sandbox into a function instance and
//! runs each invocation in a fresh process.
//!
//! Owns: the agent side of the protocol in `hearth_core::protocol` (frames on its stdin
//! and stdout, moved to high fds at once so no child can touch them); the native sandbox's
//! root file system (tmpfs root, read-only binds, minimal `/dev` and `/etc`, pivot);
//! dropping privileges (capabilities, uid/gid, no-new-privileges, seccomp); keeping the
//! next invocation's process ready (a Python zygote that forks, a Node.js standby); and
//! making sure no process of an invocation outlives it.
//!
//! Never: creates namespaces or cgroups (the worker spawns it inside them), reads cgroup
//! counters (the worker does, after the result or the `Settled` frame), talks to anything but its own
//! stdio (in a container, also the worker's one connection handing it its CPU group at
//! start), or runs user code in a process that outlives its invocation.
//!
//! Layout: `main.rs` (startup and the frame loop), `channel.rs` (the protocol stream),
//! `setup.rs` (root file system), `code.rs` (code tar, runtime files), `cpu_group.rs`
//! (the cgroup with the function's CPU quota), `cpu_handover.rs` (its fd, in a container), `privileges.rs` (caps, uid, seccomp), `instance.rs` (what runtimes share), `runner.rs` (the trait
//! every runtime implements), `runtime.rs` (which runtime serves: the only file that
//! knows them all), `python.rs` (zygote), `node.rs` (standby), `binary.rs` (compiled
//! programs), `build.rs` (their build), `manifest.rs` (the artifact's manifest, written
//! by the build and read by `binary.rs`), `standby.rs` (a process fed its event on a
//! pipe, kept ready), `process.rs` (spawn, pipes, wait), `run.rs` (one invocation's
//! outcome), `output.rs` (the output dir: archive, quota, emptying), `sweep.rs`
//! (leftover killing), `log_cap.rs` (the cap on one invocation's full log).
//!
//! Verb (one per layer, README "One call, followed down"): `serve` (`Runner::serve`: one
//! invocation, from its `Invoke` frame, in a fresh process), and below it `supervise`
//! (`Proc::supervise`: feed the event, watch, kill and reap).
//!
//! Frames of one invocation, in order: `Log`* while the process runs (every piece of
//! stdout/stderr as read, up to the invocation's `log_limit_bytes`, then a marker),
//! then `Output`* (the output dir's tar, when it is not empty), then `Result`.
//! A Python invocation whose process has written its result and closed its pipes is
//! answered while that process exits (its `Result` says `settles`); its exit, the sweep
//! and the scratch wipe follow the `Result` (`Runner::settle`), then a `Settled` frame
//! says they are done (and whether the instance may serve again), before the next
//! frame is read: the worker meters the invocation up to that frame.
//!
//! Modes (`InitSpec::root`): `Native` (the worker spawned it as root in fresh mount, pid,
//! net, ipc and uts namespaces: it forks PID 1, builds a tmpfs root, pivots, drops to the
//! function's uid) and `Existing` (a container or a test: `code/`, `runtime/` and `tmp/`
//! go under `$HEARTH_AGENT_ROOT`, default `/`; privileges are dropped only when root).
//!
//! Built as a static binary, in its own target dir:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p hearth-agent \
//!     --target x86_64-unknown-linux-gnu --target-dir target/agent
//! ```
//!
//! which leaves it at `target/agent/x86_64-unknown-linux-gnu/release/hearth-agent`.

/// Writes one diagnostic line on the agent's stderr (the worker's log).
macro_rules! diag {
    ($($arg:tt)*) => {
        eprintln!("hearth-agent: {}", format_args!($($arg)*))
    };
}
pub(crate) use diag;

mod binary;
mod build;
mod channel;
mod code;
mod cpu_group;
mod cpu_handover;
mod error;
mod exit;
mod install;
mod instance;
mod log_cap;
mod manifest;
mod node;
mod output;
mod privileges;
mod process;
mod python;
mod run;
mod runner;
mod runtime;
mod scratch;
mod setup;
mod standby;
mod stem;
mod sweep;

use channel::Channel;
use error::SettleError;
use error::{AgentError, ConfigError};
use hearth_core::protocol::{
    AgentFailure, FailurePhase, FromAgent, InitSpec, ReadyInfo, RootSetup, SettleReport, ToAgent,
    PROTOCOL_VERSION,
};
use instance::Instance;
use output::OutputDir;
use runner::Runner;
use std::path::Path;
use std::time::Instant;
use sweep::{Scope, Sweeper};

fn main() {
    // `hearth-agent --write-runtime-files DIR`: how `hearth images build` gets the exact
    // runtime files this agent expects, to bake them into a container image.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let [flag, dir] = args.as_slice() {
        if flag == "--write-runtime-files" {
            if let Err(e) = code::write_runtime_files(Path::new(dir)) {
                diag!("{e}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
    }
    std::process::exit(agent_main());
}

fn agent_main() -> i32 {
    // First of all: no process of the same uid may open our memory through /proc or
    // attach to us (on Docker the function shares our uid from the start).
    if let Err(e) = privileges::set_non_dumpable() {
        diag!("{e}");
        return 2;
    }
    // SAFETY: umask only sets a process attribute.
    unsafe { libc::umask(0o022) };
    // The one inherited fd the agent keeps (moved high), before every other is closed.
    // In a container the same fd comes over a socket (before anything else runs there).
    let adopted = cpu_group::adopt().and_then(|()| cpu_handover::receive());
    let mut channel = match Channel::from_stdio(cpu_group::fd()) {
        Ok(channel) => channel,
        Err(e) => {
            diag!("cannot take the protocol stream: {e}");
            return 2;
        }
    };
    if let Err(e) = adopted {
        return fail(&mut channel, FailurePhase::Setup, &e);
    }
    let started = Instant::now();
    let (mut spec, code) = match channel.read() {
        Ok(Some((ToAgent::Init(spec), code))) => (spec, code),
        Ok(Some((ToAgent::Shutdown, _)) | None) => return 0,
        Ok(Some((other, _))) => {
            let e = AgentError::BeforeInit(Box::new(other));
            return fail(&mut channel, before_ready(&e), &e);
        }
        Err(e) => return fail(&mut channel, before_ready(&e), &e),
    };
    if let Err(e) = preflight(&spec) {
        return fail(&mut channel, before_ready(&e), &e);
    }
    if matches!(spec.root, RootSetup::Native { .. }) {
        match become_pid1() {
            Ok(Some(child)) => {
                // The parent only waits: it must not keep the stream or the code alive,
                // nor any power.
                drop((channel, code));
                if let Err(e) = privileges::leave_root_to_wait(spec.agent_id.unwrap_or(spec.uid)) {
                    diag!("the waiting agent cannot give up root: {e}");
                    return 1;
                }
                return wait_for_pid1(child);
            }
            Ok(None) => {}
            Err(e) => return fail(&mut channel, before_ready(&e), &e),
        }
    }
    let mut instance = match init(&spec, &code) {
        Ok(instance) => instance,
        Err(e) => return fail(&mut channel, before_ready(&e), &e),
    };
    drop(code);
    let (started, mut runner) = if spec.stem {
        let waiting = match stem::prestart(&spec, &mut instance) {
            Ok(waiting) => waiting,
            Err(e) => return fail(&mut channel, before_ready(&e), &e),
        };
        if !send_ready(&mut channel, &mut instance, started) {
            return 1;
        }
        match stem::await_function(&mut channel, &mut spec, waiting, &mut instance) {
            Ok(Some(specialized)) => specialized,
            Ok(None) => {
                kill_all(&mut instance);
                return 0;
            }
            Err(e) => {
                kill_all(&mut instance);
                return fail(&mut channel, before_ready(&e), &e);
            }
        }
    } else {
        match runtime::start(spec.runtime, spec.purpose, &mut instance) {
            Ok(runner) => (started, runner),
            Err(e) => return fail(&mut channel, before_ready(&e), &e),
        }
    };
    if !send_ready(&mut channel, &mut instance, started) {
        return 1;
    }
    let code = match serve(&mut channel, runner.as_mut(), &mut instance) {
        Ok(()) => 0,
        Err(e) => fail(&mut channel, FailurePhase::Runtime, &e),
    };
    kill_all(&mut instance);
    code
}

/// Tells the worker the instance is ready (init or specialization took since
/// `started`); false, with every process killed, when it cannot.
fn send_ready(channel: &mut Channel, instance: &mut Instance, started: Instant) -> bool {
    let ready = FromAgent::Ready(ReadyInfo {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        init_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
    if let Err(e) = channel.send(&ready, &[]) {
        diag!("cannot send ready: {e}");
        kill_all(instance);
        return false;
    }
    true
}

/// Whose fault a failure before `Ready` is: the code's only when it failed to load;
/// anything else (mounts, seccomp, privileges, a missing toolchain) is the platform's.
fn before_ready(error: &AgentError) -> FailurePhase {
    match error {
        AgentError::CodeLoad(_) => FailurePhase::CodeLoad,
        _ => FailurePhase::Setup,
    }
}

/// Reports a failure to the worker (best effort) and returns the exit code.
fn fail(channel: &mut Channel, phase: FailurePhase, error: &AgentError) -> i32 {
    diag!("{phase} failed: {error}");
    let failure = FromAgent::Failed(AgentFailure {
        phase,
        message: error.to_string(),
    });
    if let Err(e) = channel.send(&failure, &[]) {
        diag!("cannot report the failure: {e}");
    }
    1
}

/// Checks what can be checked before touching anything.
fn preflight(spec: &InitSpec) -> Result<(), AgentError> {
    if spec.protocol_version != PROTOCOL_VERSION {
        return Err(AgentError::Version {
            worker: spec.protocol_version,
            agent: PROTOCOL_VERSION,
        });
    }
    if !spec.runtime.is_supported() {
        return Err(ConfigError::UnsupportedRuntime(spec.runtime).into());
    }
    if !Path::new(&spec.interpreter).is_absolute() {
        return Err(ConfigError::RelativeInterpreter(spec.interpreter.clone()).into());
    }
    Ok(())
}

/// Forks so that the child is PID 1 of the pid namespace the worker unshared (it only
/// applies to children). Returns the child's pid in the parent, `None` in the child.
fn become_pid1() -> Result<Option<libc::pid_t>, AgentError> {
    privileges::die_with_parent()?;
    // SAFETY: the agent is single-threaded here, so the child may go on running Rust code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(AgentError::last_os("fork PID 1")),
        0 => {
            privileges::die_with_parent()?;
            Ok(None)
        }
        child => Ok(Some(child)),
    }
}

/// The parent's whole life after the fork: wait for PID 1 and exit as it did.
fn wait_for_pid1(child: libc::pid_t) -> i32 {
    match process::wait4(child, false) {
        Ok(Some((_, info))) => info
            .exit_code()
            .or(info.signal().map(|s| 128 + s))
            .unwrap_or(1),
        Ok(None) | Err(_) => 1,
    }
}

/// Builds the sandbox, drops privileges and locks down; returns the instance.
fn init(spec: &InitSpec, code: &[u8]) -> Result<Instance, AgentError> {
    let (layout, scope) = match &spec.root {
        RootSetup::Native {
            mount_point,
            read_only_dirs,
            root_size_mb,
            layer_dir,
        } => {
            let root = setup::NativeRoot {
                mount_point,
                read_only_dirs,
                layer_dir: layer_dir.as_deref(),
                root_size_mb: *root_size_mb,
                tmp_size_mb: spec.tmp_size_mb,
                output_size_mb: spec.output_size_mb,
                uid: spec.uid,
                gid: spec.gid,
                unpacker_id: spec.agent_id.unwrap_or(spec.uid),
                stem: spec.stem,
            };
            (setup::native(&root, code)?, Scope::Namespace)
        }
        RootSetup::Existing => {
            privileges::become_subreaper()?;
            // PID 1 of a container owns its whole pid namespace; otherwise (tests, a
            // shared namespace) only our descendants are ours.
            let scope = if std::process::id() == 1 {
                Scope::Namespace
            } else {
                Scope::Descendants
            };
            let output = (spec.output_size_mb > 0).then_some((spec.uid, spec.gid));
            (setup::existing(code, output)?, scope)
        }
    };
    // Losing the agent loses the instance: let the OOM killer pick the invocation. Needs
    // CAP_SYS_RESOURCE, which some hosts withhold even from root; then it is only logged.
    if let Err(e) = privileges::set_oom_score_adj(-1000) {
        diag!("cannot protect the agent from the OOM killer: {e}");
    }
    privileges::set_sandbox_limits()?;
    if privileges::is_root() {
        privileges::drop_to(spec.uid, spec.gid, spec.agent_id)?;
    }
    // Changing credentials cleared the parent-death signal, and may have reset the
    // dumpable flag (to the host's `suid_dumpable`).
    privileges::die_with_parent()?;
    privileges::set_non_dumpable()?;
    privileges::lock_down()?;
    let output = match &layout.output {
        Some(path) => Some(OutputDir::open(path.clone(), spec.output_size_mb)?),
        None => None,
    };
    let env = instance::environment(spec, &layout);
    let scratch = match scope {
        Scope::Namespace => scratch::ScratchDirs::new(&[&layout.tmp, Path::new(scratch::SHM_DIR)]),
        // A test or a shared namespace: only a tmp dir under a base of our own, never
        // the host's /tmp or /dev/shm.
        Scope::Descendants if std::env::var_os("HEARTH_AGENT_ROOT").is_some() => {
            scratch::ScratchDirs::new(&[&layout.tmp])
        }
        Scope::Descendants => scratch::ScratchDirs::new(&[]),
    };
    Ok(Instance {
        scratch,
        interpreter: spec.interpreter.clone(),
        env,
        output_limit: usize::try_from(spec.inline_output_limit).unwrap_or(usize::MAX),
        reaper: process::Reaper::default(),
        sweeper: Sweeper::new("/proc", scope, std::process::id() as i32),
        layout,
        output,
    })
}

/// The frame loop: one invocation at a time until `Shutdown` or the end of the stream.
///
/// An invocation answered before its process ended ([`Runner::answered_early`]) is
/// settled right after its result went out and before the next frame is read: the
/// sweep, then the scratch dirs and what reached the output dir after it was archived;
/// a `Settled` frame then tells the worker how that went.
/// When that fails, the instance answers every later invocation with an unhealthy crash
/// without running it (the worker then replaces it).
fn serve(
    channel: &mut Channel,
    runner: &mut dyn Runner,
    inst: &mut Instance,
) -> Result<(), AgentError> {
    let mut unfit: Option<String> = None;
    loop {
        let mut fds = vec![process::pollfd(channel.input_fd(), libc::POLLIN)];
        fds.extend(
            runner
                .idle_fds()
                .into_iter()
                .map(|fd| process::pollfd(fd, libc::POLLIN)),
        );
        process::poll(&mut fds, None)?;
        if fds[1..].iter().any(|f| f.revents != 0) {
            runner.on_idle(inst);
        }
        if fds[0].revents == 0 {
            continue;
        }
        match channel.read()? {
            None | Some((ToAgent::Shutdown, _)) => return Ok(()),
            Some((ToAgent::Invoke(spec), _)) if unfit.is_some() => {
                let why = format!(
                    "the instance cannot serve again: {}",
                    unfit.as_deref().unwrap_or_default()
                );
                let finished = run::not_run(&spec.request_id, why);
                channel.send(&FromAgent::Result(finished.outcome), &finished.payload)?;
            }
            Some((ToAgent::Invoke(spec), event)) => {
                let mut log = log_cap::LogCap::new(channel, spec.log_limit_bytes);
                let mut finished = runner.serve(inst, &spec, &event, &mut log)?;
                if log.truncated() {
                    diag!(
                        "log of {} cut at {} bytes: {} more dropped",
                        spec.request_id,
                        spec.log_limit_bytes,
                        log.dropped()
                    );
                    finished.outcome.output.truncated = true;
                }
                let early = runner.answered_early();
                // Answered early only with the output dir empty (the runner looked);
                // whatever reaches it after that is discarded in `settle`.
                if let Some(output) = inst.output.as_ref().filter(|_| !early) {
                    // Every process of the invocation is gone: nothing writes there now.
                    let collected = output.collect(&mut |piece| channel.send_output(piece));
                    finished.outcome.output_bytes = collected.bytes;
                    finished.outcome.output_quota_exceeded = collected.quota_exceeded;
                    if let Some(fault) = collected.fault {
                        diag!("output dir of {}: {fault}", spec.request_id);
                        finished.outcome.healthy = false;
                    }
                }
                // Nothing one caller wrote is there for the next.
                if !early {
                    if let Err(fault) = inst.scratch.wipe() {
                        diag!("scratch dirs after {}: {fault}", spec.request_id);
                        finished.outcome.healthy = false;
                    }
                }
                finished.outcome.settles = early;
                channel.send(&FromAgent::Result(finished.outcome), &finished.payload)?;
                if early {
                    let settled = settle(runner, inst);
                    let report = SettleReport {
                        request_id: spec.request_id.clone(),
                        healthy: settled.is_ok(),
                        problem: settled.as_ref().err().map(ToString::to_string),
                    };
                    // The worker reads the cgroup's counters for the invocation when
                    // this arrives: nothing of the next one has started.
                    channel.send(&FromAgent::Settled(report), &[])?;
                    if let Err(why) = settled {
                        diag!("after {}: {why}", spec.request_id);
                        unfit = Some(why.to_string());
                        continue;
                    }
                }
                runner.after_result(inst);
            }
            Some((ToAgent::Init(_) | ToAgent::Specialize(_), _)) => {
                return Err(AgentError::SecondInit);
            }
        }
    }
}

/// What follows an early answer: the runtime's sweep, then the scratch dirs wiped and
/// the output dir emptied of anything written after it was archived.
fn settle(runner: &mut dyn Runner, inst: &mut Instance) -> Result<(), SettleError> {
    runner.settle(inst)?;
    inst.scratch.wipe().map_err(SettleError::Scratch)?;
    if let Some(output) = &inst.output {
        if output.discard()? {
            diag!("discarded what reached the output dir after it was archived");
        }
    }
    Ok(())
}

/// Kills every process of the instance, runtime processes included.
fn kill_all(inst: &mut Instance) {
    let report = inst.sweeper.sweep(&[], &[], &mut inst.reaper);
    if !report.converged {
        diag!("some processes survived the final sweep");
    }
}
