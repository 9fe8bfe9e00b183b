//! `/v1/keys` and `/v1/namespaces/{namespace}` (admin only): API keys with a role, a
//! namespace and limits, and the quotas of a namespace.

pub use hearth_core::tenancy::{KeyLimits, NamespaceQuotas};
use serde::{Deserialize, Serialize};

/// `POST /v1/keys`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "ci", "namespace": "team-a", "role": "developer",
    "limits": {"rate_per_s": 10, "burst": 10, "max_concurrency": 20}})))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for people.
    #[serde(default)]
    pub name: String,
    /// The namespace the key acts in (`default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `admin`, `developer` or `invoker`.
    pub role: String,
    /// Its limits (none: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<KeyLimits>,
}

/// A key as listed (never its secret), or as created (with it, once).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyObject {
    /// `k_…`.
    pub id: String,
    /// A label for people.
    pub name: String,
    /// The namespace it acts in.
    pub namespace: String,
    /// `admin`, `developer` or `invoker`.
    pub role: String,
    /// Its limits.
    pub limits: KeyLimits,
    /// RFC 3339 time it was made.
    pub created_at: String,
    /// Only in the answer to the creation: the Bearer token, shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `GET /v1/keys`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyList {
    /// Every key, without secrets.
    pub keys: Vec<KeyObject>,
}

/// A namespace's quotas (`PUT` takes the `quotas` member's shape).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"namespace": "team-a", "quotas": {"max_concurrency": 2}})))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceObject {
    /// The namespace.
    pub namespace: String,
    /// Its quotas.
    pub quotas: NamespaceQuotas,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::assert_round_trips;

    #[test]
    fn the_documented_key_bodies_round_trip() {
        let create: CreateKey = assert_round_trips(
            r#"{"name": "ci", "namespace": "team-a", "role": "admin",
            "limits": {"rate_per_s": 10.0, "burst": 10, "max_concurrency": 20}}"#,
        );
        assert_eq!(create.limits.unwrap().burst, Some(10));
        let bare: CreateKey = serde_json::from_str(r#"{"role": "invoker"}"#).unwrap();
        assert_eq!((bare.name.as_str(), bare.namespace), ("", None));
        let created: KeyObject = assert_round_trips(
            r#"{"id": "k_01J", "secret": "hk_abc", "name": "ci", "namespace": "team-a",
            "role": "developer", "limits": {"rate_per_s": 2.5}, "created_at": "2026-11-28T10:00:00Z"}"#,
        );
        assert_eq!(created.secret.as_deref(), Some("hk_abc"));
        let listed: KeyList = assert_round_trips(
            r#"{"keys": [{"id": "k_01J", "name": "", "namespace": "default", "role": "invoker",
            "limits": {}, "created_at": "t"}]}"#,
        );
        assert_eq!(listed.keys[0].secret, None);
    }

    #[test]
    fn the_documented_namespace_round_trips() {
        let namespace: NamespaceObject = assert_round_trips(
            r#"{"namespace": "team-a", "quotas": {"max_concurrency": 2,
            "max_warm_instances": 4, "max_warm_memory_mb": 1024}}"#,
        );
        assert_eq!(namespace.quotas.max_warm_instances, Some(4));
    }
}
