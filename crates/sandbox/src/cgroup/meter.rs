//! Per-invocation usage, read straight from an instance's cgroup files.
//!
//! A [`UsageMeter`] opens its files once, when the instance is created, and from then on
//! only `pread`s them from offset 0 (and `pwrite`s the peak reset): two system calls per
//! file on every invocation, no path lookups, no allocation.

use super::{cgroup_error, CgroupVersion};
use crate::{SandboxError, Usage};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Counters that only grow; a [`Usage`] is the difference of two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// CPU time, user and system together, ns. Exact (the scheduler's own count).
    pub cpu_total_ns: u64,
    /// User CPU time, ns. On v1 sampled at each timer tick (4 ms here), so only its
    /// share of user + system is used.
    pub cpu_user_ns: u64,
    /// System CPU time, ns; sampled like `cpu_user_ns`.
    pub cpu_system_ns: u64,
    /// Block bytes read.
    pub io_read_bytes: u64,
    /// Block bytes written.
    pub io_write_bytes: u64,
    /// OOM kills in the cgroup so far.
    pub oom_kills: u64,
}

/// An open cgroup file and its path (for errors).
#[derive(Debug)]
struct Source {
    file: File,
    path: PathBuf,
}

impl Source {
    fn open(path: PathBuf, writable: bool) -> Result<Self, SandboxError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|e| cgroup_error(&path, e))?;
        Ok(Self { file, path })
    }

    fn open_if_present(path: PathBuf) -> Result<Option<Self>, SandboxError> {
        if path.exists() {
            Self::open(path, false).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads the whole file into `buf` (grown as needed) and returns its text.
    fn read<'b>(&self, buf: &'b mut Vec<u8>) -> Result<&'b str, SandboxError> {
        let len = read_whole(&self.file, buf).map_err(|e| cgroup_error(&self.path, e))?;
        std::str::from_utf8(&buf[..len])
            .map_err(|e| cgroup_error(&self.path, io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    fn read_u64(&self, buf: &mut Vec<u8>) -> Result<u64, SandboxError> {
        let text = self.read(buf)?;
        text.trim()
            .parse()
            .map_err(|e| cgroup_error(&self.path, io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    fn write(&self, value: &[u8]) -> Result<(), SandboxError> {
        self.file
            .write_at(value, 0)
            .map(drop)
            .map_err(|e| cgroup_error(&self.path, e))
    }
}

/// Reads a file from offset 0 with `pread`. A short read ends it: cgroup files are
/// produced whole by one `show` call, so a read that did not fill the buffer saw all.
fn read_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut len = 0;
    loop {
        let n = file.read_at(&mut buf[len..], len as u64)?;
        len += n;
        if n == 0 || len < buf.len() {
            return Ok(len);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// Where CPU time comes from.
#[derive(Debug)]
enum CpuSource {
    /// v1 `cpuacct.usage` (exact total) with `cpuacct.usage_user` / `cpuacct.usage_sys`
    /// (tick samples), ns.
    V1Ns {
        total: Source,
        user: Source,
        system: Source,
    },
    /// v1 `cpuacct.usage` with `cpuacct.stat` (older kernels), USER_HZ ticks.
    V1Ticks {
        total: Source,
        stat: Source,
        ns_per_tick: u64,
    },
    /// v2 `cpu.stat`, µs.
    V2 { stat: Source },
    /// No CPU accounting on this host.
    None,
}

/// Where block I/O comes from.
#[derive(Debug)]
enum IoSource {
    /// v1 `blkio.throttle.io_service_bytes`.
    V1(Source),
    /// v2 `io.stat`.
    V2(Source),
    /// No I/O accounting on this host.
    None,
}

/// Where the OOM kill counter comes from.
#[derive(Debug)]
enum OomSource {
    /// v1 `memory.oom_control`, line `oom_kill N`.
    V1(Source),
    /// v2 `memory.events`, line `oom_kill N`.
    V2(Source),
}

/// Reads one instance's usage; open for the instance's life.
#[derive(Debug)]
pub struct UsageMeter {
    version: CgroupVersion,
    /// v1 `memory.max_usage_in_bytes` or v2 `memory.peak`, open read-write.
    peak: Source,
    /// False on a v2 kernel older than 6.12, where `memory.peak` cannot be reset: the
    /// peak is then the instance's lifetime peak.
    peak_resettable: bool,
    cpu: CpuSource,
    io: IoSource,
    oom: OomSource,
    buf: Vec<u8>,
}

impl UsageMeter {
    /// Opens the v1 files: `memory` dir, optional `cpuacct` and `blkio` dirs.
    pub(super) fn open_v1(
        memory: &Path,
        cpuacct: Option<&Path>,
        blkio: Option<&Path>,
    ) -> Result<Self, SandboxError> {
        let cpu = match cpuacct {
            Some(dir) if dir.join("cpuacct.usage_user").exists() => CpuSource::V1Ns {
                total: Source::open(dir.join("cpuacct.usage"), false)?,
                user: Source::open(dir.join("cpuacct.usage_user"), false)?,
                system: Source::open(dir.join("cpuacct.usage_sys"), false)?,
            },
            Some(dir) => CpuSource::V1Ticks {
                total: Source::open(dir.join("cpuacct.usage"), false)?,
                stat: Source::open(dir.join("cpuacct.stat"), false)?,
                ns_per_tick: ns_per_user_hz_tick(),
            },
            None => CpuSource::None,
        };
        let io = match blkio {
            Some(dir) => Source::open_if_present(dir.join("blkio.throttle.io_service_bytes"))?
                .map_or(IoSource::None, IoSource::V1),
            None => IoSource::None,
        };
        Ok(Self {
            version: CgroupVersion::V1,
            peak: Source::open(memory.join("memory.max_usage_in_bytes"), true)?,
            peak_resettable: true,
            cpu,
            io,
            oom: OomSource::V1(Source::open(memory.join("memory.oom_control"), false)?),
            buf: Vec::new(),
        })
    }

    /// Opens the v2 files of the instance's directory.
    pub(super) fn open_v2(dir: &Path) -> Result<Self, SandboxError> {
        // Before Linux 6.12 `memory.peak` has no write handler, and kernfs refuses to
        // open it for writing at all (EACCES, even for root): read it read-only then.
        let peak_path = dir.join("memory.peak");
        let (peak, peak_resettable) = match Source::open(peak_path.clone(), true) {
            Ok(peak) => (peak, true),
            Err(_) => (Source::open(peak_path, false)?, false),
        };
        let mut meter = Self {
            version: CgroupVersion::V2,
            peak,
            peak_resettable,
            cpu: CpuSource::V2 {
                stat: Source::open(dir.join("cpu.stat"), false)?,
            },
            io: Source::open_if_present(dir.join("io.stat"))?.map_or(IoSource::None, IoSource::V2),
            oom: OomSource::V2(Source::open(dir.join("memory.events"), false)?),
            buf: Vec::new(),
        };
        if !meter.peak_resettable {
            tracing::warn!(
                "memory.peak is read-only (kernel older than 6.12?): peaks are per instance, not per invocation"
            );
        } else if let Err(e) = meter.reset_peak() {
            tracing::warn!(
                error = %e,
                "memory.peak cannot be reset (kernel older than 6.12?): peaks are per instance, not per invocation"
            );
            meter.peak_resettable = false;
        }
        Ok(meter)
    }

    /// Opens the meter of the cgroup that process `pid` is in, as another manager made
    /// it (a container engine: `pid` is the container's init). `<proc_root>/<pid>/cgroup`
    /// names the cgroup and this process's mount table (`<proc_root>/self/mountinfo`)
    /// says where each hierarchy is mounted, so v1, v2 with the cgroupfs driver and v2
    /// with the systemd driver (`…/docker-<id>.scope`) all work. v1 when the memory
    /// controller is on a v1 hierarchy, else the unified (v2) one.
    pub fn for_process(config: &super::CgroupConfig, pid: u32) -> Result<Self, SandboxError> {
        use super::mounts::{cgroup_dir, parse_mountinfo, parse_proc_cgroup};
        let read =
            |path: PathBuf| std::fs::read_to_string(&path).map_err(|e| cgroup_error(&path, e));
        let mounts: Vec<_> = parse_mountinfo(&read(config.proc_root.join("self/mountinfo"))?)
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&config.fs_root))
            .collect();
        let cgroup_file = config.proc_root.join(pid.to_string()).join("cgroup");
        let members = parse_proc_cgroup(&read(cgroup_file.clone())?);
        let v1_dir = |controller: &str| -> Option<PathBuf> {
            let mount = mounts.iter().find(|m| m.is_v1_with(controller))?;
            let member = members
                .iter()
                .find(|m| m.controllers.iter().any(|c| c == controller))?;
            Some(cgroup_dir(mount, &member.path))
        };
        if let Some(memory) = v1_dir("memory") {
            return Self::open_v1(
                &memory,
                v1_dir("cpuacct").as_deref(),
                v1_dir("blkio").as_deref(),
            );
        }
        let unified = mounts.iter().find(|m| m.fstype == "cgroup2");
        let member = members.iter().find(|m| m.controllers.is_empty());
        match (unified, member) {
            (Some(mount), Some(member)) => Self::open_v2(&cgroup_dir(mount, &member.path)),
            _ => Err(cgroup_error(
                &cgroup_file,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "process {pid} is in no memory cgroup mounted under {}",
                        config.fs_root.display()
                    ),
                ),
            )),
        }
    }

    /// Which cgroup version the files belong to.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Whether [`reset_peak`](Self::reset_peak) really starts a new peak.
    pub fn peak_resettable(&self) -> bool {
        self.peak_resettable
    }

    /// Starts a new peak at the current usage (v1: writes `0` to
    /// `memory.max_usage_in_bytes`; v2: writes to the open `memory.peak`, which resets
    /// it for this file descriptor only).
    pub fn reset_peak(&mut self) -> Result<(), SandboxError> {
        if !self.peak_resettable {
            return Ok(());
        }
        match self.version {
            CgroupVersion::V1 => self.peak.write(b"0"),
            CgroupVersion::V2 => self.peak.write(b"reset"),
        }
    }

    /// The peak memory since the last reset, bytes.
    pub fn read_peak(&mut self) -> Result<u64, SandboxError> {
        self.peak.read_u64(&mut self.buf)
    }

    /// Reads the growing counters.
    pub fn counters(&mut self) -> Result<Counters, SandboxError> {
        let mut counters = Counters::default();
        match &self.cpu {
            CpuSource::V1Ns {
                total,
                user,
                system,
            } => {
                counters.cpu_total_ns = total.read_u64(&mut self.buf)?;
                counters.cpu_user_ns = user.read_u64(&mut self.buf)?;
                counters.cpu_system_ns = system.read_u64(&mut self.buf)?;
            }
            CpuSource::V1Ticks {
                total,
                stat,
                ns_per_tick,
            } => {
                counters.cpu_total_ns = total.read_u64(&mut self.buf)?;
                let text = stat.read(&mut self.buf)?;
                counters.cpu_user_ns = field(text, "user").saturating_mul(*ns_per_tick);
                counters.cpu_system_ns = field(text, "system").saturating_mul(*ns_per_tick);
            }
            CpuSource::V2 { stat } => {
                let text = stat.read(&mut self.buf)?;
                counters.cpu_total_ns = field(text, "usage_usec").saturating_mul(1000);
                counters.cpu_user_ns = field(text, "user_usec").saturating_mul(1000);
                counters.cpu_system_ns = field(text, "system_usec").saturating_mul(1000);
            }
            CpuSource::None => {}
        }
        match &self.io {
            IoSource::V1(source) => {
                (counters.io_read_bytes, counters.io_write_bytes) =
                    parse_v1_io(source.read(&mut self.buf)?);
            }
            IoSource::V2(source) => {
                (counters.io_read_bytes, counters.io_write_bytes) =
                    parse_v2_io(source.read(&mut self.buf)?);
            }
            IoSource::None => {}
        }
        let (OomSource::V1(source) | OomSource::V2(source)) = &self.oom;
        counters.oom_kills = field(source.read(&mut self.buf)?, "oom_kill");
        Ok(counters)
    }

    /// Before an invocation: resets the peak and snapshots the counters.
    pub fn begin(&mut self) -> Result<Counters, SandboxError> {
        self.reset_peak()?;
        self.counters()
    }

    /// After an invocation: the usage since `before` (from [`begin`](Self::begin)).
    pub fn finish(&mut self, before: &Counters) -> Result<Usage, SandboxError> {
        let peak_bytes = self.read_peak()?;
        let after = self.counters()?;
        Ok(usage_between(before, &after, peak_bytes))
    }
}

/// The usage between two snapshots. Counters never go backwards; if one seems to (a
/// wrapped or reset counter), the delta is 0 rather than a huge number.
///
/// CPU: the exact total is split between user and system in the proportion of the
/// sampled user and system deltas; a run too short to be sampled counts as user time.
pub fn usage_between(before: &Counters, after: &Counters, peak_bytes: u64) -> Usage {
    let total = after.cpu_total_ns.saturating_sub(before.cpu_total_ns);
    let user = after.cpu_user_ns.saturating_sub(before.cpu_user_ns);
    let system = after.cpu_system_ns.saturating_sub(before.cpu_system_ns);
    let cpu_user_ns = match user.checked_add(system) {
        Some(0) | None => total,
        Some(sampled) => (u128::from(total) * u128::from(user) / u128::from(sampled)) as u64,
    };
    Usage {
        peak_bytes,
        cpu_user_ns,
        cpu_system_ns: total - cpu_user_ns,
        io_read_bytes: after.io_read_bytes.saturating_sub(before.io_read_bytes),
        io_write_bytes: after.io_write_bytes.saturating_sub(before.io_write_bytes),
        oom_killed: after.oom_kills > before.oom_kills,
    }
}

/// Average cost of one memory-peak reading (a reset then a read), over `rounds`. For
/// the bench; tests only check that it runs.
pub fn time_peak_reading(meter: &mut UsageMeter, rounds: u32) -> Result<Duration, SandboxError> {
    let rounds = rounds.max(1);
    let start = Instant::now();
    for _ in 0..rounds {
        meter.reset_peak()?;
        std::hint::black_box(meter.read_peak()?);
    }
    Ok(start.elapsed() / rounds)
}

/// Average cost of a whole per-invocation reading ([`UsageMeter::begin`] then
/// [`UsageMeter::finish`]), over `rounds`. For the bench.
pub fn time_usage_reading(meter: &mut UsageMeter, rounds: u32) -> Result<Duration, SandboxError> {
    let rounds = rounds.max(1);
    let start = Instant::now();
    for _ in 0..rounds {
        let before = meter.begin()?;
        std::hint::black_box(meter.finish(&before)?);
    }
    Ok(start.elapsed() / rounds)
}

/// The value of the line `name N` in a flat-keyed file (`cpu.stat`, `memory.events`,
/// `memory.oom_control`, `cpuacct.stat`); 0 when absent.
fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Sums the per-device `MAJ:MIN Read N` and `MAJ:MIN Write N` lines of
/// `blkio.throttle.io_service_bytes` (the closing `Total N` line adds both and more).
fn parse_v1_io(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_device), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        match op {
            "Read" => read = read.saturating_add(value),
            "Write" => write = write.saturating_add(value),
            _ => {}
        }
    }
    (read, write)
}

/// Sums `rbytes=` and `wbytes=` over the devices of `io.stat`.
fn parse_v2_io(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for pair in text.split_whitespace() {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        match key {
            "rbytes" => read = read.saturating_add(value),
            "wbytes" => write = write.saturating_add(value),
            _ => {}
        }
    }
    (read, write)
}

/// Nanoseconds per USER_HZ tick (`cpuacct.stat`'s unit).
fn ns_per_user_hz_tick() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    match u64::try_from(hz) {
        Ok(hz) if hz > 0 => 1_000_000_000 / hz,
        _ => 10_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_fields_are_found_by_whole_name() {
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(field(oom_control, "oom_kill"), 3);
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(field(events, "oom_kill"), 1);
        let cpu_stat = "usage_usec 90\nuser_usec 60\nsystem_usec 30\nnice_usec 0\n";
        assert_eq!(
            (field(cpu_stat, "user_usec"), field(cpu_stat, "system_usec")),
            (60, 30)
        );
        assert_eq!(field(cpu_stat, "missing"), 0);
    }

    #[test]
    fn io_files_are_summed_over_devices() {
        let v1 = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n\
                  8:0 Total 12288\n8:16 Read 1\n8:16 Write 2\n8:16 Total 3\nTotal 12291\n";
        assert_eq!(parse_v1_io(v1), (4097, 8194));
        assert_eq!(parse_v1_io("Total 0\n"), (0, 0));
        let v2 = "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n\
                  253:1 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(parse_v2_io(v2), (105, 207));
    }

    #[test]
    fn deltas_saturate_and_oom_is_a_moved_counter() {
        let before = Counters {
            cpu_total_ns: 1000,
            cpu_user_ns: 100,
            cpu_system_ns: 50,
            io_read_bytes: 10,
            io_write_bytes: 20,
            oom_kills: 1,
        };
        let after = Counters {
            cpu_total_ns: 1250,
            cpu_user_ns: 350,
            cpu_system_ns: 40,
            io_read_bytes: 10,
            io_write_bytes: 4116,
            oom_kills: 2,
        };
        let usage = usage_between(&before, &after, 1 << 20);
        assert_eq!(
            usage,
            Usage {
                peak_bytes: 1 << 20,
                cpu_user_ns: 250,
                cpu_system_ns: 0,
                io_read_bytes: 0,
                io_write_bytes: 4096,
                oom_killed: true,
            }
        );
        assert!(!usage_between(&after, &after, 0).oom_killed);
    }

    #[test]
    fn the_exact_cpu_total_is_split_as_sampled() {
        let before = Counters::default();
        let after = |total, user, system| Counters {
            cpu_total_ns: total,
            cpu_user_ns: user,
            cpu_system_ns: system,
            ..Counters::default()
        };
        let cpu = |u: Usage| (u.cpu_user_ns, u.cpu_system_ns);
        assert_eq!(
            cpu(usage_between(&before, &after(1000, 3, 1), 0)),
            (750, 250)
        );
        // Shorter than a tick: no samples, all user.
        assert_eq!(cpu(usage_between(&before, &after(900, 0, 0), 0)), (900, 0));
        assert_eq!(cpu(usage_between(&before, &after(0, 4, 4), 0)), (0, 0));
    }

    #[test]
    fn long_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("io.stat");
        let line = "8:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n";
        std::fs::write(&path, line.repeat(500)).unwrap();
        let source = Source::open(path, false).unwrap();
        let mut buf = Vec::new();
        assert_eq!(parse_v2_io(source.read(&mut buf).unwrap()), (500, 1000));
    }
}

/// [`UsageMeter::for_process`] against fixture trees laid out as each engine does.
#[cfg(test)]
mod for_process_tests {
    use super::*;
    use crate::cgroup::CgroupConfig;
    use std::fs;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn config(tmp: &Path) -> CgroupConfig {
        CgroupConfig {
            fs_root: tmp.join("cgroup"),
            proc_root: tmp.join("proc"),
            ..CgroupConfig::default()
        }
    }

    #[test]
    fn a_v1_container_is_found_through_its_init_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path().join("cgroup");
        let r = r.display();
        write(
            &tmp.path().join("proc/self/mountinfo"),
            &format!(
                "31 23 0:28 / {r} rw - tmpfs tmpfs rw\n\
                 32 31 0:29 / {r}/cpuacct rw - cgroup cgroup rw,cpuacct\n\
                 35 31 0:32 / {r}/memory rw - cgroup cgroup rw,memory\n\
                 38 31 0:35 / {r}/blkio rw - cgroup cgroup rw,blkio\n\
                 41 31 0:38 / {r}/unified rw - cgroup2 cgroup2 rw\n"
            ),
        );
        write(
            &tmp.path().join("proc/4242/cgroup"),
            "7:blkio:/docker/abc\n4:memory:/docker/abc\n2:cpuacct:/docker/abc\n0::/docker/abc\n",
        );
        let memory = tmp.path().join("cgroup/memory/docker/abc");
        write(&memory.join("memory.max_usage_in_bytes"), "5000\n");
        write(&memory.join("memory.oom_control"), "oom_kill 0\n");
        let cpuacct = tmp.path().join("cgroup/cpuacct/docker/abc");
        write(&cpuacct.join("cpuacct.usage"), "900\n");
        write(&cpuacct.join("cpuacct.usage_user"), "600\n");
        write(&cpuacct.join("cpuacct.usage_sys"), "300\n");
        write(
            &tmp.path()
                .join("cgroup/blkio/docker/abc/blkio.throttle.io_service_bytes"),
            "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
        );

        let mut meter = UsageMeter::for_process(&config(tmp.path()), 4242).unwrap();
        assert_eq!(meter.version(), CgroupVersion::V1);
        assert_eq!(meter.read_peak().unwrap(), 5000);
        let counters = meter.counters().unwrap();
        assert_eq!(
            (
                counters.cpu_total_ns,
                counters.io_read_bytes,
                counters.io_write_bytes
            ),
            (900, 10, 20)
        );
        meter.reset_peak().unwrap();
        let reset = fs::read_to_string(memory.join("memory.max_usage_in_bytes")).unwrap();
        assert!(
            reset.starts_with('0'),
            "v1 reset writes 0 at offset 0: {reset}"
        );
    }

    #[test]
    fn a_v2_systemd_scope_is_found_and_other_pids_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path().join("cgroup");
        write(
            &tmp.path().join("proc/self/mountinfo"),
            &format!(
                "31 23 0:28 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
                r.display()
            ),
        );
        write(
            &tmp.path().join("proc/77/cgroup"),
            "0::/system.slice/docker-abc.scope\n",
        );
        let dir = r.join("system.slice/docker-abc.scope");
        write(&dir.join("memory.peak"), "123\n");
        write(
            &dir.join("cpu.stat"),
            "usage_usec 3\nuser_usec 2\nsystem_usec 1\n",
        );
        write(&dir.join("memory.events"), "oom_kill 2\n");

        let mut meter = UsageMeter::for_process(&config(tmp.path()), 77).unwrap();
        assert_eq!(meter.version(), CgroupVersion::V2);
        let counters = meter.counters().unwrap();
        assert_eq!((counters.cpu_total_ns, counters.oom_kills), (3000, 2));

        let err = UsageMeter::for_process(&config(tmp.path()), 78).unwrap_err();
        assert!(err.to_string().contains("78/cgroup"), "{err}");
    }
}
