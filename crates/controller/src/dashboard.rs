//! The dashboard: its page set (sources in `web/`, embedded in the binary), sign-in and
//! sign-out, wrapped around the API router.
//!
//! The page talks to the same `/v1` API as every other client, with a session cookie
//! instead of a Bearer header (see [`crate::session`]), and follows `/v1/events`.
//! Nothing here reads the stores or the worker: a key is checked by asking the API
//! itself (`GET /v1/status` with it), so the dashboard follows whatever the API's
//! auth becomes.

use crate::error;
use crate::session::{self, Sessions, SESSION_TTL};
use crate::ApiError;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hearth_api::session::{Features, SessionBody, SignIn};
use hearth_store::SessionStore;
use std::sync::Arc;
use tower::ServiceExt;

/// One file of the page set.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../../../web/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of `web/` (a test checks none is missing).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("charts.js", JS),
    asset!("dom.js", JS),
    asset!("zip.js", JS),
    asset!("templates.js", JS),
    asset!("overview.js", JS),
    asset!("functions.js", JS),
    asset!("function.js", JS),
    asset!("invocation.js", JS),
];

/// Only this host's own files and API: no CDN, no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct Dashboard {
    /// The API router, asked directly (never through the session layer).
    api: Router,
    sessions: Arc<Sessions>,
}

/// The dashboard's routes in front of `api`, and the session layer around both, with
/// sessions kept in `store`.
pub(crate) fn around(api: Router, store: Arc<dyn SessionStore>) -> Router {
    let sessions = Sessions::new(SESSION_TTL, store);
    let state = Dashboard {
        api: api.clone(),
        sessions: sessions.clone(),
    };
    Router::new()
        .route("/", get(index))
        .route(
            "/ui/session",
            get(session_info).post(sign_in).delete(sign_out),
        )
        .route("/ui/{file}", get(asset))
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .fallback_service(api.clone())
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            session::from_cookie,
        ))
        .layer(axum::Extension(crate::events::ApiRouter(api)))
}

fn serve(asset: &Asset) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        asset.body,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

async fn index() -> Response {
    match find("index.html") {
        Some(asset) => serve(asset),
        None => error::not_found().await.into_response(),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    match find(&file) {
        Some(asset) if file != "index.html" => serve(asset),
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the dashboard has no file {file:?}"),
        )
        .into_response(),
    }
}

/// What the page learns about its session (never the key).
fn session_body(csrf_token: &str, expires_in_s: u64, tuning: bool) -> SessionBody {
    SessionBody {
        signed_in: true,
        csrf_token: Some(csrf_token.to_string()),
        expires_in_s: Some(expires_in_s),
        features: Some(Features { tuning }),
    }
}

/// Whether the API has the AutoTuner's routes: an unknown route answers 404 before
/// any auth, a known one 401 without a key.
async fn has_tuning(api: &Router) -> bool {
    let probe = Request::get("/v1/functions/probe/tuning").body(Body::empty());
    match probe {
        Ok(probe) => match api.clone().oneshot(probe).await {
            Ok(response) => response.status() != StatusCode::NOT_FOUND,
            Err(never) => match never {},
        },
        Err(_) => false,
    }
}

async fn session_info(
    State(state): State<Dashboard>,
    headers: HeaderMap,
) -> Result<Json<SessionBody>, ApiError> {
    let live = match session::token_from(&headers) {
        Some(token) => state.sessions.get(&token).await?,
        None => None,
    };
    Ok(match live {
        Some(view) => Json(session_body(
            &view.csrf_token,
            view.remaining.as_secs(),
            has_tuning(&state.api).await,
        )),
        None => Json(SessionBody::signed_out()),
    })
}

async fn sign_in(
    State(state): State<Dashboard>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    session::check_same_origin(&headers)?;
    let Json(SignIn { api_key }) = body.map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("send JSON {{\"api_key\": \"...\"}}: {}", e.body_text()),
        )
    })?;
    let api_key = api_key.trim().to_string();
    if api_key.is_empty() {
        return Err(ApiError::bad_request(
            "missing_api_key",
            "enter an API key (`hearth up` printed one; it is also in its data dir, admin.key)",
        ));
    }
    check_key(&state.api, &api_key).await?;
    let new = state.sessions.create(&api_key).await?;
    tracing::info!("dashboard session opened");
    let mut response = Json(session_body(
        &new.csrf_token,
        new.max_age_secs,
        has_tuning(&state.api).await,
    ))
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::cookie(&new.token, new.max_age_secs),
    );
    Ok(response)
}

/// Asks the API whether it takes `api_key` (a key whose role may not read status is
/// still a key).
async fn check_key(api: &Router, api_key: &str) -> Result<(), ApiError> {
    let wrong = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "that API key is wrong: use the key `hearth up` printed (also in its data dir, admin.key)",
        )
    };
    let probe = Request::get("/v1/status")
        .header(header::AUTHORIZATION, format!("Bearer {api_key}"))
        .body(Body::empty())
        .map_err(|_| wrong())?;
    let response = match api.clone().oneshot(probe).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    match response.status() {
        s if s.is_success() || s == StatusCode::FORBIDDEN => Ok(()),
        StatusCode::UNAUTHORIZED => {
            tracing::info!("dashboard sign-in refused: wrong API key");
            Err(wrong())
        }
        other => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("cannot check the key now (the API answered {other}): retry shortly"),
        )),
    }
}

async fn sign_out(
    State(state): State<Dashboard>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    session::check_same_origin(&headers)?;
    if let Some(token) = session::token_from(&headers) {
        if let Some(view) = state.sessions.get(&token).await? {
            let presented = headers
                .get(session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !session::constant_time_eq(presented.as_bytes(), view.csrf_token.as_bytes()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "missing or wrong X-CSRF-Token: sign out from the dashboard's own page",
                ));
            }
            state.sessions.remove(&token).await?;
            tracing::info!("dashboard session closed");
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::cookie("", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_web_is_embedded_and_the_set_is_small() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.name.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "web/ and ASSETS differ");
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 200 * 1024, "the page set is {total} bytes");
    }

    #[test]
    fn no_asset_names_another_host() {
        for asset in ASSETS {
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                let hits: Vec<&str> = asset
                    .body
                    .lines()
                    .filter(|l| l.contains(scheme) && !l.contains("www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{} names {scheme}: {hits:?}", asset.name);
            }
        }
    }
}
