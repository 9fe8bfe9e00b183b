//! cgroups: one per instance, to limit it and to measure each invocation.
//!
//! v1 and v2 are both first-class and detected at run time ([`CgroupHost::detect`]):
//! v2 when the unified hierarchy is mounted at the cgroup root, v1 when the memory
//! controller is a v1 hierarchy (possibly with an empty v2 beside it: the hybrid
//! layout). v1 controllers are found through the mount table, so co-mounted ones
//! (`cpu,cpuacct`) work.
//!
//! Layout: every instance gets `<group>/<instance id>` (group `hearth` by default).
//! On v1 the group sits under the cgroup this process is in, in each needed hierarchy
//! (memory, pids, cpu, cpuacct, blkio), so whoever runs hearth still accounts for its
//! sandboxes. On v2 it sits at the root of the hierarchy: a non-root cgroup that holds
//! processes (ours does) may not hand controllers to children.
//!
//! Limits: memory without swap, pids, CPU quota ([`CgroupLimits`]). Usage: read straight
//! from the files by a [`UsageMeter`] that keeps them open, never through a daemon.
//!
//! The CPU quota is the function's, not the agent's: on v1 the instance's own cpu group
//! is unlimited (weighted by `cpu.shares`) and its child `fn` has the quota; the agent
//! stays in the instance group and moves every process it starts into `fn`
//! ([`InstanceCgroup::function_procs_file`]), so a small function's share is never spent
//! on the agent's reading, reaping and sweeping. On v2 (one hierarchy, where a group with
//! children may hold no processes) the quota stays on the whole instance.
//!
//! Every path comes from the `/sys/fs/cgroup` and `/proc` roots in [`CgroupConfig`], so
//! the logic is tested against fixture trees.

mod meter;
pub(crate) mod mounts;

pub use meter::{time_peak_reading, time_usage_reading, usage_between, Counters, UsageMeter};

use crate::SandboxError;
use mounts::{cgroup_dir, parse_mountinfo, parse_proc_cgroup, Membership, MountEntry};
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where to find the cgroup file systems and what to call hearth's group.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupConfig {
    /// Root of the cgroup mounts, normally `/sys/fs/cgroup`.
    pub fs_root: PathBuf,
    /// Root of procfs, normally `/proc` (`self/mountinfo` and `self/cgroup` are read).
    pub proc_root: PathBuf,
    /// Name of the directory holding the instances' cgroups, normally `hearth`.
    pub group: String,
    /// Place the group under this cgroup (a path inside each hierarchy, e.g.
    /// `/hearth.slice`) instead of the default described in the module doc.
    pub parent: Option<PathBuf>,
    /// Start instances even where the host cannot limit their swap (no
    /// `memory.memsw.*`: swap accounting off; no `memory.swap.max`) or their CPU (no cpu
    /// controller), with a warning. Off by default: such an instance is refused with an
    /// error naming what is missing.
    pub allow_missing_limits: bool,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            fs_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            group: "hearth".to_string(),
            parent: None,
            allow_missing_limits: false,
        }
    }
}

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy: one hierarchy per controller (or per group of controllers).
    V1,
    /// Unified: one hierarchy, controllers enabled per subtree.
    V2,
}

/// An instance's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory limit, bytes; swap is forbidden.
    pub memory_bytes: u64,
    /// Most processes (and threads) at once.
    pub pids_max: u64,
    /// CPU bandwidth: `quota_us` of CPU time per `period_us` of wall time.
    pub cpu: CpuQuota,
}

/// A CPU bandwidth limit (CFS quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    /// CPU time allowed per period, µs.
    pub quota_us: u64,
    /// Length of a period, µs.
    pub period_us: u64,
}

impl CpuQuota {
    /// Default period, 100 ms (the kernel's own default).
    pub const PERIOD_US: u64 = 100_000;

    /// A quota of `cpus` whole CPUs (fractions allowed; at least 1 ms per period).
    pub fn cpus(cpus: f64) -> Self {
        let quota = (cpus * Self::PERIOD_US as f64).round();
        Self {
            quota_us: if quota.is_finite() && quota >= 1000.0 {
                quota as u64
            } else {
                1000
            },
            period_us: Self::PERIOD_US,
        }
    }

    /// The quota in CPUs.
    pub fn as_cpus(&self) -> f64 {
        self.quota_us as f64 / self.period_us.max(1) as f64
    }

    /// The share under contention follows the quota too, so that a larger size is
    /// faster even on a busy host: an instance at the smallest share
    /// (`hearth_core::function::MIN_CPUS`) weighs as much as any process (the kernel's
    /// default), one with four times that CPU four times as much. cgroup v1
    /// `cpu.shares` (default 1024, 2..=262144).
    pub fn v1_shares(&self) -> u64 {
        let relative = self.as_cpus() / hearth_core::function::MIN_CPUS;
        ((1024.0 * relative).round() as u64).clamp(2, 262_144)
    }

    /// The same as cgroup v2 `cpu.weight` (default 100, 1..=10000).
    pub fn v2_weight(&self) -> u64 {
        let relative = self.as_cpus() / hearth_core::function::MIN_CPUS;
        ((100.0 * relative).round() as u64).clamp(1, 10_000)
    }
}

/// The child of an instance's v1 cpu group that carries the function's quota.
const FUNCTION_GROUP: &str = "fn";

/// The v1 controllers hearth uses.
const V1_MEMORY: &str = "memory";
const V1_PIDS: &str = "pids";
const V1_CPU: &str = "cpu";
const V1_CPUACCT: &str = "cpuacct";
const V1_BLKIO: &str = "blkio";

/// The v2 controllers hearth enables; memory and pids are required.
const V2_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "io"];
const V2_REQUIRED: [&str; 2] = ["memory", "pids"];

/// The group directories of one hierarchy layout.
#[derive(Debug, Clone, PartialEq)]
enum Layout {
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        blkio: Option<PathBuf>,
    },
    V2 {
        /// The mount of the unified hierarchy.
        mount: PathBuf,
        /// `<mount>/<parent>/<group>`.
        group: PathBuf,
    },
}

/// The host's cgroup hierarchies, as detected, and hearth's group in them.
#[derive(Debug, Clone)]
pub struct CgroupHost {
    layout: Layout,
    allow_missing_limits: bool,
}

impl CgroupHost {
    /// Finds the hierarchies. Reads only; [`prepare`](Self::prepare) creates the group.
    pub fn detect(config: &CgroupConfig) -> Result<Self, SandboxError> {
        let mountinfo_path = config.proc_root.join("self/mountinfo");
        let mountinfo =
            fs::read_to_string(&mountinfo_path).map_err(|e| cgroup_error(&mountinfo_path, e))?;
        let mounts: Vec<MountEntry> = parse_mountinfo(&mountinfo)
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&config.fs_root))
            .collect();
        let parent = config
            .parent
            .as_deref()
            .map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf());

        let unified = mounts
            .iter()
            .find(|m| m.fstype == "cgroup2" && m.mount_point == config.fs_root);
        if let Some(unified) = unified {
            if unified.mount_point.join("cgroup.controllers").exists() {
                let base = parent.unwrap_or_default();
                return Ok(Self {
                    allow_missing_limits: config.allow_missing_limits,
                    layout: Layout::V2 {
                        mount: unified.mount_point.clone(),
                        group: unified.mount_point.join(base).join(&config.group),
                    },
                });
            }
        }

        let cgroup_path = config.proc_root.join("self/cgroup");
        let own = fs::read_to_string(&cgroup_path).map_err(|e| cgroup_error(&cgroup_path, e))?;
        let own = parse_proc_cgroup(&own);
        let group_dir = |controller: &str| -> Option<PathBuf> {
            let mount = mounts.iter().find(|m| m.is_v1_with(controller))?;
            let base = match &parent {
                Some(parent) => mount.mount_point.join(parent),
                None => own_dir(mount, &own, controller),
            };
            Some(base.join(&config.group))
        };
        let (Some(memory), Some(pids)) = (group_dir(V1_MEMORY), group_dir(V1_PIDS)) else {
            return Err(SandboxError::Unavailable(format!(
                "no usable cgroups under {}: need cgroup v2 mounted there, or cgroup v1 \
                 memory and pids hierarchies",
                config.fs_root.display()
            )));
        };
        Ok(Self {
            allow_missing_limits: config.allow_missing_limits,
            layout: Layout::V1 {
                memory,
                pids,
                cpu: group_dir(V1_CPU),
                cpuacct: group_dir(V1_CPUACCT),
                blkio: group_dir(V1_BLKIO),
            },
        })
    }

    /// Which interface was found.
    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// The group directories (one per distinct v1 hierarchy, one on v2).
    pub fn group_dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                blkio,
            } => {
                let mut dirs = vec![memory.clone(), pids.clone()];
                for dir in [cpu, cpuacct, blkio].into_iter().flatten() {
                    if !dirs.contains(dir) {
                        dirs.push(dir.clone());
                    }
                }
                dirs
            }
            Layout::V2 { group, .. } => vec![group.clone()],
        }
    }

    /// Creates the group directories and, on v2, enables the controllers from the
    /// hierarchy's root down to the group. Proves the cgroups are usable.
    pub fn prepare(&self) -> Result<(), SandboxError> {
        for dir in self.group_dirs() {
            fs::create_dir_all(&dir).map_err(|e| cgroup_error(&dir, e))?;
        }
        if let Layout::V2 { mount, group } = &self.layout {
            let mut dir = mount.clone();
            let below = group.strip_prefix(mount).unwrap_or(Path::new(""));
            enable_v2_controllers(&dir)?;
            for part in below.components() {
                dir.push(part);
                enable_v2_controllers(&dir)?;
            }
        }
        Ok(())
    }

    /// Makes the instance's cgroup(s) and sets its limits. The caller moves the
    /// instance's first process in (see [`InstanceCgroup::procs_files`]).
    pub fn create(
        &self,
        instance_id: &str,
        limits: &CgroupLimits,
    ) -> Result<InstanceCgroup, SandboxError> {
        check_instance_id(instance_id)?;
        let mut instance = InstanceCgroup {
            id: instance_id.to_string(),
            dirs: Vec::new(),
            procs_files: Vec::new(),
            kill_file: None,
            meter: None,
            function_procs: None,
        };
        for group in self.group_dirs() {
            let dir = group.join(instance_id);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    tracing::warn!(dir = %dir.display(), "reusing a leftover cgroup");
                    kill_procs(&[dir.join("cgroup.procs")]);
                }
                Err(e) => return Err(cgroup_error(&dir, e)),
            }
            let procs = dir.join("cgroup.procs");
            let procs = CString::new(procs.as_os_str().as_bytes()).map_err(|e| {
                cgroup_error(&procs, io::Error::new(io::ErrorKind::InvalidInput, e))
            })?;
            instance.procs_files.push(procs);
            instance.dirs.push(dir);
        }
        // From here on, dropping `instance` on an error removes the directories.
        self.write_limits(instance_id, limits, true)?;
        let dir_of = |group: &Path| group.join(instance_id);
        match &self.layout {
            Layout::V1 {
                memory,
                cpu,
                cpuacct,
                blkio,
                ..
            } => {
                if let Some(cpu) = cpu {
                    let function = dir_of(cpu).join(FUNCTION_GROUP);
                    // Last in the list: removed before its parent.
                    instance.dirs.push(function.clone());
                    instance.function_procs = Some(function.join("cgroup.procs"));
                }
                instance.meter = Some(UsageMeter::open_v1(
                    &dir_of(memory),
                    cpuacct.as_deref().map(dir_of).as_deref(),
                    blkio.as_deref().map(dir_of).as_deref(),
                )?);
            }
            Layout::V2 { group, .. } => {
                let dir = dir_of(group);
                instance.kill_file = Some(dir.join("cgroup.kill"));
                instance.meter = Some(UsageMeter::open_v2(&dir)?);
            }
        }
        Ok(instance)
    }

    /// Sets new limits on a running instance's cgroup (a stem becoming a function's
    /// instance); the CPU quota only when `cpu` (rewriting it resets the CFS burst).
    /// Lowering memory below what the cgroup already uses fails.
    pub fn set_limits(
        &self,
        cgroup: &InstanceCgroup,
        limits: &CgroupLimits,
        cpu: bool,
    ) -> Result<(), SandboxError> {
        self.write_limits(&cgroup.id, limits, cpu)
    }

    /// Writes `limits` into the cgroup(s) of `instance_id`. On v1 the memory+swap limit
    /// may never be below the memory limit, so whichever must move first does.
    fn write_limits(
        &self,
        instance_id: &str,
        limits: &CgroupLimits,
        set_cpu: bool,
    ) -> Result<(), SandboxError> {
        let dir_of = |group: &Path| group.join(instance_id);
        match &self.layout {
            Layout::V1 {
                memory, pids, cpu, ..
            } => {
                let memory = dir_of(memory);
                let bytes = limits.memory_bytes.to_string();
                let limit = memory.join("memory.limit_in_bytes");
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                // Raising: memory+swap first, then memory; lowering: the other way round.
                let lowered = write_file(&limit, &bytes).is_ok();
                if !write_if_present(&memsw, &bytes)? {
                    self.missing_limit(
                        "swap",
                        "no memory.memsw.limit_in_bytes: swap accounting is off (boot the \
                         kernel with swapaccount=1)",
                    )?;
                }
                if !lowered {
                    write_file(&limit, &bytes)?;
                }
                if let Err(e) = write_if_present(&memory.join("memory.swappiness"), "0") {
                    tracing::warn!(error = %e, "cannot turn swapping off");
                }
                write_file(&dir_of(pids).join("pids.max"), &limits.pids_max.to_string())?;
                match cpu {
                    Some(_) if !set_cpu => {}
                    Some(cpu) => {
                        let cpu = dir_of(cpu);
                        // The instance (the agent) is weighted but has no quota; its
                        // child `fn`, where the agent puts the function, has it.
                        write_if_present(
                            &cpu.join("cpu.shares"),
                            &limits.cpu.v1_shares().to_string(),
                        )?;
                        let function = cpu.join(FUNCTION_GROUP);
                        match fs::create_dir(&function) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                            Err(e) => return Err(cgroup_error(&function, e)),
                        }
                        // A burst above the new quota would make the kernel refuse it
                        // (a stem's limits being replaced), so none while they change.
                        no_burst(&function.join("cpu.cfs_burst_us"));
                        write_file(
                            &function.join("cpu.cfs_period_us"),
                            &limits.cpu.period_us.to_string(),
                        )?;
                        write_file(
                            &function.join("cpu.cfs_quota_us"),
                            &limits.cpu.quota_us.to_string(),
                        )?;
                        allow_burst(&function.join("cpu.cfs_burst_us"), &limits.cpu);
                    }
                    None => self.missing_limit("CPU", "no cgroup v1 cpu controller")?,
                }
            }
            Layout::V2 { group, .. } => {
                let dir = dir_of(group);
                write_file(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                if !write_if_present(&dir.join("memory.swap.max"), "0")? {
                    self.missing_limit("swap", "no memory.swap.max (kernel without swap control)")?;
                }
                write_file(&dir.join("pids.max"), &limits.pids_max.to_string())?;
                if !set_cpu {
                    return Ok(());
                }
                no_burst(&dir.join("cpu.max.burst"));
                let cpu_max = format!("{} {}", limits.cpu.quota_us, limits.cpu.period_us);
                if !write_if_present(&dir.join("cpu.max"), &cpu_max)? {
                    self.missing_limit("CPU", "no cgroup v2 cpu controller (cpu.max)")?;
                }
                write_if_present(&dir.join("cpu.weight"), &limits.cpu.v2_weight().to_string())?;
                allow_burst(&dir.join("cpu.max.burst"), &limits.cpu);
            }
        }
        Ok(())
    }

    /// A limit this host cannot set: an error, or (when allowed) a warning.
    fn missing_limit(&self, what: &str, why: &str) -> Result<(), SandboxError> {
        if self.allow_missing_limits {
            tracing::warn!("{why}: {what} is not limited (allowed by --allow-missing-limits)");
            return Ok(());
        }
        Err(SandboxError::Unavailable(format!(
            "this host cannot limit a sandbox's {what}: {why}; fix the host, or pass \
             --allow-missing-limits to run sandboxes without that limit"
        )))
    }

    /// Removes instance cgroups left in the group by an earlier run (a crash), killing
    /// whatever still runs in them. Call once at startup, before creating instances:
    /// every instance in the group is taken for an orphan. Returns how many were
    /// removed; failures are logged.
    pub fn sweep_orphans(&self) -> usize {
        let mut orphans: Vec<String> = Vec::new();
        for group in self.group_dirs() {
            let Ok(entries) = fs::read_dir(&group) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !orphans.contains(&name) {
                        orphans.push(name);
                    }
                }
            }
        }
        let mut removed = 0;
        for name in orphans {
            let dirs: Vec<PathBuf> = self
                .group_dirs()
                .iter()
                .map(|g| g.join(&name))
                .filter(|d| d.is_dir())
                .collect();
            tracing::info!(instance = %name, "removing an orphaned sandbox cgroup");
            if remove_cgroup_dirs(&dirs, self.kill_file_of(&name).as_deref()) {
                removed += 1;
            }
        }
        removed
    }

    fn kill_file_of(&self, instance_id: &str) -> Option<PathBuf> {
        match &self.layout {
            Layout::V1 { .. } => None,
            Layout::V2 { group, .. } => Some(group.join(instance_id).join("cgroup.kill")),
        }
    }
}

/// The directory of this process's own cgroup in the hierarchy carrying `controller`.
fn own_dir(mount: &MountEntry, own: &[Membership], controller: &str) -> PathBuf {
    own.iter()
        .find(|m| m.controllers.iter().any(|c| c == controller))
        .map_or_else(|| mount.mount_point.clone(), |m| cgroup_dir(mount, &m.path))
}

/// Enables what hearth needs of the controllers available in `dir`'s subtree.
fn enable_v2_controllers(dir: &Path) -> Result<(), SandboxError> {
    let available_path = dir.join("cgroup.controllers");
    let available =
        fs::read_to_string(&available_path).map_err(|e| cgroup_error(&available_path, e))?;
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control).map_err(|e| cgroup_error(&control, e))?;
    for controller in V2_CONTROLLERS {
        if enabled.split_whitespace().any(|c| c == controller) {
            continue;
        }
        let required = V2_REQUIRED.contains(&controller);
        if !available.split_whitespace().any(|c| c == controller) {
            if required {
                return Err(SandboxError::Unavailable(format!(
                    "cgroup v2 controller {controller} is not available in {}",
                    dir.display()
                )));
            }
            tracing::warn!(dir = %dir.display(), controller, "cgroup v2 controller not available");
            continue;
        }
        let result = OpenOptions::new()
            .append(true)
            .open(&control)
            .and_then(|mut f| f.write_all(format!("+{controller}").as_bytes()));
        match result {
            Ok(()) => {}
            Err(e) if required => {
                return Err(SandboxError::Unavailable(format!(
                    "cannot enable cgroup v2 controller {controller} in {}: {e} (a cgroup \
                     holding processes cannot delegate controllers; set a cgroup parent)",
                    control.display()
                )))
            }
            Err(e) => tracing::warn!(file = %control.display(), error = %e, controller,
                "cannot enable cgroup v2 controller"),
        }
    }
    Ok(())
}

/// An instance's cgroup: its directories (one per v1 hierarchy, one on v2) and its
/// usage meter. Dropping it kills what runs in it and removes the directories.
#[derive(Debug)]
pub struct InstanceCgroup {
    id: String,
    dirs: Vec<PathBuf>,
    procs_files: Vec<CString>,
    kill_file: Option<PathBuf>,
    meter: Option<UsageMeter>,
    function_procs: Option<PathBuf>,
}

impl InstanceCgroup {
    /// The instance id (the directories' name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directories, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The `cgroup.procs` files, ready for a `pre_exec` hook to write `0` into (which
    /// moves the writing process in) without allocating after `fork`.
    pub fn procs_files(&self) -> &[CString] {
        &self.procs_files
    }

    /// The `cgroup.procs` of the group with the function's CPU quota, when it is not the
    /// instance's own (v1): the agent writes `0` there in each process it starts, through
    /// an fd the worker opened (the kernel checks the opener's credentials).
    pub fn function_procs_file(&self) -> Option<&Path> {
        self.function_procs.as_deref()
    }

    /// The usage meter, open for the instance's life.
    pub fn meter(&mut self) -> Result<&mut UsageMeter, SandboxError> {
        let id = &self.id;
        self.meter.as_mut().ok_or_else(|| SandboxError::Spawn {
            instance: id.clone(),
            message: "the cgroup has no usage meter".to_string(),
        })
    }

    /// The pids now in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        read_pids(&self.procs_paths())
    }

    /// Kills every process in the cgroup (until none is left), then removes the
    /// directories. Returns whether all went.
    pub fn destroy(mut self) -> bool {
        self.remove()
    }

    fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn remove(&mut self) -> bool {
        if self.dirs.is_empty() {
            return true;
        }
        // Close the meter's files first: they pin nothing, but keep the order plain.
        self.meter = None;
        let done = remove_cgroup_dirs(&self.dirs, self.kill_file.as_deref());
        self.dirs.clear();
        done
    }
}

impl Drop for InstanceCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// How long to keep killing before giving up on a cgroup.
const KILL_ATTEMPTS: u32 = 200;

/// Kills every process in the cgroup `dirs` and removes them; logs what fails.
fn remove_cgroup_dirs(dirs: &[PathBuf], kill_file: Option<&Path>) -> bool {
    if let Some(kill_file) = kill_file.filter(|f| f.exists()) {
        if let Err(e) = fs::write(kill_file, "1") {
            tracing::warn!(file = %kill_file.display(), error = %e, "cgroup.kill failed");
        }
    }
    let dirs = with_child_groups(dirs);
    let procs: Vec<PathBuf> = dirs.iter().map(|d| d.join("cgroup.procs")).collect();
    let mut all_removed = kill_procs(&procs);
    for dir in dirs.iter().rev() {
        if let Err(e) = remove_dir_retrying(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove cgroup");
            all_removed = false;
        }
    }
    all_removed
}

/// `dirs` and every cgroup below them (the function's `fn` group, and whatever an
/// earlier version made), each parent before its children.
fn with_child_groups(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = Vec::new();
    let mut next = 0;
    for dir in dirs {
        if !all.contains(dir) {
            all.push(dir.clone());
        }
    }
    while next < all.len() {
        if let Ok(entries) = fs::read_dir(&all[next]) {
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) && !all.contains(&path) {
                    all.push(path);
                }
            }
        }
        next += 1;
    }
    all
}

/// SIGKILLs the pids listed in `procs` until the lists are empty. Returns whether
/// they emptied.
fn kill_procs(procs: &[PathBuf]) -> bool {
    for attempt in 0..KILL_ATTEMPTS {
        let pids = read_pids(procs);
        if pids.is_empty() {
            return true;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions. The pid was just listed
            // in the instance's cgroup; a pid reused in between is the only risk, and
            // the window is as short as a read.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_micros(200 * u64::from(attempt.min(25) + 1)));
    }
    tracing::warn!(files = ?procs, "processes survive in a cgroup after repeated SIGKILLs");
    false
}

fn read_pids(procs: &[PathBuf]) -> Vec<i32> {
    let mut pids = Vec::new();
    for path in procs {
        if let Ok(text) = fs::read_to_string(path) {
            for pid in text
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                if pid > 0 && !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

fn remove_dir_retrying(dir: &Path) -> io::Result<()> {
    for attempt in 0..20u64 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Busy: a killed process has not finished exiting.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 19 => {
                std::thread::sleep(Duration::from_millis(1 + attempt));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Instance ids become directory names: one plain path component.
fn check_instance_id(id: &str) -> Result<(), SandboxError> {
    let plain = !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain {
        Ok(())
    } else {
        Err(SandboxError::Spawn {
            instance: id.to_string(),
            message: "instance id must be 1-128 of [A-Za-z0-9._-], not starting with '.'"
                .to_string(),
        })
    }
}

/// Writes a control file (which must exist: the kernel makes them).
pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), SandboxError> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| cgroup_error(path, e))
}

/// Takes a group's CFS burst away (while its quota changes).
pub(crate) fn no_burst(file: &Path) {
    if let Err(e) = write_if_present(file, "0") {
        tracing::debug!(error = %e, "no CFS burst");
    }
}

/// Lets a group that left its quota unused in earlier periods spend up to one more
/// quota in a period (CFS burst, Linux 5.14+; the kernel allows at most the quota): a
/// call after a quiet spell is not throttled, while over any longer stretch the group
/// still gets its quota on average. Kernels without it only lose the burst.
pub(crate) fn allow_burst(file: &Path, cpu: &CpuQuota) {
    if let Err(e) = write_if_present(file, &cpu.quota_us.to_string()) {
        tracing::debug!(error = %e, "no CFS burst");
    }
}

/// Writes a control file if this kernel has it; returns whether it did.
fn write_if_present(path: &Path, value: &str) -> Result<bool, SandboxError> {
    if path.exists() {
        write_file(path, value).map(|()| true)
    } else {
        Ok(false)
    }
}

pub(crate) fn cgroup_error(path: &Path, source: io::Error) -> SandboxError {
    SandboxError::Cgroup {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests;
