//! The cgroup logic against fixture trees (as the kernel would lay them out).

use super::*;
use crate::Usage;
use std::fs;
use tempfile::TempDir;

const MIB: u64 = 1 << 20;

fn limits() -> CgroupLimits {
    CgroupLimits {
        memory_bytes: 128 * MIB,
        pids_max: 64,
        cpu: CpuQuota::cpus(1.0),
    }
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

/// A fake host: `<tmp>/cgroup` as the cgroup root, `<tmp>/proc` as procfs.
struct Fixture {
    tmp: TempDir,
}

impl Fixture {
    fn cgroup(&self) -> PathBuf {
        self.tmp.path().join("cgroup")
    }

    fn config(&self) -> CgroupConfig {
        CgroupConfig {
            fs_root: self.cgroup(),
            proc_root: self.tmp.path().join("proc"),
            ..CgroupConfig::default()
        }
    }

    /// The v1 hybrid layout of the build machine, with `cpu,cpuacct` co-mounted and
    /// this process in `/session` of the memory hierarchy.
    fn v1(with_memsw: bool, with_usage_user: bool) -> Self {
        let fixture = Self {
            tmp: tempfile::tempdir().unwrap(),
        };
        let root = fixture.cgroup();
        let r = root.display();
        write(
            &fixture.tmp.path().join("proc/self/mountinfo"),
            &format!(
                "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                 31 23 0:28 / {r} rw,relatime - tmpfs tmpfs rw,mode=755\n\
                 32 31 0:29 / {r}/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                 35 31 0:32 / {r}/memory rw,relatime - cgroup cgroup rw,memory\n\
                 38 31 0:35 / {r}/blkio rw,relatime - cgroup cgroup rw,blkio\n\
                 39 31 0:36 / {r}/pids rw,relatime - cgroup cgroup rw,pids\n\
                 40 31 0:37 / {r}/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                 41 31 0:38 / {r}/unified rw,relatime - cgroup2 cgroup2 rw\n\
                 50 1 0:40 / /elsewhere/memory rw - cgroup cgroup rw,memory\n"
            ),
        );
        write(
            &fixture.tmp.path().join("proc/self/cgroup"),
            "9:name=systemd:/\n8:pids:/\n7:blkio:/\n4:memory:/session\n1:cpu,cpuacct:/\n0::/\n",
        );
        write(&root.join("unified/cgroup.controllers"), "");
        fixture.v1_instance_files("i1", with_memsw, with_usage_user);
        fixture
    }

    /// What the kernel puts in a new v1 instance directory.
    fn v1_instance_files(&self, id: &str, with_memsw: bool, with_usage_user: bool) {
        let root = self.cgroup();
        let memory = root.join("memory/session/hearth").join(id);
        write(&memory.join("cgroup.procs"), "");
        write(
            &memory.join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        write(&memory.join("memory.max_usage_in_bytes"), "7\n");
        write(&memory.join("memory.swappiness"), "60\n");
        write(
            &memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        );
        if with_memsw {
            write(
                &memory.join("memory.memsw.limit_in_bytes"),
                "9223372036854771712\n",
            );
        }
        let pids = root.join("pids/hearth").join(id);
        write(&pids.join("cgroup.procs"), "");
        write(&pids.join("pids.max"), "max\n");
        let cpu = root.join("cpu,cpuacct/hearth").join(id);
        write(&cpu.join("cgroup.procs"), "");
        write(&cpu.join("cpu.cfs_period_us"), "100000\n");
        write(&cpu.join("cpu.cfs_quota_us"), "-1\n");
        write(&cpu.join("cpu.shares"), "1024\n");
        let function = cpu.join("fn");
        write(&function.join("cgroup.procs"), "");
        write(&function.join("cpu.cfs_period_us"), "100000\n");
        write(&function.join("cpu.cfs_quota_us"), "-1\n");
        if with_usage_user {
            write(&cpu.join("cpuacct.usage_user"), "1000\n");
            write(&cpu.join("cpuacct.usage_sys"), "500\n");
        }
        write(&cpu.join("cpuacct.stat"), "user 10\nsystem 5\n");
        write(&cpu.join("cpuacct.usage"), "1600\n");
        let blkio = root.join("blkio/hearth").join(id);
        write(&blkio.join("cgroup.procs"), "");
        write(
            &blkio.join("blkio.throttle.io_service_bytes"),
            "8:0 Read 100\n8:0 Write 200\n8:0 Total 300\nTotal 300\n",
        );
    }

    /// A v2 host: the unified hierarchy at the cgroup root.
    fn v2(with_io: bool) -> Self {
        let fixture = Self {
            tmp: tempfile::tempdir().unwrap(),
        };
        let root = fixture.cgroup();
        write(
            &fixture.tmp.path().join("proc/self/mountinfo"),
            &format!(
                "22 27 0:21 / /proc rw - proc proc rw\n\
                 31 23 0:28 / {} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
                root.display()
            ),
        );
        write(
            &fixture.tmp.path().join("proc/self/cgroup"),
            "0::/user.slice/session-1.scope\n",
        );
        write(
            &root.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids\n",
        );
        write(&root.join("cgroup.subtree_control"), "");
        let group = root.join("hearth");
        write(&group.join("cgroup.controllers"), "cpu io memory pids\n");
        write(&group.join("cgroup.subtree_control"), "");
        let dir = group.join("i1");
        write(&dir.join("cgroup.procs"), "");
        write(&dir.join("cgroup.kill"), "");
        write(&dir.join("memory.max"), "max\n");
        write(&dir.join("memory.swap.max"), "max\n");
        write(&dir.join("memory.peak"), "7\n");
        write(&dir.join("pids.max"), "max\n");
        write(&dir.join("cpu.max"), "max 100000\n");
        write(
            &dir.join("cpu.stat"),
            "usage_usec 30\nuser_usec 20\nsystem_usec 10\nnice_usec 0\nnr_periods 0\n",
        );
        write(
            &dir.join("memory.events"),
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        );
        if with_io {
            write(
                &dir.join("io.stat"),
                "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
            );
        }
        fixture
    }
}

#[test]
fn v1_hybrid_is_found_through_the_mount_table() {
    let fixture = Fixture::v1(true, true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    assert_eq!(host.version(), CgroupVersion::V1);
    let root = fixture.cgroup();
    assert_eq!(
        host.group_dirs(),
        vec![
            root.join("memory/session/hearth"),
            root.join("pids/hearth"),
            root.join("cpu,cpuacct/hearth"),
            root.join("blkio/hearth"),
        ]
    );
    let parented = CgroupHost::detect(&CgroupConfig {
        parent: Some(PathBuf::from("/hearth.slice")),
        ..fixture.config()
    })
    .unwrap();
    assert_eq!(
        parented.group_dirs()[0],
        root.join("memory/hearth.slice/hearth")
    );
}

#[test]
fn no_memory_hierarchy_is_unavailable() {
    let fixture = Fixture::v1(false, false);
    write(
        &fixture.tmp.path().join("proc/self/mountinfo"),
        &format!(
            "39 31 0:36 / {}/pids rw - cgroup cgroup rw,pids\n",
            fixture.cgroup().display()
        ),
    );
    let err = CgroupHost::detect(&fixture.config()).unwrap_err();
    assert!(matches!(err, SandboxError::Unavailable(_)), "{err:?}");
}

#[test]
fn v1_instance_gets_its_limits_without_swap() {
    let fixture = Fixture::v1(true, true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    host.prepare().unwrap();
    let cgroup = host.create("i1", &limits()).unwrap();
    let root = fixture.cgroup();
    let memory = root.join("memory/session/hearth/i1");
    assert_eq!(read(&memory.join("memory.limit_in_bytes")), "134217728");
    assert_eq!(
        read(&memory.join("memory.memsw.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(read(&memory.join("memory.swappiness")), "0");
    assert_eq!(read(&root.join("pids/hearth/i1/pids.max")), "64");
    // The quota is the function's (the `fn` child); the agent's group is only weighted.
    let cpu = root.join("cpu,cpuacct/hearth/i1");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "-1\n");
    assert_eq!(read(&cpu.join("cpu.shares")), "4096");
    assert_eq!(read(&cpu.join("fn/cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("fn/cpu.cfs_quota_us")), "100000");
    assert_eq!(
        cgroup.function_procs_file(),
        Some(cpu.join("fn/cgroup.procs").as_path())
    );
    assert_eq!(cgroup.dirs().last(), Some(&cpu.join("fn")), "removed first");
    let procs: Vec<&[u8]> = cgroup.procs_files().iter().map(|c| c.as_bytes()).collect();
    assert_eq!(procs.len(), 4);
    assert!(procs[0].ends_with(b"memory/session/hearth/i1/cgroup.procs"));
}

#[test]
fn an_instance_never_starts_silently_without_its_swap_or_cpu_limit() {
    // Without memsw (swap accounting off): refused, with the way out in the message.
    let fixture = Fixture::v1(false, true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    let err = host.create("i1", &limits()).unwrap_err().to_string();
    assert!(err.contains("swapaccount=1"), "{err}");
    assert!(err.contains("--allow-missing-limits"), "{err}");
    // Unless explicitly allowed: then the memory limit alone is set.
    let host = CgroupHost::detect(&CgroupConfig {
        allow_missing_limits: true,
        ..fixture.config()
    })
    .unwrap();
    let _cgroup = host.create("i1", &limits()).unwrap();
    let memory = fixture.cgroup().join("memory/session/hearth/i1");
    assert!(!memory.join("memory.memsw.limit_in_bytes").exists());
    // v2 without cpu.max: the same.
    let fixture = Fixture::v2(true);
    std::fs::remove_file(fixture.cgroup().join("hearth/i1/cpu.max")).unwrap();
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    let err = host.create("i1", &limits()).unwrap_err().to_string();
    assert!(err.contains("CPU"), "{err}");
}

#[test]
fn v1_meter_resets_the_peak_and_reports_deltas_and_oom() {
    let fixture = Fixture::v1(true, true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    let mut cgroup = host.create("i1", &limits()).unwrap();
    let root = fixture.cgroup();
    let memory = root.join("memory/session/hearth/i1");
    let cpu = root.join("cpu,cpuacct/hearth/i1");
    let blkio = root.join("blkio/hearth/i1");
    let meter = cgroup.meter().unwrap();
    assert_eq!(meter.version(), CgroupVersion::V1);

    let before = meter.begin().unwrap();
    assert_eq!(read(&memory.join("memory.max_usage_in_bytes")), "0\n");
    assert_eq!(
        before,
        Counters {
            cpu_total_ns: 1600,
            cpu_user_ns: 1000,
            cpu_system_ns: 500,
            io_read_bytes: 100,
            io_write_bytes: 200,
            oom_kills: 0
        }
    );
    // The invocation runs: the kernel moves the numbers.
    write(&memory.join("memory.max_usage_in_bytes"), "104857600\n");
    write(&cpu.join("cpuacct.usage_user"), "5000\n");
    write(&cpu.join("cpuacct.usage_sys"), "1500\n");
    write(&cpu.join("cpuacct.usage"), "11600\n");
    write(
        &blkio.join("blkio.throttle.io_service_bytes"),
        "8:0 Read 100\n8:0 Write 4296\n8:0 Total 4396\nTotal 4396\n",
    );
    write(
        &memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    );
    let usage = meter.finish(&before).unwrap();
    assert_eq!(
        usage,
        Usage {
            peak_bytes: 100 * MIB,
            cpu_user_ns: 8000,
            cpu_system_ns: 2000,
            io_read_bytes: 0,
            io_write_bytes: 4096,
            oom_killed: true,
        }
    );
    // The next invocation starts from the new counters: no OOM this time.
    let before = meter.begin().unwrap();
    assert!(!meter.finish(&before).unwrap().oom_killed);
}

#[test]
fn v1_cpu_falls_back_to_cpuacct_stat_ticks() {
    let fixture = Fixture::v1(true, false);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    let mut cgroup = host.create("i1", &limits()).unwrap();
    let counters = cgroup.meter().unwrap().counters().unwrap();
    let tick = meter_ns_per_tick();
    assert_eq!(
        (counters.cpu_user_ns, counters.cpu_system_ns),
        (10 * tick, 5 * tick)
    );
}

fn meter_ns_per_tick() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    1_000_000_000 / hz
}

#[test]
fn v2_enables_controllers_down_to_the_group_and_limits_the_instance() {
    let fixture = Fixture::v2(true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    assert_eq!(host.version(), CgroupVersion::V2);
    let root = fixture.cgroup();
    assert_eq!(host.group_dirs(), vec![root.join("hearth")]);
    host.prepare().unwrap();
    for dir in [root.clone(), root.join("hearth")] {
        let control = read(&dir.join("cgroup.subtree_control"));
        for controller in ["+memory", "+pids", "+cpu", "+io"] {
            assert!(control.contains(controller), "{dir:?}: {control}");
        }
    }
    let cgroup = host.create("i1", &limits()).unwrap();
    let dir = root.join("hearth/i1");
    assert_eq!(read(&dir.join("memory.max")), "134217728");
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("pids.max")), "64");
    assert_eq!(read(&dir.join("cpu.max")), "100000 100000");
    assert_eq!(cgroup.procs_files().len(), 1);
}

#[test]
fn v2_without_a_required_controller_is_unavailable() {
    let fixture = Fixture::v2(false);
    write(
        &fixture.cgroup().join("cgroup.controllers"),
        "cpu io memory\n",
    );
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    let err = host.prepare().unwrap_err();
    assert!(
        matches!(&err, SandboxError::Unavailable(m) if m.contains("pids")),
        "{err:?}"
    );
}

#[test]
fn v2_meter_resets_through_its_fd_and_reports_deltas_and_oom() {
    let fixture = Fixture::v2(true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    let mut cgroup = host.create("i1", &limits()).unwrap();
    let dir = fixture.cgroup().join("hearth/i1");
    let meter = cgroup.meter().unwrap();
    assert!(meter.peak_resettable());
    let before = meter.begin().unwrap();
    assert!(read(&dir.join("memory.peak")).starts_with("reset"));
    assert_eq!(
        before,
        Counters {
            cpu_total_ns: 30_000,
            cpu_user_ns: 20_000,
            cpu_system_ns: 10_000,
            io_read_bytes: 4096,
            io_write_bytes: 0,
            oom_kills: 0
        }
    );
    write(&dir.join("memory.peak"), "11534336\n");
    write(
        &dir.join("cpu.stat"),
        "usage_usec 330\nuser_usec 220\nsystem_usec 110\nnice_usec 0\n",
    );
    write(
        &dir.join("io.stat"),
        "8:0 rbytes=8192 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n",
    );
    write(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    );
    assert_eq!(
        meter.finish(&before).unwrap(),
        Usage {
            peak_bytes: 11 * MIB,
            cpu_user_ns: 200_000,
            cpu_system_ns: 100_000,
            io_read_bytes: 4096,
            io_write_bytes: 512,
            oom_killed: true,
        }
    );
}

#[test]
fn v2_without_io_stat_reads_zero_io() {
    let fixture = Fixture::v2(false);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    let mut cgroup = host.create("i1", &limits()).unwrap();
    let counters = cgroup.meter().unwrap().counters().unwrap();
    assert_eq!((counters.io_read_bytes, counters.io_write_bytes), (0, 0));
}

#[test]
fn destroy_and_sweep_remove_the_instance_directories() {
    let fixture = Fixture::v1(true, true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    host.prepare().unwrap();
    let cgroup = host.create("i1", &limits()).unwrap();
    let dirs = cgroup.dirs().to_vec();
    assert!(cgroup.pids().is_empty());
    // The kernel's control files vanish with the directory; a fixture's must go first.
    for dir in &dirs {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                fs::remove_file(path).unwrap();
            }
        }
    }
    assert!(cgroup.destroy());
    assert!(dirs.iter().all(|d| !d.exists()));

    // Orphans of an earlier run, in some hierarchies only.
    for group in host.group_dirs() {
        fs::create_dir_all(group.join("old-1")).unwrap();
    }
    fs::create_dir_all(fixture.cgroup().join("pids/hearth/old-2")).unwrap();
    // An orphan's function group goes before the orphan.
    fs::create_dir_all(fixture.cgroup().join("cpu,cpuacct/hearth/old-1/fn")).unwrap();
    assert_eq!(host.sweep_orphans(), 2);
    for group in host.group_dirs() {
        assert_eq!(fs::read_dir(&group).unwrap().count(), 0, "{group:?}");
    }
}

#[test]
fn instance_ids_must_be_plain_names() {
    let fixture = Fixture::v1(true, true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    for bad in ["", "..", "../x", "a/b", ".hidden", "a\0b", "spa ce"] {
        let err = host.create(bad, &limits()).unwrap_err();
        assert!(
            matches!(err, SandboxError::Spawn { .. }),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn cpu_quota_from_cpus() {
    assert_eq!(
        CpuQuota::cpus(1.5),
        CpuQuota {
            quota_us: 150_000,
            period_us: 100_000
        }
    );
    assert_eq!(CpuQuota::cpus(0.0).quota_us, 1000);
    assert_eq!(CpuQuota::cpus(f64::NAN).quota_us, 1000);
    let floor = CpuQuota::cpus(hearth_core::function::MIN_CPUS);
    assert_eq!((floor.v1_shares(), floor.v2_weight()), (1024, 100));
    let one = CpuQuota::cpus(1.0);
    assert_eq!((one.v1_shares(), one.v2_weight()), (4096, 400));
    assert_eq!(CpuQuota::cpus(1000.0).v2_weight(), 10_000);
}

/// Runs the bench's measurement on a fixture; asserts nothing about time.
#[test]
fn peak_reading_can_be_timed() {
    let fixture = Fixture::v1(true, true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    let mut cgroup = host.create("i1", &limits()).unwrap();
    let meter = cgroup.meter().unwrap();
    time_peak_reading(meter, 10).unwrap();
    time_usage_reading(meter, 10).unwrap();
}

/// A read-only kernfs file holding a number: kernfs refuses to open it for writing
/// (EACCES, even for root), as it does `memory.peak` before Linux 6.12.
fn read_only_kernfs_number() -> PathBuf {
    [
        "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        "/sys/kernel/uevent_seqnum",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| {
        fs::read_to_string(p).is_ok_and(|t| t.trim().parse::<u64>().is_ok())
            && fs::OpenOptions::new().write(true).open(p).is_err()
    })
    .expect(
        "no read-only kernfs file with a number on this host to stand in for an old memory.peak",
    )
}

#[test]
fn v2_meter_falls_back_to_the_instance_peak_when_memory_peak_is_read_only() {
    let fixture = Fixture::v2(true);
    let host = CgroupHost::detect(&fixture.config()).unwrap();
    let peak = fixture.cgroup().join("hearth/i1/memory.peak");
    let old_kernel_peak = read_only_kernfs_number();
    fs::remove_file(&peak).unwrap();
    std::os::unix::fs::symlink(&old_kernel_peak, &peak).unwrap();
    let mut cgroup = host.create("i1", &limits()).unwrap();
    let meter = cgroup.meter().unwrap();
    assert!(!meter.peak_resettable(), "the peak cannot be reset here");
    let before = meter.begin().unwrap();
    let usage = meter.finish(&before).unwrap();
    let lifetime: u64 = read(&old_kernel_peak).trim().parse().unwrap();
    assert_eq!(
        usage.peak_bytes, lifetime,
        "the reading is the instance's lifetime peak, unreset"
    );
}
