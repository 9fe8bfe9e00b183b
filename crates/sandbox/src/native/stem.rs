//! Native stems: the agent already spawned into its own cgroup and fresh namespaces,
//! blocked on its first frame, no code anywhere. A cold start then only sets the
//! function's limits on the cgroup and sends `Init` with the code (the agent builds the
//! root and starts the runtime as on any cold start).
//!
//! While it waits, a stem has a limit of [`STEM_MEMORY_MB`] of memory and the backend's
//! CPU and pids limits; it runs nothing but the agent (a static binary reading its
//! stdin), so there is nothing of anyone's in it to leak.

use super::{NativeBackend, NativeInstance, MIB};
use crate::cgroup::{CgroupLimits, CpuQuota};
use crate::stem::{StemKind, WaitingStem, STEM_MEMORY_MB};
use crate::{InstanceSpec, SandboxError};
use hearth_core::protocol::Purpose;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the stems of this process apart (their ids name their cgroups).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A waiting native stem.
pub type NativeStem = WaitingStem<NativeInstance>;

impl NativeBackend {
    /// Native stems serve every runtime the host can run, except a version with a
    /// dependency layer (bound at root setup from a path only its own spec names).
    pub(super) fn native_stem_kind(&self, spec: &InstanceSpec) -> Option<StemKind> {
        if spec.layer.is_some() || self.program(spec.runtime, Purpose::Serve).is_err() {
            return None;
        }
        // The agent makes /tmp and /output at Init: neither is fixed in a stem.
        Some(StemKind {
            runtime: spec.runtime,
            output_quota_mb: 0,
            tmp_size_mb: 0,
        })
    }

    /// Spawns a stem of `kind`: a cgroup with the stem's limits and the agent in it.
    pub async fn create_native_stem(&self, kind: &StemKind) -> Result<NativeStem, SandboxError> {
        let id = format!(
            "stem-{}-{}-{}",
            kind.runtime,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let limits = CgroupLimits {
            memory_bytes: STEM_MEMORY_MB * MIB,
            pids_max: self.config.pids_max,
            cpu: CpuQuota::cpus(self.config.cpus),
        };
        let cgroup = self.cgroups.create(&id, &limits)?;
        let instance = NativeInstance::spawn(&self.config.agent_path, id, cgroup).await?;
        Ok(NativeStem {
            kind: kind.clone(),
            instance,
        })
    }

    /// Makes `stem` `spec`'s instance (keeping the stem's id): the function's limits on
    /// its cgroup, then `Init` with the code.
    pub async fn specialize_native(
        &self,
        stem: NativeStem,
        spec: InstanceSpec,
    ) -> Result<NativeInstance, SandboxError> {
        let instance = stem.instance;
        let spec = InstanceSpec {
            instance_id: instance.id.clone(),
            ..spec
        };
        // The uids are leased now, not when the stem was made: until `Init` the agent
        // is root and waits, and a stem that is never used should hold none.
        let prepared = self
            .program(spec.runtime, Purpose::Serve)
            .and_then(|program| Ok((program, self.uids.lease()?)))
            .and_then(|(program, uids)| {
                let init = self.init_spec(&spec, program, Purpose::Serve, &uids)?;
                Ok((init, uids))
            })
            .and_then(|(init, uids)| {
                let cgroup = instance.cgroup.as_ref().ok_or_else(|| SandboxError::Lost {
                    instance: instance.id.clone(),
                    message: "the stem's cgroup is gone".into(),
                })?;
                self.cgroups.set_limits(cgroup, &self.limits(&spec))?;
                Ok((init, uids))
            });
        match prepared {
            Ok((init, uids)) => {
                self.handshake(instance, &spec, init, uids, Purpose::Serve)
                    .await
            }
            Err(error) => Err(instance.fail(error).await),
        }
    }
}
