//! Invocations: the invocation object (sync answers, `GET /v1/invocations/{id}`,
//! listings) and the answer to an async invocation.

use hearth_core::{Invocation, InvocationStatus};
use serde::{Deserialize, Serialize};

/// The invocation object: the record the worker made, with `function` the bare name and
/// the `namespace` beside it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationObject {
    /// The record (its `function` is the bare name).
    #[serde(flatten)]
    pub invocation: Invocation,
    /// The namespace of the function.
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// `GET /v1/functions/{name}/invocations`, newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationList {
    /// The invocations.
    pub invocations: Vec<InvocationObject>,
}

/// The answer to an asynchronous invocation (202).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"id": "01JDZ5T8Q3V7J8K2M4N6P8R0S2", "status": "queued"})))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The invocation's id: `GET /v1/invocations/{id}` follows it.
    pub id: String,
    /// Always `queued`.
    pub status: InvocationStatus,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::{assert_round_trips, documented};

    #[test]
    fn the_documented_invocation_object_round_trips() {
        let text = documented("The invocation object:");
        let object: InvocationObject = assert_round_trips(&text);
        assert_eq!(object.invocation.status, InvocationStatus::Success);
        assert_eq!(object.invocation.memory.peak_bytes, 9437184);
        assert_eq!(object.invocation.outputs[0].path, "report.csv");
        let list: InvocationList = assert_round_trips(&format!(r#"{{"invocations": [{text}]}}"#));
        assert_eq!(list.invocations[0], object);
    }

    #[test]
    fn a_failed_invocation_round_trips() {
        let text = r#"{"id": "01J", "function": "hello", "namespace": "team-a", "version": 1,
            "status": "error", "result": null,
            "error": {"type": "ValueError", "message": "bad", "trace": "line 1"},
            "exit_code": null, "stdout": "", "stderr": "boom\n", "truncated": true,
            "cold_start": true, "worker": "w-1", "started_at": "t", "duration_ms": 3,
            "handler_duration_ms": 2.5,
            "memory": {"limit_mb": 128, "peak_bytes": 1, "max_rss_bytes": 1},
            "cpu": {"user_ms": 1.0, "system_ms": 0.5, "cpus": 0.25},
            "io": {"read_bytes": 0, "write_bytes": 0}, "outputs": [],
            "skipped_outputs": [{"path": "link", "reason": "a symlink"}],
            "advice": {"recommended_memory_mb": 256, "reason": "peak over 85%"}, "attempt": 2}"#;
        let mut expected: serde_json::Value = serde_json::from_str(text).unwrap();
        expected["duration_ms"] = serde_json::json!(3.0);
        let object: InvocationObject = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&object).unwrap(), expected);
        assert_eq!(object.invocation.error.unwrap().kind, "ValueError");
    }

    #[test]
    fn the_async_answer_round_trips() {
        let queued: Queued = assert_round_trips(r#"{"id": "01J", "status": "queued"}"#);
        assert_eq!(queued.status, InvocationStatus::Queued);
    }
}
