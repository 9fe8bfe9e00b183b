//! Node.js: Node cannot fork, so a standby process per invocation is started (and its code
//! loaded) before the event arrives.
//!
//! The standby (`runtimes/nodejs/bootstrap.js`) has fd 0 = event pipe, fds 1/2 = this
//! invocation's stdout/stderr pipes, fd 3 = result pipe. Once node has started it writes
//! `B` on fd 3 and waits for `G` on fd 0 (meanwhile the agent moves it into the function's
//! CPU quota: node's own start is not the function's work; a stem's standby is moved
//! before the stem says ready, off the cold start's path). It writes the marker `R` on
//! fd 3 once `index.js` is loaded, then blocks reading its event. Warm path: write the event,
//! close the pipe, wait for the result; the bootstrap closes fd 3 once it is written and
//! stdout/stderr are flushed, and the agent then kills it rather than wait ~10-40 ms for
//! node's teardown (V8's, its threads'). The next standby is started right
//! after the result has gone to the worker. What a standby prints while it loads is held
//! and logged with the invocation that uses it. That life cycle is [`crate::standby`]'s;
//! this file says how node starts, takes its event and fails to load.

use crate::error::{AgentError, CodeLoadError, RuntimeError};
use crate::instance::{unix_ms, Instance, LOAD_LIMIT};
use crate::process::ExitInfo;
use crate::run::{Pipes, MAX_RESULT_BYTES};
use crate::standby::{Proc, Standby, StandbyRuntime};
use hearth_core::invocation::ErrorInfo;
use hearth_core::protocol::InvokeSpec;
use serde::Deserialize;

#[derive(Deserialize)]
struct InitError {
    init_error: ErrorInfo,
}

/// Starts a node standby (`bootstrap.js [--stem] CODE_DIR`); with `stem`, it reads the
/// function's environment after booting (see [`prestart`]).
fn spawn_node(inst: &mut Instance, stem: bool) -> Result<Proc, AgentError> {
    let mut args = vec![inst
        .layout
        .runtime
        .join("nodejs/bootstrap.js")
        .to_string_lossy()
        .into_owned()];
    if stem {
        args.push("--stem".to_string());
    }
    args.push(inst.layout.code.to_string_lossy().into_owned());

    let (interpreter, env) = (inst.interpreter.clone(), inst.env.clone());
    let limits = [inst.output_limit, MAX_RESULT_BYTES];
    // Node's own start (~25 ms of CPU) runs outside the function's quota, unless
    // NODE_OPTIONS could make it load the function's code (`--require`) first.
    let outside_quota = !env.iter().any(|(key, _)| key == "NODE_OPTIONS");
    Proc::spawn_booting(inst, &interpreter, &args, &env, limits, outside_quota)
        .map(Proc::ends_with_its_result)
}

/// A stem's standby: node starting with no code and the environment of no function.
#[derive(Debug)]
pub struct PrestartedNode {
    proc: Proc,
    env: Vec<(String, String)>,
}

/// Whether `key` changes how node starts (options, module paths, TLS, locale), so that
/// a standby started without it is not the one the function would get.
fn shapes_startup(key: &str) -> bool {
    ["NODE_", "UV_", "OPENSSL_", "SSL_", "LC_"]
        .iter()
        .any(|prefix| key.starts_with(prefix))
        || key == "LANG"
}

/// Starts a stem's standby and waits until node has booted and the standby is in the
/// function's CPU group (the stem says ready only then: a cold start that takes it
/// neither waits for node's start nor pays the cgroup move); it then waits for
/// [`specialize`].
pub fn prestart(inst: &mut Instance) -> Result<PrestartedNode, AgentError> {
    let mut proc = spawn_node(inst, true)?;
    if let Err(e) = proc.await_booted(inst, LOAD_LIMIT, &NodeJs) {
        proc.kill(inst);
        return Err(e);
    }
    Ok(PrestartedNode {
        proc,
        env: inst.env.clone(),
    })
}

/// Gives the stem's standby the function's environment (`inst.env`) and has it load the
/// code now in place; a standby whose start that environment would have changed, or
/// that cannot take it, is replaced by a fresh one.
pub fn specialize(prestarted: PrestartedNode, inst: &mut Instance) -> Result<Node, AgentError> {
    let PrestartedNode { mut proc, env } = prestarted;
    let startup = |env: &[(String, String)]| -> Vec<(String, String)> {
        env.iter()
            .filter(|(key, _)| shapes_startup(key))
            .cloned()
            .collect()
    };
    let map: serde_json::Map<String, serde_json::Value> = inst
        .env
        .iter()
        .map(|(key, value)| (key.clone(), value.clone().into()))
        .collect();
    let json = serde_json::Value::Object(map).to_string();
    let mut message = format!("{:08}", json.len()).into_bytes();
    message.extend_from_slice(json.as_bytes());
    if startup(&env) != startup(&inst.env) || !proc.feed(&message) {
        proc.kill(inst);
        return Standby::start(inst, NodeJs);
    }
    Standby::adopt(inst, NodeJs, proc)
}

/// The Node.js runtime: at most one standby, replaced after every invocation.
pub type Node = Standby<NodeJs>;

/// How a Node.js standby starts, takes its event and fails to load.
#[derive(Debug)]
pub struct NodeJs;

impl StandbyRuntime for NodeJs {
    const NAME: &'static str = "node standby";
    const UNAVAILABLE: &'static str = "no node.js process could load the code";
    const TOO_SLOW: &'static str = "loading index.js took longer than";

    fn spawn(&self, inst: &mut Instance) -> Result<Proc, AgentError> {
        spawn_node(inst, false)
    }

    fn died(&self, pipes: &Pipes, exit: ExitInfo) -> AgentError {
        let reported = pipes.result.data();
        let reported = reported.strip_prefix(b"B").unwrap_or(reported);
        if let Ok(e) = serde_json::from_slice::<InitError>(reported) {
            return CodeLoadError::Reported(e.init_error).into();
        }
        let stderr = String::from_utf8_lossy(pipes.stderr.data());
        let stderr = stderr.trim_end().to_string();
        RuntimeError::Died {
            runtime: "node",
            exit,
            stderr,
        }
        .into()
    }

    /// A JSON header line (request id, deadline, attempt, output dir), then the event.
    fn frame(
        &self,
        inst: &Instance,
        spec: &InvokeSpec,
        event: &[u8],
    ) -> Result<Vec<u8>, AgentError> {
        let mut header = serde_json::json!({
            "request_id": spec.request_id,
            "deadline_ms": unix_ms().saturating_add(spec.timeout_ms),
            "attempt": spec.attempt,
        });
        if let Some(dir) = inst.output_dir() {
            header["output_dir"] = dir.into();
        }
        let mut input = serde_json::to_vec(&header).map_err(|source| RuntimeError::Encode {
            what: "the invocation header",
            source,
        })?;
        input.push(b'\n');
        input.extend_from_slice(event);
        Ok(input)
    }

    /// The bootstrap writes the result JSON itself.
    fn result(&self, reported: Vec<u8>) -> Vec<u8> {
        reported
    }
}
