//! What a tenant is held to: an API key's limits and a namespace's quotas. One definition
//! for the store that keeps them and the API that shows and takes them.

use serde::{Deserialize, Serialize};

/// A key's limits, each optional (absent: unlimited).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Requests per second (a token bucket refilling at this rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// Requests at once the bucket allows (default: `rate_per_s` rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Invocations of this key running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// Quotas of a namespace, each optional (absent: unlimited).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuotas {
    /// Invocations of the namespace's functions running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Warm instances of the namespace's functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_warm_instances: Option<u32>,
    /// Memory (MB, by their limits) of the namespace's warm instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_warm_memory_mb: Option<u64>,
}

impl NamespaceQuotas {
    /// Whether no quota is set.
    pub fn is_unlimited(&self) -> bool {
        *self == NamespaceQuotas::default()
    }
}
