//! The key check on everything under `/v1/`: the admin key, or an API key from the
//! metadata store (found by its secret's SHA-256, on every request, so a revoked key is
//! refused at once by every controller); then the key's role against the route, and its
//! rate limit. Every denial is counted (`hearth_denied_total{reason}`) and logged with
//! the key's id, never its secret.

use crate::tenancy::{checked_namespace, forbidden, Caller, Role};
use crate::{ApiError, AppState};
use axum::extract::{Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use hearth_store::Admission;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Name of the denial counter.
pub(crate) const DENIED_TOTAL: &str = "hearth_denied_total";

pub(crate) async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|secret| secret_sha256(secret.trim()));
    // A dashboard session stands for the key it was opened with (by its hash); the
    // key is resolved here on every request, as a Bearer key is.
    let from_session = || {
        request
            .extensions()
            .get::<SessionKey>()
            .map(|k| k.0.clone())
    };
    let Some(key_sha256) = presented.or_else(from_session) else {
        denied("unauthorized", None);
        return Err(unauthorized(
            "missing API key: send `Authorization: Bearer <key>`",
        ));
    };
    let mut caller = identify(&state, &key_sha256).await?;
    if caller.role == Role::Admin {
        choose_namespace(&mut caller, &request)?;
    }
    let (needed, what) = required_role(request.method(), request.uri().path());
    if caller.role < needed {
        denied("forbidden", Some(&caller.key_id));
        return Err(forbidden(&caller, what));
    }
    if let Some(rate) = caller.rate_per_s {
        let burst = caller.burst.unwrap_or_else(|| rate.ceil().max(1.0) as u32);
        let admission = state
            .limiter
            .take_token(&format!("key:{}", caller.key_id), rate, burst)
            .await
            .map_err(|e| ApiError::store("checking the rate limit", e))?;
        if let Admission::Denied { retry_after } = admission {
            denied("rate_limited", Some(&caller.key_id));
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "key {} is limited to {rate} requests/s (burst {burst}): retry after the Retry-After seconds",
                    caller.key_id
                ),
            )
            .retry_after(retry_after.as_secs_f64().ceil().max(1.0) as u64));
        }
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// The caller a key stands for, by the SHA-256 of its secret: the admin key, or a
/// stored key.
async fn identify(state: &AppState, key_sha256: &str) -> Result<Caller, ApiError> {
    if constant_time_eq(
        key_sha256.as_bytes(),
        secret_sha256(&state.api_key).as_bytes(),
    ) {
        return Ok(Caller::admin());
    }
    let record = state
        .metadata
        .key_by_secret(key_sha256)
        .await
        .map_err(|e| ApiError::store("checking the API key", e))?;
    let Some(record) = record else {
        denied("unauthorized", None);
        return Err(unauthorized(
            "the API key is wrong or was revoked: use the key `hearth up` printed (also in its data dir, admin.key) or one `hearth keys create` made",
        ));
    };
    let role = Role::parse(&record.role).ok_or_else(|| {
        ApiError::internal(
            "checking the API key",
            format!("key {} has unknown role {:?}", record.id, record.role),
        )
    })?;
    Ok(Caller {
        key_id: record.id,
        role,
        namespace: record.namespace,
        all_namespaces: false,
        rate_per_s: record.limits.rate_per_s.filter(|r| *r > 0.0),
        burst: record.limits.burst,
        max_concurrency: record.limits.max_concurrency,
    })
}

#[derive(Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
}

/// An admin's `?namespace=`: the namespace it acts in (`*`: listings span all).
fn choose_namespace(caller: &mut Caller, request: &Request) -> Result<(), ApiError> {
    let Ok(Query(query)) = Query::<NamespaceQuery>::try_from_uri(request.uri()) else {
        return Ok(());
    };
    match query.namespace.as_deref() {
        None | Some("") => {}
        Some("*") => caller.all_namespaces = true,
        Some(namespace) => {
            checked_namespace(namespace)?;
            caller.namespace = namespace.to_string();
        }
    }
    Ok(())
}

/// The least role a request needs, and what it does (for the 403's message).
fn required_role(method: &Method, path: &str) -> (Role, &'static str) {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["keys", ..] | ["namespaces", ..] => (Role::Admin, "manage keys and namespaces"),
        ["functions", _] if method == Method::PUT || method == Method::DELETE => {
            (Role::Developer, "deploy or delete functions")
        }
        ["functions", _, "tuning", "apply" | "explore"] => {
            (Role::Developer, "change a function's settings")
        }
        _ => (Role::Invoker, "call this endpoint"),
    }
}

/// Counts and logs a refused request: with the key's id when it is known, never a secret.
pub(crate) fn denied(reason: &'static str, key_id: Option<&str>) {
    metrics::counter!(DENIED_TOTAL, "reason" => reason).increment(1);
    tracing::warn!(reason, key = key_id.unwrap_or("(none)"), "request denied");
}

/// The key a cookie request stands for, put in its extensions by [`from_cookie`](crate::session::from_cookie): the
/// hex SHA-256 of the API key (what the metadata store finds a key by).
#[derive(Clone, Debug)]
pub(crate) struct SessionKey(pub(crate) String);

/// How a key's secret is stored and looked up: hex SHA-256. Secrets are 32 random
/// bytes, so a fast hash is enough (nothing to brute-force).
pub(crate) fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Compares without an early exit, so the time taken says nothing about the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn routes_need_the_least_role_that_may_use_them() {
        let role = |method: Method, path: &str| required_role(&method, path).0;
        assert_eq!(role(Method::GET, "/v1/keys"), Role::Admin);
        assert_eq!(role(Method::PUT, "/namespaces/a"), Role::Admin);
        assert_eq!(role(Method::PUT, "/functions/f"), Role::Developer);
        assert_eq!(role(Method::DELETE, "/v1/functions/f"), Role::Developer);
        assert_eq!(
            role(Method::POST, "/functions/f/tuning/apply"),
            Role::Developer
        );
        assert_eq!(role(Method::GET, "/functions/f"), Role::Invoker);
        assert_eq!(role(Method::POST, "/functions/f/invoke"), Role::Invoker);
        assert_eq!(role(Method::GET, "/functions/f/tuning"), Role::Invoker);
        assert_eq!(role(Method::GET, "/invocations/x/logs"), Role::Invoker);
    }
}
