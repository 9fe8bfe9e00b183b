//! CreateFunction, GetFunction, GetFunctionConfiguration, ListFunctions, DeleteFunction,
//! UpdateFunctionCode and UpdateFunctionConfiguration, over hearth's deploy and delete.

use super::config::{self, configuration, CreateRequest, Settings, UpdateCodeRequest};
use super::errors::LambdaError;
use super::names::{self, FunctionRef};
use super::Caller;
use crate::functions::{deploy_version, find, remove};
use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use hearth_store::FunctionRecord;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, Default)]
pub(crate) struct QualifierQuery {
    #[serde(rename = "Qualifier")]
    pub qualifier: Option<String>,
}

/// The version `function` names: the newest, or the numbered one.
pub(super) async fn record_of(
    state: &AppState,
    function: &FunctionRef,
) -> Result<FunctionRecord, LambdaError> {
    let newest = find(state, &function.name)
        .await
        .map_err(|e| not_found(e, &function.name))?;
    match function.version {
        None => Ok(newest),
        Some(v) if v == newest.version => Ok(newest),
        Some(v) => state
            .metadata
            .get_version(&function.name, v)
            .await
            .map_err(|e| LambdaError::from(ApiError::internal("reading function", e)))?
            .ok_or_else(|| LambdaError::not_found(&format!("{}:{v}", function.name))),
    }
}

fn not_found(e: ApiError, name: &str) -> LambdaError {
    if e.code() == "function_not_found" {
        LambdaError::not_found(name)
    } else {
        e.into()
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, LambdaError> {
    let request: CreateRequest = config::parse_body(&body)?;
    let function = names::parse(&request.function_name, None)?;
    let zip = config::zip_file(
        request.code.zip_file.as_deref(),
        request.code.s3_bucket.as_deref(),
        request.code.image_uri.as_deref(),
    )?;
    let runtime_name =
        request.settings.runtime.as_deref().ok_or_else(|| {
            LambdaError::invalid("Runtime is required (hearth runs zip packages)")
        })?;
    let runtime = config::runtime_of(runtime_name, &zip)?;
    match find(&state, &function.name).await {
        Ok(_) => {
            return Err(LambdaError::new(
                StatusCode::CONFLICT,
                "ResourceConflictException",
                format!("Function already exist: {}", function.name),
            ))
        }
        Err(e) if e.code() == "function_not_found" => {}
        Err(e) => return Err(e.into()),
    }
    let hearth_config = config::function_config(&request.settings, Some(runtime), None)?;
    let deployed = deploy_version(&state, &function.name, &hearth_config, zip).await?;
    Ok((
        StatusCode::CREATED,
        Json(configuration(&deployed.record, &caller.region)),
    )
        .into_response())
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<QualifierQuery>,
) -> Result<Json<serde_json::Value>, LambdaError> {
    let function = names::parse(&name, query.qualifier.as_deref())?;
    let record = record_of(&state, &function).await?;
    Ok(Json(json!({
        "Configuration": configuration(&record, &caller.region),
        "Code": {"RepositoryType": "hearth"},
    })))
}

pub(crate) async fn get_configuration(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<QualifierQuery>,
) -> Result<Json<serde_json::Value>, LambdaError> {
    let function = names::parse(&name, query.qualifier.as_deref())?;
    let record = record_of(&state, &function).await?;
    Ok(Json(configuration(&record, &caller.region)))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<String>,
}

/// Most functions one ListFunctions page holds, as Lambda.
const MAX_LIST_ITEMS: usize = 50;

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, LambdaError> {
    let max_items = match query.max_items.as_deref() {
        None | Some("") => MAX_LIST_ITEMS,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| LambdaError::invalid("MaxItems must be a number from 1 to 10000"))?
            .min(MAX_LIST_ITEMS),
    };
    let mut records = state
        .metadata
        .list_functions()
        .await
        .map_err(|e| LambdaError::from(ApiError::internal("listing functions", e)))?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let start = match query.marker.as_deref() {
        None | Some("") => 0,
        Some(marker) => records.partition_point(|r| r.name.as_str() <= marker),
    };
    let page: Vec<_> = records.iter().skip(start).take(max_items).collect();
    let mut body = json!({
        "Functions": page.iter().map(|r| configuration(r, &caller.region)).collect::<Vec<_>>(),
    });
    if start + page.len() < records.len() {
        if let Some(last) = page.last() {
            body["NextMarker"] = json!(last.name);
        }
    }
    Ok(Json(body))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<QualifierQuery>,
) -> Result<StatusCode, LambdaError> {
    let function = names::parse(&name, query.qualifier.as_deref())?;
    if function.version.is_some() {
        return Err(LambdaError::invalid(
            "hearth deletes whole functions: leave out the qualifier",
        ));
    }
    remove(&state, &function.name)
        .await
        .map_err(|e| not_found(e, &function.name))?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn update_code(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, LambdaError> {
    let request: UpdateCodeRequest = config::parse_body(&body)?;
    let function = names::parse(&name, None)?;
    let current = record_of(&state, &function).await?;
    let zip = config::zip_file(
        request.zip_file.as_deref(),
        request.s3_bucket.as_deref(),
        request.image_uri.as_deref(),
    )?;
    if request.dry_run {
        return Ok(Json(configuration(&current, &caller.region)));
    }
    let unchanged = hearth_core::FunctionConfig::default();
    let deployed = deploy_version(&state, &function.name, &unchanged, zip).await?;
    Ok(Json(configuration(&deployed.record, &caller.region)))
}

pub(crate) async fn update_configuration(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, LambdaError> {
    let settings: Settings = config::parse_body(&body)?;
    let function = names::parse(&name, None)?;
    let current = record_of(&state, &function).await?;
    let zip = state
        .code
        .get_code(&current.code_sha256)
        .await
        .map_err(|e| LambdaError::from(ApiError::internal("reading the function's code", e)))?;
    let runtime = match settings.runtime.as_deref() {
        None => None,
        Some(r) => Some(config::runtime_of(r, &zip)?),
    };
    let hearth_config = config::function_config(&settings, runtime, Some(current.spec.runtime))?;
    let deployed = deploy_version(&state, &function.name, &hearth_config, zip).await?;
    Ok(Json(configuration(&deployed.record, &caller.region)))
}
