//! The goals of issue 18 / DESIGN.md §8, each figure beside the floor or baseline it is
//! judged against in the same run (machines differ 1.5–2× in absolute times, so every
//! goal that can be is also a ratio).

use super::{Baseline, Report};
use serde::Serialize;
use std::collections::BTreeMap;

/// One figure, its floor or baseline, and its goal.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What is measured.
    pub figure: String,
    /// The figure (ms, or invocations/s for throughput); `None` when not measured.
    pub value: Option<f64>,
    /// `ms` or `per_second`.
    pub unit: &'static str,
    /// The floor or baseline beside it, when it has one.
    pub against: Option<String>,
    /// That floor's or baseline's value, same unit.
    pub against_value: Option<f64>,
    /// `value / against_value`.
    pub ratio: Option<f64>,
    /// The goal, in words.
    pub goal: String,
    /// Whether the goal is met (`None`: a part is missing).
    pub met: Option<bool>,
}

/// The Docker backend's figures, for `docker.` in the JSON of `--sandbox docker`.
#[derive(Debug, Clone, Serialize)]
pub struct DockerFigures {
    /// Warm p50 through HTTP per runtime, ms.
    pub warm_p50_ms: BTreeMap<String, f64>,
    /// Cold start p50 through HTTP per runtime, ms.
    pub cold_start_p50_ms: BTreeMap<String, f64>,
    /// Sustained invocations per second (python).
    pub throughput_per_second: f64,
    /// Median of a bare `docker run --rm` of the same handler, ms.
    pub bare_run_ms: Option<f64>,
    /// Median of a `docker exec` into a warm container, ms.
    pub exec_ms: Option<f64>,
    /// Cold start python p50 / bare `docker run` (goal ≤ 0.2).
    pub cold_python_vs_bare_run: Option<f64>,
    /// `docker exec` / warm python p50 (how many times faster hearth is).
    pub exec_vs_warm_python: Option<f64>,
}

/// Baseline names as `hearth bench` measures them.
pub const PYTHON_C: &str = "python3 -c";
/// See [`PYTHON_C`].
pub const NODE_E: &str = "node -e";
/// See [`PYTHON_C`].
pub const DOCKER_RUN: &str = "bare docker run";
/// See [`PYTHON_C`].
pub const DOCKER_EXEC: &str = "docker exec";

/// The median of the baseline whose description starts with `name`.
pub fn baseline(baselines: &[Baseline], name: &str) -> Option<f64> {
    baselines
        .iter()
        .find(|b| b.what.starts_with(name))
        .and_then(|b| b.median_ms)
}

fn ratio(value: Option<f64>, against: Option<f64>) -> Option<f64> {
    match (value, against) {
        (Some(v), Some(a)) if a > 0.0 && v.is_finite() && a.is_finite() => Some(v / a),
        _ => None,
    }
}

/// The Docker figures of a report measured on the Docker backend.
pub fn docker_figures(report: &Report) -> DockerFigures {
    let p50s = |map: &BTreeMap<String, super::Latency>| {
        map.iter()
            .map(|(runtime, l)| (runtime.clone(), l.p50))
            .collect::<BTreeMap<_, _>>()
    };
    let bare_run_ms = baseline(&report.baselines, DOCKER_RUN);
    let exec_ms = baseline(&report.baselines, DOCKER_EXEC);
    let cold = report.cold_start.get("python").map(|l| l.p50);
    let warm = report.warm.get("python").map(|l| l.p50);
    DockerFigures {
        warm_p50_ms: p50s(&report.warm),
        cold_start_p50_ms: p50s(&report.cold_start),
        throughput_per_second: report.throughput.per_second,
        bare_run_ms,
        exec_ms,
        cold_python_vs_bare_run: ratio(cold, bare_run_ms),
        exec_vs_warm_python: ratio(exec_ms, warm),
    }
}

/// Every goal, judged on `report` (measured on the Docker backend when `docker`).
pub fn goals(report: &Report, docker: bool) -> Vec<Goal> {
    let warm = |runtime: &str| report.warm.get(runtime).map(|l| l.p50);
    let cold = |runtime: &str| report.cold_start.get(runtime).map(|l| l.p50);
    let floor = report.floor.python_call_ms();
    let python_c = baseline(&report.baselines, PYTHON_C);
    let node_e = baseline(&report.baselines, NODE_E);
    let mut goals = Vec::new();
    let mut push = |figure: &str,
                    value: Option<f64>,
                    against: Option<(&str, Option<f64>)>,
                    goal: &str,
                    met: &dyn Fn(f64, Option<f64>) -> Option<bool>| {
        let against_value = against.and_then(|(_, v)| v);
        let ratio = ratio(value, against_value);
        goals.push(Goal {
            figure: figure.into(),
            value,
            unit: "ms",
            against: against.map(|(what, _)| what.to_string()),
            against_value,
            ratio,
            goal: goal.into(),
            met: value.and_then(|v| met(v, ratio)),
        });
    };
    let floor_name = "floor: HTTP round trip + python fork";
    push(
        "warm python p50 through HTTP",
        warm("python"),
        Some((floor_name, floor)),
        "≤ 1.0 ms",
        &|v, _| Some(v <= 1.0),
    );
    push(
        "warm python overhead (p50 − floor)",
        report.overhead.python_ms,
        Some((floor_name, floor)),
        "≤ 0.3 ms",
        &|v, _| Some(v <= 0.3),
    );
    push(
        "warm nodejs p50, back to back",
        warm("nodejs"),
        Some(("node -e", node_e)),
        "≤ 10 ms and ≤ 0.1× node -e",
        &|v, r| r.map(|r| v <= 10.0 && r <= 0.1),
    );
    if docker {
        let bare_run = baseline(&report.baselines, DOCKER_RUN);
        push(
            "cold start, Docker python",
            cold("python"),
            Some(("bare docker run", bare_run)),
            "≤ 0.2× a bare docker run",
            &|_, r| r.map(|r| r <= 0.2),
        );
    } else {
        push(
            "cold start python",
            cold("python"),
            Some(("python3 -c", python_c)),
            "≤ 10 ms and ≤ 0.5× python3 -c",
            &|v, r| r.map(|r| v <= 10.0 && r <= 0.5),
        );
    }
    for (runtime, limit, against) in [
        ("nodejs", 25.0, Some(("node -e", node_e))),
        ("cpp", 8.0, None),
        ("go", 8.0, None),
    ] {
        if report.cold_start.contains_key(runtime) {
            push(
                &format!("cold start {runtime}"),
                cold(runtime),
                against,
                &format!("≤ {limit} ms"),
                &|v, _| Some(v <= limit),
            );
        }
    }
    for runtime in ["cpp", "go"] {
        if report.warm.contains_key(runtime) {
            push(
                &format!("warm {runtime} p50 through HTTP"),
                warm(runtime),
                Some(("floor: HTTP round trip", report.floor.http_rtt_ms)),
                "≤ 0.8 ms",
                &|v, _| Some(v <= 0.8),
            );
        }
    }
    let t = &report.throughput;
    goals.push(Goal {
        figure: format!("sustained python, {} clients, 0 errors", t.clients),
        value: Some(t.per_second),
        unit: "per_second",
        against: None,
        against_value: None,
        ratio: None,
        goal: "≥ 1000/s, 0 errors".into(),
        met: Some(t.per_second >= 1000.0 && t.errors == 0),
    });
    goals
}

/// The goals as a table: figure, value, what it stands beside, ratio, goal, met.
pub fn print(goals: &[Goal]) {
    println!(
        "{:<40} {:>10} {:<38} {:>8} {:<30} {:>4}",
        "goal figure", "value", "beside (floor / baseline)", "ratio", "goal", "met"
    );
    let number = |v: Option<f64>, unit: &str| match (v, unit) {
        (Some(v), "per_second") => format!("{v:.0}/s"),
        (Some(v), _) if v.abs() < 10.0 => format!("{v:.3} ms"),
        (Some(v), _) => format!("{v:.1} ms"),
        (None, _) => "n/a".into(),
    };
    for g in goals {
        let beside = match &g.against {
            Some(what) => format!("{what} {}", number(g.against_value, g.unit)),
            None => String::new(),
        };
        let ratio = g.ratio.map_or(String::new(), |r| format!("{r:.2}×"));
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "n/a",
        };
        println!(
            "{:<40} {:>10} {:<38} {:>8} {:<30} {:>4}",
            g.figure,
            number(g.value, g.unit),
            beside,
            ratio,
            g.goal,
            met
        );
    }
}
