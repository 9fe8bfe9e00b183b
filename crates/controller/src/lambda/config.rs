//! Lambda's FunctionConfiguration and request shapes, and how they map onto hearth's
//! function config: runtimes, seconds and handlers.

use super::errors::LambdaError;
use super::names;
use base64::Engine;
use hearth_core::{FunctionConfig, Runtime};
use hearth_store::FunctionRecord;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Cursor;

/// `Environment` of a request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Environment {
    pub variables: Option<BTreeMap<String, String>>,
}

/// `Code` of CreateFunction.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Code {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
}

/// The settings CreateFunction and UpdateFunctionConfiguration share (others, such as
/// `Role` or `Tags`, are accepted and have no meaning on hearth).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Settings {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<u64>,
    pub memory_size: Option<u64>,
    pub environment: Option<Environment>,
}

/// The body of CreateFunction.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateRequest {
    pub function_name: String,
    #[serde(default)]
    pub code: Code,
    #[serde(flatten)]
    pub settings: Settings,
}

/// The body of UpdateFunctionCode.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateCodeRequest {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Parses a JSON body into `T`, as Lambda's `InvalidRequestContentException`.
pub fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, LambdaError> {
    serde_json::from_slice(body).map_err(|e| {
        LambdaError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            format!("could not parse the request body: {e}"),
        )
    })
}

/// The zip of `ZipFile` (base64); S3 and images are refused with a reason.
pub fn zip_file(
    zip: Option<&str>,
    s3_bucket: Option<&str>,
    image: Option<&str>,
) -> Result<bytes::Bytes, LambdaError> {
    if s3_bucket.is_some() || image.is_some() {
        return Err(LambdaError::invalid(
            "hearth takes code inline only: send the zip as Code.ZipFile (S3 and container images are not supported)",
        ));
    }
    let zip = zip
        .ok_or_else(|| LambdaError::invalid("ZipFile is required: the function's code as a zip"))?;
    base64::engine::general_purpose::STANDARD
        .decode(zip.trim())
        .map(bytes::Bytes::from)
        .map_err(|e| LambdaError::invalid(format!("ZipFile is not valid base64: {e}")))
}

/// hearth's runtime for a Lambda `Runtime`; `provided*` and `go1.x` are Go or C++ by
/// the sources in the zip (hearth builds them at deploy).
pub fn runtime_of(lambda: &str, zip: &[u8]) -> Result<Runtime, LambdaError> {
    if lambda.starts_with("python3") {
        return Ok(Runtime::Python);
    }
    if lambda.starts_with("nodejs") {
        return Ok(Runtime::Nodejs);
    }
    if lambda.starts_with("provided") || lambda == "go1.x" {
        let archive = zip::ZipArchive::new(Cursor::new(zip))
            .map_err(|e| LambdaError::invalid(format!("ZipFile is not a readable zip: {e}")))?;
        let names: Vec<&str> = archive.file_names().collect();
        if names.iter().any(|n| n.ends_with(".go")) {
            return Ok(Runtime::Go);
        }
        if names
            .iter()
            .any(|n| n.ends_with(".cpp") || n.ends_with(".cc"))
        {
            return Ok(Runtime::Cpp);
        }
        return Err(LambdaError::invalid(format!(
            "Runtime {lambda}: hearth builds Go or C++ from source, and the zip has no .go or .cpp file"
        )));
    }
    Err(LambdaError::invalid(format!(
        "Runtime {lambda:?} is not supported by hearth: use python3.x, nodejs*.x, provided.al2023 or go1.x"
    )))
}

/// The Lambda runtime hearth reports: the language version its runtimes run.
fn lambda_runtime(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Python => "python3.11",
        Runtime::Nodejs => "nodejs20.x",
        Runtime::Cpp | Runtime::Go => "provided.al2023",
    }
}

fn default_handler(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Python => "main.handler",
        Runtime::Nodejs => "index.handler",
        Runtime::Cpp | Runtime::Go => "bootstrap",
    }
}

/// hearth's config for `settings` (`runtime` already mapped on create).
pub fn function_config(
    settings: &Settings,
    runtime: Option<Runtime>,
    current: Option<Runtime>,
) -> Result<FunctionConfig, LambdaError> {
    let timeout_ms = settings
        .timeout
        .map(|s| {
            s.checked_mul(1000)
                .ok_or_else(|| LambdaError::invalid("Timeout is too large: at most 900 seconds"))
        })
        .transpose()?;
    let handler = match (runtime.or(current), &settings.handler) {
        // The handler of compiled runtimes is the program; hearth has no choice there.
        (Some(Runtime::Cpp | Runtime::Go), _) | (_, None) => None,
        (Some(rt), Some(h)) if h == default_handler(rt) => Some(String::new()),
        (_, Some(h)) => Some(h.clone()),
    };
    Ok(FunctionConfig {
        runtime: runtime.map(|r| r.to_string()),
        memory_mb: settings.memory_size,
        timeout_ms,
        env: settings
            .environment
            .as_ref()
            .and_then(|e| e.variables.clone()),
        description: settings.description.clone(),
        handler,
        ..FunctionConfig::default()
    })
}

/// Lambda's FunctionConfiguration of a version.
pub fn configuration(record: &FunctionRecord, region: &str) -> Value {
    let spec = &record.spec;
    let sha256 = hex::decode(&record.code_sha256)
        .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw))
        .unwrap_or_default();
    let last_modified = chrono::DateTime::parse_from_rfc3339(&record.updated_at)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string())
        .unwrap_or_else(|_| record.updated_at.clone());
    json!({
        "FunctionName": record.name,
        "FunctionArn": names::arn(region, &record.name),
        "Runtime": lambda_runtime(spec.runtime),
        "Handler": spec.handler.as_deref().unwrap_or(default_handler(spec.runtime)),
        "CodeSize": record.code_size,
        "Description": spec.description,
        "Timeout": spec.timeout_ms.div_ceil(1000),
        "MemorySize": spec.memory_mb,
        "LastModified": last_modified,
        "CodeSha256": sha256,
        "Version": "$LATEST",
        "Environment": {"Variables": spec.env},
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": format!("{}-{}", record.version, &record.code_sha256[..record.code_sha256.len().min(12)]),
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
    })
}
