//! The hardened definition of one function container, as the engine's create API takes it.
//!
//! Pure: [`definition`] turns an instance spec and the backend's limits into a
//! [`ContainerCreateBody`], so every hardening setting is checked by a unit test here and
//! by `crates/cli/tests/docker.rs` against what a real engine reports.

use super::labels;
use crate::cgroup::CpuQuota;
use crate::InstanceSpec;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use hearth_core::protocol::{CPU_GROUP_SOCKET, CPU_GROUP_SOCKET_ENV, DEPS_DIR};
use std::collections::HashMap;

/// The agent's path inside every runtime image (see `images.rs`).
pub const AGENT_IN_IMAGE: &str = "/usr/local/bin/hearth-agent";
/// Where the code goes: an anonymous volume (the archive API cannot write under a tmpfs,
/// and the root file system is read-only). Files in it belong to root.
pub const CODE_DIR: &str = hearth_core::paths::CODE_DIR;
/// The function's scratch space, a tmpfs.
pub const TMP_DIR: &str = "/tmp";
/// The invocation's output dir (`$OUTPUT_DIR`), a tmpfs the size of the output quota,
/// when the function has one; the agent archives it after each run.
pub const OUTPUT_DIR: &str = "/output";
/// The container starts as root, with no capability but the three it needs to leave root
/// for the instance's own uids, and to empty its bounding set, before it reads a byte of
/// the user's (`InitSpec::agent_id`).
pub const CONTAINER_USER: &str = "0:0";
/// Those three.
const KEPT_CAPABILITIES: [&str; 3] = ["SETUID", "SETGID", "SETPCAP"];

/// Variables passed through from the worker to the agent, when set (its log settings).
const PASSED_ENV: [&str; 2] = ["HEARTH_AGENT_LOG", "RUST_LOG"];

/// Per-container limits besides memory (which is the function's own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most processes and threads.
    pub pids_max: u64,
    /// CPU bandwidth, in CPUs.
    pub cpus: f64,
    /// Open files per process (soft and hard).
    pub nofile: u64,
    /// Size of `/tmp`, MB (capped at the function's memory).
    pub tmp_size_mb: u64,
}

/// CFS period used for the CPU quota, µs (the kernel's default).
const CPU_PERIOD_US: i64 = 100_000;

/// A quota of `cpus` CPUs per [`CPU_PERIOD_US`], µs (at least 1 ms).
fn quota_us(cpus: f64) -> u64 {
    let quota = (cpus * CPU_PERIOD_US as f64).round();
    if quota.is_finite() && quota >= 1000.0 {
        quota as u64
    } else {
        1000
    }
}

/// The function's own CPU quota (its CPUs, else the backend's per-container CPUs), set
/// on the container's function group.
pub fn function_cpu_quota(spec: &InstanceSpec, limits: &Limits) -> CpuQuota {
    CpuQuota {
        quota_us: quota_us(spec.cpus.unwrap_or(limits.cpus)),
        period_us: CPU_PERIOD_US.unsigned_abs(),
    }
}

/// The container for `spec`, running `image`, owned by the hearth whose label is `owner`.
///
/// Hardening: no network, read-only root, the code dir as an anonymous volume, a
/// `/tmp` tmpfs, all capabilities dropped but SETUID, SETGID and SETPCAP (gone once the agent has
/// left root for the instance's uids), no-new-privileges, pids, memory
/// (swap included, so no swap), CPU (here a ceiling: the function's quota is on its
/// child group, `cpu_group.rs`) and open-file limits, no logging to disk, and no bind
/// or host mount of any kind. The agent is PID 1, talking over the attached stdin and
/// stdout; stdin closes when the worker detaches (so a dead worker's agent exits), and
/// the engine then removes the container with its volume.
pub fn definition(
    spec: &InstanceSpec,
    image: &str,
    limits: &Limits,
    owner: &str,
    function_uid: u32,
) -> ContainerCreateBody {
    let memory = i64::try_from(spec.memory_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
    let tmp_mb = limits.tmp_size_mb.min(spec.memory_mb).max(1);
    let function_quota = function_cpu_quota(spec, limits);
    // The container's own quota is a ceiling over the agent and a runtime's start; the
    // function's is on its child group (`cpu_group.rs`), which may not exceed it (v1).
    let cpu_quota = quota_us(limits.cpus).max(function_quota.quota_us) as i64;
    let nofile = i64::try_from(limits.nofile).unwrap_or(i64::MAX);
    let mut tmpfs = HashMap::from([(
        TMP_DIR.to_string(),
        format!("rw,nosuid,nodev,size={tmp_mb}m,mode=1777"),
    )]);
    if spec.output_quota_mb > 0 {
        tmpfs.insert(
            OUTPUT_DIR.to_string(),
            // Owned by the function's user, as the agent (which runs as that user)
            // keeps the directory's mode and empties it between invocations.
            format!(
                "rw,nosuid,nodev,noexec,size={}m,mode=0755,uid={function_uid},gid={function_uid}",
                spec.output_quota_mb
            ),
        );
    }
    let mut env = vec![
        "HEARTH_AGENT_ROOT=/".to_string(),
        format!("{CPU_GROUP_SOCKET_ENV}={CPU_GROUP_SOCKET}"),
    ];
    for name in PASSED_ENV {
        if let Ok(value) = std::env::var(name) {
            env.push(format!("{name}={value}"));
        }
    }
    ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some(CONTAINER_USER.to_string()),
        entrypoint: Some(vec![AGENT_IN_IMAGE.to_string()]),
        cmd: Some(Vec::new()),
        env: Some(env),
        working_dir: Some(CODE_DIR.to_string()),
        hostname: Some("hearth".to_string()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(true),
        volumes: Some(vec![CODE_DIR.to_string()]),
        labels: Some(labels::for_instance(spec, owner)),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_string()]),
            cap_add: Some(KEPT_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            security_opt: Some(vec![
                "no-new-privileges:true".to_string(),
                super::seccomp::security_opt(),
            ]),
            privileged: Some(false),
            pids_limit: i64::try_from(limits.pids_max).ok(),
            memory: Some(memory),
            memory_swap: Some(memory),
            cpu_period: Some(CPU_PERIOD_US),
            cpu_quota: Some(cpu_quota),
            cpu_shares: i64::try_from(function_quota.v1_shares()).ok(),
            ulimits: Some(vec![
                ResourcesUlimits {
                    name: Some("nofile".to_string()),
                    soft: Some(nofile),
                    hard: Some(nofile),
                },
                // No core dumps: a dump of a function holds its callers' data.
                ResourcesUlimits {
                    name: Some("core".to_string()),
                    soft: Some(0),
                    hard: Some(0),
                },
            ]),
            tmpfs: Some(tmpfs),
            ipc_mode: Some("private".to_string()),
            init: Some(false),
            auto_remove: Some(true),
            binds: None,
            mounts: None,
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".to_string()),
                config: None,
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Makes `body` (a [`definition`]) a build container's: `/tmp` of `tmp_mb` (the
/// compiler's files and the program), and with `deps` an anonymous volume at
/// [`DEPS_DIR`] for the dependency layer the backend copies in (the archive API writes
/// volumes, not a read-only root or a tmpfs). Nothing else changes: no network, the
/// same capabilities, limits and user.
pub fn for_build(body: &mut ContainerCreateBody, tmp_mb: u64, deps: bool) {
    if let Some(tmpfs) = body.host_config.as_mut().and_then(|h| h.tmpfs.as_mut()) {
        tmpfs.insert(
            TMP_DIR.to_string(),
            format!("rw,nosuid,nodev,size={tmp_mb}m,mode=1777"),
        );
    }
    if deps {
        body.volumes
            .get_or_insert_with(Vec::new)
            .push(DEPS_DIR.to_string());
    }
}

/// A container name for `instance_id` (the engine allows `[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
pub fn name(instance_id: &str) -> String {
    let clean: String = instance_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("hearth-{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hearth_core::Runtime;

    fn spec(memory_mb: u64) -> InstanceSpec {
        InstanceSpec {
            instance_id: "f-1-01abc".into(),
            function_name: "f".into(),
            version: 1,
            runtime: Runtime::Python,
            memory_mb,
            cpus: None,
            env: Default::default(),
            code_tar: Bytes::new(),
            layer: None,
            output_quota_mb: 16,
        }
    }

    const LIMITS: Limits = Limits {
        pids_max: 64,
        cpus: 1.5,
        nofile: 1024,
        tmp_size_mb: 64,
    };

    #[test]
    fn the_container_is_hardened_and_mounts_nothing_of_the_host() {
        let body = definition(&spec(128), "hearth/python:t", &LIMITS, "owner1", 2_000_001);
        assert_eq!(body.user.as_deref(), Some("0:0"));
        assert_eq!(body.volumes, Some(vec!["/code".to_string()]));
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.tty, Some(false));
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.cap_add,
            Some(vec![
                "SETUID".to_string(),
                "SETGID".to_string(),
                "SETPCAP".to_string()
            ])
        );
        let security = host.security_opt.unwrap();
        assert_eq!(security[0], "no-new-privileges:true");
        assert!(security[1].starts_with("seccomp={"), "{security:?}");
        assert_eq!(host.memory, Some(128 << 20));
        assert_eq!(host.memory_swap, host.memory, "no swap");
        assert_eq!(host.pids_limit, Some(64));
        assert_eq!(
            (host.cpu_quota, host.cpu_period),
            (Some(150_000), Some(100_000))
        );
        let ulimits = host.ulimits.unwrap();
        assert_eq!(ulimits[0].hard, Some(1024));
        assert_eq!(ulimits[1].name.as_deref(), Some("core"));
        assert_eq!(ulimits[1].hard, Some(0));
        let mut small = spec(128);
        small.cpus = Some(0.25);
        let host = definition(&small, "hearth/python:t", &LIMITS, "owner1", 2_000_001)
            .host_config
            .unwrap();
        assert_eq!(
            host.cpu_quota,
            Some(150_000),
            "the container's ceiling: the backend's CPUs"
        );
        assert_eq!(
            function_cpu_quota(&small, &LIMITS).quota_us,
            25_000,
            "the instance's own share, on its function group"
        );
        let mut big = spec(128);
        big.cpus = Some(2.0);
        let host = definition(&big, "i", &LIMITS, "o", 2_000_001)
            .host_config
            .unwrap();
        assert_eq!(host.cpu_quota, Some(200_000), "never below the function's");
        assert!(host.binds.is_none() && host.mounts.is_none());
        assert_eq!(host.auto_remove, Some(true));
        let labels = body.labels.unwrap();
        assert_eq!(labels[labels::MANAGED], "true");
        assert_eq!(labels[labels::OWNER], "owner1");
        assert_eq!(labels[labels::FUNCTION], "f");
    }

    #[test]
    fn tmp_is_capped_at_the_functions_memory_and_output_is_the_quota() {
        let body = definition(&spec(32), "i", &LIMITS, "o", 2_000_001);
        let tmpfs = body.host_config.unwrap().tmpfs.unwrap();
        assert!(tmpfs["/tmp"].contains("size=32m"), "{tmpfs:?}");
        assert!(tmpfs["/output"].contains("size=16m"), "{tmpfs:?}");
        assert!(tmpfs["/output"].contains("uid=2000001,"), "{tmpfs:?}");
        let mut no_output = spec(32);
        no_output.output_quota_mb = 0;
        let body = definition(&no_output, "i", &LIMITS, "o", 2_000_001);
        assert!(!body
            .host_config
            .unwrap()
            .tmpfs
            .unwrap()
            .contains_key("/output"));
    }

    #[test]
    fn a_build_container_has_a_bigger_tmp_and_a_deps_volume_and_nothing_else() {
        let plain = definition(&spec(1024), "hearth/go-build:t", &LIMITS, "o", 2_000_001);
        let mut body = plain.clone();
        for_build(&mut body, 512, true);
        let host = body.host_config.clone().unwrap();
        assert!(host.tmpfs.unwrap()["/tmp"].contains("size=512m"));
        assert_eq!(
            body.volumes,
            Some(vec!["/code".to_string(), "/deps".to_string()])
        );
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert!(host.binds.is_none() && host.mounts.is_none());
        assert_eq!(host.cap_add, plain.host_config.clone().unwrap().cap_add);
        let mut without = plain;
        for_build(&mut without, 512, false);
        assert_eq!(without.volumes, Some(vec!["/code".to_string()]));
    }

    #[test]
    fn names_are_what_the_engine_accepts() {
        assert_eq!(name("fn-2-01h"), "hearth-fn-2-01h");
        assert_eq!(name("a b/c"), "hearth-a_b_c");
    }
}
