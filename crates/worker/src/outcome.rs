//! Turning what a sandbox reports into the API's invocation object.

use crate::{ExecuteRequest, Target};
use hearth_core::invocation::{CpuUsage, ErrorInfo, IoUsage, MemoryUsage};
use hearth_core::protocol::OutcomeStatus;
use hearth_core::{Invocation, InvocationStatus};
use hearth_sandbox::{InstanceRun, SandboxError, Usage};

fn base(target: &Target, request: &ExecuteRequest, worker: &str, cold_start: bool) -> Invocation {
    Invocation {
        id: request.id.clone(),
        function: target.name.clone(),
        version: target.version,
        status: InvocationStatus::Running,
        result: None,
        error: None,
        exit_code: None,
        output: Default::default(),
        cold_start,
        worker: worker.to_string(),
        started_at: request.started_at.clone(),
        duration_ms: 0.0,
        handler_duration_ms: 0.0,
        memory: MemoryUsage {
            limit_mb: target.spec.memory_mb,
            ..Default::default()
        },
        cpu: CpuUsage::default(),
        io: IoUsage::default(),
        outputs: Vec::new(),
        skipped_outputs: Vec::new(),
        advice: None,
        attempt: request.attempt,
    }
}

fn elapsed_ms(request: &ExecuteRequest) -> f64 {
    request.received.elapsed().as_secs_f64() * 1e3
}

/// The record of an invocation accepted but not yet run (async).
pub fn queued(target: &Target, request: &ExecuteRequest, worker: &str) -> Invocation {
    let mut invocation = base(target, request, worker, false);
    invocation.status = InvocationStatus::Queued;
    invocation
}

/// The invocation for a run the agent reported.
pub fn from_run(
    target: &Target,
    request: &ExecuteRequest,
    worker: &str,
    cold_start: bool,
    run: InstanceRun,
) -> Invocation {
    let mut invocation = base(target, request, worker, cold_start);
    let outcome = run.outcome;
    invocation.status = match outcome.status {
        _ if run.usage.oom_killed => InvocationStatus::Oom,
        OutcomeStatus::Success => InvocationStatus::Success,
        OutcomeStatus::Error => InvocationStatus::Error,
        OutcomeStatus::Timeout => InvocationStatus::Timeout,
        OutcomeStatus::Crashed => InvocationStatus::Crashed,
    };
    if outcome.output_quota_exceeded && invocation.status == InvocationStatus::Success {
        invocation.status = InvocationStatus::Error;
    }
    invocation.error = match invocation.status {
        InvocationStatus::Error if outcome.output_quota_exceeded => Some(ErrorInfo {
            kind: "OutputQuotaExceeded".into(),
            message: format!(
                "the invocation's outputs reached the function's output quota of {} MB: write less or raise output_quota_mb (the files that fit are kept)",
                target.spec.output_quota_mb
            ),
            trace: String::new(),
        }),
        InvocationStatus::Oom => Some(ErrorInfo {
            kind: "OutOfMemory".into(),
            message: format!(
                "the invocation went past the function's memory limit of {} MB and was killed: raise memory_mb or use less memory",
                target.spec.memory_mb
            ),
            trace: String::new(),
        }),
        InvocationStatus::Timeout => Some(outcome.error.unwrap_or_else(|| ErrorInfo {
            kind: "Timeout".into(),
            message: format!(
                "the invocation ran past the function's timeout of {} ms and was killed",
                target.spec.timeout_ms
            ),
            trace: String::new(),
        })),
        _ => outcome.error,
    };
    invocation.result = if run.result.is_empty() {
        None
    } else {
        serde_json::from_slice(&run.result).ok()
    };
    invocation.exit_code = outcome.exit_code;
    invocation.output = outcome.output;
    invocation.handler_duration_ms = outcome.handler_duration_ms;
    invocation.memory.max_rss_bytes = outcome.max_rss_bytes;
    invocation.cpu.cpus = target.spec.cpus_on(crate::host_cores());
    amend_usage(&mut invocation, &run.usage);
    invocation.duration_ms = elapsed_ms(request);
    invocation
}

/// Puts what the cgroup counted for the invocation (peak, CPU, block I/O) into it: at
/// its answer, then again once it settled.
pub fn amend_usage(invocation: &mut Invocation, usage: &Usage) {
    invocation.memory.peak_bytes = usage.peak_bytes;
    invocation.cpu = CpuUsage {
        user_ms: usage.cpu_user_ns as f64 / 1e6,
        system_ms: usage.cpu_system_ns as f64 / 1e6,
        cpus: invocation.cpu.cpus,
    };
    invocation.io = IoUsage {
        read_bytes: usage.io_read_bytes,
        write_bytes: usage.io_write_bytes,
    };
}

/// The invocation when the function's code could not load (an import error): the
/// user's fault, reported like a handler error.
pub fn init_failure(
    target: &Target,
    request: &ExecuteRequest,
    worker: &str,
    message: String,
) -> Invocation {
    let mut invocation = base(target, request, worker, true);
    invocation.status = InvocationStatus::Error;
    invocation.error = Some(ErrorInfo {
        kind: "InitError".into(),
        message: format!(
            "the function's code failed to load: fix {} and deploy again",
            target.spec.runtime.entrypoint()
        ),
        trace: message,
    });
    invocation.duration_ms = elapsed_ms(request);
    invocation
}

/// The invocation when the sandbox failed under it (agent lost or unresponsive).
pub fn platform_failure(
    target: &Target,
    request: &ExecuteRequest,
    worker: &str,
    cold_start: bool,
    error: &SandboxError,
) -> Invocation {
    let mut invocation = base(target, request, worker, cold_start);
    let (status, kind) = match error {
        SandboxError::Unresponsive { .. } => (InvocationStatus::Timeout, "Timeout"),
        _ => (InvocationStatus::Crashed, "SandboxLost"),
    };
    invocation.status = status;
    invocation.error = Some(ErrorInfo {
        kind: kind.into(),
        message: error.to_string(),
        trace: String::new(),
    });
    invocation.duration_ms = elapsed_ms(request);
    invocation
}
