//! The environment variables the platform owns: a function may not set them, the
//! controller refuses them when a function is created or updated, and the agent drops any
//! that reach it anyway. This is the one list both read.

/// `PATH` of every process in a sandbox: runtimes, user code and build toolchains.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Prefix of the platform's own variables (`HEARTH_FUNCTION_NAME`, `HEARTH_ATTEMPT`, ...).
pub const RESERVED_ENV_PREFIX: &str = "HEARTH_";

/// Why names starting with [`RESERVED_ENV_PREFIX`] are reserved.
const PREFIX_REASON: &str =
    "names starting with HEARTH_ are the platform's (function name, version, request id, attempt)";

/// The variables the platform sets or guards, each with why a function may not set it.
pub const RESERVED_ENV_NAMES: &[(&str, &str)] = &[
    (
        "PATH",
        "the sandbox sets the search path of its runtimes and toolchains",
    ),
    (
        "HOME",
        "the sandbox sets it to an empty dir no function can write",
    ),
    ("OUTPUT_DIR", "it names each invocation's own output dir"),
    ("PAYLOAD", "it carries each event of a compiled function"),
    (
        "PAYLOAD_FILE",
        "it names the file of a large event of a compiled function",
    ),
    (
        "PYTHONNOUSERSITE",
        "it keeps packages outside the code and its layer from loading",
    ),
    (
        "LD_PRELOAD",
        "it would load a library into hearth's runtime processes before your code",
    ),
    (
        "LD_AUDIT",
        "it would load a library into hearth's runtime processes before your code",
    ),
];

/// Why `name` is reserved, or `None` when a function may set it.
pub fn reserved_env_reason(name: &str) -> Option<&'static str> {
    if name.starts_with(RESERVED_ENV_PREFIX) {
        return Some(PREFIX_REASON);
    }
    RESERVED_ENV_NAMES
        .iter()
        .find(|(reserved, _)| *reserved == name)
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reserved_name_says_why_and_ordinary_ones_pass() {
        for name in [
            "PATH",
            "HEARTH_ATTEMPT",
            "HEARTH_REGION",
            "LD_PRELOAD",
            "OUTPUT_DIR",
        ] {
            let why = reserved_env_reason(name);
            assert!(why.is_some_and(|w| !w.is_empty()), "{name}");
        }
        for name in ["GREETING", "PYTHONPATH", "NODE_PATH", "TMPDIR", "hearth_x"] {
            assert_eq!(reserved_env_reason(name), None, "{name}");
        }
    }
}
