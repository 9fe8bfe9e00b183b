//! Prometheus: installing the recorder (histogram buckets in base units, HELP texts)
//! and the standard `process_*` metrics, read from `/proc/self` at each scrape. The
//! hearth metrics themselves are recorded where their events happen (the worker's
//! `telemetry`).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::fmt::Write as _;

/// Bucket bounds of every `_seconds` histogram: 1 ms to 15 minutes (the longest timeout).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0,
];

const MIB: f64 = 1_048_576.0;

/// Bucket bounds of every `_bytes` histogram: 4 MB to 10 GB, doubling.
fn bytes_buckets() -> Vec<f64> {
    let mut buckets: Vec<f64> = (2..=13).map(|p| f64::from(1u32 << p) * MIB).collect();
    buckets.push(10_240.0 * MIB);
    buckets
}

/// Installs the process-wide Prometheus recorder with hearth's buckets and help texts;
/// `None` (logged) when one is installed already.
pub fn install_metrics() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &bytes_buckets()));
    let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
        Ok(handle) => handle,
        Err(error) => {
            tracing::warn!(%error, "metrics are disabled");
            return None;
        }
    };
    hearth_worker::telemetry::describe();
    metrics::describe_counter!(
        crate::auth::DENIED_TOTAL,
        "Requests refused, by reason: unauthorized, forbidden, rate_limited, quota_exceeded"
    );
    Some(handle)
}

/// The text of `/metrics`: what the recorder holds (the workers record where events
/// happen), followed by the process metrics.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    text.push_str(&process_metrics("/proc"));
    text
}

/// `process_*` metrics of this process as Prometheus text (empty where `/proc` is
/// missing). `proc_root` is a parameter so that tests can use a fixture tree.
pub(crate) fn process_metrics(proc_root: &str) -> String {
    let read = |path: &str| std::fs::read_to_string(format!("{proc_root}/{path}")).ok();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    if let Some(stat) = read("self/stat").as_deref().and_then(parse_stat) {
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (stat.utime + stat.stime) as f64 / ticks,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stat.vsize as f64,
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stat.rss_pages as f64 * page,
        );
        let boot = read("stat").as_deref().and_then(boot_time);
        if let Some(boot) = boot {
            metric(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot as f64 + stat.start_ticks as f64 / ticks,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir(format!("{proc_root}/self/fd")) {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    out
}

#[derive(Debug, PartialEq)]
struct ProcStat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Fields of `/proc/PID/stat` (proc(5)); the command name may hold spaces and
/// parentheses, so fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// `btime` of `/proc/stat`: the boot time, seconds since the epoch.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_past_the_command_name() {
        let line = "42 (hearth (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 \
                    12345 1048576 300 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                utime: 250,
                stime: 50,
                start_ticks: 12345,
                vsize: 1048576,
                rss_pages: 300
            }
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn process_metrics_come_from_a_proc_tree() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("self/fd")).unwrap();
        std::fs::write(root.path().join("self/fd/0"), "").unwrap();
        std::fs::write(
            root.path().join("self/stat"),
            "7 (h) S 1 7 7 0 -1 0 0 0 0 0 100 100 0 0 20 0 1 0 500 4096 2",
        )
        .unwrap();
        std::fs::write(root.path().join("stat"), "cpu 1 2 3\nbtime 1700000000\n").unwrap();
        let text = process_metrics(root.path().to_str().unwrap());
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(text.contains("process_virtual_memory_bytes 4096"), "{text}");
        assert!(text.contains("process_open_fds 1"), "{text}");
        assert!(text.contains("process_start_time_seconds 17"), "{text}");
        assert_eq!(process_metrics("/nonexistent"), "");
    }

    #[test]
    fn the_grafana_dashboard_graphs_only_metrics_hearth_records() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/grafana-dashboard.json"
        );
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let known: Vec<&str> = hearth_worker::telemetry::DESCRIPTIONS
            .iter()
            .map(|(name, _)| *name)
            .collect();
        let mut graphed = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if let Some(name) = word.strip_prefix("hearth_") {
                        let name = format!("hearth_{}", name.trim_end_matches("_bucket"));
                        assert!(known.contains(&name.as_str()), "{name} in {expr}");
                        graphed += 1;
                    }
                }
            }
        }
        assert!(graphed >= 10, "{graphed} hearth metrics graphed");
    }

    #[test]
    fn byte_buckets_double_up_to_ten_gigabytes() {
        let buckets = bytes_buckets();
        assert_eq!(buckets[0], 4.0 * MIB);
        assert_eq!(buckets.last().copied(), Some(10_240.0 * MIB));
        assert!(buckets.windows(2).all(|w| w[0] < w[1]));
    }
}
