//! The cap on one invocation's full log (stdout and stderr together), and the line that
//! marks where a log was cut.
//!
//! The agent stops forwarding an invocation's output once it has sent the cap, and
//! sends [`truncation_marker`] instead; the worker's spool enforces the same cap again
//! (with room for the agent's marker), so a taken-over agent cannot fill the host's disk
//! either. Both cut at [`InvokeSpec::log_limit_bytes`](crate::protocol::InvokeSpec).

/// The cap on one invocation's full log when the worker is not told otherwise: 10 MB.
pub const DEFAULT_LOG_LIMIT_BYTES: u64 = 10 << 20;

/// Room past the cap that the worker's spool leaves for the agent's own marker.
pub const MARKER_ALLOWANCE_BYTES: u64 = 1024;

/// The text appended where a log was cut: on a line of its own, saying what happened and
/// what to do.
pub fn truncation_marker(limit_bytes: u64) -> String {
    format!(
        "\n[hearth: log truncated: this invocation wrote more than {limit_bytes} bytes to \
         stdout and stderr; the rest was dropped (raise the worker's --log-limit-mb to keep more)]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_limit_and_fits_the_allowance() {
        let marker = truncation_marker(DEFAULT_LOG_LIMIT_BYTES);
        assert!(marker.contains("10485760 bytes"), "{marker}");
        assert!((marker.len() as u64) < MARKER_ALLOWANCE_BYTES);
        assert!(marker.starts_with('\n') && marker.ends_with('\n'));
    }
}
