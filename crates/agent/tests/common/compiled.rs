//! The compiled runtimes' two steps through real agents: one agent builds
//! (`Purpose::Build`), another serves the artifact it made. Needs g++ and Go on the
//! host (`scripts/setup.sh` installs them).

use super::{spec, Agent, Reply};
use hearth_core::protocol::{
    FromAgent, InitSpec, OutcomeStatus, Purpose, RootSetup, ARTIFACT_MANIFEST, ARTIFACT_PROGRAM,
};
use hearth_core::Runtime;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const BUILD_TIMEOUT_MS: u64 = 120_000;

pub fn toolchain(runtime: Runtime) -> String {
    let name = if runtime == Runtime::Go { "go" } else { "g++" };
    let path = std::path::Path::new("/usr/bin").join(name);
    let real = path
        .canonicalize()
        .unwrap_or_else(|e| panic!("{} is missing ({e}): run scripts/setup.sh", path.display()));
    real.to_string_lossy().into_owned()
}

/// An agent in Existing mode under a fresh temp dir, sent `Init` with `code`.
pub fn agent(init: InitSpec, code: &[u8]) -> (Agent, FromAgent) {
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(super::agent_path());
    cmd.env("HEARTH_AGENT_ROOT", root.path());
    let mut agent = Agent::spawn(cmd);
    agent.root = Some(root);
    let first = agent.init(&init, code);
    (agent, first)
}

/// Builds `files`; the build's reply (its payload is the artifact on success).
pub fn build(runtime: Runtime, files: &[(&str, &str)]) -> Reply {
    let mut init = spec(runtime, RootSetup::Existing);
    init.purpose = Purpose::Build;
    init.interpreter = toolchain(runtime);
    init.tmp_size_mb = 512;
    let (mut agent, first) = agent(init, &super::tar_of(files));
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    let reply = agent.invoke("build-1", BUILD_TIMEOUT_MS, "");
    let again = agent.invoke("build-2", BUILD_TIMEOUT_MS, "");
    assert_eq!(
        again.outcome.status,
        OutcomeStatus::Crashed,
        "one build per instance"
    );
    reply
}

/// Builds `files` and starts an agent serving the artifact.
pub fn serve(runtime: Runtime, files: &[(&str, &str)]) -> Agent {
    let built = build(runtime, files);
    assert_eq!(
        built.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        built.outcome
    );
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(built.payload.as_slice());
    for entry in archive.entries().unwrap() {
        names.push(
            entry
                .unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    assert_eq!(names, [ARTIFACT_PROGRAM, ARTIFACT_MANIFEST]);
    let mut init = spec(runtime, RootSetup::Existing);
    init.interpreter = "/code/function".into();
    let (agent, first) = agent(init, &built.payload);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    agent
}
