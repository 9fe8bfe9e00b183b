//! `/v1/functions`: deploy (create or update), get, list, delete.

use crate::schemas::{self, CommonErrors, FunctionName};
use crate::tenancy::{checked_qualified, Caller};
use crate::{ApiError, AppState};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Extension, Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hearth_api::functions::{BuildInfo, FunctionList, FunctionObject};
use hearth_core::{FunctionConfig, FunctionSpec, SpecError};
use hearth_store::{inspect_zip, FunctionRecord, FunctionStats, PackageLimits};
use hearth_worker::build::{BuildError, BuildRequest};
use hearth_worker::deps::DepsError;
use hearth_worker::fleet::FleetError;

/// The API's function object of `record`, with its `stats` when given.
pub(crate) fn function_object(
    record: &FunctionRecord,
    stats: Option<&FunctionStats>,
) -> FunctionObject {
    let spec = &record.spec;
    let (namespace, name) = crate::tenancy::split(&record.name);
    FunctionObject {
        name: name.to_string(),
        namespace: namespace.to_string(),
        version: record.version,
        runtime: spec.runtime,
        memory_mb: spec.memory_mb,
        timeout_ms: spec.timeout_ms,
        max_instances: spec.max_instances,
        cpus: spec.cpus.map(|c| c.as_f64()),
        env: spec.env.clone(),
        description: spec.description.clone(),
        handler: spec.handler.clone(),
        code_sha256: record.code_sha256.clone(),
        code_size: record.code_size,
        created_at: record.created_at.clone(),
        updated_at: record.updated_at.clone(),
        stats: stats.map(|s| hearth_api::functions::FunctionStats {
            invocations: s.invocations,
            errors: s.errors,
            avg_duration_ms: s.avg_duration_ms,
            p95_duration_ms: s.p95_duration_ms,
        }),
        build: None,
        dependencies: None,
        tuning: None,
    }
}

/// The newest version of `name`. Answered from memory when it can be: deploy and delete
/// update the cache, and in a cluster its records expire quickly.
pub(crate) async fn find(state: &AppState, name: &str) -> Result<FunctionRecord, ApiError> {
    checked_qualified(name)?;
    let generation = match state.cached_function(name) {
        Ok(record) => return Ok(record),
        Err(generation) => generation,
    };
    let record = state
        .metadata
        .get_function(name)
        .await
        .map_err(|e| ApiError::store("reading function", e))?
        .ok_or_else(|| ApiError::function_not_found(crate::tenancy::split(name).1))?;
    state.remember_read(&record, generation);
    Ok(record)
}

#[utoipa::path(get, path = "/v1/functions", operation_id = "list_functions", tag = "functions",
    responses((status = 200, body = schemas::FunctionList), CommonErrors))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<FunctionList>, ApiError> {
    let records = state
        .metadata
        .list_functions()
        .await
        .map_err(|e| ApiError::store("listing functions", e))?;
    let functions = records
        .iter()
        .filter(|r| caller.sees(&r.name))
        .map(|r| function_object(r, None))
        .collect();
    Ok(Json(FunctionList { functions }))
}

#[utoipa::path(get, path = "/v1/functions/{name}", operation_id = "get_function", tag = "functions", params(FunctionName),
    responses((status = 200, description = "the function, with stats", body = schemas::FunctionObject), CommonErrors))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<FunctionObject>, ApiError> {
    let name = caller.qualify(&name)?;
    let record = find(&state, &name).await?;
    let stats = state
        .metadata
        .function_stats(&name)
        .await
        .map_err(|e| ApiError::store("reading function stats", e))?;
    Ok(Json(function_object(&record, Some(&stats))))
}

#[utoipa::path(delete, path = "/v1/functions/{name}", operation_id = "delete_function", tag = "functions",
    params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "scratch")),
    responses((status = 204, description = "deleted; its warm instances are destroyed"), CommonErrors))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&state, &caller.qualify(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes every version of `name` and destroys its warm instances; its invocations'
/// logs and outputs, and the code and artifacts no other version uses, leave the object
/// store.
pub(crate) async fn remove(state: &AppState, name: &str) -> Result<(), ApiError> {
    checked_qualified(name)?;
    let freed = hearth_store::cleanup::delete_function(state.metadata.as_ref(), &state.code, name)
        .await
        .map_err(|e| ApiError::store("deleting function", e))?;
    let Some(freed) = freed else {
        return Err(ApiError::function_not_found(crate::tenancy::split(name).1));
    };
    tracing::info!(function = %name, invocations = freed.invocations, objects = freed.objects, "deleted");
    state.cache_function(None, name);
    state.fleet.retire(name, None).await;
    Ok(())
}

/// After a deploy that made no version: its package goes again unless a version uses it.
async fn free_unused_code(state: &AppState, sha256: &str, runtime: hearth_core::Runtime) {
    let freed =
        hearth_store::cleanup::free_code(state.metadata.as_ref(), &state.code, sha256, runtime);
    if let Err(error) = freed.await {
        tracing::warn!(code = %sha256, %error, "cannot free the code of a failed deploy");
    }
}

struct DeployRequest {
    code: Bytes,
    config: FunctionConfig,
}

async fn read_deploy(
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<DeployRequest, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!(
                "expected multipart/form-data with parts `code` (zip) and `config` (JSON): {e}"
            ),
        )
    })?;
    let mut code = None;
    let mut config = FunctionConfig::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match name.as_str() {
            "code" => code = Some(bytes),
            "config" => {
                config = serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::bad_request(
                        "invalid_config",
                        format!("config is not valid JSON of the expected shape (runtime, memory_mb, timeout_ms, env, description, max_instances, output_quota_mb, cpus): {e}"),
                    )
                })?;
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("unexpected form part {other:?}: send only `code` and `config`"),
                ))
            }
        }
    }
    let code = code.ok_or_else(|| {
        ApiError::bad_request(
            "missing_code",
            "the `code` part (a zip of the function's files) is missing",
        )
    })?;
    Ok(DeployRequest { code, config })
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "code_too_large",
            "the upload is larger than 50 MB: shrink the zip (leave out dependencies you do not need)",
        )
    } else {
        ApiError::bad_request(
            "invalid_request",
            format!("cannot read the upload: {}", e.body_text()),
        )
    }
}

fn spec_error(e: SpecError) -> ApiError {
    let code = match e {
        SpecError::UnknownRuntime(_) => "unknown_runtime",
        SpecError::UnsupportedRuntime(_) => "unsupported_runtime",
        _ => "invalid_config",
    };
    ApiError::bad_request(code, e.to_string())
}

/// Create or update: each deploy makes a new immutable version.
#[utoipa::path(put, path = "/v1/functions/{name}", operation_id = "deploy_function", tag = "functions", params(FunctionName),
    request_body(content = schemas::DeployForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "created", body = schemas::FunctionObject),
        (status = 200, description = "updated", body = schemas::FunctionObject),
        (status = 413, description = "the zip is over 50 MB", body = schemas::ErrorBody),
        (status = 422, description = "the build failed (`build_failed`)", body = schemas::ErrorBody), CommonErrors))]
pub(crate) async fn deploy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let name = caller.qualify(&name)?;
    let request = read_deploy(multipart).await?;
    let deployed = deploy_version(&state, &name, &request.config, request.code).await?;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = FunctionObject {
        build: deployed.built.map(|built| BuildInfo {
            cached: built.cached,
            duration_ms: built.duration_ms,
        }),
        dependencies: deployed.installed,
        ..function_object(&deployed.record, None)
    };
    Ok((status, Json(body)).into_response())
}

/// A version made by [`deploy_version`].
pub(crate) struct Deployed {
    pub record: FunctionRecord,
    /// Whether this made the function (version 1).
    pub created: bool,
    /// The build of a compiled runtime.
    pub built: Option<hearth_worker::build::Built>,
    /// The dependencies installed for it, when its code names any.
    pub installed: Option<hearth_worker::deps::Installed>,
}

/// Makes a new version of `name` from `code` (a zip) and `config` applied on top of the
/// newest version: checks, builds compiled runtimes, stores, retires older instances.
pub(crate) async fn deploy_version(
    state: &AppState,
    name: &str,
    config: &FunctionConfig,
    code: Bytes,
) -> Result<Deployed, ApiError> {
    checked_qualified(name)?;
    let previous = state
        .metadata
        .get_function(name)
        .await
        .map_err(|e| ApiError::store("reading function", e))?;
    let spec =
        FunctionSpec::resolve(previous.as_ref().map(|p| &p.spec), config).map_err(spec_error)?;
    let runtime = spec.runtime;
    let handler = spec.handler.clone();
    let (code, package) = tokio::task::spawn_blocking(move || {
        let code = crate::entry::route(code, runtime, handler.as_deref())?;
        let package = inspect_zip(&code, runtime, &PackageLimits::default())
            .map_err(|e| ApiError::bad_request("invalid_code", e.to_string()))?;
        Ok::<_, ApiError>((code, package))
    })
    .await
    .map_err(|e| ApiError::internal("checking code", e))??;
    // Code is content-addressed: storing it before the build is harmless, and lets a
    // worker on another machine fetch it.
    state
        .code
        .put_code(&package.sha256, code.clone())
        .await
        .map_err(|e| ApiError::store("storing code", e))?;
    // Dependencies install now, then compiled runtimes build, before any version
    // exists: a failure makes none.
    let code_tar = Bytes::from(package.tar);
    let installed = state
        .fleet
        .install_dependencies(name, runtime, &code_tar)
        .await;
    let installed = match installed {
        Ok(installed) => installed,
        Err(e) => {
            free_unused_code(state, &package.sha256, runtime).await;
            return Err(deps_error(name, e));
        }
    };
    let built = state
        .fleet
        .build(BuildRequest {
            function: name.to_string(),
            runtime,
            code_sha256: package.sha256.clone(),
            code_tar,
        })
        .await;
    let built = match built {
        Ok(built) => built,
        Err(e) => {
            free_unused_code(state, &package.sha256, runtime).await;
            return Err(build_error(name, e));
        }
    };
    let (record, created) = state
        .metadata
        .put_version(name, &spec, &package.sha256, package.size)
        .await
        .map_err(|e| ApiError::store("storing function", e))?;
    // A delete elsewhere may have freed this package between storing it and recording
    // the version; stored again (a HEAD when it is there), the version never lacks it.
    state
        .code
        .put_code(&package.sha256, code)
        .await
        .map_err(|e| ApiError::store("storing code", e))?;
    state.cache_function(Some(&record), name);
    state.fleet.retire(name, Some(record.version)).await;
    tracing::info!(function = %name, version = record.version, runtime = %spec.runtime, "deployed");
    Ok(Deployed {
        record,
        created,
        built,
        installed,
    })
}

/// Dependencies that could not be installed: the user's (422 `dependencies_failed`,
/// naming the package or the limit), a worker that cannot install them, or the platform.
fn deps_error(name: &str, e: DepsError) -> ApiError {
    match e {
        e if e.is_users() => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "dependencies_failed",
            format!("the dependencies of {name} could not be installed; no version was made:\n{e}"),
        ),
        DepsError::Unavailable(why) => ApiError::bad_request(
            "runtime_unavailable",
            format!("this hearth cannot install the dependencies of {name}: {why}"),
        ),
        other => ApiError::internal("installing dependencies", other),
    }
}

/// A build that made no artifact: the user's code (422 `build_failed`, the compiler's
/// message), a worker that cannot build the runtime, or the platform.
fn build_error(name: &str, e: FleetError) -> ApiError {
    let e = match e {
        FleetError::Build(e) => e,
        other => return crate::fleet_error::fleet_error(other),
    };
    match e {
        e if e.is_users() => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "build_failed",
            format!("the build of {name} failed; no version was made:\n{e}"),
        ),
        BuildError::Unavailable(why) => ApiError::bad_request(
            "runtime_unavailable",
            format!("this hearth cannot build {name}: {why}"),
        ),
        other => ApiError::internal("building the function", other),
    }
}
