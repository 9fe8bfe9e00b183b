//! Which runtime keeps an instance's next process ready: the one place that knows them
//! all. Each implements [`Runner`]; the frame loop only ever sees the trait.

use crate::binary::Binary;
use crate::build::Builder;
use crate::error::AgentError;
use crate::instance::Instance;
use crate::node::{Node, NodeJs};
use crate::python::Python;
use crate::runner::Runner;
use hearth_core::protocol::Purpose;
use hearth_core::Runtime;

/// Starts the runtime of `runtime` for `purpose` and loads the code (or, for
/// `Purpose::Build`, readies the toolchain); a load failure is [`AgentError::CodeLoad`].
pub fn start(
    runtime: Runtime,
    purpose: Purpose,
    inst: &mut Instance,
) -> Result<Box<dyn Runner>, AgentError> {
    Ok(match (runtime, purpose) {
        (_, Purpose::Build) => Box::new(Builder::start(runtime, inst)?),
        (Runtime::Python, Purpose::Serve) => Box::new(Python::start(inst)?),
        (Runtime::Nodejs, Purpose::Serve) => Box::new(Node::start(inst, NodeJs)?),
        (Runtime::Cpp | Runtime::Go, Purpose::Serve) => Box::new(Binary::start(inst)?),
    })
}
