use super::*;

const MB: u64 = 1 << 20;

fn sample(peak_mb: u64) -> Sample {
    Sample {
        status: InvocationStatus::Success,
        peak_bytes: peak_mb * MB,
        cpu_ms: 5.0,
        handler_ms: 10.0,
        duration_ms: 12.0,
        io_bytes: 0,
        cpus: None,
    }
}

fn advise_on(current: u64, samples: &[Sample]) -> Advice {
    advise(&TuningInput {
        current_memory_mb: current,
        cpus: 1.0,
        samples,
        failed_mb: None,
    })
}

#[test]
fn percentiles_are_nearest_rank() {
    let values: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&values, 50), 50);
    assert_eq!(percentile(&values, 99), 99);
    assert_eq!(percentile(&[7u64], 99), 7);
    assert_eq!(percentile::<u64>(&[], 50), 0);
}

#[test]
fn sizes_round_up_to_steps_within_limits() {
    assert_eq!(round_up_mb(35.6), MEMORY_MB.min.max(FLOOR_MB));
    assert_eq!(round_up_mb(70.0), 80);
    assert_eq!(round_up_mb(300.0), 320);
    assert_eq!(round_up_mb(2100.0), 2304);
    assert_eq!(round_up_mb(1e9), MEMORY_MB.max);
    assert_eq!(round_up_mb(f64::NAN), MEMORY_MB.min.max(FLOOR_MB));
}

#[test]
fn few_calls_are_insufficient_data_without_a_recommendation() {
    let samples = vec![sample(20); MIN_INVOCATIONS - 1];
    let advice = advise_on(512, &samples);
    assert_eq!(advice.confidence, Confidence::InsufficientData);
    assert_eq!(advice.recommended_memory_mb, None);
    assert_eq!(advice.saving_gb_s_per_1000, None);
    assert!(advice.reason.contains("19 call"), "{}", advice.reason);
}

#[test]
fn an_oversized_function_shrinks_to_p99_plus_margin() {
    let mut samples = vec![sample(20); 24];
    samples.push(sample(30));
    let advice = advise_on(512, &samples);
    assert_eq!(advice.confidence, Confidence::Low);
    assert_eq!(advice.stats.peak_mb.p99, 30);
    assert_eq!(advice.stats.peak_mb.max, 30);
    let recommended = advice.recommended_memory_mb.unwrap();
    assert!(
        recommended as f64 >= 30.0 * (1.0 + MARGIN) && recommended <= 128,
        "{recommended}"
    );
    assert!(advice.saving_gb_s_per_1000.unwrap() > 0.0);
    assert!(
        advice.reason.contains("p99 peak 30 MB"),
        "{}",
        advice.reason
    );
    let many = vec![sample(20); HIGH_CONFIDENCE_INVOCATIONS];
    assert_eq!(advise_on(512, &many).confidence, Confidence::High);
}

#[test]
fn a_size_nearly_right_is_kept_so_advice_does_not_flap() {
    // Target 112 MB is over 75% of 128 MB: keep 128.
    let samples = vec![sample(95); 30];
    let advice = advise_on(128, &samples);
    assert_eq!(advice.recommended_memory_mb, Some(128));
    assert_eq!(advice.saving_gb_s_per_1000, Some(0.0));
}

#[test]
fn a_peak_near_the_limit_grows() {
    let samples = vec![sample(120); 30];
    let advice = advise_on(128, &samples);
    assert!(advice.recommended_memory_mb.unwrap() >= 138);
    assert!(advice.saving_gb_s_per_1000.unwrap() < 0.0, "growing costs");
}

#[test]
fn any_oom_kill_grows_even_with_few_calls_and_never_shrinks() {
    let mut samples = vec![sample(20); 3];
    samples.push(Sample {
        status: InvocationStatus::Oom,
        ..sample(64)
    });
    let advice = advise_on(64, &samples);
    assert_eq!(advice.stats.oom_kills, 1);
    assert_eq!(advice.confidence, Confidence::Low);
    let recommended = advice.recommended_memory_mb.unwrap();
    assert!(recommended >= 164, "at least +100 MB: {recommended}");
    // At a large size the factor wins over the fixed step.
    let mut samples = vec![sample(10); 50];
    samples.push(Sample {
        status: InvocationStatus::Oom,
        ..sample(1024)
    });
    assert!(advise_on(1024, &samples).recommended_memory_mb.unwrap() as f64 >= 1024.0 * 1.2);
}

#[test]
fn a_reverted_size_is_not_recommended_again() {
    let samples = vec![sample(20); 30];
    let advice = advise(&TuningInput {
        current_memory_mb: 512,
        cpus: 1.0,
        samples: &samples,
        failed_mb: Some(64),
    });
    assert!(advice.recommended_memory_mb.unwrap() > 64);
    assert!(advice.reason.contains("reverted"), "{}", advice.reason);
}

#[test]
fn classes_come_from_cpu_share_duration_and_io() {
    let busy = Sample {
        cpu_ms: 150.0,
        handler_ms: 600.0,
        duration_ms: 610.0,
        ..sample(20)
    };
    // 150 ms of CPU in 600 ms is all of a quarter CPU.
    let stats = statistics(std::slice::from_ref(&busy), 0.25);
    assert_eq!(classify(&stats, 600.0).0, Class::CpuBound);
    let sleeper = Sample {
        cpu_ms: 3.0,
        handler_ms: 600.0,
        duration_ms: 610.0,
        ..sample(20)
    };
    let stats = statistics(&[sleeper], 0.25);
    assert_eq!(classify(&stats, 600.0).0, Class::Waiting);
    let writer = Sample {
        io_bytes: 50 * MB,
        ..busy
    };
    let stats = statistics(&[writer], 0.25);
    assert_eq!(classify(&stats, 600.0).0, Class::IoBound);
    let quick = sample(20);
    let stats = statistics(&[quick], 1.0);
    assert_eq!(classify(&stats, 10.0).0, Class::Balanced);
    // The agent's own CPU around a short handler never reads as over 100%.
    let short = Sample {
        cpu_ms: 9.0,
        handler_ms: 2.0,
        duration_ms: 6.0,
        ..sample(20)
    };
    assert_eq!(statistics(&[short], 1.0).cpu_ratio_p50, 1.0);
}

#[test]
fn one_invocation_gets_advice_only_when_its_figures_warrant_it() {
    let json = serde_json::json!({
        "id": "x", "function": "f", "version": 1, "status": "success", "result": null,
        "error": null, "exit_code": 0, "stdout": "", "stderr": "", "truncated": false,
        "cold_start": false, "worker": "w", "started_at": "t", "duration_ms": 1.0,
        "handler_duration_ms": 1.0,
        "memory": {"limit_mb": 128, "peak_bytes": 20 * MB, "max_rss_bytes": 0},
        "cpu": {"user_ms": 0.0, "system_ms": 0.0}, "io": {"read_bytes": 0, "write_bytes": 0},
        "outputs": [], "advice": null
    });
    let mut invocation: Invocation = serde_json::from_value(json).unwrap();
    assert_eq!(invocation_advice(&invocation), None);
    invocation.memory.peak_bytes = 120 * MB;
    let advice = invocation_advice(&invocation).unwrap();
    assert!(advice["recommended_memory_mb"].as_u64().unwrap() > 128);
    invocation.status = InvocationStatus::Oom;
    let advice = invocation_advice(&invocation).unwrap();
    assert_eq!(advice["recommended_memory_mb"], 240);
    assert!(advice["reason"].as_str().unwrap().contains("OOM"));
}

fn row(memory_mb: u64, p50: f64, status: RowStatus) -> ExploreRow {
    ExploreRow {
        memory_mb,
        cpus: 1.0,
        runs: 5,
        outliers: 0,
        status,
        p50_duration_ms: p50,
        peak_mb: 20,
        gb_s_per_call: memory_mb as f64 / 1024.0 * p50 / 1000.0,
    }
}

#[test]
fn strategies_pick_cheapest_fastest_or_between() {
    // CPU-bound: 128 and 256 share the CPU floor, then each doubling halves the time.
    let rows = vec![
        row(128, 400.0, RowStatus::Ok),
        row(256, 400.0, RowStatus::Ok),
        row(512, 200.0, RowStatus::Ok),
        row(1024, 100.0, RowStatus::Ok),
    ];
    assert_eq!(pick(&rows, Strategy::Cost), Some(128));
    assert_eq!(pick(&rows, Strategy::Speed), Some(1024));
    // 1024 costs twice the cheapest but is four times as fast.
    assert_eq!(pick(&rows, Strategy::Balanced), Some(1024));
    // Waiting: the same time at every size, so the smallest wins everywhere.
    let flat: Vec<ExploreRow> = [128, 256, 512]
        .iter()
        .map(|m| row(*m, 600.0, RowStatus::Ok))
        .collect();
    for strategy in [Strategy::Cost, Strategy::Speed, Strategy::Balanced] {
        assert_eq!(pick(&flat, strategy), Some(128), "{strategy:?}");
    }
    // Failed sizes are rows but never picks.
    let failing = vec![row(64, 1.0, RowStatus::Oom), row(128, 50.0, RowStatus::Ok)];
    assert_eq!(pick(&failing, Strategy::Cost), Some(128));
    assert_eq!(
        pick(&[row(64, 1.0, RowStatus::Timeout)], Strategy::Speed),
        None
    );
}

#[test]
fn outliers_are_dropped_before_the_median() {
    assert_eq!(outliers(&[10.0, 11.0, 10.5, 9.8, 250.0]), vec![4]);
    assert!(
        outliers(&[10.0, 500.0, 11.0]).is_empty(),
        "too few to judge"
    );
    let mut samples: Vec<Sample> = (0..9).map(|_| sample(20)).collect();
    samples.push(Sample {
        duration_ms: 5000.0,
        ..sample(40)
    });
    let summary = summarize_runs(256, 0.25, &samples);
    assert_eq!(summary.outliers, 1);
    assert_eq!(summary.p50_duration_ms, 12.0);
    assert_eq!(summary.peak_mb, 40);
    assert_eq!(summary.status, RowStatus::Ok);
    let oom = [Sample {
        status: InvocationStatus::Oom,
        ..sample(64)
    }];
    assert_eq!(summarize_runs(64, 0.25, &oom).status, RowStatus::Oom);
    assert_eq!(summarize_runs(64, 0.25, &[]).status, RowStatus::Error);
}

#[test]
fn strategies_parse() {
    assert_eq!("cost".parse::<Strategy>(), Ok(Strategy::Cost));
    assert!("cheap"
        .parse::<Strategy>()
        .unwrap_err()
        .to_string()
        .contains("cost, speed"));
}
