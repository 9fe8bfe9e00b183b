//! `/v1/keys` and `/v1/namespaces/{namespace}` (admin only): API keys with a role, a
//! namespace and limits, and the quotas of a namespace.
//!
//! A key's secret is made here, shown once in the answer to its creation, and stored
//! only as its SHA-256 (`auth::secret_sha256`).

use crate::auth::secret_sha256;
use crate::schemas::{CommonErrors, ErrorBody};
use crate::tenancy::{checked_namespace, Role, DEFAULT_NAMESPACE};
use crate::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_api::keys::{CreateKey, KeyList, KeyObject, NamespaceObject};
use hearth_store::{KeyLimits, KeyRecord, NamespaceQuotas};
use rand::RngCore;

/// Highest rate or burst a key may be given.
const MAX_RATE: f64 = 1_000_000.0;

fn key_object(record: KeyRecord, secret: Option<String>) -> KeyObject {
    KeyObject {
        id: record.id,
        name: record.name,
        namespace: record.namespace,
        role: record.role,
        limits: record.limits,
        created_at: record.created_at,
        secret,
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_request", format!("expected JSON {shape}: {e}"))
    })
}

fn checked_limits(limits: KeyLimits) -> Result<KeyLimits, ApiError> {
    let invalid = |message: &str| ApiError::bad_request("invalid_limits", message.to_string());
    if let Some(rate) = limits.rate_per_s {
        if !(rate > 0.0 && rate <= MAX_RATE) {
            return Err(invalid("rate_per_s must be above 0 and at most 1000000"));
        }
    }
    if let Some(burst) = limits.burst {
        if burst == 0 || f64::from(burst) > MAX_RATE {
            return Err(invalid("burst must be between 1 and 1000000"));
        }
        if limits.rate_per_s.is_none() {
            return Err(invalid(
                "burst needs rate_per_s (the rate its bucket refills at)",
            ));
        }
    }
    if limits.max_concurrency == Some(0) {
        return Err(invalid(
            "max_concurrency must be at least 1 (leave it out for no limit)",
        ));
    }
    Ok(limits)
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buffer);
    hex::encode(buffer)
}

/// Makes a key; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/keys", operation_id = "create_key", tag = "keys",
    request_body(content = CreateKey),
    responses((status = 201, description = "the key, with its secret (shown once)", body = KeyObject),
        (status = 403, description = "not an admin key", body = ErrorBody), CommonErrors))]
pub(crate) async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateKey = parse(
        &body,
        r#"{"name", "namespace", "role": "admin"|"developer"|"invoker", "limits": {"rate_per_s", "burst", "max_concurrency"}}"#,
    )?;
    let role = Role::parse(&request.role).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_role",
            format!(
                "unknown role {:?}: use admin, developer or invoker",
                request.role
            ),
        )
    })?;
    let namespace = request
        .namespace
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    checked_namespace(&namespace)?;
    if request.name.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "name is longer than 200 characters",
        ));
    }
    let limits = checked_limits(request.limits.unwrap_or_default())?;
    let secret = format!("hk_{}", random_hex(32));
    let record = KeyRecord {
        id: format!("k_{}", random_hex(8)),
        name: request.name,
        namespace,
        role: role.as_str().to_string(),
        secret_sha256: secret_sha256(&secret),
        limits,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    state
        .metadata
        .create_key(&record)
        .await
        .map_err(|e| ApiError::store("storing the key", e))?;
    tracing::info!(key = %record.id, namespace = %record.namespace, role = %record.role, "key created");
    Ok((StatusCode::CREATED, Json(key_object(record, Some(secret)))).into_response())
}

/// Every key (never a secret).
#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "keys",
    responses((status = 200, body = KeyList), (status = 403, description = "not an admin key", body = ErrorBody), CommonErrors))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let records = state
        .metadata
        .list_keys()
        .await
        .map_err(|e| ApiError::store("listing keys", e))?;
    Ok(Json(KeyList {
        keys: records.into_iter().map(|r| key_object(r, None)).collect(),
    }))
}

/// Revokes a key: its next request, on any controller, is refused.
#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "delete_key", tag = "keys",
    params(("id" = String, Path, description = "the key's id", example = "k_0123456789abcdef")),
    responses((status = 204, description = "revoked"), (status = 403, description = "not an admin key", body = ErrorBody), CommonErrors))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let existed = state
        .metadata
        .delete_key(&id)
        .await
        .map_err(|e| ApiError::store("deleting the key", e))?;
    if !existed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("key {id:?} does not exist: see GET /v1/keys"),
        ));
    }
    tracing::info!(key = %id, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}

fn namespace_json(namespace: &str, quotas: &NamespaceQuotas) -> Json<NamespaceObject> {
    Json(NamespaceObject {
        namespace: namespace.to_string(),
        quotas: quotas.clone(),
    })
}

/// A namespace's quotas.
#[utoipa::path(get, path = "/v1/namespaces/{namespace}", operation_id = "get_namespace", tag = "keys",
    params(("namespace" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "team-a")),
    responses((status = 200, body = NamespaceObject), (status = 403, description = "not an admin key", body = ErrorBody), CommonErrors))]
pub(crate) async fn get_namespace(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
) -> Result<Json<NamespaceObject>, ApiError> {
    checked_namespace(&namespace)?;
    let quotas = crate::quota::quotas_of(&state, &namespace).await?;
    Ok(namespace_json(&namespace, &quotas))
}

/// Sets (replaces) a namespace's quotas: concurrent invocations, warm instances and
/// their memory; beyond them calls get 429 `quota_exceeded`.
#[utoipa::path(put, path = "/v1/namespaces/{namespace}", operation_id = "set_namespace", tag = "keys",
    params(("namespace" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "team-a")),
    request_body(content = NamespaceQuotas),
    responses((status = 200, body = NamespaceObject), (status = 403, description = "not an admin key", body = ErrorBody), CommonErrors))]
pub(crate) async fn set_namespace(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Result<Json<NamespaceObject>, ApiError> {
    checked_namespace(&namespace)?;
    let quotas: NamespaceQuotas = parse(
        &body,
        r#"{"max_concurrency", "max_warm_instances", "max_warm_memory_mb"}"#,
    )?;
    if quotas.max_concurrency == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_quotas",
            "max_concurrency must be at least 1 (leave it out for no limit)",
        ));
    }
    state
        .metadata
        .set_quotas(&namespace, &quotas)
        .await
        .map_err(|e| ApiError::store("storing the quotas", e))?;
    state.quota_cache.remember(&namespace, &quotas);
    Ok(namespace_json(&namespace, &quotas))
}
