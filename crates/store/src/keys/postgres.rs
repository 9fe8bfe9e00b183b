//! [`KeyStore`] on the PostgreSQL store.

use super::{
    decode_quotas, encode_json, KeyRecord, KeyRow, KeyStore, NamespaceQuotas, KEY_COLUMNS,
};
use crate::metadata::PgMetadataStore;
use crate::StoreError;
use async_trait::async_trait;

#[async_trait]
impl KeyStore for PgMetadataStore {
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let limits = encode_json(&format!("limits of key {}", key.id), &key.limits)?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, name, namespace, role, secret_sha256, limits, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.namespace)
        .bind(&key.role)
        .bind(&key.secret_sha256)
        .bind(&limits)
        .bind(&key.created_at)
        .execute(self.pool())
        .await
        .map_err(self.err("create_key"))?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::InvalidArgument(format!(
                "key {} exists already",
                key.id
            )));
        }
        Ok(())
    }

    async fn key_by_secret(&self, secret_sha256: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} WHERE secret_sha256 = $1"))
            .bind(secret_sha256)
            .fetch_optional(self.pool())
            .await
            .map_err(self.err("key_by_secret"))?;
        row.map(|row| KeyRow::read(&row).map_err(self.err("key_by_secret")))
            .transpose()?
            .map(KeyRow::decode)
            .transpose()
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} ORDER BY created_at, id"))
            .fetch_all(self.pool())
            .await
            .map_err(self.err("list_keys"))?;
        rows.iter()
            .map(|row| KeyRow::read(row).map_err(self.err("list_keys"))?.decode())
            .collect()
    }

    async fn delete_key(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(self.err("delete_key"))?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn set_quotas(
        &self,
        namespace: &str,
        quotas: &NamespaceQuotas,
    ) -> Result<(), StoreError> {
        let text = encode_json(&format!("quotas of namespace {namespace}"), quotas)?;
        sqlx::query(
            "INSERT INTO namespaces (name, quotas) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET quotas = excluded.quotas",
        )
        .bind(namespace)
        .bind(&text)
        .execute(self.pool())
        .await
        .map_err(self.err("set_quotas"))?;
        Ok(())
    }

    async fn quotas(&self, namespace: &str) -> Result<NamespaceQuotas, StoreError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT quotas FROM namespaces WHERE name = $1")
                .bind(namespace)
                .fetch_optional(self.pool())
                .await
                .map_err(self.err("quotas"))?;
        Ok(text
            .map(|t| decode_quotas(namespace, &t))
            .transpose()?
            .unwrap_or_default())
    }
}
