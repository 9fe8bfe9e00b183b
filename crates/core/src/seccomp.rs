//! The system calls a sandboxed process may make (x86_64): one allow-list, modelled on
//! runc's and Docker's default profile, which the agent compiles into its seccomp filter
//! and the Docker backend gives the engine as the container's profile. Everything else
//! fails with EPERM.
//!
//! Left out on purpose, although Docker's profile has some of them: `io_uring_*` (a way
//! around every other rule), `pidfd_getfd`, `process_madvise`, `process_vm_*`, `kcmp`,
//! `ptrace`, `move_pages` and `migrate_pages` (they reach into other processes),
//! `userfaultfd`, `perf_event_open`, `bpf`, the keyring calls, and all that changes
//! mounts, namespaces, the clock or the kernel.

/// A call allowed whatever its arguments: `(libc name, number)`.
pub type Syscall = (&'static str, i64);

macro_rules! syscalls {
    ($($sys:ident),* $(,)?) => {
        &[$((stringify!($sys), libc::$sys)),*]
    };
}

/// Calls allowed whatever their arguments.
pub const ALLOWED: &[Syscall] = syscalls![
    SYS_accept,
    SYS_accept4,
    SYS_access,
    SYS_alarm,
    SYS_arch_prctl,
    SYS_bind,
    SYS_brk,
    SYS_capget,
    SYS_capset,
    SYS_chdir,
    SYS_chmod,
    SYS_chown,
    SYS_clock_getres,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_close,
    SYS_close_range,
    SYS_connect,
    SYS_copy_file_range,
    SYS_creat,
    SYS_dup,
    SYS_dup2,
    SYS_dup3,
    SYS_epoll_create,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_epoll_wait,
    SYS_eventfd,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fadvise64,
    SYS_fallocate,
    SYS_fchdir,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchown,
    SYS_fchownat,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_fgetxattr,
    SYS_flistxattr,
    SYS_flock,
    SYS_fork,
    SYS_fremovexattr,
    SYS_fsetxattr,
    SYS_fstat,
    SYS_fstatfs,
    SYS_fsync,
    SYS_ftruncate,
    SYS_futex,
    SYS_futex_waitv,
    SYS_futimesat,
    SYS_get_mempolicy,
    SYS_get_robust_list,
    SYS_get_thread_area,
    SYS_getcpu,
    SYS_getcwd,
    SYS_getdents,
    SYS_getdents64,
    SYS_getegid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getgroups,
    SYS_getitimer,
    SYS_getpeername,
    SYS_getpgid,
    SYS_getpgrp,
    SYS_getpid,
    SYS_getppid,
    SYS_getpriority,
    SYS_getrandom,
    SYS_getresgid,
    SYS_getresuid,
    SYS_getrlimit,
    SYS_getrusage,
    SYS_getsid,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_gettid,
    SYS_gettimeofday,
    SYS_getuid,
    SYS_getxattr,
    SYS_inotify_add_watch,
    SYS_inotify_init,
    SYS_inotify_init1,
    SYS_inotify_rm_watch,
    SYS_io_cancel,
    SYS_io_destroy,
    SYS_io_getevents,
    SYS_io_setup,
    SYS_io_submit,
    SYS_ioctl,
    SYS_ioprio_get,
    SYS_ioprio_set,
    SYS_kill,
    SYS_landlock_add_rule,
    SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self,
    SYS_lchown,
    SYS_lgetxattr,
    SYS_link,
    SYS_linkat,
    SYS_listen,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_lremovexattr,
    SYS_lseek,
    SYS_lsetxattr,
    SYS_lstat,
    SYS_madvise,
    SYS_membarrier,
    SYS_memfd_create,
    SYS_mincore,
    SYS_mkdir,
    SYS_mkdirat,
    SYS_mknod,
    SYS_mknodat,
    SYS_mlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_mmap,
    SYS_mprotect,
    SYS_mq_getsetattr,
    SYS_mq_notify,
    SYS_mq_open,
    SYS_mq_timedreceive,
    SYS_mq_timedsend,
    SYS_mq_unlink,
    SYS_mremap,
    SYS_msgctl,
    SYS_msgget,
    SYS_msgrcv,
    SYS_msgsnd,
    SYS_msync,
    SYS_munlock,
    SYS_munlockall,
    SYS_munmap,
    SYS_name_to_handle_at,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_open,
    SYS_openat,
    SYS_openat2,
    SYS_pause,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pipe,
    SYS_pipe2,
    SYS_pkey_alloc,
    SYS_pkey_free,
    SYS_pkey_mprotect,
    SYS_poll,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_preadv,
    SYS_preadv2,
    SYS_process_mrelease,
    SYS_pselect6,
    SYS_pwrite64,
    SYS_pwritev,
    SYS_pwritev2,
    SYS_read,
    SYS_readahead,
    SYS_readlink,
    SYS_readlinkat,
    SYS_readv,
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_remap_file_pages,
    SYS_removexattr,
    SYS_rename,
    SYS_renameat,
    SYS_renameat2,
    SYS_restart_syscall,
    SYS_rmdir,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigpending,
    SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn,
    SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait,
    SYS_rt_tgsigqueueinfo,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_getaffinity,
    SYS_sched_getattr,
    SYS_sched_getparam,
    SYS_sched_getscheduler,
    SYS_sched_rr_get_interval,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_select,
    SYS_semctl,
    SYS_semget,
    SYS_semop,
    SYS_semtimedop,
    SYS_sendfile,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    SYS_set_robust_list,
    SYS_set_thread_area,
    SYS_set_tid_address,
    SYS_setfsgid,
    SYS_setfsuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_setitimer,
    SYS_setpgid,
    SYS_setregid,
    SYS_setresgid,
    SYS_setresuid,
    SYS_setreuid,
    SYS_setrlimit,
    SYS_setsid,
    SYS_setsockopt,
    SYS_setuid,
    SYS_setxattr,
    SYS_shmat,
    SYS_shmctl,
    SYS_shmdt,
    SYS_shmget,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_signalfd,
    SYS_signalfd4,
    SYS_socket,
    SYS_socketpair,
    SYS_splice,
    SYS_stat,
    SYS_statfs,
    SYS_statx,
    SYS_symlink,
    SYS_symlinkat,
    SYS_sync,
    SYS_sync_file_range,
    SYS_syncfs,
    SYS_sysinfo,
    SYS_tee,
    SYS_tgkill,
    SYS_time,
    SYS_timer_create,
    SYS_timer_delete,
    SYS_timer_getoverrun,
    SYS_timer_gettime,
    SYS_timer_settime,
    SYS_timerfd_create,
    SYS_timerfd_gettime,
    SYS_timerfd_settime,
    SYS_times,
    SYS_tkill,
    SYS_truncate,
    SYS_umask,
    SYS_uname,
    SYS_unlink,
    SYS_unlinkat,
    SYS_utime,
    SYS_utimensat,
    SYS_utimes,
    SYS_vfork,
    SYS_vmsplice,
    SYS_wait4,
    SYS_waitid,
    SYS_write,
    SYS_writev,
];

/// One condition on a call's argument (compared as 64 bits; pids and flags as 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgCheck {
    /// Argument `index` (its low 32 bits) equals `value`.
    Eq {
        /// Which argument, from 0.
        index: u8,
        /// The value it must have.
        value: u32,
    },
    /// Argument `index` has none of the bits of `mask`.
    NoneOf {
        /// Which argument, from 0.
        index: u8,
        /// The bits it must not have.
        mask: u64,
    },
}

/// A call allowed when every check of one of its alternatives holds.
#[derive(Debug, Clone, Copy)]
pub struct Conditional {
    /// `(libc name, number)`.
    pub syscall: Syscall,
    /// Alternatives (any), each a list of checks (all).
    pub when: &'static [&'static [ArgCheck]],
}

/// The `clone` flags that create a namespace.
pub const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32 as u64;

const ON_SELF: &[&[ArgCheck]] = &[&[ArgCheck::Eq { index: 0, value: 0 }]];

/// Calls allowed with some arguments only: a thread or process without a new namespace;
/// limits, priorities and CPUs of the caller itself (pid 0), so that no process can
/// lower the agent's limits (and blind its sweep) or starve another; `personality`
/// queried, never changed (no ASLR off for a child).
pub const CONDITIONAL: &[Conditional] = &[
    Conditional {
        syscall: ("SYS_clone", libc::SYS_clone),
        when: &[&[ArgCheck::NoneOf {
            index: 0,
            mask: NAMESPACE_FLAGS,
        }]],
    },
    Conditional {
        syscall: ("SYS_prlimit64", libc::SYS_prlimit64),
        when: ON_SELF,
    },
    Conditional {
        syscall: ("SYS_setpriority", libc::SYS_setpriority),
        // PRIO_PROCESS (0) of the caller (0): a group or a uid would reach the agent.
        when: &[&[
            ArgCheck::Eq { index: 0, value: 0 },
            ArgCheck::Eq { index: 1, value: 0 },
        ]],
    },
    Conditional {
        syscall: ("SYS_sched_setaffinity", libc::SYS_sched_setaffinity),
        when: ON_SELF,
    },
    Conditional {
        syscall: ("SYS_sched_setscheduler", libc::SYS_sched_setscheduler),
        when: ON_SELF,
    },
    Conditional {
        syscall: ("SYS_sched_setparam", libc::SYS_sched_setparam),
        when: ON_SELF,
    },
    Conditional {
        syscall: ("SYS_sched_setattr", libc::SYS_sched_setattr),
        when: ON_SELF,
    },
    Conditional {
        syscall: ("SYS_personality", libc::SYS_personality),
        when: &[
            &[ArgCheck::Eq {
                index: 0,
                value: 0xffff_ffff,
            }],
            &[ArgCheck::Eq { index: 0, value: 0 }],
        ],
    },
];

/// The kernel's name of a call (`SYS_read` → `read`).
pub fn name(syscall: &Syscall) -> &'static str {
    syscall.0.strip_prefix("SYS_").unwrap_or(syscall.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn no_call_is_listed_twice_and_the_dangerous_ones_are_out() {
        let mut seen = HashSet::new();
        for call in ALLOWED.iter().chain(CONDITIONAL.iter().map(|c| &c.syscall)) {
            assert!(seen.insert(call.1), "{} twice", call.0);
        }
        for closed in [
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_pidfd_getfd,
            libc::SYS_process_madvise,
            libc::SYS_kcmp,
            libc::SYS_move_pages,
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_userfaultfd,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_clone3,
        ] {
            assert!(!seen.contains(&closed), "{closed} is allowed");
        }
        assert_eq!(name(&ALLOWED[0]), "accept");
    }
}
