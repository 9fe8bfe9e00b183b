//! Lambda's ways of naming a function: `name`, `name:qualifier`,
//! `123456789012:function:name[:qualifier]` and the full ARN.

use super::errors::LambdaError;
use hearth_core::function::validate_name;

/// The account id in the ARNs hearth reports (it has no accounts).
pub const ACCOUNT_ID: &str = "000000000000";

/// A function named in a path, with its qualifier (`$LATEST` or a version number).
#[derive(Debug, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub version: Option<u64>,
}

/// Parses `raw` (a path segment, decoded) and the `Qualifier` query parameter.
pub fn parse(raw: &str, qualifier: Option<&str>) -> Result<FunctionRef, LambdaError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, suffix) = match parts[..] {
        [name] => (name, None),
        [name, q] => (name, Some(q)),
        [_account, "function", name] => (name, None),
        [_account, "function", name, q] => (name, Some(q)),
        ["arn", _, "lambda", _region, _account, "function", name] => (name, None),
        ["arn", _, "lambda", _region, _account, "function", name, q] => (name, Some(q)),
        _ => {
            return Err(LambdaError::invalid(format!(
                "{raw:?} is not a function name, partial ARN or ARN"
            )))
        }
    };
    validate_name(name).map_err(|e| LambdaError::invalid(e.to_string()))?;
    let qualifier = match (suffix, qualifier) {
        (Some(a), Some(b)) if a != b => {
            return Err(LambdaError::invalid(
                "the qualifier in the function name and the Qualifier parameter differ",
            ))
        }
        (a, b) => a.or(b),
    };
    let version = match qualifier {
        None | Some("") | Some("$LATEST") => None,
        Some(q) => Some(q.parse::<u64>().map_err(|_| {
            LambdaError::invalid(format!(
                "qualifier {q:?}: hearth has versions ($LATEST or a number), not aliases"
            ))
        })?),
    };
    Ok(FunctionRef {
        name: name.to_string(),
        version,
    })
}

/// The ARN of a function.
pub fn arn(region: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_arns_and_qualifiers() {
        let f = |name: &str, version| FunctionRef {
            name: name.into(),
            version,
        };
        assert_eq!(parse("hello", None).unwrap(), f("hello", None));
        assert_eq!(parse("hello:3", None).unwrap(), f("hello", Some(3)));
        assert_eq!(parse("hello", Some("$LATEST")).unwrap(), f("hello", None));
        assert_eq!(
            parse("123456789012:function:hello", Some("2")).unwrap(),
            f("hello", Some(2))
        );
        assert_eq!(
            parse(
                "arn:aws:lambda:us-east-1:123456789012:function:hello:7",
                None
            )
            .unwrap(),
            f("hello", Some(7))
        );
        for bad in ["Hello_World", "a:b:c", "hello:prod", "arn:aws:s3:::bucket"] {
            assert!(parse(bad, None).is_err(), "{bad}");
        }
        assert!(parse("hello:1", Some("2")).is_err());
    }
}
