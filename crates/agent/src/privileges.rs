//! Giving up power: capabilities, uid/gid, no-new-privileges, the seccomp filter, and the
//! process attributes the agent sets on itself (OOM score, subreaper).

use crate::error::{check, AgentError, ConfigError};
use hearth_core::seccomp::{self as seccomp_policy, ArgCheck};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;
use std::fs;

/// Limits every process of the sandbox inherits: no core dumps (a dump of a function
/// holds its callers' data), at most [`NOFILE_LIMIT`] open files (as Docker's nofile
/// ulimit). Lowering needs no privilege; a limit already lower stays.
pub fn set_sandbox_limits() -> Result<(), AgentError> {
    for (resource, cap) in [(libc::RLIMIT_CORE, 0), (libc::RLIMIT_NOFILE, NOFILE_LIMIT)] {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is valid for writes.
        check(unsafe { libc::getrlimit(resource, &mut limit) }, || {
            "getrlimit".into()
        })?;
        limit.rlim_max = limit.rlim_max.min(cap);
        limit.rlim_cur = limit.rlim_cur.min(limit.rlim_max);
        // SAFETY: `limit` is a valid rlimit.
        check(unsafe { libc::setrlimit(resource, &limit) }, || {
            format!("setrlimit {resource} to {cap}")
        })?;
    }
    Ok(())
}

/// Open files per process in a sandbox.
pub const NOFILE_LIMIT: libc::rlim_t = 1024;

/// Whether the agent runs as root (and so must drop privileges).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Writes our own `oom_score_adj`.
pub fn set_oom_score_adj(value: i32) -> Result<(), AgentError> {
    fs::write("/proc/self/oom_score_adj", value.to_string())
        .map_err(|e| AgentError::io("write /proc/self/oom_score_adj", e))
}

/// Makes this process non-dumpable: its `/proc/<pid>/mem`, `environ`, fds and the like
/// belong to root, and no process of the same uid can ptrace it.
pub fn set_non_dumpable() -> Result<(), AgentError> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    check(ret, || "prctl PR_SET_DUMPABLE 0".into())?;
    Ok(())
}

/// Makes orphans of our descendants come back to us (when we are not PID 1).
pub fn become_subreaper() -> Result<(), AgentError> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    check(ret, || "prctl PR_SET_CHILD_SUBREAPER".into())?;
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability (bounding, ambient, then all sets) and becomes `uid`/`gid`
/// with no supplementary groups: effective, real and saved ids all, or, with
/// `agent_id`, effective only, the real and saved ids being `agent_id` (see
/// `InitSpec::agent_id`; [`become_effective_ids`] then makes a child wholly the
/// function's). Must run as root.
pub fn drop_to(uid: u32, gid: u32, agent_id: Option<u32>) -> Result<(), AgentError> {
    let (own_uid, own_gid) = agent_id.map_or((uid, gid), |id| (id, id));
    let last_cap: libc::c_ulong = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    for cap in 0..=last_cap {
        // SAFETY: prctl with integer arguments only. EINVAL for caps this kernel does not
        // know is expected and ignored.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: prctl with integer arguments only; fails harmlessly on kernels without
    // ambient capabilities.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // SAFETY: an empty group list: a null pointer with length 0.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }, || {
        "setgroups []".into()
    })?;
    // SAFETY: plain integers.
    check(unsafe { libc::setresgid(own_gid, gid, own_gid) }, || {
        format!("setresgid {own_gid} {gid} {own_gid}")
    })?;
    // SAFETY: plain integers.
    check(unsafe { libc::setresuid(own_uid, uid, own_uid) }, || {
        format!("setresuid {own_uid} {uid} {own_uid}")
    })?;
    // Leaving root cleared the permitted and effective sets; clear inheritable too.
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and data are the v3 layout capset expects (one header, two data).
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if ret != 0 {
        return Err(AgentError::last_os("capset (clear all)"));
    }
    if uid != 0 {
        // SAFETY: plain integers; this must fail now.
        if unsafe { libc::setresuid(0, 0, 0) } == 0 {
            return Err(ConfigError::PrivilegesKept.into());
        }
    }
    Ok(())
}

/// Asks the kernel to SIGKILL us when our parent dies.
pub fn die_with_parent() -> Result<(), AgentError> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    check(ret, || "prctl PR_SET_PDEATHSIG".into())?;
    Ok(())
}

/// The outer agent of a native sandbox, which only waits for PID 1 of the sandbox: it
/// becomes `id` with no capability at all, non-dumpable, and still dies with the worker.
pub fn leave_root_to_wait(id: u32) -> Result<(), AgentError> {
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    drop_to(id, id, None)?;
    set_non_dumpable()?;
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(ret, || "prctl PR_SET_NO_NEW_PRIVS".into())?;
    // Changing credentials cleared the parent-death signal: arm it again, then make sure
    // the worker did not die in between.
    die_with_parent()?;
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(ConfigError::WorkerDied.into());
    }
    Ok(())
}

/// In a freshly forked child of an agent whose real ids are not its effective ones:
/// makes the effective ids (the function's) its real and saved ones too, so that what it
/// runs is wholly the function's and holds nothing of the agent's. Needs no privilege (an
/// id may always be set to one the process already has). Async-signal-safe: for use
/// between fork and exec.
pub fn become_effective_ids() -> std::io::Result<()> {
    // SAFETY: getters and setters of plain integers, async-signal-safe.
    unsafe {
        let (uid, gid) = (libc::geteuid(), libc::getegid());
        if libc::getuid() == uid && libc::getgid() == gid {
            return Ok(());
        }
        if libc::setresgid(gid, gid, gid) != 0 || libc::setresuid(uid, uid, uid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The allow-list of `hearth_core::seccomp`: every other call fails with EPERM.
fn allow_list_filter() -> Result<BpfProgram, AgentError> {
    let seccomp = |e: seccompiler::BackendError| AgentError::Seccomp(e.into());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = seccomp_policy::ALLOWED
        .iter()
        .map(|(_, nr)| (*nr, Vec::new()))
        .collect();
    for conditional in seccomp_policy::CONDITIONAL {
        let mut alternatives = Vec::new();
        for checks in conditional.when {
            let conditions = checks
                .iter()
                .map(|check| match *check {
                    ArgCheck::Eq { index, value } => SeccompCondition::new(
                        index,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        u64::from(value),
                    ),
                    ArgCheck::NoneOf { index, mask } => SeccompCondition::new(
                        index,
                        SeccompCmpArgLen::Qword,
                        SeccompCmpOp::MaskedEq(mask),
                        0,
                    ),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(seccomp)?;
            alternatives.push(SeccompRule::new(conditions).map_err(seccomp)?);
        }
        rules.insert(conditional.syscall.1, alternatives);
    }
    let arch = std::env::consts::ARCH.try_into().map_err(seccomp)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        SeccompAction::Allow,
        arch,
    )
    .map_err(seccomp)?;
    filter.try_into().map_err(seccomp)
}

/// A hand-written filter for what seccompiler's one-action filters cannot say: `clone3`
/// fails with ENOSYS (its flags live in memory a filter cannot read; libc then falls back
/// to `clone`, which the other filter inspects), and so does every x32 system call, which
/// would otherwise slip past the numbers above.
fn enosys_filter() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x05 | 0x10;
    const JSET_K: u16 = 0x05 | 0x40;
    const RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs();
    let clone3 = u32::try_from(libc::SYS_clone3).unwrap_or(435);
    let mut prog = vec![ins(LD_W_ABS, 0, 0, 0)]; // seccomp_data.nr
    if cfg!(target_arch = "x86_64") {
        prog.push(ins(JSET_K, 0, 1, X32_SYSCALL_BIT));
        prog.push(ins(RET_K, 0, 0, enosys));
    }
    prog.push(ins(JEQ_K, 0, 1, clone3));
    prog.push(ins(RET_K, 0, 0, enosys));
    prog.push(ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    prog
}

/// Sets no-new-privileges and installs the seccomp filters on the agent; every process it
/// starts inherits them.
pub fn lock_down() -> Result<(), AgentError> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(ret, || "prctl PR_SET_NO_NEW_PRIVS".into())?;
    for program in [allow_list_filter()?, enosys_filter()] {
        seccompiler::apply_filter(&program)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile() {
        let allowed = allow_list_filter().unwrap();
        assert!(allowed.len() > seccomp_policy::ALLOWED.len());
        assert_eq!(enosys_filter().len(), 6);
    }

    /// Calls an unprivileged process may make, with arguments that get past the kernel's
    /// own checks (or fail with another errno than EPERM): only the filter says EPERM.
    fn probes(parent: libc::pid_t) -> Vec<(&'static str, [libc::c_long; 6])> {
        let p = libc::c_long::from(parent);
        vec![
            ("io_uring_setup", [libc::SYS_io_uring_setup, 1, 0, 0, 0, 0]),
            ("pidfd_getfd", [libc::SYS_pidfd_getfd, -1, 0, 0, 0, 0]),
            (
                "process_madvise",
                [libc::SYS_process_madvise, -1, 0, 0, 0, 0],
            ),
            ("kcmp", [libc::SYS_kcmp, 0, 0, 0, 0, 0]),
            (
                "personality",
                [libc::SYS_personality, 0x0040000, 0, 0, 0, 0],
            ),
            ("move_pages", [libc::SYS_move_pages, 0, 0, 0, 0, 0]),
            (
                "prlimit64 on another pid",
                [libc::SYS_prlimit64, p, 7, 0, 0, 0],
            ),
            (
                "setpriority on another pid",
                [libc::SYS_setpriority, 0, p, 0, 0, 0],
            ),
            (
                "userfaultfd (user mode)",
                [libc::SYS_userfaultfd, 1, 0, 0, 0, 0],
            ),
            ("add_key", [libc::SYS_add_key, 0, 0, 0, 0, 0]),
            (
                "perf_event_open",
                [libc::SYS_perf_event_open, 0, 0, -1, -1, 0],
            ),
            (
                "unshare (user)",
                [libc::SYS_unshare, 0x1000_0000, 0, 0, 0, 0],
            ),
        ]
    }

    /// Runs every probe in a forked child (with the filters installed when `filtered`)
    /// and returns, per probe, whether it failed with EPERM.
    fn probe_in_child(filtered: bool) -> Vec<(&'static str, bool)> {
        // SAFETY: getpid cannot fail.
        let parent = unsafe { libc::getpid() };
        let probes = probes(parent);
        let programs = [allow_list_filter().unwrap(), enosys_filter()];
        let mut fds = [0; 2];
        // SAFETY: `fds` is valid for two ints.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes raw system calls on memory prepared before the
        // fork, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut verdicts = [0u8; 16];
            // SAFETY: plain system calls with prepared arguments.
            unsafe {
                if filtered {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    for program in &programs {
                        let prog = libc::sock_fprog {
                            len: program.len() as u16,
                            filter: program.as_ptr() as *mut libc::sock_filter,
                        };
                        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog);
                    }
                }
                for (i, (_, a)) in probes.iter().enumerate() {
                    let ret = libc::syscall(a[0], a[1], a[2], a[3], a[4], a[5]);
                    let eperm = ret < 0 && *libc::__errno_location() == libc::EPERM;
                    verdicts[i] = u8::from(eperm);
                }
                libc::write(fds[1], verdicts.as_ptr().cast(), verdicts.len());
                libc::_exit(0);
            }
        }
        let mut verdicts = [0u8; 16];
        // SAFETY: reading into a buffer of its length; waiting for our own child.
        unsafe {
            libc::close(fds[1]);
            assert_eq!(libc::read(fds[0], verdicts.as_mut_ptr().cast(), 16), 16);
            libc::close(fds[0]);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        probes
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (*name, verdicts[i] == 1))
            .collect()
    }

    #[test]
    fn each_probe_is_open_without_the_filter_and_eperm_with_it() {
        for (name, eperm) in probe_in_child(false) {
            assert!(
                !eperm,
                "{name} fails with EPERM without the filter: a useless probe"
            );
        }
        for (name, eperm) in probe_in_child(true) {
            assert!(eperm, "{name} is not stopped by the filter");
        }
    }
}
