//! Dashboard sessions: an API key exchanged for an HttpOnly cookie, and the CSRF check.
//!
//! The browser never keeps the key: `POST /ui/session` checks it and answers with a
//! random session token in an `HttpOnly; SameSite=Strict` cookie plus a CSRF token the
//! page holds in memory. [`from_cookie`] runs in front of `/v1`: a request that carries
//! its own `Authorization` header passes untouched (Bearer auth is unchanged); one that
//! carries only the cookie is given its session's [`SessionKey`] (the key's SHA-256),
//! which the key check resolves exactly as it resolves a Bearer key, after the CSRF
//! token (`X-CSRF-Token`) is checked on anything that is not a read.
//!
//! Sessions live in a [`SessionStore`]: this process's memory for `hearth up`, Redis for
//! a cluster's controllers (so any controller serves any session, and a sign-out on one
//! ends it on all). The store keeps the token's SHA-256 and the key's SHA-256, never
//! either secret; the CSRF token is derived from the session token (a different hash),
//! so it is not stored either.

use crate::auth::{secret_sha256, SessionKey};
use crate::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use hearth_store::{SessionRecord, SessionStore};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "hearth_session";
/// Header carrying the CSRF token on state-changing requests.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The sessions this controller serves, wherever they are kept.
pub(crate) struct Sessions {
    ttl: Duration,
    store: Arc<dyn SessionStore>,
}

/// What a sign-in hands to the browser.
pub(crate) struct NewSession {
    /// Goes in the cookie only.
    pub(crate) token: String,
    /// Goes in the page's memory and back in `X-CSRF-Token`.
    pub(crate) csrf_token: String,
    /// Seconds until expiry (the cookie's `Max-Age`).
    pub(crate) max_age_secs: u64,
}

/// A live session as a request sees it.
#[derive(Clone)]
pub(crate) struct SessionView {
    pub(crate) key: SessionKey,
    pub(crate) csrf_token: String,
    pub(crate) remaining: Duration,
}

/// Lets a long response (the event stream) notice that its session ended.
#[derive(Clone)]
pub(crate) struct SessionLease {
    sessions: Arc<Sessions>,
    token_hash: String,
}

impl SessionLease {
    /// Whether the session is still signed in and unexpired. A store that cannot be
    /// read says nothing about the session: it counts as live (the feed's own reads
    /// fail and say why).
    pub(crate) async fn is_live(&self) -> bool {
        match self.sessions.store.find(&self.token_hash).await {
            Ok(found) => found.is_some(),
            Err(error) => {
                tracing::warn!(%error, "cannot check a live feed's session");
                true
            }
        }
    }
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, store: Arc<dyn SessionStore>) -> Arc<Sessions> {
        Arc::new(Sessions { ttl, store })
    }

    /// Opens a session for an API key that was already checked.
    pub(crate) async fn create(&self, api_key: &str) -> Result<NewSession, ApiError> {
        let token = random_token();
        let record = SessionRecord {
            key_sha256: secret_sha256(api_key),
        };
        self.store
            .open(&hash(&token), &record, self.ttl)
            .await
            .map_err(|e| ApiError::store("opening the dashboard session", e))?;
        Ok(NewSession {
            csrf_token: csrf_of(&token),
            token,
            max_age_secs: self.ttl.as_secs(),
        })
    }

    /// The live session of `token`.
    pub(crate) async fn get(&self, token: &str) -> Result<Option<SessionView>, ApiError> {
        let found = self
            .store
            .find(&hash(token))
            .await
            .map_err(|e| ApiError::store("reading the dashboard session", e))?;
        Ok(found.map(|live| SessionView {
            key: SessionKey(live.record.key_sha256),
            csrf_token: csrf_of(token),
            remaining: live.remaining,
        }))
    }

    /// Ends the session of `token` (sign-out), on every controller sharing the store.
    pub(crate) async fn remove(&self, token: &str) -> Result<(), ApiError> {
        self.store
            .close(&hash(token))
            .await
            .map_err(|e| ApiError::store("ending the dashboard session", e))
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the store finds a session by.
fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The session's CSRF token: only the holder of the (HttpOnly) session token can derive
/// it, and it is not the stored hash of that token.
fn csrf_of(token: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"hearth-csrf\0");
    digest.update(token.as_bytes());
    hex::encode(digest.finalize())
}

/// The session token in the request's `Cookie` headers.
pub(crate) fn token_from(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` value that stores `token` for `max_age_secs` (0 deletes it).
pub(crate) fn cookie(token: &str, max_age_secs: u64) -> HeaderValue {
    let value =
        format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}");
    // Tokens are hex, so the value is always a valid header.
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("hearth_session=; Max-Age=0"))
}

/// Refuses a state-changing request that another site could have made: its `Origin`
/// (sent by browsers on every such request) must be this host, and `Sec-Fetch-Site`
/// must not say cross-site.
pub(crate) fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let cross = |why: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!("{why}: the dashboard only accepts requests from its own pages"),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site == "cross-site" || site == "same-site" {
            return Err(cross("the request came from another site"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        if origin_host.is_none() || origin_host != host {
            return Err(cross(&format!("origin {origin:?} is not this host")));
        }
    }
    Ok(())
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// In front of `/v1`: turns a session cookie into its [`SessionKey`] (see the module
/// doc). Requests with their own `Authorization` header are not touched.
pub(crate) async fn from_cookie(
    State(sessions): State<Arc<Sessions>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    if !request.uri().path().starts_with("/v1/") || headers.contains_key(header::AUTHORIZATION) {
        return Ok(next.run(request).await);
    }
    let Some(token) = token_from(headers) else {
        return Ok(next.run(request).await);
    };
    let session = sessions.get(&token).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "your dashboard session has expired or was signed out: sign in again with your API key",
        )
    })?;
    if !is_read(request.method()) {
        check_same_origin(headers)?;
        let presented = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !constant_time_eq(presented.as_bytes(), session.csrf_token.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "missing or wrong X-CSRF-Token: a state-changing request with a session cookie must carry the token GET /ui/session gives",
            ));
        }
    }
    request.extensions_mut().insert(session.key);
    request.extensions_mut().insert(SessionLease {
        sessions: sessions.clone(),
        token_hash: hash(&token),
    });
    Ok(next.run(request).await)
}

/// Compares without an early exit, so the time taken says nothing about the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_store::LocalSessions;

    #[tokio::test]
    async fn sign_out_ends_the_session_and_its_lease() {
        let sessions = Sessions::new(SESSION_TTL, Arc::new(LocalSessions::default()));
        let new = sessions.create("k").await.unwrap();
        let lease = SessionLease {
            sessions: sessions.clone(),
            token_hash: hash(&new.token),
        };
        assert!(lease.is_live().await);
        let view = sessions.get(&new.token).await.unwrap().unwrap();
        assert_eq!(view.csrf_token, new.csrf_token);
        assert_eq!(view.key.0, secret_sha256("k"));
        sessions.remove(&new.token).await.unwrap();
        assert!(!lease.is_live().await);
        assert!(sessions.get(&new.token).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn tokens_are_random_and_neither_secret_is_stored() {
        let store = Arc::new(LocalSessions::default());
        let sessions = Sessions::new(SESSION_TTL, store.clone());
        let a = sessions.create("hk_secret").await.unwrap();
        let b = sessions.create("hk_secret").await.unwrap();
        assert_ne!(a.token, b.token);
        assert_ne!(a.token, a.csrf_token);
        assert_eq!(a.token.len(), 64);
        assert!(store.find(&a.token).await.unwrap().is_none());
        let stored = store.find(&hash(&a.token)).await.unwrap().unwrap();
        assert_ne!(stored.record.key_sha256, "hk_secret");
        assert_ne!(stored.record.key_sha256, a.csrf_token);
        assert_ne!(hash(&a.token), a.csrf_token);
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hearth_session=abc ; b=2"),
        );
        assert_eq!(token_from(&headers).as_deref(), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("hearth_session_x=1"),
        );
        assert_eq!(token_from(&headers), None);
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let value = cookie("ab12", 43200);
        let text = value.to_str().unwrap();
        assert!(text.contains("HttpOnly"));
        assert!(text.contains("SameSite=Strict"));
        assert!(text.contains("Max-Age=43200"));
        assert!(text.contains("Path=/"));
    }

    #[test]
    fn cross_origin_writes_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(check_same_origin(&headers).is_err());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_same_origin(&headers).is_err());
    }
}
