//! The AutoTuner's routes: its advice (`GET …/tuning`), applying it (`POST
//! …/tuning/apply`, answered with the new function object) and exploration (`POST
//! …/tuning/explore`). The figures are [`hearth_core::tuning`]'s.

use crate::functions::FunctionObject;
use hearth_core::tuning::{Advice, ExploreRow, Strategy};
use serde::{Deserialize, Serialize};

/// `GET /v1/functions/{name}/tuning`: the advice for the newest version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdviceBody {
    /// Function name.
    pub function: String,
    /// The version advised on.
    pub version: u64,
    /// The advice and the figures behind it.
    #[serde(flatten)]
    pub advice: Advice,
    /// CPUs each instance gets.
    pub cpus: f64,
    /// When the tuner took an applied size back: what and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Reverted>,
}

/// An applied size the tuner took back because the calls after it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reverted {
    /// The version the apply made.
    pub from_version: u64,
    /// Its size, MB.
    pub failed_memory_mb: u64,
    /// The version the revert made.
    pub to_version: u64,
    /// The size restored, MB.
    pub memory_mb: u64,
    /// What the watched calls showed.
    pub reason: String,
}

/// `POST /v1/functions/{name}/tuning/apply`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"memory_mb": 512})))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningApply {
    /// The size the caller saw (a guard against applying stale advice).
    #[cfg_attr(feature = "openapi", schema(minimum = 64, maximum = 10240))]
    pub memory_mb: u64,
    /// A size to apply instead of the recommendation (an exploration's pick).
    #[cfg_attr(feature = "openapi", schema(minimum = 64, maximum = 10240))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_memory_mb: Option<u64>,
}

/// `POST /v1/functions/{name}/tuning/explore`: every field optional.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"event": {}, "sizes": [128, 256], "runs": 3, "strategy": "cost"})))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningExplore {
    /// The event each run gets (`{}`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
    /// Memory sizes to try, MB (1 to 10).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 10))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Vec<u64>>,
    /// Measured calls per size.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 50))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<usize>,
    /// `cost`, `speed` or `balanced` (the default).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Apply the pick.
    #[serde(default)]
    pub apply: bool,
}

/// The answer to an exploration: one row per size and the strategy's pick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExploreAnswer {
    /// Function name.
    pub function: String,
    /// The version explored.
    pub version: u64,
    /// What the pick optimises.
    pub strategy: Strategy,
    /// One per size, in the order asked.
    pub rows: Vec<ExploreRow>,
    /// The size the strategy picks, MB; null when no size succeeded.
    pub pick: Option<u64>,
    /// The version the pick made, when `apply` was asked and it changed the size.
    pub applied: Option<FunctionObject>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::{assert_round_trips, documented};
    use hearth_core::tuning::{Class, Confidence, RowStatus};

    #[test]
    fn the_documented_advice_round_trips() {
        let advice: AdviceBody = assert_round_trips(&documented("AutoTuner advice:"));
        assert_eq!(advice.advice.class, Class::Balanced);
        assert_eq!(advice.advice.confidence, Confidence::High);
        assert_eq!(advice.advice.stats.peak_mb.p99, 31);
        assert!(advice.reverted.is_none());
        let reverted = r#"{"function": "hello", "version": 5, "current_memory_mb": 512,
            "recommended_memory_mb": null, "class": "waiting", "confidence": "insufficient_data",
            "reason": "reverted v4", "stats": {"n": 0, "window_days": 14,
            "peak_mb": {"p50": 0, "p95": 0, "p99": 0, "max": 0}, "oom_kills": 0, "timeouts": 0,
            "errors": 0, "cpu_ratio_p50": 0.0, "io_bytes_p50": 0, "duration_ms_p50": 0.0},
            "saving_gb_s_per_1000": null, "cpus": 0.29,
            "reverted": {"from_version": 4, "failed_memory_mb": 48, "to_version": 5,
              "memory_mb": 512, "reason": "an OOM kill"}}"#;
        let advice: AdviceBody = assert_round_trips(reverted);
        assert_eq!(advice.reverted.unwrap().failed_memory_mb, 48);
    }

    #[test]
    fn the_documented_requests_round_trip() {
        let apply: TuningApply = assert_round_trips(r#"{"memory_mb": 512}"#);
        assert_eq!(apply.to_memory_mb, None);
        assert_round_trips::<TuningApply>(r#"{"memory_mb": 512, "to_memory_mb": 256}"#);
        let explore: TuningExplore = assert_round_trips(
            r#"{"event": {"n": 1}, "sizes": [128, 256, 512, 1024], "runs": 10, "strategy": "cost", "apply": false}"#,
        );
        assert_eq!(explore.strategy, Some(Strategy::Cost));
        assert!(serde_json::from_str::<TuningApply>(r#"{"memory_mb": 1, "x": 2}"#).is_err());
    }

    #[test]
    fn an_exploration_round_trips() {
        let answer: ExploreAnswer = assert_round_trips(
            r#"{"function": "hello", "version": 3, "strategy": "balanced",
            "rows": [{"memory_mb": 128, "cpus": 0.25, "runs": 10, "outliers": 1, "status": "ok",
              "p50_duration_ms": 12.5, "peak_mb": 31, "gb_s_per_call": 0.0015625},
              {"memory_mb": 64, "cpus": 0.25, "runs": 1, "outliers": 0, "status": "oom",
              "p50_duration_ms": 0.0, "peak_mb": 64, "gb_s_per_call": 0.0}],
            "pick": 128, "applied": null}"#,
        );
        assert_eq!(answer.rows[1].status, RowStatus::Oom);
        assert_eq!(answer.pick, Some(128));
    }
}
