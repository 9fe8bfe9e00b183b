//! What the OpenAPI document ([`crate::openapi`]) says beyond the bodies of
//! `hearth_api` (re-exported here, so it is derived from what the handlers actually
//! serialise): the deploy form, the shared path parameters and the error answers of the
//! `#[utoipa::path]` annotations.

pub use hearth_api::functions::{FunctionList, FunctionObject};
pub use hearth_api::invocations::{InvocationList, InvocationObject, Queued};
pub use hearth_api::stats::StatsBody;
pub use hearth_api::status::StatusBody;
pub use hearth_api::tuning::{TuningApply, TuningExplore};
pub use hearth_api::ErrorBody;
use utoipa::{IntoParams, IntoResponses, ToSchema};

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
