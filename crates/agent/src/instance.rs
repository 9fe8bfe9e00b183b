//! What every runtime shares: the instance (its layout, environment, reaper, sweeper,
//! output and scratch dirs), the environment of user processes, and small helpers. It
//! knows no runtime: they all import it, and [`crate::runtime`] picks among them.

use crate::output::OutputDir;
use crate::process::Reaper;
use crate::scratch::ScratchDirs;
use crate::setup::Layout;
use crate::sweep::Sweeper;
use hearth_core::env::{reserved_env_reason, SANDBOX_PATH};
use hearth_core::protocol::{InitSpec, DEPS_NODE, DEPS_PYTHON};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long loading the user's code may take before init gives up.
pub const LOAD_LIMIT: Duration = Duration::from_secs(120);

/// The instance: what the runtimes need to start and clean up processes.
#[derive(Debug)]
pub struct Instance {
    /// Absolute path of the interpreter.
    pub interpreter: String,
    /// Where code, runtime files and scratch space are.
    pub layout: Layout,
    /// The environment of every runtime process.
    pub env: Vec<(String, String)>,
    /// Cap on inline stdout and on inline stderr.
    pub output_limit: usize,
    /// Reaps children without losing the runtime processes' statuses.
    pub reaper: Reaper,
    /// Kills leftovers after each invocation.
    pub sweeper: Sweeper,
    /// The per-invocation output dir, when the function has one.
    pub output: Option<OutputDir>,
    /// `/tmp` and `/dev/shm`, emptied after every invocation.
    pub scratch: ScratchDirs,
}

impl Instance {
    /// `$OUTPUT_DIR` as the runtimes pass it to each invocation's process.
    pub fn output_dir(&self) -> Option<String> {
        self.output
            .as_ref()
            .map(|o| o.path().to_string_lossy().into_owned())
    }
}

/// The environment of user processes: defaults, then the user's, then the platform's.
pub fn environment(spec: &InitSpec, layout: &Layout) -> Vec<(String, String)> {
    let tmp = layout.tmp.to_string_lossy().into_owned();
    let home = layout.home.to_string_lossy().into_owned();
    let mut env: BTreeMap<String, String> = [
        ("PATH", SANDBOX_PATH),
        ("HOME", home.as_str()),
        ("TMPDIR", tmp.as_str()),
        ("LANG", "C.UTF-8"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (key, value) in &spec.env {
        let usable = !key.is_empty() && !key.contains(['=', '\0']) && !value.contains('\0');
        if !usable {
            crate::diag!("ignoring malformed environment variable {key:?}");
        } else if let Some(why) = reserved_env_reason(key) {
            // The controller refuses these; one that gets here anyway never reaches a process.
            crate::diag!("ignoring environment variable {key}: reserved ({why})");
        } else {
            env.insert(key.clone(), value.clone());
        }
    }
    // The dependency layer's packages come after the code's own (vendored ones win),
    // and after a search path the user set.
    for (key, sub) in [("PYTHONPATH", DEPS_PYTHON), ("NODE_PATH", DEPS_NODE)] {
        let dir = layout.deps.join(sub);
        if dir.is_dir() {
            let dir = dir.to_string_lossy().into_owned();
            let value = match env.get(key) {
                Some(user) if !user.is_empty() => format!("{user}:{dir}"),
                _ => dir,
            };
            env.insert(key.to_string(), value);
        }
    }
    for (key, value) in [
        ("HEARTH_FUNCTION_NAME", spec.function_name.clone()),
        ("HEARTH_FUNCTION_VERSION", spec.version.to_string()),
        ("HEARTH_MEMORY_LIMIT_MB", spec.memory_limit_mb.to_string()),
        ("HEARTH_RUNTIME", spec.runtime.as_str().to_string()),
        // No user site dir, whatever HOME holds (the zygote also starts with -s).
        ("PYTHONNOUSERSITE", "1".to_string()),
    ] {
        env.insert(key.to_string(), value);
    }
    env.into_iter().collect()
}

/// Now as unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::protocol::{RootSetup, PROTOCOL_VERSION};
    use hearth_core::Runtime;
    use std::path::Path;

    #[test]
    fn reserved_and_malformed_names_never_pass_through() {
        let spec = InitSpec {
            protocol_version: PROTOCOL_VERSION,
            runtime: Runtime::Python,
            function_name: "f".into(),
            version: 3,
            memory_limit_mb: 128,
            env: [
                ("HEARTH_FUNCTION_NAME", "spoof"),
                ("OUTPUT_DIR", "/elsewhere"),
                ("HEARTH_REGION", "mine"),
                ("PATH", "/custom"),
                ("HEARTH_ATTEMPT", "7"),
                ("LD_PRELOAD", "/tmp/evil.so"),
                ("A=B", "x"),
                ("GREETING", "hi"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            interpreter: "/usr/bin/python3".into(),
            root: RootSetup::Existing,
            tmp_size_mb: 64,
            inline_output_limit: 1024,
            output_size_mb: 0,
            uid: 65534,
            gid: 65534,
            agent_id: None,
            purpose: hearth_core::protocol::Purpose::Serve,
            stem: false,
        };
        let env: BTreeMap<_, _> = environment(&spec, &Layout::under(Path::new("/")))
            .into_iter()
            .collect();
        assert_eq!(env["HEARTH_FUNCTION_NAME"], "f");
        assert_eq!(env["HEARTH_FUNCTION_VERSION"], "3");
        assert_eq!(env["PATH"], SANDBOX_PATH);
        assert_eq!(env["GREETING"], "hi");
        assert_eq!(env["HOME"], "/home");
        assert_eq!(env["PYTHONNOUSERSITE"], "1");
        for (name, value) in &spec.env {
            if let Some(why) = reserved_env_reason(name) {
                assert_ne!(env.get(name), Some(value), "{name} ({why}) passed through");
            }
        }
        assert!(!env.contains_key("HEARTH_REGION"));
        assert!(!env.contains_key("HEARTH_ATTEMPT"), "set per invocation");
        assert!(!env.contains_key("LD_PRELOAD"));
        assert!(!env.contains_key("A=B"));
        assert!(
            !env.contains_key("OUTPUT_DIR"),
            "set per invocation, never by the user"
        );
    }
}
