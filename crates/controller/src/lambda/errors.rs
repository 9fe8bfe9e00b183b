//! Errors in the shape of AWS's rest-json protocol: the type in `x-amzn-ErrorType`, the
//! message in the body's `message`, so an AWS SDK raises the matching exception class.

use super::sigv4::SigV4Error;
use crate::ApiError;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// One Lambda API error.
#[derive(Debug)]
pub struct LambdaError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl LambdaError {
    /// An error of AWS type `kind` (e.g. `ResourceNotFoundException`).
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        LambdaError {
            status,
            kind,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 400 `InvalidParameterValueException`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    /// 404 `ResourceNotFoundException` for function `name`.
    pub fn not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: {name}"),
        )
    }

    /// The AWS type.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

impl From<ApiError> for LambdaError {
    fn from(e: ApiError) -> Self {
        let kind = match (e.status().as_u16(), e.code()) {
            (_, "function_not_found") | (404, _) => "ResourceNotFoundException",
            (413, _) => "RequestEntityTooLargeException",
            (429, _) => "TooManyRequestsException",
            (409, _) => "ResourceConflictException",
            (400, "invalid_event") => "InvalidRequestContentException",
            (400..=499, _) => "InvalidParameterValueException",
            _ => "ServiceException",
        };
        let status = match e.status().as_u16() {
            // Lambda answers an invalid deploy with 400, whatever hearth's reason.
            422 => StatusCode::BAD_REQUEST,
            _ => e.status(),
        };
        LambdaError {
            status,
            kind,
            message: e.message().to_string(),
            retry_after_secs: e.retry_after_secs(),
        }
    }
}

impl From<SigV4Error> for LambdaError {
    fn from(e: SigV4Error) -> Self {
        let kind = match e {
            SigV4Error::Missing => "MissingAuthenticationTokenException",
            SigV4Error::Incomplete(_) => "IncompleteSignatureException",
            SigV4Error::UnknownKey(_) => "UnrecognizedClientException",
            SigV4Error::Expired { .. } | SigV4Error::Mismatch => "InvalidSignatureException",
        };
        LambdaError::new(StatusCode::FORBIDDEN, kind, e.to_string())
    }
}

impl IntoResponse for LambdaError {
    fn into_response(self) -> Response {
        let mut body = json!({"Type": "User", "message": self.message});
        if self.status.is_server_error() {
            body["Type"] = json!("Service");
        }
        if let Some(secs) = self.retry_after_secs {
            body["retryAfterSeconds"] = json!(secs.to_string());
        }
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hearth_errors_map_to_the_sdks_exception_types() {
        let cases = [
            (
                ApiError::function_not_found("f"),
                "ResourceNotFoundException",
                404,
            ),
            (
                ApiError::bad_request("invalid_config", "x"),
                "InvalidParameterValueException",
                400,
            ),
            (
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", "x"),
                "TooManyRequestsException",
                429,
            ),
            (
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", "x"),
                "RequestEntityTooLargeException",
                413,
            ),
            (
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "build_failed", "x"),
                "InvalidParameterValueException",
                400,
            ),
            (
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "backlog", "x"),
                "ServiceException",
                503,
            ),
        ];
        for (api, kind, status) in cases {
            let e = LambdaError::from(api);
            assert_eq!((e.kind, e.status.as_u16()), (kind, status));
            let response = e.into_response();
            assert_eq!(response.headers()["x-amzn-errortype"], kind);
        }
    }
}
