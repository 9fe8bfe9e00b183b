//! The languages hearth runs and what each expects of the uploaded code.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A language runtime a function is written for.
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

    /// The lowercase name used in the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Nodejs => "nodejs",
            Runtime::Cpp => "cpp",
            Runtime::Go => "go",
        }
    }

    /// Whether this build of hearth can run the runtime yet.
    pub fn is_supported(self) -> bool {
        matches!(self, Runtime::Python | Runtime::Nodejs)
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
