//! Docker stems: hardened containers of a runtime's image created, attached and started
//! before any function needs them, their agent past `Init` (privileges dropped, the
//! runtime's interpreter started with no code) and `/code` empty. A cold start then
//! sets the function's memory and CPU ceiling on the running container (the engine's
//! update API) and its quota on the container's function group, while it copies the
//! code in (archive API), and sends `Specialize`: no create,
//! attach, start or inspect on the call's path.
//!
//! What the engine fixes at creation is in the [`StemKind`]: the image (runtime), the
//! `/tmp` and `/output` tmpfs sizes. A stem's labels name no function (they cannot
//! change once the container exists); its instance id does not either.

use super::{container, instance, Container, DockerBackend, DockerInstance};
use crate::backend::StemBackend;
use crate::instance::InstanceHost;
use crate::session;
use crate::stem::{StemKind, WaitingStem};
use crate::{InstanceSpec, SandboxError};
use async_trait::async_trait;
use bollard::models::ContainerUpdateBody;
use bollard::query_parameters::CreateContainerOptions;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the stems of this process apart (their ids name their containers).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A waiting Docker stem.
pub type DockerStem = WaitingStem<DockerInstance>;

#[async_trait]
impl StemBackend for DockerBackend {
    /// A version without a dependency layer whose runtime has an image can start from a
    /// stem with its `/tmp` and `/output` sizes.
    fn kind_of_stem(&self, spec: &InstanceSpec) -> Option<StemKind> {
        if spec.layer.is_some() || !self.images.contains_key(&spec.runtime) {
            return None;
        }
        Some(StemKind {
            runtime: spec.runtime,
            output_quota_mb: spec.output_quota_mb,
            tmp_size_mb: self.config.limits.tmp_size_mb.min(spec.memory_mb).max(1),
            cpu_quota_us: 0,
        })
    }

    /// Creates, attaches and starts a stem container of `kind`.
    async fn grow_stem(&self, kind: &StemKind) -> Result<DockerStem, SandboxError> {
        let image = self.images.get(&kind.runtime).ok_or_else(|| {
            SandboxError::Unavailable(format!("no Docker image for {} stems", kind.runtime))
        })?;
        let id = format!(
            "stem-{}-{}-{}",
            kind.runtime,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // The definition of a function whose memory is the stem's /tmp: the same
        // hardening, /tmp and /output as the function it will serve, no code.
        let generic = InstanceSpec {
            instance_id: id.clone(),
            function_name: String::new(),
            version: 0,
            runtime: kind.runtime,
            memory_mb: kind.tmp_size_mb.max(crate::stem::STEM_MEMORY_MB),
            cpus: None,
            output_quota_mb: kind.output_quota_mb,
            env: Default::default(),
            code_tar: Bytes::new(),
            layer: None,
        };
        // Leased now: the container's tmpfs mounts are made for the function's uid.
        let uids = self.uids.lease()?;
        let mut body = container::definition(
            &generic,
            &image.reference,
            &self.config.limits,
            &self.config.owner,
            uids.function,
        );
        if let Some(tmpfs) = body.host_config.as_mut().and_then(|h| h.tmpfs.as_mut()) {
            tmpfs.insert(
                container::TMP_DIR.to_string(),
                format!("rw,nosuid,nodev,size={}m,mode=1777", kind.tmp_size_mb),
            );
        }
        let options = CreateContainerOptions {
            name: Some(container::name(&id)),
            ..CreateContainerOptions::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| SandboxError::Spawn {
                instance: id.clone(),
                message: format!("create the stem container: {e}"),
            })?;
        let booted = match self.boot(&generic, &created.id).await {
            Ok(mut instance) => {
                instance.uids = Some(uids);
                self.init(instance, &generic, image, true).await
            }
            Err(error) => Err(error),
        };
        match booted {
            Ok(instance) => Ok(DockerStem {
                kind: kind.clone(),
                instance,
            }),
            Err(error) => {
                if let Err(e) = instance::remove(&self.docker, &created.id).await {
                    tracing::warn!(container = %created.id, error = %e,
                        "cannot remove a stem container that failed to start");
                }
                Err(error)
            }
        }
    }

    /// Makes `stem` `spec`'s instance (keeping the stem's id): the function's memory
    /// and CPU, its code, then `Init`. The container is removed on any failure.
    async fn specialize_stem(
        &self,
        stem: DockerStem,
        spec: InstanceSpec,
    ) -> Result<DockerInstance, SandboxError> {
        let mut instance = stem.instance;
        let spec = InstanceSpec {
            instance_id: instance.id.clone(),
            ..spec
        };
        instance.output_quota_mb = spec.output_quota_mb;
        let prepared = async {
            let image = self.images.get(&spec.runtime).ok_or_else(|| {
                SandboxError::Unavailable(format!("no Docker image for {}", spec.runtime))
            })?;
            // Only the limits of this definition are used: the uid is the stem's own.
            let function_uid = instance.uids.as_ref().map_or(0, |uids| uids.function);
            let wanted = container::definition(
                &spec,
                &image.reference,
                &self.config.limits,
                &self.config.owner,
                function_uid,
            )
            .host_config
            .unwrap_or_default();
            let update = ContainerUpdateBody {
                memory: wanted.memory,
                memory_swap: wanted.memory_swap,
                cpu_period: wanted.cpu_period,
                cpu_quota: wanted.cpu_quota,
                cpu_shares: wanted.cpu_shares,
                ..ContainerUpdateBody::default()
            };
            // Two independent engine calls, both done before the code loads: at once.
            let limited = async {
                self.docker
                    .update_container(&instance.host.container, update)
                    .await
                    .map_err(|e| SandboxError::Spawn {
                        instance: instance.id.clone(),
                        message: format!("set the function's limits on the stem: {e}"),
                    })
            };
            let (limited, uploaded) =
                tokio::join!(limited, self.upload_code(&spec, &instance.host.container));
            limited?;
            // The ceiling is raised (when it was) before the function's quota.
            if let Some(group) = &instance.host.cpu_group {
                group.set_quota(&container::function_cpu_quota(&spec, &self.config.limits))?;
            }
            uploaded?;
            Ok::<_, SandboxError>(image.clone())
        }
        .await;
        let container = instance.host.container.clone();
        let ready = match prepared {
            Ok(_) => {
                // The code is in /code: `Specialize` carries no payload.
                let answer = session::specialize(
                    &mut instance.stream,
                    &instance.id,
                    &spec,
                    &[],
                    self.config.init_timeout,
                )
                .await;
                match answer {
                    Ok(_) => Ok(instance),
                    Err(error) => {
                        instance.host.output_task.abort();
                        Err(instance.with_agent_log(error))
                    }
                }
            }
            Err(error) => {
                Container::teardown(&mut instance).await;
                return Err(error);
            }
        };
        if ready.is_err() {
            if let Err(e) = instance::remove(&self.docker, &container).await {
                tracing::warn!(container = %container, error = %e,
                    "cannot remove a stem that failed to specialize");
            }
        }
        ready
    }
}
