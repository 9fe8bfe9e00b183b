//! Giving up power: capabilities, uid/gid, no-new-privileges, the seccomp filter, and the
//! process attributes the agent sets on itself (OOM score, subreaper).

use crate::error::{check, AgentError};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;
use std::fs;

/// System calls that fail with EPERM inside the sandbox: they change mounts, namespaces,
/// the kernel, or reach into other processes.
const DENIED: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_ptrace,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    // The new mount API reaches what `mount` does.
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
];

/// Calls that act on the process named by one argument, and which argument: allowed on
/// the caller itself (pid 0) only, so no process can lower the agent's limits (and blind
/// its sweep), or change another's priority or CPUs.
const SELF_ONLY: &[(libc::c_long, u8)] = &[
    (libc::SYS_prlimit64, 0),
    (libc::SYS_setpriority, 1),
    (libc::SYS_sched_setaffinity, 0),
    (libc::SYS_sched_setscheduler, 0),
    (libc::SYS_sched_setparam, 0),
    (libc::SYS_sched_setattr, 0),
];

/// `clone` flags that would create a namespace.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

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
/// with no supplementary groups. Must run as root.
pub fn drop_to(uid: u32, gid: u32) -> Result<(), AgentError> {
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
    check(unsafe { libc::setresgid(gid, gid, gid) }, || {
        format!("setresgid {gid}")
    })?;
    // SAFETY: plain integers.
    check(unsafe { libc::setresuid(uid, uid, uid) }, || {
        format!("setresuid {uid}")
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
            return Err(AgentError::Config(
                "privileges were not dropped: setresuid(0) still works".into(),
            ));
        }
    }
    Ok(())
}

fn denied_filter() -> Result<BpfProgram, AgentError> {
    let seccomp = |e: seccompiler::BackendError| AgentError::Seccomp(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|nr| (*nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let flag = u64::from(flag.unsigned_abs());
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(seccomp)?])
            .map_err(seccomp)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    for (nr, arg) in SELF_ONLY {
        let other = SeccompCondition::new(*arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0)
            .map_err(seccomp)?;
        rules.insert(*nr, vec![SeccompRule::new(vec![other]).map_err(seccomp)?]);
    }
    // setpriority's `who` 0 with PRIO_PGRP or PRIO_USER names a whole group or uid, the
    // agent's included: PRIO_PROCESS (0) only.
    let group =
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0).map_err(seccomp)?;
    rules
        .entry(libc::SYS_setpriority)
        .or_default()
        .push(SeccompRule::new(vec![group]).map_err(seccomp)?);
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| AgentError::Seccomp(e.to_string()))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )
    .map_err(seccomp)?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| AgentError::Seccomp(e.to_string()))
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
    for program in [denied_filter()?, enosys_filter()] {
        seccompiler::apply_filter(&program).map_err(|e| AgentError::Seccomp(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile() {
        let denied = denied_filter().unwrap();
        assert!(denied.len() > DENIED.len());
        assert_eq!(enosys_filter().len(), 6);
    }
}
