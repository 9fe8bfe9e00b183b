//! `/v1/functions`: the function object that deploy, get, list and the tuner's apply
//! answer with. The deploy request's `config` part is [`hearth_core::FunctionConfig`].

use hearth_core::Runtime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The function object: the newest version of a function.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "hello", "namespace": "default",
    "version": 2, "runtime": "python", "memory_mb": 128, "timeout_ms": 3000, "max_instances": 10,
    "cpus": null, "env": {"GREETING": "hi"}, "description": "", "handler": null,
    "code_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "code_size": 1234, "created_at": "2026-11-28T10:00:00.000Z", "updated_at": "2026-11-28T10:05:00.000Z"})))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionObject {
    /// Name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    pub name: String,
    /// The namespace it lives in (`default` unless the key that deployed it has another).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Newest version (each deploy makes one).
    pub version: u64,
    /// Its runtime.
    pub runtime: Runtime,
    /// Memory limit of each instance, MB.
    pub memory_mb: u64,
    /// Wall-clock limit of one invocation, ms.
    pub timeout_ms: u64,
    /// Most instances serving it at once.
    #[serde(default)]
    pub max_instances: u32,
    /// CPUs of each instance when fixed; null: CPU follows memory_mb.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Environment variables handed to the handler.
    pub env: BTreeMap<String, String>,
    /// Free text.
    pub description: String,
    /// Entry point as `module.function`, when not the runtime's default.
    #[serde(default)]
    pub handler: Option<String>,
    /// Hex SHA-256 of the stored zip.
    pub code_sha256: String,
    /// Size of the stored zip, bytes.
    pub code_size: u64,
    /// RFC 3339 time of version 1.
    pub created_at: String,
    /// RFC 3339 time of this version.
    pub updated_at: String,
    /// Aggregates of finished invocations (GET of one function only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<FunctionStats>,
    /// The build of a compiled runtime (deploy answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildInfo>,
    /// The dependencies installed for this version (deploy answers of code that names
    /// some).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Dependencies>,
    /// What the tuner changed (answers of `POST …/tuning/apply` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TuningChange>,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// Aggregates over a function's finished invocations.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionStats {
    /// Finished invocations.
    pub invocations: u64,
    /// Those that did not succeed.
    pub errors: u64,
    /// Mean duration, ms.
    pub avg_duration_ms: f64,
    /// 95th percentile of the duration, ms.
    pub p95_duration_ms: f64,
}

/// A compiled runtime's build at deploy.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// True when the artifact existed: nothing was compiled.
    pub cached: bool,
    /// Time the build took, ms.
    pub duration_ms: f64,
}

/// The dependencies a deploy installed (or found installed).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependencies {
    /// True when this set was installed before: nothing was fetched or installed.
    #[serde(default)]
    pub cached: bool,
    /// The file they came from (`requirements.txt`, `package.json`, `go.mod`).
    pub manifest: String,
    /// What was installed.
    pub packages: Vec<DependencyPackage>,
    /// The whole set's installed size, bytes.
    pub size_bytes: u64,
    /// Time spent fetching and installing, ms (0 when cached).
    #[serde(default)]
    pub duration_ms: f64,
    /// Packages whose install scripts were not run (npm: they may not work).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scripts_not_run: Vec<String>,
}

/// One installed package.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyPackage {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its installed size, bytes.
    pub size_bytes: u64,
}

/// The size change an applied tuning made; the tuner watches the next calls and takes
/// it back if they fail.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TuningChange {
    /// The size before, MB.
    pub previous_memory_mb: u64,
    /// The version before.
    pub previous_version: u64,
    /// How many calls of the new version are watched.
    pub watching_calls: usize,
}

/// `GET /v1/functions`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionList {
    /// The functions the caller sees.
    pub functions: Vec<FunctionObject>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::{assert_round_trips, documented};

    #[test]
    fn the_documented_function_object_round_trips() {
        let function: FunctionObject =
            assert_round_trips(&documented("body = the function object:"));
        assert_eq!(function.runtime, Runtime::Python);
        assert_eq!(function.env["K"], "V");
    }

    #[test]
    fn the_documented_deploy_config_round_trips_and_leaves_out_what_is_not_set() {
        let config: crate::FunctionConfig = assert_round_trips(
            r#"{"runtime": "python", "memory_mb": 128, "timeout_ms": 3000, "env": {"K": "V"},
            "description": "", "handler": "app.lambda_handler"}"#,
        );
        assert_eq!(config.memory_mb, Some(128));
        let update = crate::FunctionConfig {
            memory_mb: Some(256),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&update).unwrap(),
            r#"{"memory_mb":256}"#
        );
    }

    #[test]
    fn a_deploy_answer_with_dependencies_and_a_list_round_trip() {
        let deployed = r#"{"name": "deps", "namespace": "default", "version": 1, "runtime": "python",
            "memory_mb": 128, "timeout_ms": 3000, "max_instances": 10, "cpus": 0.5, "env": {},
            "description": "", "handler": "app.lambda_handler", "code_sha256": "ab", "code_size": 9,
            "created_at": "t", "updated_at": "t", "build": {"cached": false, "duration_ms": 812.5},
            "dependencies": {"cached": false, "manifest": "requirements.txt",
              "packages": [{"name": "six", "version": "1.16.0", "size_bytes": 40960}],
              "size_bytes": 40960, "duration_ms": 2100.0, "scripts_not_run": ["esbuild"]}}"#;
        let function: FunctionObject = assert_round_trips(deployed);
        assert_eq!(function.dependencies.unwrap().packages[0].name, "six");
        let list = format!(r#"{{"functions": [{deployed}]}}"#);
        let list: FunctionList = assert_round_trips(&list);
        assert_eq!(list.functions.len(), 1);
    }

    #[test]
    fn an_applied_tuning_round_trips() {
        let applied = r#"{"name": "hello", "namespace": "team-a", "version": 4, "runtime": "nodejs",
            "memory_mb": 48, "timeout_ms": 3000, "max_instances": 10, "cpus": null, "env": {},
            "description": "", "handler": null, "code_sha256": "ab", "code_size": 9,
            "created_at": "t", "updated_at": "t",
            "tuning": {"previous_memory_mb": 512, "previous_version": 3, "watching_calls": 20}}"#;
        let function: FunctionObject = assert_round_trips(applied);
        assert_eq!(function.tuning.unwrap().watching_calls, 20);
    }
}
