//! The AWS Lambda API (`/2015-03-31/functions…`) on hearth's port, so the AWS SDKs and
//! CLI work with `endpoint_url` pointed at hearth.
//!
//! Every request is signed with AWS Signature Version 4 and verified ([`sigv4`]): the
//! access key id is a hearth key id, the secret its secret. Until keys of their own
//! exist, the admin key is the one key: id [`ADMIN_ACCESS_KEY_ID`], secret the admin
//! API key. Handlers translate Lambda's shapes and call the same deploy, delete and
//! invoke functions as `/v1` ([`crate::functions`], [`crate::invoke`]); errors are AWS
//! rest-json ([`errors`]).
//!
//! Layout: `sigv4.rs` (verification), `errors.rs`, `names.rs` (function names, ARNs,
//! qualifiers), `config.rs` (FunctionConfiguration and runtimes), `manage.rs`
//! (Create/Get/List/Delete/Update), `invoke.rs`.

mod config;
pub mod errors;
mod invoke;
mod manage;
mod names;
pub mod sigv4;

use crate::AppState;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use errors::LambdaError;

/// The access key id of the admin key.
pub const ADMIN_ACCESS_KEY_ID: &str = "admin";
/// Largest request: a 50 MB zip, base64-encoded in a JSON body.
const MAX_REQUEST_BYTES: usize = 70 << 20;

/// Who signed the request, for handlers (ARNs carry the region they signed for).
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub region: String,
}

/// The Lambda routes, to merge into the top-level router.
pub(crate) fn router(state: AppState) -> Router<AppState> {
    let invocations = post(invoke::invoke).layer(axum::middleware::from_fn_with_state(
        state.replays.clone(),
        crate::idempotency::dedup,
    ));
    Router::new()
        .route(
            "/2015-03-31/functions",
            get(manage::list).post(manage::create),
        )
        .route(
            "/2015-03-31/functions/",
            get(manage::list).post(manage::create),
        )
        .route(
            "/2015-03-31/functions/{name}",
            get(manage::get).delete(manage::delete),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(manage::get_configuration).put(manage::update_configuration),
        )
        .route(
            "/2015-03-31/functions/{name}/code",
            put(manage::update_code),
        )
        .route("/2015-03-31/functions/{name}/invocations", invocations)
        .route_layer(axum::middleware::from_fn_with_state(state, authenticate))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
}

/// The secret of an access key id.
fn secret_of(state: &AppState, access_key_id: &str) -> Option<String> {
    (access_key_id == ADMIN_ACCESS_KEY_ID).then(|| state.api_key.to_string())
}

/// Verifies the request's signature over its whole body, then hands both on.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return LambdaError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
                "the request is larger than 70 MB (a 50 MB zip, base64-encoded)",
            )
            .into_response()
        }
    };
    let signed = sigv4::SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
    };
    match sigv4::verify(
        &signed,
        "lambda",
        |id| secret_of(&state, id),
        chrono::Utc::now(),
    ) {
        Ok(auth) => {
            parts.extensions.insert(Caller {
                region: auth.region,
            });
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(e) => {
            tracing::info!(error = %e, path = parts.uri.path(), "Lambda API request refused");
            LambdaError::from(e).into_response()
        }
    }
}
