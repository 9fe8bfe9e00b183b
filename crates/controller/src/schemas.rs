//! The API's response bodies as types, so the OpenAPI document ([`crate::openapi`]) is
//! derived from what the handlers actually serialise; and the shared parameters and
//! error answers of the `#[utoipa::path]` annotations.

use hearth_core::Runtime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, IntoResponses, ToSchema};

/// The function object.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"name": "hello", "version": 2, "runtime": "python", "memory_mb": 128,
    "timeout_ms": 3000, "max_instances": 10, "env": {"GREETING": "hi"}, "description": "",
    "handler": null, "code_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "code_size": 1234, "created_at": "2026-11-28T10:00:00.000Z", "updated_at": "2026-11-28T10:05:00.000Z"}))]
pub struct FunctionObject {
    /// Name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    pub name: String,
    /// The namespace it lives in (`default` unless the key that deployed it has another).
    pub namespace: String,
    /// Newest version (each deploy makes one).
    pub version: u64,
    pub runtime: Runtime,
    pub memory_mb: u64,
    pub timeout_ms: u64,
    pub max_instances: u32,
    /// CPUs of each instance when fixed; null: CPU follows memory_mb.
    pub cpus: Option<f64>,
    pub env: BTreeMap<String, String>,
    pub description: String,
    /// Entry point as `module.function`, when not the runtime's default.
    pub handler: Option<String>,
    /// Hex SHA-256 of the stored zip.
    pub code_sha256: String,
    pub code_size: u64,
    pub created_at: String,
    pub updated_at: String,
    /// Aggregates of finished invocations (GET of one function only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<FunctionStats>,
    /// The build of a compiled runtime (deploy answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildInfo>,
}

/// Aggregates over a function's finished invocations.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FunctionStats {
    pub invocations: u64,
    pub errors: u64,
    pub avg_duration_ms: f64,
    pub p95_duration_ms: f64,
}

/// A compiled runtime's build at deploy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BuildInfo {
    /// True when the artifact existed: nothing was compiled.
    pub cached: bool,
    pub duration_ms: f64,
}

/// `GET /v1/functions`.
#[derive(Serialize, ToSchema)]
pub struct FunctionList {
    pub functions: Vec<FunctionObject>,
}

/// `GET /v1/functions/{name}/invocations`, newest first.
#[derive(Serialize, ToSchema)]
pub struct InvocationList {
    pub invocations: Vec<hearth_core::Invocation>,
}

/// The answer to an asynchronous invocation.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "01JDZ5T8Q3V7J8K2M4N6P8R0S2", "status": "queued"}))]
pub struct Queued {
    pub id: String,
    /// Always `queued`.
    pub status: String,
}

/// `GET /v1/status`: the workers and their warm pools.
#[derive(Serialize, ToSchema)]
pub struct StatusBody {
    /// `online`.
    pub status: String,
    pub uptime_ms: u64,
    /// `{workers, active_invocations, warm_instances}`.
    #[schema(value_type = Object)]
    pub totals: serde_json::Value,
    /// One object per worker: id, address, heartbeat age, active invocations, pools.
    #[schema(value_type = Vec<Object>)]
    pub workers: serde_json::Value,
}

/// `GET /v1/stats/functions`: per function, invocations, errors and p50/p95 duration
/// over the window.
#[derive(Serialize, ToSchema)]
pub struct StatsBody {
    pub window_hours: u32,
    /// One object per function: name, version, runtime, memory_mb, timeout_ms,
    /// updated_at, invocations, errors, error_rate, p50_duration_ms, p95_duration_ms, sampled.
    #[schema(value_type = Vec<Object>)]
    pub functions: serde_json::Value,
}

/// `POST /v1/functions/{name}/tuning/apply`.
#[derive(ToSchema)]
#[allow(dead_code)] // describes the body; tuning.rs parses it
#[schema(example = json!({"memory_mb": 512}))]
pub struct TuningApply {
    /// The size the caller saw (a guard against applying stale advice).
    #[schema(minimum = 64, maximum = 10240)]
    pub memory_mb: u64,
    /// A size to apply instead of the recommendation.
    #[schema(minimum = 64, maximum = 10240)]
    pub to_memory_mb: Option<u64>,
}

/// `POST /v1/functions/{name}/tuning/explore`: every field optional.
#[derive(ToSchema)]
#[allow(dead_code)] // describes the body; tuning.rs parses it
#[schema(example = json!({"event": {}, "sizes": [128, 256], "runs": 3, "strategy": "cost"}))]
pub struct TuningExplore {
    /// The event each run gets.
    #[schema(value_type = Option<Object>)]
    pub event: Option<serde_json::Value>,
    /// Memory sizes to try, MB (1 to 10).
    #[schema(min_items = 1, max_items = 10)]
    pub sizes: Option<Vec<u64>>,
    /// Measured calls per size.
    #[schema(minimum = 1, maximum = 50)]
    pub runs: Option<u32>,
    /// `cost`, `speed` or `balanced`.
    pub strategy: Option<String>,
    /// Apply the pick.
    pub apply: Option<bool>,
}

/// The multipart body of a deploy.
#[derive(ToSchema)]
#[allow(dead_code)] // describes the form; read_deploy parses it part by part
pub struct DeployForm {
    /// The zip of the function's files (≤ 50 MB).
    #[schema(value_type = String, format = Binary)]
    pub code: Vec<u8>,
    /// JSON config; all but `runtime` optional on create, omitted fields keep their values on update.
    #[schema(value_type = Option<hearth_core::FunctionConfig>, example = json!({"runtime": "python", "memory_mb": 128}))]
    pub config: Option<String>,
}

/// Every error: a stable code and a message that says what to do.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "function_not_found", "message": "function \"nope\" does not exist: deploy it first (PUT /v1/functions/nope)"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The `error` member of [`ErrorBody`].
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// snake_case, stable.
    pub code: String,
    pub message: String,
}

/// A function's name in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a parameter description only
pub struct FunctionName {
    /// The function's name.
    #[param(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "hello")]
    pub name: String,
}

/// An invocation id in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a parameter description only
pub struct InvocationId {
    /// The invocation's ULID.
    #[param(example = "01JDZ5T8Q3V7J8K2M4N6P8R0S2")]
    pub id: String,
}

/// The errors any authenticated route can answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // response descriptions only
pub enum CommonErrors {
    /// Bad input: the message says what to change.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing or wrong API key.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such function or invocation.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// A store or the workers are unavailable; retry.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}
