//! The languages hearth runs and what each expects of the uploaded code.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A language runtime a function is written for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// CPython 3: `main.py` with `handler(event, context)` (or `main`, or an `sdk` script).
    Python,
    /// Node.js: `index.js` exporting `handler(event, context)`, sync or async.
    Nodejs,
    /// C++17: `main.cpp`, compiled once per version.
    Cpp,
    /// Go: `main.go`, compiled once per version.
    Go,
}

impl Runtime {
    /// Every runtime, in the order the docs list them.
    pub const ALL: [Runtime; 4] = [Runtime::Python, Runtime::Nodejs, Runtime::Cpp, Runtime::Go];

    /// The file that must sit at the root of the code package.
    pub fn entrypoint(self) -> &'static str {
        match self {
            Runtime::Python => "main.py",
            Runtime::Nodejs => "index.js",
            Runtime::Cpp => "main.cpp",
            Runtime::Go => "main.go",
        }
    }

    /// The runtime whose [`Self::entrypoint`] is `file_name`, if any.
    pub fn of_entrypoint(file_name: &str) -> Option<Runtime> {
        Runtime::ALL
            .into_iter()
            .find(|runtime| runtime.entrypoint() == file_name)
    }

    /// The lowercase name used in the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Nodejs => "nodejs",
            Runtime::Cpp => "cpp",
            Runtime::Go => "go",
        }
    }

    /// Whether this build of hearth can run the runtime (every runtime it knows, now).
    pub fn is_supported(self) -> bool {
        true
    }

    /// Whether the code is compiled once per version (at deploy) and the instance runs
    /// the built binary, rather than an interpreter loading the source.
    pub fn is_compiled(self) -> bool {
        matches!(self, Runtime::Cpp | Runtime::Go)
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A runtime name that hearth does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown runtime {0:?}: expected one of python, nodejs, cpp, go")]
pub struct UnknownRuntime(pub String);

impl FromStr for Runtime {
    type Err = UnknownRuntime;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "python" | "python3" => Ok(Runtime::Python),
            "nodejs" | "node" => Ok(Runtime::Nodejs),
            "cpp" | "c++" => Ok(Runtime::Cpp),
            "go" | "golang" => Ok(Runtime::Go),
            other => Err(UnknownRuntime(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runtime_is_supported_and_only_cpp_and_go_are_compiled() {
        for runtime in Runtime::ALL {
            assert!(runtime.is_supported(), "{runtime}");
            assert_eq!(runtime.as_str().parse::<Runtime>().ok(), Some(runtime));
        }
        let compiled: Vec<Runtime> = Runtime::ALL
            .into_iter()
            .filter(|r| r.is_compiled())
            .collect();
        assert_eq!(compiled, vec![Runtime::Cpp, Runtime::Go]);
    }

    #[test]
    fn each_entrypoint_names_its_runtime() {
        for runtime in Runtime::ALL {
            assert_eq!(Runtime::of_entrypoint(runtime.entrypoint()), Some(runtime));
        }
        assert_eq!(Runtime::of_entrypoint("util.h"), None);
    }
}
