//! Dashboard sessions: an API key exchanged for an HttpOnly cookie, and the CSRF check.
//!
//! The browser never keeps the key: `POST /ui/session` checks it and answers with a
//! random session token in an `HttpOnly; SameSite=Strict` cookie plus a CSRF token the
//! page holds in memory. [`from_cookie`] runs in front of `/v1`: a request that carries
//! its own `Authorization` header passes untouched (Bearer auth is unchanged); one that
//! carries only the cookie is given its session's key as a Bearer header, after the
//! CSRF token (`X-CSRF-Token`) is checked on anything that is not a read. Sessions live
//! in this process's memory (hashed tokens only) and end at expiry or sign-out.

use crate::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "hearth_session";
/// Header carrying the CSRF token on state-changing requests.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; past it the oldest is dropped.
const MAX_SESSIONS: usize = 10_000;

/// The sessions of this process, by SHA-256 of their token.
pub(crate) struct Sessions {
    ttl: Duration,
    by_token_hash: Mutex<HashMap<String, Session>>,
}

struct Session {
    api_key: String,
    csrf_token: String,
    created: Instant,
    expires: Instant,
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
    pub(crate) api_key: String,
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
    /// Whether the session is still signed in and unexpired.
    pub(crate) fn is_live(&self) -> bool {
        self.sessions
            .get_hashed(&self.token_hash, Instant::now())
            .is_some()
    }
}

impl Sessions {
    pub(crate) fn new(ttl: Duration) -> Arc<Sessions> {
        Arc::new(Sessions {
            ttl,
            by_token_hash: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // Plain data: still consistent if a holder panicked.
        self.by_token_hash.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for an API key that was already checked.
    pub(crate) fn create(&self, api_key: String, now: Instant) -> NewSession {
        let token = random_token();
        let csrf_token = random_token();
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(
            hash(&token),
            Session {
                api_key,
                csrf_token: csrf_token.clone(),
                created: now,
                expires: now + self.ttl,
            },
        );
        NewSession {
            token,
            csrf_token,
            max_age_secs: self.ttl.as_secs(),
        }
    }

    /// The live session of `token`; an expired one is dropped.
    pub(crate) fn get(&self, token: &str, now: Instant) -> Option<SessionView> {
        self.get_hashed(&hash(token), now)
    }

    fn get_hashed(&self, token_hash: &str, now: Instant) -> Option<SessionView> {
        let mut sessions = self.lock();
        let session = sessions.get(token_hash)?;
        if session.expires <= now {
            sessions.remove(token_hash);
            return None;
        }
        Some(SessionView {
            api_key: session.api_key.clone(),
            csrf_token: session.csrf_token.clone(),
            remaining: session.expires - now,
        })
    }

    /// Ends the session of `token` (sign-out).
    pub(crate) fn remove(&self, token: &str) {
        self.lock().remove(&hash(token));
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
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

/// In front of `/v1`: turns a session cookie into its key's Bearer header (see the
/// module doc). Requests with their own `Authorization` header are not touched.
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
    let session = sessions.get(&token, Instant::now()).ok_or_else(|| {
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
    let bearer = HeaderValue::from_str(&format!("Bearer {}", session.api_key))
        .map_err(|e| ApiError::internal("using the session's key", e))?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
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

    #[test]
    fn a_session_lives_until_its_expiry_then_is_gone() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let new = sessions.create("key-1".into(), t0);
        assert_eq!(new.max_age_secs, 60);
        assert_ne!(new.token, new.csrf_token);
        let view = sessions
            .get(&new.token, t0 + Duration::from_secs(59))
            .unwrap();
        assert_eq!(view.api_key, "key-1");
        assert_eq!(view.csrf_token, new.csrf_token);
        assert!(sessions
            .get(&new.token, t0 + Duration::from_secs(60))
            .is_none());
        // Dropped, not just hidden: an earlier clock does not revive it.
        assert!(sessions.get(&new.token, t0).is_none());
    }

    #[test]
    fn sign_out_ends_the_session_and_its_lease() {
        let sessions = Sessions::new(SESSION_TTL);
        let new = sessions.create("k".into(), Instant::now());
        let lease = SessionLease {
            sessions: sessions.clone(),
            token_hash: hash(&new.token),
        };
        assert!(lease.is_live());
        sessions.remove(&new.token);
        assert!(!lease.is_live());
        assert!(sessions.get(&new.token, Instant::now()).is_none());
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let sessions = Sessions::new(SESSION_TTL);
        let a = sessions.create("k".into(), Instant::now());
        let b = sessions.create("k".into(), Instant::now());
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 64);
        let stored = sessions.lock();
        assert!(!stored.contains_key(&a.token));
        assert!(stored.contains_key(&hash(&a.token)));
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
