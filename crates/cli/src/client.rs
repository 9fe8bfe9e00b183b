//! A small client of the hearth HTTP API, shared by the commands and `up`'s sample.

use anyhow::{anyhow, Context};
use hearth_api::ErrorBody;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Name of the file in the data dir that holds the admin key.
pub const KEY_FILE: &str = "admin.key";

/// An API client with its base URL and key.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// An answer that was not a success, with the API's error code and message.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The API's error code.
    pub code: String,
    /// The API's message.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, HTTP {})",
            self.message,
            self.code,
            self.status.as_u16()
        )
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    /// A client for `base`, with `key` or the one in `data_dir`.
    pub fn new(base: &str, key: Option<String>, data_dir: &Path) -> anyhow::Result<Client> {
        let key = match key {
            Some(key) => key,
            None => {
                let path = data_dir.join(KEY_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no API key: set HEARTH_API_KEY or --api-key, or run from the directory of `hearth up` (looked for {})",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Client {
            http: reqwest::Client::builder().build()?,
            base: base.trim_end_matches('/').to_string(),
            key,
        })
    }

    /// A request to `path` (starting with `/v1/`), authorised.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
    }

    /// Sends a request and reads the JSON body of a 2xx answer as `T` (a type of
    /// `hearth_api`).
    pub async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let body = self.answer(request).await?;
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "the answer is not the {} this hearth CLI expects: {}",
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("body"),
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })
    }

    /// Sends a request whose success has no body (204).
    pub async fn send_empty(&self, request: RequestBuilder) -> anyhow::Result<()> {
        self.answer(request).await.map(drop)
    }

    /// The body of a 2xx answer; any other is an [`ApiFailure`] read from the API's
    /// [`ErrorBody`].
    async fn answer(&self, request: RequestBuilder) -> anyhow::Result<bytes::Bytes> {
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach hearth at {}: is `hearth up` running?",
                self.base
            )
        })?;
        let status = response.status();
        let body = response.bytes().await.context("reading the answer")?;
        if status.is_success() {
            return Ok(body);
        }
        let failure = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => ApiFailure {
                status,
                code: error.code,
                message: error.message,
            },
            // Not hearth's error body (a proxy in between, an older server): show it.
            Err(_) => ApiFailure {
                status,
                code: "unknown".into(),
                message: String::from_utf8_lossy(&body).into_owned(),
            },
        };
        Err(anyhow!(failure))
    }
}
