//! Stems: an agent made before any function needs it (`InitSpec::stem`). It builds the
//! sandbox and drops privileges as for any instance, starts what of the runtime needs no
//! code (a Python zygote with the runtime's modules imported, a Node.js standby that
//! booted node), says `Ready`, and waits.
//! `Specialize` then brings the one function it will ever serve: its name, version,
//! memory and environment, and its code (unpacked here, or already in place in a
//! container), which the waiting runtime loads.
//!
//! Nothing of a function is in a stem before `Specialize`, and nothing else comes after
//! it: the agent serves that function until it exits.

use crate::channel::Channel;
use crate::code;
use crate::error::{AgentError, ConfigError};
use crate::instance::{self, Instance};
use crate::node::{self, PrestartedNode};
use crate::python::{PrestartedZygote, Python};
use crate::runner::Runner;
use crate::runtime;
use hearth_core::protocol::{InitSpec, Purpose, ToAgent};
use hearth_core::Runtime;
use std::time::Instant;

/// What a stem started ahead of its function.
#[derive(Debug)]
pub enum Waiting {
    /// A zygote with the interpreter up and no code.
    Python(PrestartedZygote),
    /// A standby that booted node and waits for the function's environment.
    Node(PrestartedNode),
    /// Nothing runs before the code is there (compiled programs).
    Nothing,
}

/// A specialized stem: when its specialization started, and the runtime serving it.
pub type Specialized = (Instant, Box<dyn Runner>);

/// Starts what the runtime can start without code.
pub fn prestart(spec: &InitSpec, inst: &mut Instance) -> Result<Waiting, AgentError> {
    if spec.purpose != Purpose::Serve {
        return Err(ConfigError::StemBuilds.into());
    }
    Ok(match spec.runtime {
        Runtime::Python => Waiting::Python(Python::prestart(inst)?),
        Runtime::Nodejs => Waiting::Node(node::prestart(inst)?),
        Runtime::Cpp | Runtime::Go => Waiting::Nothing,
    })
}

/// Waits for `Specialize` and becomes that function's instance: returns when the
/// specialization started and the runtime serving it, or `None` when the worker shut
/// the stem down instead.
pub fn await_function(
    channel: &mut Channel,
    spec: &mut InitSpec,
    waiting: Waiting,
    inst: &mut Instance,
) -> Result<Option<Specialized>, AgentError> {
    let (function, code) = match channel.read()? {
        None | Some((ToAgent::Shutdown, _)) => return Ok(None),
        Some((ToAgent::Specialize(function), code)) => (function, code),
        Some((other, _)) => {
            return Err(AgentError::InStem(Box::new(other)));
        }
    };
    let started = Instant::now();
    spec.function_name = function.function_name;
    spec.version = function.version;
    spec.memory_limit_mb = function.memory_limit_mb;
    spec.env = function.env;
    if !code.is_empty() {
        // SAFETY: getuid cannot fail.
        let real_uid = unsafe { libc::getuid() };
        match spec.agent_id {
            // The agent left root for these ids: unpack as them, never as the function.
            Some(id) if id == real_uid && id != spec.uid => {
                code::extract_as_agent(&code, &inst.layout.code, id)?;
            }
            // An agent that runs as the function's uid (tests): as it is.
            _ => {
                code::extract(&code, &inst.layout.code)?;
            }
        }
    }
    drop(code);
    inst.env = instance::environment(spec, &inst.layout);
    let runner: Box<dyn Runner> = match waiting {
        Waiting::Python(zygote) => Box::new(Python::specialize(zygote, inst)?),
        Waiting::Node(standby) => Box::new(node::specialize(standby, inst)?),
        Waiting::Nothing => runtime::start(spec.runtime, spec.purpose, inst)?,
    };
    Ok(Some((started, runner)))
}
