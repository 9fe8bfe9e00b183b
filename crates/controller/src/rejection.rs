//! axum answers the rejections of its extractors (a query string, a path or a JSON body
//! that does not parse) in plain text; this layer gives them the API's error shape
//! (`{"error": {"code", "message"}}`), as API.md promises for every error. And an error
//! answered before a request's body was read closes its connection.

use crate::ApiError;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Longest rejection text carried into the message.
const MAX_MESSAGE_BYTES: usize = 4096;

pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), MAX_MESSAGE_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}

/// An error answered to a request with a body may leave that body unread (a deploy
/// refused by its key's role before its upload is read). Such a connection cannot carry
/// another request, and a client that reused it would see its next request cut off:
/// `Connection: close` tells it to open a new one.
pub(crate) async fn close_after_error_with_body(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    let mut response = next.run(request).await;
    let status = response.status();
    if has_body && (status.is_client_error() || status.is_server_error()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Query;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Limit {
        #[allow(dead_code)] // parsed only
        limit: u32,
    }

    #[tokio::test]
    async fn extractor_rejections_become_api_errors() {
        let app = Router::new()
            .route("/x", get(|Query(_): Query<Limit>| async { "fine" }))
            .layer(axum::middleware::from_fn(json_errors));
        let request = Request::get("/x?limit=-1")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "invalid_request");
        assert!(
            json["error"]["message"].as_str().unwrap().contains("limit"),
            "{json}"
        );
        let ok = Request::get("/x?limit=3")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(ok).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_error_to_a_request_with_a_body_closes_its_connection() {
        let app = Router::new()
            .route(
                "/x",
                axum::routing::post(|| async { StatusCode::FORBIDDEN })
                    .put(|| async { StatusCode::OK }),
            )
            .layer(axum::middleware::from_fn(close_after_error_with_body));
        let send = |method: &str, length: &str| {
            Request::builder()
                .method(method)
                .uri("/x")
                .header(header::CONTENT_LENGTH, length)
                .body(axum::body::Body::from(vec![b'x'; length.parse().unwrap()]))
                .unwrap()
        };
        let connection = |response: Response| response.headers().get(header::CONNECTION).cloned();
        let refused = app.clone().oneshot(send("POST", "5")).await.unwrap();
        assert_eq!(connection(refused), Some(HeaderValue::from_static("close")));
        let empty = app.clone().oneshot(send("POST", "0")).await.unwrap();
        assert_eq!(connection(empty), None, "no body left unread");
        let fine = app.oneshot(send("PUT", "5")).await.unwrap();
        assert_eq!(connection(fine), None, "a success keeps its connection");
    }
}
