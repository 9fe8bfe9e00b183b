//! The API's one error type: a stable code, a message for the user, no internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer: `{"error": {"code", "message"}}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `function_not_found`.
    pub fn function_not_found(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "function_not_found",
            format!("function {name:?} does not exist: deploy it first (PUT /v1/functions/{name})"),
        )
    }

    /// 500 whose cause is logged, never shown.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}: an internal error occurred; see the server log"),
        )
    }

    /// A failed store operation: 503 `dependency_unavailable` when the store cannot be
    /// reached (it recovers by itself; retry), else a 500 whose cause is logged.
    pub fn store(context: &str, cause: hearth_store::StoreError) -> ApiError {
        if store_is_unavailable(&cause) {
            return ApiError::unavailable(context, cause);
        }
        ApiError::internal(context, cause)
    }

    /// 503 `dependency_unavailable`: a service hearth depends on is down.
    pub fn unavailable(context: &str, cause: impl std::fmt::Display) -> ApiError {
        tracing::warn!(%cause, "{context}: a dependency is unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency_unavailable",
            format!(
                "{context}: a service hearth depends on is unavailable ({cause}); retry shortly"
            ),
        )
        .retry_after(2)
    }

    /// The message shown to the user.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Seconds of the `Retry-After` header, if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(hearth_api::ErrorBody::new(self.code, self.message));
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Whether a store error means the store is out of reach (rather than a bug or bad data).
fn store_is_unavailable(error: &hearth_store::StoreError) -> bool {
    use hearth_store::StoreError;
    // `Unavailable` is what PostgreSQL and S3 outages are; the others are kept as the
    // embedded stores report theirs (a SQLite file or local dir that cannot be used).
    error.is_unavailable()
        || matches!(
            error,
            StoreError::ObjectStore { .. } | StoreError::Task { .. } | StoreError::Database { .. }
        )
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: see API.md for the routes",
    )
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method: see API.md",
    )
}
