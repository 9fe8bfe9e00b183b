//! Who is calling and what they may see: roles, namespaces, and the mapping of a
//! namespace's function names onto the names the stores and the workers know.
//!
//! Every function lives in a namespace. Below the API a function is known by one
//! *qualified* name: the bare name in namespace `default` (so functions made before
//! namespaces existed, and the Lambda API's, stay where they were), and `ns.name` in any
//! other (a `.` is in neither a function nor a namespace name, so the mapping is
//! one-to-one). Workers, pools, history and metrics use the qualified name; the API
//! shows the bare name and the namespace.

use crate::ApiError;
use axum::http::StatusCode;
use hearth_core::function::validate_name;
use serde::{Deserialize, Serialize};

/// The namespace of the admin key and of keys that name none.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// Invoke and read functions, invocations, logs and outputs, in its namespace.
    Invoker,
    /// What an invoker may, and deploy, change and delete functions, in its namespace.
    Developer,
    /// Everything, in every namespace (`?namespace=`), keys and quotas included.
    Admin,
}

impl Role {
    pub(crate) fn parse(text: &str) -> Option<Role> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Invoker => "invoker",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }
}

/// The verified caller of a request (an extension the auth layer adds under `/v1`).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The key's id (`admin` for the admin key), for logs; never the secret.
    pub(crate) key_id: String,
    pub(crate) role: Role,
    /// The namespace the request acts in.
    pub(crate) namespace: String,
    /// An admin's `?namespace=*`: listings span every namespace.
    pub(crate) all_namespaces: bool,
    /// The key's rate limit (requests/s), when it has one.
    pub(crate) rate_per_s: Option<f64>,
    /// The key's bucket size.
    pub(crate) burst: Option<u32>,
    /// Most invocations of the key running at once.
    pub(crate) max_concurrency: Option<u32>,
}

impl Caller {
    /// The admin key, acting in the default namespace.
    pub(crate) fn admin() -> Caller {
        Caller {
            key_id: "admin".into(),
            role: Role::Admin,
            namespace: DEFAULT_NAMESPACE.into(),
            all_namespaces: false,
            rate_per_s: None,
            burst: None,
            max_concurrency: None,
        }
    }

    /// The qualified name of the caller's function `name` (checked).
    pub(crate) fn qualify(&self, name: &str) -> Result<String, ApiError> {
        checked_name(name)?;
        Ok(qualified(&self.namespace, name))
    }

    /// Whether the caller may see the function with this qualified name.
    pub(crate) fn sees(&self, qualified_name: &str) -> bool {
        self.all_namespaces || split(qualified_name).0 == self.namespace
    }
}

/// The name below the API of function `name` in `namespace`.
pub(crate) fn qualified(namespace: &str, name: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// The namespace and bare name of a qualified name.
pub(crate) fn split(qualified_name: &str) -> (&str, &str) {
    qualified_name
        .split_once('.')
        .unwrap_or((DEFAULT_NAMESPACE, qualified_name))
}

/// Checks a bare function name (a 400 `invalid_name` saying the rule).
pub(crate) fn checked_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))
}

/// Checks a qualified name (`name`, or `namespace.name`: see this module).
pub(crate) fn checked_qualified(qualified: &str) -> Result<(), ApiError> {
    let (namespace, name) = split(qualified);
    checked_namespace(namespace)?;
    checked_name(name)
}

/// Checks a namespace name (the rule of function names).
pub(crate) fn checked_namespace(namespace: &str) -> Result<(), ApiError> {
    validate_name(namespace).map_err(|_| {
        ApiError::bad_request(
            "invalid_namespace",
            format!("invalid namespace {namespace:?}: use ^[a-z0-9][a-z0-9-]{{0,62}}$"),
        )
    })
}

/// An invocation as the API shows it: `function` its bare name, with its `namespace`.
pub(crate) fn invocation_object(
    mut invocation: hearth_core::Invocation,
) -> hearth_api::InvocationObject {
    let (namespace, name) = split(&invocation.function);
    let (namespace, name) = (namespace.to_string(), name.to_string());
    invocation.function = name;
    hearth_api::InvocationObject {
        invocation,
        namespace,
    }
}

/// 403 `forbidden`: the key's role does not allow the request.
pub(crate) fn forbidden(caller: &Caller, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "key {} has role {}, which may not {what}",
            caller.key_id,
            caller.role.as_str()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_map_one_to_one() {
        assert_eq!(qualified("default", "hello"), "hello");
        assert_eq!(qualified("team-a", "hello"), "team-a.hello");
        assert_eq!(split("hello"), ("default", "hello"));
        assert_eq!(split("team-a.hello"), ("team-a", "hello"));
    }

    #[test]
    fn a_caller_sees_its_namespace_only() {
        let caller = Caller {
            key_id: "k_1".into(),
            role: Role::Developer,
            namespace: "a".into(),
            ..Caller::admin()
        };
        assert!(caller.sees("a.f"));
        assert!(!caller.sees("b.f"));
        assert!(!caller.sees("f"));
        assert!(Caller::admin().sees("f"));
        assert!(!Caller::admin().sees("a.f"));
        assert!(caller.qualify("b.f").is_err(), "a dot is not a name");
        assert_eq!(caller.qualify("f").unwrap(), "a.f");
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Admin > Role::Developer && Role::Developer > Role::Invoker);
        assert_eq!(Role::parse("invoker"), Some(Role::Invoker));
        assert_eq!(Role::parse("root"), None);
    }
}
