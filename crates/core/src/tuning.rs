//! The AutoTuner's rules: invocation figures in, advice out. No I/O, no clock.
//!
//! Passive advice ([`advise`]) judges a distribution (the current version's recent
//! invocations), as Compute Optimizer and Kubernetes' VPA do, not one call; active
//! exploration ([`summarize_runs`], [`pick`]) judges runs at several sizes, as Lambda
//! Power Tuning does. The README's "Tuning" section states the same rules for users.

use crate::function::MEMORY_MB;
use crate::{Invocation, InvocationStatus};
use serde::{Deserialize, Serialize};

const MIB: f64 = 1_048_576.0;

/// Invocations of the current version below which there is no recommendation.
pub const MIN_INVOCATIONS: usize = 20;
/// Invocations from which the advice is `high` confidence.
pub const HIGH_CONFIDENCE_INVOCATIONS: usize = 100;
/// How far back the passive advice looks, days.
pub const WINDOW_DAYS: u64 = 14;
/// Head-room kept above the p99 peak.
pub const MARGIN: f64 = 0.15;
/// Never recommend less than this, MB (and never less than [`MEMORY_MB`]`.min`).
pub const FLOOR_MB: u64 = 32;
/// Shrink only when the target is at most this share of the current size, so that
/// advice does not flap around a size that is nearly right.
pub const SHRINK_AT_MOST: f64 = 0.75;
/// After an OOM kill, grow by at least this factor …
pub const OOM_GROWTH_FACTOR: f64 = 1.2;
/// … and at least this many MB.
pub const OOM_GROWTH_MB: u64 = 100;
/// Peak over this share of the limit: one invocation is near its ceiling.
pub const NEAR_LIMIT: f64 = 0.85;
/// CPU time over this share of the CPU the instance was given during the call: CPU-bound. The
/// reference used 0.8 of raw CPU/duration; measured against the instance's own share,
/// a function that spins the whole time reads 0.7-0.8 on a busy host (it does not
/// always get all of its quota), so the bar sits lower.
pub const CPU_BOUND_RATIO: f64 = 0.6;
/// CPU time under this share, for at least [`WAITING_MIN_MS`]: waiting.
pub const WAITING_RATIO: f64 = 0.2;
/// Shortest median handler time that counts as waiting, ms.
pub const WAITING_MIN_MS: f64 = 200.0;
/// Bytes of I/O per call (block reads and writes plus output files) that make a
/// function I/O-bound, whatever its CPU.
pub const HEAVY_IO_BYTES: u64 = 8 << 20;
/// Exploration: results within this share of the best count as equal, and the
/// smaller size wins.
pub const TIE: f64 = 0.05;

/// The figures of one finished invocation that the rules use.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// How it ended.
    pub status: InvocationStatus,
    /// Peak memory of the instance during the call, bytes.
    pub peak_bytes: u64,
    /// User plus system CPU time, ms.
    pub cpu_ms: f64,
    /// Wall time of the handler's process (the call's when unknown), ms.
    pub handler_ms: f64,
    /// Wall time from request to result, ms (what is billed).
    pub duration_ms: f64,
    /// Block bytes read and written plus bytes of output files.
    pub io_bytes: u64,
    /// CPUs the instance had, when the record says.
    pub cpus: Option<f64>,
}

impl Sample {
    /// The figures of `invocation`.
    pub fn of(invocation: &Invocation) -> Sample {
        let handler_ms = if invocation.handler_duration_ms > 0.0 {
            invocation.handler_duration_ms
        } else {
            invocation.duration_ms
        };
        let outputs: u64 = invocation.outputs.iter().map(|o| o.size).sum();
        Sample {
            status: invocation.status,
            peak_bytes: invocation.memory.peak_bytes,
            cpu_ms: invocation.cpu.user_ms + invocation.cpu.system_ms,
            handler_ms,
            duration_ms: invocation.duration_ms,
            io_bytes: invocation
                .io
                .read_bytes
                .saturating_add(invocation.io.write_bytes)
                .saturating_add(outputs),
            cpus: (invocation.cpu.cpus > 0.0).then_some(invocation.cpu.cpus),
        }
    }

    /// CPU time over the CPU the instance could have used during the call (0..=1).
    /// The cgroup's CPU covers the whole call (the agent's fork and reply too), so the
    /// call's duration is the window, not the handler's own time: on a call of a few
    /// ms that difference alone would read as over 100%.
    fn cpu_ratio(&self, cpus: f64) -> f64 {
        let window = if self.duration_ms > 0.0 {
            self.duration_ms
        } else {
            self.handler_ms
        };
        let available = window * self.cpus.unwrap_or(cpus).max(0.001);
        if available <= 0.0 {
            0.0
        } else {
            (self.cpu_ms / available).clamp(0.0, 1.0)
        }
    }
}

/// What limits a function's speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Uses nearly all the CPU it gets: more memory (hence CPU) makes it faster.
    CpuBound,
    /// Moves many bytes through files or disk.
    IoBound,
    /// Mostly waits (sleeps, network, locks): more memory buys nothing.
    Waiting,
    /// None of the above.
    Balanced,
}

impl Class {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::CpuBound => "cpu_bound",
            Class::IoBound => "io_bound",
            Class::Waiting => "waiting",
            Class::Balanced => "balanced",
        }
    }
}

/// How much the advice can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Fewer than [`MIN_INVOCATIONS`] calls of the current version (and no OOM kill).
    InsufficientData,
    /// Enough to advise, fewer than [`HIGH_CONFIDENCE_INVOCATIONS`].
    Low,
    /// At least [`HIGH_CONFIDENCE_INVOCATIONS`].
    High,
}

impl Confidence {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::InsufficientData => "insufficient_data",
            Confidence::Low => "low",
            Confidence::High => "high",
        }
    }
}

/// Percentiles of the peak memory, MB (rounded up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PeakMb {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// The statistics behind an advice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Finished invocations considered.
    pub n: usize,
    /// How far back they go, days.
    pub window_days: u64,
    /// Peak memory.
    pub peak_mb: PeakMb,
    /// Invocations the OOM killer ended.
    pub oom_kills: usize,
    /// Invocations that ran past their timeout.
    pub timeouts: usize,
    /// Invocations that did not succeed (any reason).
    pub errors: usize,
    /// Median of CPU time over the CPU the instance had during the handler.
    pub cpu_ratio_p50: f64,
    /// Median I/O bytes per call.
    pub io_bytes_p50: u64,
    /// Median billed duration, ms.
    pub duration_ms_p50: f64,
}

/// The passive advice for one function version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    /// The version's memory, MB.
    pub current_memory_mb: u64,
    /// The size to use; `None` with `insufficient_data`.
    pub recommended_memory_mb: Option<u64>,
    /// What limits the function.
    pub class: Class,
    /// How much to trust the recommendation.
    pub confidence: Confidence,
    /// One line: why.
    pub reason: String,
    /// The figures behind it.
    pub stats: Stats,
    /// GB-seconds saved per 1000 calls at the median duration (negative: the cost of
    /// growing); `None` without a recommendation.
    pub saving_gb_s_per_1000: Option<f64>,
}

/// What the passive advice is computed from.
#[derive(Debug, Clone)]
pub struct TuningInput<'a> {
    /// The version's memory, MB.
    pub current_memory_mb: u64,
    /// CPUs its instances get.
    pub cpus: f64,
    /// Its finished invocations in the window.
    pub samples: &'a [Sample],
    /// A size that was applied and then reverted (OOM kills or errors): never
    /// recommend it or less again.
    pub failed_mb: Option<u64>,
}

/// Nearest-rank percentile of sorted `values` (`q` in 0..=100).
fn percentile<T: Copy + Default>(sorted: &[T], q: usize) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (sorted.len() * q).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn sorted_f64(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    values.sort_by(f64::total_cmp);
    values
}

fn mb_up(bytes: u64) -> u64 {
    (bytes as f64 / MIB).ceil() as u64
}

/// The statistics of `samples` for instances with `cpus` (unless a sample says).
pub fn statistics(samples: &[Sample], cpus: f64) -> Stats {
    let mut peaks: Vec<u64> = samples.iter().map(|s| s.peak_bytes).collect();
    peaks.sort_unstable();
    let mut io: Vec<u64> = samples.iter().map(|s| s.io_bytes).collect();
    io.sort_unstable();
    let ratios = sorted_f64(samples.iter().map(|s| s.cpu_ratio(cpus)));
    let durations = sorted_f64(samples.iter().map(|s| s.duration_ms));
    let count = |status| samples.iter().filter(|s| s.status == status).count();
    Stats {
        n: samples.len(),
        window_days: WINDOW_DAYS,
        peak_mb: PeakMb {
            p50: mb_up(percentile(&peaks, 50)),
            p95: mb_up(percentile(&peaks, 95)),
            p99: mb_up(percentile(&peaks, 99)),
            max: mb_up(peaks.last().copied().unwrap_or(0)),
        },
        oom_kills: count(InvocationStatus::Oom),
        timeouts: count(InvocationStatus::Timeout),
        errors: samples
            .iter()
            .filter(|s| s.status != InvocationStatus::Success)
            .count(),
        cpu_ratio_p50: (percentile(&ratios, 50) * 100.0).round() / 100.0,
        io_bytes_p50: percentile(&io, 50),
        duration_ms_p50: percentile(&durations, 50),
    }
}

/// The class of a function with `stats`, and the figure that decided it.
pub fn classify(stats: &Stats, handler_ms_p50: f64) -> (Class, String) {
    if stats.io_bytes_p50 >= HEAVY_IO_BYTES {
        let mb = stats.io_bytes_p50 as f64 / MIB;
        return (Class::IoBound, format!("moves {mb:.0} MB of I/O per call"));
    }
    let ratio = stats.cpu_ratio_p50;
    if ratio >= CPU_BOUND_RATIO {
        return (
            Class::CpuBound,
            format!("uses {:.0}% of its CPU", ratio * 100.0),
        );
    }
    if ratio <= WAITING_RATIO && handler_ms_p50 >= WAITING_MIN_MS {
        return (
            Class::Waiting,
            format!(
                "uses {:.0}% of its CPU over {handler_ms_p50:.0} ms",
                ratio * 100.0
            ),
        );
    }
    (
        Class::Balanced,
        format!("uses {:.0}% of its CPU", ratio * 100.0),
    )
}

/// `mb` rounded up to a size one would choose by hand: 16 MB steps below 256 MB, 64 MB
/// steps below 2048 MB, 256 MB steps above; within hearth's limits and never under
/// [`FLOOR_MB`].
pub fn round_up_mb(mb: f64) -> u64 {
    let mb = if mb.is_finite() {
        mb.max(0.0).ceil() as u64
    } else {
        0
    };
    let step = match mb {
        0..=255 => 16,
        256..=2047 => 64,
        _ => 256,
    };
    mb.div_ceil(step)
        .saturating_mul(step)
        .clamp(FLOOR_MB.max(MEMORY_MB.min), MEMORY_MB.max)
}

/// The size an OOM kill at `current_mb` calls for.
pub fn oom_growth_mb(current_mb: u64) -> u64 {
    let grown = (current_mb as f64 * OOM_GROWTH_FACTOR).max((current_mb + OOM_GROWTH_MB) as f64);
    round_up_mb(grown)
}

/// The passive advice: see the module doc and the README for the rules.
pub fn advise(input: &TuningInput<'_>) -> Advice {
    let current = input.current_memory_mb;
    let stats = statistics(input.samples, input.cpus);
    let handler_ms = sorted_f64(input.samples.iter().map(|s| s.handler_ms));
    let (class, class_why) = classify(&stats, percentile(&handler_ms, 50));
    let mut advice = Advice {
        current_memory_mb: current,
        recommended_memory_mb: None,
        class,
        confidence: Confidence::InsufficientData,
        reason: String::new(),
        saving_gb_s_per_1000: None,
        stats,
    };
    let stats = &advice.stats;
    // An OOM kill is a fact, not a statistic: it is enough to grow on.
    if stats.n < MIN_INVOCATIONS && stats.oom_kills == 0 {
        advice.reason = format!(
            "{} call(s) of this version so far; advice needs at least {MIN_INVOCATIONS}",
            stats.n
        );
        return advice;
    }
    advice.confidence = if stats.n >= HIGH_CONFIDENCE_INVOCATIONS {
        Confidence::High
    } else {
        Confidence::Low
    };
    let target = round_up_mb(stats.peak_mb.p99 as f64 * (1.0 + MARGIN));
    let failed_floor = input.failed_mb.map(|mb| round_up_mb(mb as f64 + 1.0));
    let (mut recommended, mut reason) = if stats.oom_kills > 0 {
        let grown = oom_growth_mb(current).max(target);
        (
            grown,
            format!(
                "{} of {} calls were OOM-killed at {current} MB; grow to {grown} MB",
                stats.oom_kills, stats.n
            ),
        )
    } else if target > current {
        (
            target,
            format!(
                "p99 peak {} MB over {} calls is within {:.0}% of the {current} MB limit; grow to {target} MB",
                stats.peak_mb.p99,
                stats.n,
                MARGIN * 100.0
            ),
        )
    } else if (target as f64) <= current as f64 * SHRINK_AT_MOST
        && !(class == Class::CpuBound && stats.timeouts > 0)
    {
        (
            target,
            format!(
                "p99 peak {} MB over {} calls; {target} MB leaves at least {:.0}%",
                stats.peak_mb.p99,
                stats.n,
                MARGIN * 100.0
            ),
        )
    } else {
        (
            current,
            format!(
                "p99 peak {} MB over {} calls; {current} MB is close enough to keep",
                stats.peak_mb.p99, stats.n
            ),
        )
    };
    if let Some(floor) = failed_floor {
        if recommended < floor && recommended < current {
            recommended = current.max(floor).min(MEMORY_MB.max);
            reason = format!(
                "{reason}; but {} MB was tried and reverted, so keep {recommended} MB",
                input.failed_mb.unwrap_or_default()
            );
        }
    }
    advice.reason = format!("{reason} ({class_why})");
    let saved_gb = (current as f64 - recommended as f64) / 1024.0;
    let saving = saved_gb * stats.duration_ms_p50 / 1000.0 * 1000.0;
    advice.saving_gb_s_per_1000 = Some((saving * 100.0).round() / 100.0);
    advice.recommended_memory_mb = Some(recommended);
    advice
}

/// Advice about one invocation, from its own figures: an OOM kill, or a peak over
/// [`NEAR_LIMIT`] of the limit. `None` when neither.
pub fn invocation_advice(invocation: &Invocation) -> Option<serde_json::Value> {
    let limit = invocation.memory.limit_mb;
    if limit == 0 {
        return None;
    }
    let peak_mb = invocation.memory.peak_bytes as f64 / MIB;
    let (recommended, reason) = if invocation.status == InvocationStatus::Oom {
        let grown = oom_growth_mb(limit);
        (
            grown,
            format!("OOM-killed at {limit} MB: grow to at least {grown} MB"),
        )
    } else if peak_mb > limit as f64 * NEAR_LIMIT {
        let grown = round_up_mb(peak_mb * OOM_GROWTH_FACTOR).max(round_up_mb(limit as f64 + 1.0));
        (
            grown,
            format!(
                "peak {peak_mb:.0} MB is over {:.0}% of the {limit} MB limit: grow to {grown} MB",
                NEAR_LIMIT * 100.0
            ),
        )
    } else {
        return None;
    };
    Some(serde_json::json!({
        "recommended_memory_mb": recommended,
        "reason": reason,
    }))
}

/// What exploration optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Fewest GB-seconds per call.
    Cost,
    /// Shortest median duration.
    Speed,
    /// Smallest product of cost and duration, each relative to the best.
    #[default]
    Balanced,
}

/// A strategy name that is none of `cost`, `speed`, `balanced`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {0:?}: use cost, speed or balanced")]
pub struct UnknownStrategy(pub String);

impl std::str::FromStr for Strategy {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Strategy, UnknownStrategy> {
        match s {
            "cost" => Ok(Strategy::Cost),
            "speed" => Ok(Strategy::Speed),
            "balanced" => Ok(Strategy::Balanced),
            other => Err(UnknownStrategy(other.to_string())),
        }
    }
}

/// How the runs at one size went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    /// Every run succeeded.
    Ok,
    /// A run was OOM-killed.
    Oom,
    /// A run ran past its timeout.
    Timeout,
    /// A run failed another way.
    Error,
}

/// One size of an exploration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExploreRow {
    /// Memory, MB.
    pub memory_mb: u64,
    /// CPUs the instances had.
    pub cpus: f64,
    /// Measured runs (the cold start is not one).
    pub runs: usize,
    /// Runs dropped as outliers.
    pub outliers: usize,
    /// How the runs went; a size that fails is a row, not a crash.
    pub status: RowStatus,
    /// Median billed duration of the kept runs, ms.
    pub p50_duration_ms: f64,
    /// Largest peak memory, MB.
    pub peak_mb: u64,
    /// GB-seconds per call at the median duration.
    pub gb_s_per_call: f64,
}

/// Indexes of `values` outside Tukey's fences (1.5 inter-quartile ranges beyond the
/// quartiles). Fewer than four values have no outliers.
pub fn outliers(values: &[f64]) -> Vec<usize> {
    if values.len() < 4 {
        return Vec::new();
    }
    let sorted = sorted_f64(values.iter().copied());
    let (q1, q3) = (percentile(&sorted, 25), percentile(&sorted, 75));
    let fence = 1.5 * (q3 - q1);
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| **v < q1 - fence || **v > q3 + fence)
        .map(|(i, _)| i)
        .collect()
}

/// The row of the runs (`samples`, in order) at `memory_mb` with `cpus`.
pub fn summarize_runs(memory_mb: u64, cpus: f64, samples: &[Sample]) -> ExploreRow {
    let status = if samples.iter().any(|s| s.status == InvocationStatus::Oom) {
        RowStatus::Oom
    } else if samples
        .iter()
        .any(|s| s.status == InvocationStatus::Timeout)
    {
        RowStatus::Timeout
    } else if samples.is_empty()
        || samples
            .iter()
            .any(|s| s.status != InvocationStatus::Success)
    {
        RowStatus::Error
    } else {
        RowStatus::Ok
    };
    let durations: Vec<f64> = samples.iter().map(|s| s.duration_ms).collect();
    let dropped = outliers(&durations);
    let kept = sorted_f64(
        durations
            .iter()
            .enumerate()
            .filter(|(i, _)| !dropped.contains(i))
            .map(|(_, d)| *d),
    );
    let p50 = percentile(&kept, 50);
    let gb_s = memory_mb as f64 / 1024.0 * p50 / 1000.0;
    ExploreRow {
        memory_mb,
        cpus,
        runs: samples.len(),
        outliers: dropped.len(),
        status,
        p50_duration_ms: (p50 * 100.0).round() / 100.0,
        peak_mb: mb_up(samples.iter().map(|s| s.peak_bytes).max().unwrap_or(0)),
        gb_s_per_call: gb_s,
    }
}

/// The size `strategy` picks among the rows that succeeded: the best score, where a
/// score within [`TIE`] of the best counts as equal and the smaller size wins.
pub fn pick(rows: &[ExploreRow], strategy: Strategy) -> Option<u64> {
    let ok: Vec<&ExploreRow> = rows.iter().filter(|r| r.status == RowStatus::Ok).collect();
    let best_cost = ok.iter().map(|r| r.gb_s_per_call).fold(f64::MAX, f64::min);
    let best_speed = ok
        .iter()
        .map(|r| r.p50_duration_ms)
        .fold(f64::MAX, f64::min);
    let relative = |value: f64, best: f64| if best > 0.0 { value / best } else { 1.0 };
    let score = |r: &ExploreRow| match strategy {
        Strategy::Cost => relative(r.gb_s_per_call, best_cost),
        Strategy::Speed => relative(r.p50_duration_ms, best_speed),
        Strategy::Balanced => {
            relative(r.gb_s_per_call, best_cost) * relative(r.p50_duration_ms, best_speed)
        }
    };
    let best = ok.iter().map(|r| score(r)).fold(f64::MAX, f64::min);
    ok.iter()
        .filter(|r| score(r) <= best * (1.0 + TIE))
        .map(|r| r.memory_mb)
        .min()
}

#[cfg(test)]
mod tests;
