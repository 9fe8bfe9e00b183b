//! API keys and namespace quotas, kept in the metadata store (both backends).
//!
//! [`KeyStore`] is implemented by each metadata backend in its own file (`sqlite.rs`,
//! `postgres.rs`), on the tables the metadata migrations create. A key's secret is never
//! stored: only its SHA-256 ([`KeyRecord::secret_sha256`]), by which a request's key is
//! found. The store keeps roles and limits as data; what they allow is the controller's
//! business.

mod postgres;
mod sqlite;

use crate::columns::Columns;
use crate::StoreError;
use async_trait::async_trait;
use serde::Serialize;

pub use hearth_core::tenancy::{KeyLimits, NamespaceQuotas};

/// One API key as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// Public id (`k_…`), shown in listings and logs.
    pub id: String,
    /// A label for people.
    pub name: String,
    /// The namespace the key acts in.
    pub namespace: String,
    /// Its role, as the controller names it (`admin`, `developer`, `invoker`).
    pub role: String,
    /// Hex SHA-256 of the secret; the secret itself is never stored.
    pub secret_sha256: String,
    /// Its limits.
    pub limits: KeyLimits,
    /// RFC 3339 UTC time it was made.
    pub created_at: String,
}

/// Where API keys and namespace quotas are kept.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key; an id already taken is [`StoreError::InvalidArgument`].
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError>;

    /// The key whose secret hashes to `secret_sha256`.
    async fn key_by_secret(&self, secret_sha256: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// Every key, oldest first.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Deletes a key; `false` if there was none with that id.
    async fn delete_key(&self, id: &str) -> Result<bool, StoreError>;

    /// Sets (replaces) a namespace's quotas.
    async fn set_quotas(&self, namespace: &str, quotas: &NamespaceQuotas)
        -> Result<(), StoreError>;

    /// A namespace's quotas (none set: unlimited).
    async fn quotas(&self, namespace: &str) -> Result<NamespaceQuotas, StoreError>;
}

/// The columns of a key row, in [`KeyRow`] order.
pub(crate) const KEY_COLUMNS: &str =
    "id, name, namespace, role, secret_sha256, limits, created_at FROM api_keys";

/// An `api_keys` row before decoding.
pub(crate) struct KeyRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) role: String,
    pub(crate) secret_sha256: String,
    pub(crate) limits: String,
    pub(crate) created_at: String,
}

impl KeyRow {
    /// A row of `SELECT {KEY_COLUMNS}`, in that order.
    pub(crate) fn read<R: Columns>(row: &R) -> Result<KeyRow, R::Error> {
        let [id, name, namespace, role, secret_sha256, limits, created_at] =
            row.texts([0, 1, 2, 3, 4, 5, 6])?;
        Ok(KeyRow {
            id,
            name,
            namespace,
            role,
            secret_sha256,
            limits,
            created_at,
        })
    }

    pub(crate) fn decode(self) -> Result<KeyRecord, StoreError> {
        let limits = serde_json::from_str(&self.limits).map_err(|e| StoreError::Corrupt {
            what: format!("limits of key {}", self.id),
            reason: e.to_string(),
        })?;
        Ok(KeyRecord {
            id: self.id,
            name: self.name,
            namespace: self.namespace,
            role: self.role,
            secret_sha256: self.secret_sha256,
            limits,
            created_at: self.created_at,
        })
    }
}

pub(crate) fn encode_json<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::InvalidArgument(format!("{what} cannot be encoded: {e}")))
}

pub(crate) fn decode_quotas(namespace: &str, text: &str) -> Result<NamespaceQuotas, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: format!("quotas of namespace {namespace}"),
        reason: e.to_string(),
    })
}
