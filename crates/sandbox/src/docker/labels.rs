//! The labels that mark containers and images as hearth's.
//!
//! Every function container carries [`MANAGED`] and [`OWNER`]; the owner is one hearth
//! (one data dir), so a hearth sweeps only its own leftovers, never another's.

use crate::InstanceSpec;
use std::collections::HashMap;

/// `"true"` on everything hearth makes (containers and images).
pub const MANAGED: &str = "io.hearth.managed";
/// The owning hearth: a short digest of its data dir.
pub const OWNER: &str = "io.hearth.owner";
/// The instance id.
pub const INSTANCE: &str = "io.hearth.instance";
/// The function's name.
pub const FUNCTION: &str = "io.hearth.function";
/// The function's version.
pub const VERSION: &str = "io.hearth.version";
/// The runtime (on containers and runtime images).
pub const RUNTIME: &str = "io.hearth.runtime";
/// On runtime images: the interpreter's absolute path inside the image.
pub const INTERPRETER: &str = "io.hearth.interpreter";
/// On runtime images: the agent's tag (version and digest) baked in.
pub const AGENT: &str = "io.hearth.agent";

/// The labels of the container serving `spec` for the hearth `owner`.
pub fn for_instance(spec: &InstanceSpec, owner: &str) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED.to_string(), "true".to_string()),
        (OWNER.to_string(), owner.to_string()),
        (INSTANCE.to_string(), spec.instance_id.clone()),
        (FUNCTION.to_string(), spec.function_name.clone()),
        (VERSION.to_string(), spec.version.to_string()),
        (RUNTIME.to_string(), spec.runtime.to_string()),
    ])
}

/// The `label=` filter value selecting the containers of `owner`.
pub fn owner_filter(owner: &str) -> String {
    format!("{OWNER}={owner}")
}
