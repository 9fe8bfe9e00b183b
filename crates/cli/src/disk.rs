//! The worker's disk limits, the same flags on `hearth up` and `hearth worker`.

use clap::Args;
use hearth_worker::WorkerConfig;

/// How much of the host's disk a worker's invocations may take.
#[derive(Args, Debug, Clone)]
pub struct DiskArgs {
    /// Cap on one invocation's full log (stdout and stderr together), MB: past it the
    /// log is cut and ends with a "[hearth: log truncated …]" line.
    #[arg(long, env = "HEARTH_LOG_LIMIT_MB", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_240))]
    log_limit_mb: u64,
    /// Most logs and outputs, MB, the worker's spool may hold before they are uploaded;
    /// when full, invocations answer 503 `spool_full` until the object store catches up.
    #[arg(long, env = "HEARTH_SPOOL_QUOTA_MB", default_value_t = 20_480, value_parser = clap::value_parser!(u64).range(1..))]
    spool_quota_mb: u64,
}

impl DiskArgs {
    /// `config` with these limits.
    pub fn apply(&self, config: WorkerConfig) -> WorkerConfig {
        WorkerConfig {
            log_limit_bytes: self.log_limit_mb << 20,
            spool_quota_bytes: self.spool_quota_mb << 20,
            ..config
        }
    }
}
