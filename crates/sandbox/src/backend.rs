//! The typed faces of a backend, and the one [`SandboxBackend`] implementation over them.
//!
//! A backend implements [`TypedBackend`] (its instances, made for a spec) and
//! [`StemBackend`] (its stems, and how one becomes an instance) with its own types;
//! the boxing, and the check that a stem handed back is this backend's own, are written
//! here once. Tests that need a backend's own instance type (its pid, its container)
//! call the typed methods.

use crate::stem::{Stem, StemKind, WaitingStem};
use crate::{Instance, InstanceSpec, SandboxBackend, SandboxError};
use async_trait::async_trait;

/// A backend's instances, in its own type.
#[async_trait]
pub trait TypedBackend: Send + Sync {
    /// What it makes.
    type Instance: Instance + 'static;
    /// [`SandboxBackend::name`].
    const NAME: &'static str;
    /// [`SandboxBackend::mounts_layers`].
    const MOUNTS_LAYERS: bool = false;
    /// [`SandboxBackend::builds_with_layers`].
    const BUILDS_WITH_LAYERS: bool = Self::MOUNTS_LAYERS;

    /// [`SandboxBackend::create`], unboxed.
    async fn create_instance(&self, spec: InstanceSpec) -> Result<Self::Instance, SandboxError>;

    /// [`SandboxBackend::create_builder`], unboxed.
    async fn create_build_instance(
        &self,
        spec: InstanceSpec,
    ) -> Result<Self::Instance, SandboxError>;
}

/// A backend's stems, in its own type.
#[async_trait]
pub trait StemBackend: TypedBackend {
    /// [`SandboxBackend::stem_kind`].
    fn kind_of_stem(&self, spec: &InstanceSpec) -> Option<StemKind>;

    /// [`SandboxBackend::create_stem`], unboxed.
    async fn grow_stem(&self, kind: &StemKind)
        -> Result<WaitingStem<Self::Instance>, SandboxError>;

    /// [`SandboxBackend::specialize`], for a stem known to be this backend's.
    async fn specialize_stem(
        &self,
        stem: WaitingStem<Self::Instance>,
        spec: InstanceSpec,
    ) -> Result<Self::Instance, SandboxError>;
}

#[async_trait]
impl<B: StemBackend> SandboxBackend for B {
    fn name(&self) -> &'static str {
        B::NAME
    }

    async fn create(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, SandboxError> {
        Ok(Box::new(self.create_instance(spec).await?))
    }

    fn mounts_layers(&self) -> bool {
        B::MOUNTS_LAYERS
    }

    fn builds_with_layers(&self) -> bool {
        B::BUILDS_WITH_LAYERS
    }

    async fn create_builder(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, SandboxError> {
        Ok(Box::new(self.create_build_instance(spec).await?))
    }

    fn stem_kind(&self, spec: &InstanceSpec) -> Option<StemKind> {
        self.kind_of_stem(spec)
    }

    async fn create_stem(&self, kind: &StemKind) -> Result<Box<dyn Stem>, SandboxError> {
        Ok(Box::new(self.grow_stem(kind).await?))
    }

    async fn specialize(
        &self,
        stem: Box<dyn Stem>,
        spec: InstanceSpec,
    ) -> Result<Box<dyn Instance>, SandboxError> {
        // Another backend's stem is dropped: its processes die with it.
        let stem = WaitingStem::<B::Instance>::take(stem, B::NAME)?;
        Ok(Box::new(self.specialize_stem(stem, spec).await?))
    }
}
