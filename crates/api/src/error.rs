//! The error body every failing `/v1` answer carries.

use serde::{Deserialize, Serialize};

/// Every error: `{"error": {"code", "message"}}`, a stable code and a message that says
/// what to do.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"error": {"code": "function_not_found",
    "message": "function \"nope\" does not exist: deploy it first (PUT /v1/functions/nope)"}})))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` member of [`ErrorBody`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// snake_case, stable: clients branch on it.
    pub code: String,
    /// For people: what went wrong and what to do.
    pub message: String,
}

impl ErrorBody {
    /// The body of an error with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_error_round_trips() {
        let text = r#"{"error": {"code": "function_not_found", "message": "function \"nope\" does not exist"}}"#;
        let body: ErrorBody = serde_json::from_str(text).unwrap();
        assert_eq!(
            body,
            ErrorBody::new("function_not_found", "function \"nope\" does not exist")
        );
        let again: serde_json::Value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
    }
}
