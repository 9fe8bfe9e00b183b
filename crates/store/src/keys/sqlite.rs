//! [`KeyStore`] on the embedded SQLite store.

use super::{
    decode_quotas, encode_json, KeyRecord, KeyRow, KeyStore, NamespaceQuotas, KEY_COLUMNS,
};
use crate::metadata::SqliteMetadataStore;
use crate::StoreError;
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

fn key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    KeyRow::read(row)
}

#[async_trait]
impl KeyStore for SqliteMetadataStore {
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let limits = encode_json(&format!("limits of key {}", key.id), &key.limits)?;
        let key = key.clone();
        self.with_conn("create_key", move |conn| {
            let inserted = conn.execute(
                "INSERT INTO api_keys (id, name, namespace, role, secret_sha256, limits, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![key.id, key.name, key.namespace, key.role, key.secret_sha256, limits, key.created_at],
            )?;
            if inserted == 0 {
                return Err(StoreError::InvalidArgument(format!("key {} exists already", key.id)).into());
            }
            Ok(())
        })
        .await
    }

    async fn key_by_secret(&self, secret_sha256: &str) -> Result<Option<KeyRecord>, StoreError> {
        let hash = secret_sha256.to_string();
        self.with_conn("key_by_secret", move |conn| {
            let row = conn
                .prepare_cached(&format!("SELECT {KEY_COLUMNS} WHERE secret_sha256 = ?1"))?
                .query_row([&hash], key_row)
                .optional()?;
            Ok(row.map(KeyRow::decode).transpose()?)
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.with_conn("list_keys", move |conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {KEY_COLUMNS} ORDER BY created_at, id"))?;
            let rows = stmt
                .query_map([], key_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .map(KeyRow::decode)
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn delete_key(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.with_conn("delete_key", move |conn| {
            Ok(conn.execute("DELETE FROM api_keys WHERE id = ?1", [&id])? > 0)
        })
        .await
    }

    async fn set_quotas(
        &self,
        namespace: &str,
        quotas: &NamespaceQuotas,
    ) -> Result<(), StoreError> {
        let text = encode_json(&format!("quotas of namespace {namespace}"), quotas)?;
        let namespace = namespace.to_string();
        self.with_conn("set_quotas", move |conn| {
            conn.execute(
                "INSERT INTO namespaces (name, quotas) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET quotas = excluded.quotas",
                params![namespace, text],
            )?;
            Ok(())
        })
        .await
    }

    async fn quotas(&self, namespace: &str) -> Result<NamespaceQuotas, StoreError> {
        let namespace = namespace.to_string();
        self.with_conn("quotas", move |conn| {
            let text: Option<String> = conn
                .prepare_cached("SELECT quotas FROM namespaces WHERE name = ?1")?
                .query_row([&namespace], |row| row.get(0))
                .optional()?;
            Ok(text
                .map(|t| decode_quotas(&namespace, &t))
                .transpose()?
                .unwrap_or_default())
        })
        .await
    }
}
