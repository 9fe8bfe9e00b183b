//! Native stems: the agent already spawned into its own cgroup and fresh namespaces,
//! its root built, its privileges dropped to the uids it will keep (leased when the stem
//! is made), and the runtime's interpreter started with no code (a Python zygote that
//! imported the runtime). A cold start then only sets the function's limits on the
//! cgroup and sends `Specialize` with the function's environment and code, which the
//! agent unpacks into the stem's empty `/code` and the waiting interpreter loads.
//!
//! While it waits, a stem has its kind's memory limit ([`StemKind::memory_mb`]) and the
//! backend's CPU and pids limits; it runs the agent and an interpreter that has read
//! nothing but the runtime's own files, so there is nothing of anyone's in it to leak.

use super::{NativeBackend, NativeInstance, MIB};
use crate::backend::StemBackend;
use crate::cgroup::{CgroupLimits, CpuQuota};
use crate::session;
use crate::stem::{StemKind, WaitingStem};
use crate::{InstanceSpec, SandboxError};
use async_trait::async_trait;
use hearth_core::protocol::Purpose;
use hearth_core::protocol::RootSetup;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the stems of this process apart (their ids name their cgroups).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A waiting native stem.
pub type NativeStem = WaitingStem<NativeInstance>;

/// Largest code tar a native stem takes: its `/code` is a tmpfs made before the code is
/// known, of [`super::root_size_mb`] of this.
const STEM_CODE_BYTES: usize = 16 << 20;

#[async_trait]
impl StemBackend for NativeBackend {
    /// Native stems serve every runtime the host can run, except a version with a
    /// dependency layer (bound at root setup from a path only its own spec names) or
    /// code larger than [`STEM_CODE_BYTES`]. Their `/tmp` and `/output` are made with the
    /// root, so they are part of the kind.
    fn kind_of_stem(&self, spec: &InstanceSpec) -> Option<StemKind> {
        let usable = spec.layer.is_none()
            && spec.code_tar.len() <= STEM_CODE_BYTES
            && self.program(spec.runtime, Purpose::Serve).is_ok();
        usable.then(|| StemKind {
            runtime: spec.runtime,
            output_quota_mb: spec.output_quota_mb,
            tmp_size_mb: self.config.tmp_size_mb.min(spec.memory_mb).max(1),
            cpu_quota_us: self.limits(spec).cpu.quota_us,
        })
    }

    /// Spawns a stem of `kind`: a cgroup with the stem's limits, the agent in it, its
    /// root built and its interpreter started (`Init` with `stem` set, answered `Ready`).
    async fn grow_stem(&self, kind: &StemKind) -> Result<NativeStem, SandboxError> {
        let id = format!(
            "stem-{}-{}-{}",
            kind.runtime,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // The definition of a function whose memory is the stem's: its /tmp and /output
        // are the kind's, it has no code and no name.
        let generic = InstanceSpec {
            instance_id: id.clone(),
            function_name: String::new(),
            version: 0,
            runtime: kind.runtime,
            memory_mb: kind.memory_mb(),
            cpus: None,
            output_quota_mb: kind.output_quota_mb,
            env: Default::default(),
            code_tar: bytes::Bytes::new(),
            layer: None,
        };
        let program = self.program(kind.runtime, Purpose::Serve)?;
        // Leased now: the interpreter that waits runs as the function's uid already.
        let uids = self.uids.lease()?;
        let mut init = self.init_spec(&generic, program, Purpose::Serve, &uids)?;
        init.stem = true;
        init.tmp_size_mb = kind.tmp_size_mb;
        if let RootSetup::Native { root_size_mb, .. } = &mut init.root {
            *root_size_mb = super::root_size_mb(STEM_CODE_BYTES);
        }
        let limits = CgroupLimits {
            memory_bytes: kind.memory_mb() * MIB,
            pids_max: self.config.pids_max,
            cpu: CpuQuota {
                quota_us: kind.cpu_quota_us,
                period_us: CpuQuota::PERIOD_US,
            },
        };
        let cgroup = self.cgroups.create(&id, &limits)?;
        let instance = NativeInstance::spawn(&self.config.agent_path, id, cgroup).await?;
        let instance = self
            .handshake(instance, &generic, init, uids, Purpose::Serve)
            .await?;
        Ok(NativeStem {
            kind: kind.clone(),
            instance,
        })
    }

    /// Makes `stem` `spec`'s instance (keeping the stem's id and uids): the function's
    /// limits on its cgroup, then `Specialize` with its environment and code.
    async fn specialize_stem(
        &self,
        stem: NativeStem,
        spec: InstanceSpec,
    ) -> Result<NativeInstance, SandboxError> {
        let mut instance = stem.instance;
        let stem_quota_us = stem.kind.cpu_quota_us;
        let spec = InstanceSpec {
            instance_id: instance.id.clone(),
            ..spec
        };
        instance.output_quota_mb = spec.output_quota_mb;
        let limited = instance
            .host
            .cgroup
            .as_ref()
            .ok_or_else(|| SandboxError::Lost {
                instance: instance.id.clone(),
                message: "the stem's cgroup is gone".into(),
            })
            .and_then(|cgroup| {
                let limits = self.limits(&spec);
                // The stem has the function's CPU quota already: rewriting it would
                // empty the burst it saved while it waited.
                let cpu_too = limits.cpu.quota_us != stem_quota_us;
                self.cgroups.set_limits(cgroup, &limits, cpu_too)
            });
        if let Err(error) = limited {
            return Err(instance.fail(error).await);
        }
        let answer = session::specialize(
            &mut instance.stream,
            &instance.id,
            &spec,
            &spec.code_tar,
            self.config.init_timeout,
        )
        .await;
        match answer {
            Ok(ready) => {
                tracing::debug!(instance = %instance.id, init_ms = ready.init_ms,
                    "stem specialized");
                Ok(instance)
            }
            Err(error) => Err(instance.fail(error).await),
        }
    }
}
