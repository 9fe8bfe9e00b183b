//! Fixture cases: an event for a function fixture and the result it must give, per
//! runtime, kept as data (`tests/fixtures/cases/<suite>.json`) so that one table drives
//! every runtime and every layer (the agent's suites and the end-to-end ones).
//!
//! Results are compared in the API's view of an invocation (`status`, `result`,
//! `error.type`/`message`/`trace`): an expected object is a subset of the result, and a
//! key `NAME_contains` asks that the result's `NAME` contain the string.

use serde::Deserialize;
use serde_json::{Map, Value};

/// One suite's cases, and the fixture (`{prefix}-{fixture}`) they run against.
#[derive(Debug, Deserialize)]
pub struct Cases {
    /// The fixture's name without its runtime prefix (`fail` for `py-fail`).
    pub fixture: String,
    /// The cases, in the file's order.
    pub cases: Vec<Case>,
}

/// An event and what it must give.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// A name for the case, unique in its suite.
    pub name: String,
    /// The event the function gets.
    pub event: Value,
    /// Deployment settings the case needs (`timeout_ms`, `memory_mb`).
    #[serde(default)]
    pub config: Map<String, Value>,
    /// What every runtime must give.
    pub expect: Value,
    /// What each runtime must give besides, by runtime name.
    #[serde(default)]
    pub runtimes: Map<String, Value>,
}

impl Cases {
    /// Reads `tests/fixtures/cases/<suite>.json`.
    pub fn load(suite: &str) -> Cases {
        let path = crate::workspace_root()
            .join("tests/fixtures/cases")
            .join(format!("{suite}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cases {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("cases {}: {e}", path.display()))
    }

    /// The case named `name`.
    pub fn case(&self, name: &str) -> &Case {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name} for the {} fixture", self.fixture))
    }

    /// The fixture directory's name for a runtime's prefix (`py` → `py-fail`).
    pub fn fixture_for(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.fixture)
    }
}

impl Case {
    /// The function's timeout the case asks for, if any.
    pub fn timeout_ms(&self) -> Option<u64> {
        self.config.get("timeout_ms").and_then(Value::as_u64)
    }

    /// Whether the case needs a sandbox's memory limit (none without a cgroup).
    pub fn needs_memory_limit(&self) -> bool {
        self.config.contains_key("memory_mb")
    }

    /// What `runtime` must give: `expect` with the runtime's own additions merged in.
    pub fn expected(&self, runtime: &str) -> Value {
        let mut expected = self.expect.clone();
        if let Some(more) = self.runtimes.get(runtime) {
            merge(&mut expected, more);
        }
        expected
    }

    /// Panics, naming the case, the runtime and the first difference, unless `actual`
    /// (an invocation in the API's view) gives what the case expects of `runtime`.
    pub fn check(&self, runtime: &str, actual: &Value) {
        if let Err(difference) = matches(&self.expected(runtime), actual, "") {
            panic!(
                "case {} on {runtime}: {difference}\nevent: {}\ngot: {actual}",
                self.name, self.event
            );
        }
    }
}

fn merge(into: &mut Value, more: &Value) {
    match (into, more) {
        (Value::Object(into), Value::Object(more)) => {
            for (key, value) in more {
                merge(into.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (into, more) => *into = more.clone(),
    }
}

/// Where and how an answer differs from a case's expectation.
#[derive(Debug, thiserror::Error)]
enum Mismatch {
    #[error("{at}: expected {expected}, got {actual}")]
    Value {
        at: String,
        expected: Value,
        actual: Value,
    },
    #[error("{at}: {got:?} does not contain {needle:?}")]
    Missing {
        at: String,
        got: String,
        needle: String,
    },
}

/// Whether `actual` holds `expected` (see the module's doc); the difference if not.
fn matches(expected: &Value, actual: &Value, at: &str) -> Result<(), Mismatch> {
    let Value::Object(expected) = expected else {
        return if expected == actual {
            Ok(())
        } else {
            Err(Mismatch::Value {
                at: at.to_string(),
                expected: expected.clone(),
                actual: actual.clone(),
            })
        };
    };
    for (key, want) in expected {
        if let Some(field) = key.strip_suffix("_contains") {
            let got = actual[field].as_str().unwrap_or_default();
            let needle = want.as_str().unwrap_or_default();
            if !got.contains(needle) {
                return Err(Mismatch::Missing {
                    at: format!("{at}.{field}"),
                    got: got.to_string(),
                    needle: needle.to_string(),
                });
            }
        } else {
            matches(want, &actual[key], &format!("{at}.{key}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn case() -> Case {
        serde_json::from_value(json!({
            "name": "raises",
            "event": {"action": "raise"},
            "expect": {"status": "error", "error": {"message": "bad"}},
            "runtimes": {"python": {"error": {"type": "ValueError", "trace_contains": "f"}}}
        }))
        .unwrap()
    }

    #[test]
    fn a_runtimes_additions_are_merged_into_the_common_expectation() {
        assert_eq!(
            case().expected("python"),
            json!({"status": "error", "error": {"message": "bad", "type": "ValueError", "trace_contains": "f"}})
        );
        assert_eq!(case().expected("go"), case().expect);
    }

    #[test]
    fn a_result_matches_when_it_holds_every_expected_key() {
        let actual = json!({"status": "error", "id": "x", "error": {"message": "bad", "type": "ValueError", "trace": "in f()"}});
        assert!(matches(&case().expected("python"), &actual, "").is_ok());
    }

    #[test]
    fn a_wrong_value_a_missing_key_or_a_missing_substring_is_named() {
        let expected = case().expected("python");
        let wrong = json!({"status": "success", "error": {"message": "bad", "type": "ValueError", "trace": "f"}});
        assert!(matches(&expected, &wrong, "")
            .unwrap_err()
            .to_string()
            .contains(".status"));
        let missing = json!({"status": "error", "error": {"message": "bad", "trace": "f"}});
        assert!(matches(&expected, &missing, "")
            .unwrap_err()
            .to_string()
            .contains(".error.type"));
        let no_frame = json!({"status": "error", "error": {"message": "bad", "type": "ValueError", "trace": "g"}});
        assert!(matches(&expected, &no_frame, "")
            .unwrap_err()
            .to_string()
            .contains("does not contain"));
    }
}
