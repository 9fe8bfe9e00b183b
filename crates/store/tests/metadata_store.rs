//! The metadata store and the async queue, the same tests on every backend (SQLite and
//! PostgreSQL): both must answer alike, so the controller and the worker never know
//! which one they hold.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod backends;

use backends::Backend;
use chrono::{DateTime, Utc};
use hearth_core::{FunctionConfig, FunctionSpec, Invocation, InvocationStatus, Runtime};
use hearth_store::{AsyncJob, FunctionStats, HistoryScope, InvocationFilter, StoreError};
use std::sync::Arc;
use std::time::Duration;

on_both_backends!(
    versions_are_made_listed_and_deleted,
    concurrent_updates_never_share_a_version,
    two_processes_never_share_a_version,
    processes_starting_together_migrate_once,
    versions_survive_a_restart,
    a_newer_schema_is_refused,
    names_sort_by_bytes,
    invocations_are_upserted_and_read_back,
    an_ended_invocation_never_goes_back_to_running,
    a_batch_of_invocations_is_written_all_or_none,
    listings_filter_and_order_newest_first,
    stats_average_and_p95,
    prune_drops_old_invocations_only,
    deleting_a_function_drops_its_history,
    jobs_are_claimed_once_retried_later_and_completed,
    jobs_survive_reopening_and_stale_claims_are_released,
    two_dispatchers_never_claim_one_job,
    huge_values_are_refused_as_bad_input,
);

fn spec(memory_mb: u64) -> FunctionSpec {
    let config = FunctionConfig {
        runtime: Some("python".into()),
        memory_mb: Some(memory_mb),
        ..Default::default()
    };
    FunctionSpec::resolve(None, &config).unwrap()
}

fn invocation(
    id: &str,
    function: &str,
    status: InvocationStatus,
    started_at: &str,
    duration_ms: f64,
) -> Invocation {
    Invocation {
        id: id.into(),
        function: function.into(),
        version: 1,
        status,
        result: Some(serde_json::json!({"ok": true})),
        error: None,
        exit_code: Some(0),
        output: hearth_core::CapturedOutput {
            stdout: "out".into(),
            stderr: String::new(),
            truncated: false,
        },
        cold_start: false,
        worker: "w-1".into(),
        started_at: started_at.into(),
        duration_ms,
        handler_duration_ms: duration_ms / 2.0,
        memory: Default::default(),
        cpu: Default::default(),
        io: Default::default(),
        outputs: vec![],
        skipped_outputs: vec![],
        advice: None,
        attempt: 1,
    }
}

fn job(id: &str) -> AsyncJob {
    AsyncJob {
        id: id.into(),
        function: "f".into(),
        event: b"{\"n\": 1}".to_vec(),
        callback_url: Some("http://127.0.0.1:9/done".into()),
        started_at: "2026-11-28T10:00:00Z".into(),
        attempts: 0,
    }
}

async fn versions_are_made_listed_and_deleted(backend: &Backend) {
    let store = backend.open().await;
    assert_eq!(store.get_function("hello").await.unwrap(), None);

    let (v1, created) = store
        .put_version("hello", &spec(128), "aa", 10)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        (v1.name.as_str(), v1.version, v1.code_size),
        ("hello", 1, 10)
    );
    assert_eq!(v1.spec.runtime, Runtime::Python);
    assert_eq!(v1.created_at, v1.updated_at);
    assert!(v1.created_at.ends_with('Z'), "{}", v1.created_at);

    let (v2, created) = store
        .put_version("hello", &spec(256), "bb", 20)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(v2.version, 2);
    assert_eq!(v2.created_at, v1.created_at);
    assert_eq!(v2.spec.memory_mb, 256);

    assert_eq!(store.get_function("hello").await.unwrap(), Some(v2.clone()));
    assert_eq!(
        store.get_version("hello", 1).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(store.get_version("hello", 3).await.unwrap(), None);
    assert_eq!(store.get_version("hello", u64::MAX).await.unwrap(), None);

    store
        .put_version("abc", &spec(128), "aa", 10)
        .await
        .unwrap();
    let names: Vec<_> = store
        .list_functions()
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.version))
        .collect();
    assert_eq!(names, [("abc".to_string(), 1), ("hello".to_string(), 2)]);

    assert_eq!(
        store.list_versions("hello").await.unwrap(),
        [v1.clone(), v2.clone()],
        "every version, oldest first"
    );
    assert!(store.list_versions("nobody").await.unwrap().is_empty());

    assert!(store.code_in_use("aa").await.unwrap());
    assert!(store.delete_function("hello").await.unwrap());
    assert!(store.list_versions("hello").await.unwrap().is_empty());
    assert!(!store.delete_function("hello").await.unwrap());
    assert_eq!(store.get_function("hello").await.unwrap(), None);
    assert_eq!(store.get_version("hello", 1).await.unwrap(), None);
    assert!(store.code_in_use("aa").await.unwrap(), "abc still uses it");
    assert!(!store.code_in_use("bb").await.unwrap());

    let (again, created) = store
        .put_version("hello", &spec(128), "cc", 1)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(again.version, 1);
}

async fn concurrent_updates_never_share_a_version(backend: &Backend) {
    let store = backend.open().await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.put_version("f", &spec(128), "aa", 1).await })
        })
        .collect();
    let mut versions = Vec::new();
    let mut creates = 0;
    for task in tasks {
        let (record, created) = task.await.unwrap().unwrap();
        versions.push(record.version);
        creates += usize::from(created);
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).collect::<Vec<u64>>());
    assert_eq!(creates, 1);
}

async fn two_processes_never_share_a_version(backend: &Backend) {
    // Two stores on the same data stand for two processes.
    let a = backend.open().await;
    let b = backend.open().await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.put_version("f", &spec(128), "aa", 1).await
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().unwrap().0.version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=10).collect::<Vec<u64>>());
}

async fn versions_survive_a_restart(backend: &Backend) {
    let first = {
        let store = backend.open().await;
        store
            .put_version("hello", &spec(128), "aa", 10)
            .await
            .unwrap();
        let (v2, _) = store
            .put_version("hello", &spec(512), "bb", 20)
            .await
            .unwrap();
        store
            .record_invocation(&invocation(
                "01A",
                "hello",
                InvocationStatus::Success,
                "2026-01-01T00:00:00Z",
                3.0,
            ))
            .await
            .unwrap();
        v2
    };
    let store = backend.open().await;
    assert_eq!(store.get_function("hello").await.unwrap(), Some(first));
    let (v3, created) = store
        .put_version("hello", &spec(128), "cc", 30)
        .await
        .unwrap();
    assert_eq!((v3.version, created), (3, false));
    assert!(store.get_invocation("01A").await.unwrap().is_some());
}

async fn a_newer_schema_is_refused(backend: &Backend) {
    drop(backend.open().await);
    backend.set_schema_version(99).await;
    let Err(err) = backend.try_open().await else {
        panic!("a store written by a newer hearth was opened");
    };
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

async fn invocations_are_upserted_and_read_back(backend: &Backend) {
    let store = backend.open().await;
    let mut inv = invocation(
        "01A",
        "hello",
        InvocationStatus::Running,
        "2026-01-01T00:00:00Z",
        0.0,
    );
    store.record_invocation(&inv).await.unwrap();
    inv.status = InvocationStatus::Success;
    inv.duration_ms = 2.5;
    store.record_invocation(&inv).await.unwrap();
    assert_eq!(
        store.get_invocation("01A").await.unwrap(),
        Some(inv.clone())
    );
    assert_eq!(store.get_invocation("nope").await.unwrap(), None);
    let listed = store
        .list_invocations("hello", &InvocationFilter::default())
        .await
        .unwrap();
    assert_eq!(listed, vec![inv.clone()]);

    inv.started_at = "yesterday".into();
    assert!(matches!(
        store.record_invocation(&inv).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

async fn listings_filter_and_order_newest_first(backend: &Backend) {
    use InvocationStatus::*;
    let store = backend.open().await;
    let rows = [
        ("01", Success, "2026-01-01T00:00:00Z"),
        ("02", Error, "2026-01-02T00:00:00Z"),
        // Same instant in another zone: ordering is by time, not by string.
        ("03", Success, "2026-01-03T01:00:00+01:00"),
        ("04", Timeout, "2026-01-04T00:00:00Z"),
    ];
    for (id, status, at) in rows {
        store
            .record_invocation(&invocation(id, "f", status, at, 1.0))
            .await
            .unwrap();
    }
    store
        .record_invocation(&invocation(
            "99",
            "other",
            Success,
            "2026-01-05T00:00:00Z",
            1.0,
        ))
        .await
        .unwrap();
    let ids = |list: Vec<Invocation>| list.into_iter().map(|i| i.id).collect::<Vec<_>>();

    let all = store
        .list_invocations("f", &InvocationFilter::default())
        .await
        .unwrap();
    assert_eq!(ids(all), ["04", "03", "02", "01"]);

    let two = InvocationFilter {
        limit: 2,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_invocations("f", &two).await.unwrap()),
        ["04", "03"]
    );

    let ok = InvocationFilter {
        status: Some(Success),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_invocations("f", &ok).await.unwrap()),
        ["03", "01"]
    );

    let since = InvocationFilter {
        since: Some("2026-01-03T00:00:00Z".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_invocations("f", &since).await.unwrap()),
        ["04", "03"]
    );

    let bad = InvocationFilter {
        since: Some("soon".into()),
        ..Default::default()
    };
    assert!(matches!(
        store.list_invocations("f", &bad).await,
        Err(StoreError::InvalidArgument(_))
    ));

    assert_eq!(
        InvocationFilter {
            limit: 0,
            ..Default::default()
        }
        .effective_limit(),
        50
    );
    assert_eq!(
        InvocationFilter {
            limit: 5000,
            ..Default::default()
        }
        .effective_limit(),
        1000
    );
}

async fn stats_average_and_p95(backend: &Backend) {
    use InvocationStatus::*;
    let store = backend.open().await;
    assert_eq!(
        store.function_stats("f").await.unwrap(),
        FunctionStats::default()
    );
    // Durations 1..=100 ms; every 10th is an error; one still running (ignored).
    for i in 1..=100u32 {
        let status = if i % 10 == 0 { Error } else { Success };
        let id = format!("{i:03}");
        store
            .record_invocation(&invocation(
                &id,
                "f",
                status,
                "2026-01-01T00:00:00Z",
                f64::from(i),
            ))
            .await
            .unwrap();
    }
    store
        .record_invocation(&invocation(
            "run",
            "f",
            Running,
            "2026-01-01T00:00:00Z",
            0.0,
        ))
        .await
        .unwrap();
    let stats = store.function_stats("f").await.unwrap();
    assert_eq!(stats.invocations, 100);
    assert_eq!(stats.errors, 10);
    assert!((stats.avg_duration_ms - 50.5).abs() < 1e-9, "{stats:?}");
    assert_eq!(stats.p95_duration_ms, 95.0);

    // Small samples: p95 of [1, 2, 3] is the largest.
    for (i, d) in [3.0, 1.0, 2.0].into_iter().enumerate() {
        store
            .record_invocation(&invocation(
                &format!("g{i}"),
                "g",
                Success,
                "2026-01-01T00:00:00Z",
                d,
            ))
            .await
            .unwrap();
    }
    let stats = store.function_stats("g").await.unwrap();
    assert_eq!((stats.invocations, stats.errors), (3, 0));
    assert_eq!((stats.avg_duration_ms, stats.p95_duration_ms), (2.0, 3.0));
}

async fn prune_drops_old_invocations_only(backend: &Backend) {
    let store = backend.open().await;
    for (id, at) in [
        ("old1", "2026-01-01T00:00:00Z"),
        ("old2", "2026-01-02T00:00:00Z"),
        ("new", "2026-02-01T00:00:00Z"),
    ] {
        store
            .record_invocation(&invocation(id, "f", InvocationStatus::Success, at, 1.0))
            .await
            .unwrap();
    }
    let cutoff = DateTime::parse_from_rfc3339("2026-01-15T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    store
        .record_invocation(&invocation(
            "other",
            "g",
            InvocationStatus::Success,
            "2026-01-03T00:00:00Z",
            1.0,
        ))
        .await
        .unwrap();
    let before = HistoryScope::StartedBefore(cutoff);
    assert_eq!(
        store.invocation_ids(before, 2).await.unwrap(),
        ["old1", "old2"],
        "oldest first, at most the limit"
    );
    assert_eq!(
        store.invocation_ids(before, 10).await.unwrap(),
        ["old1", "old2", "other"]
    );
    assert_eq!(
        store
            .invocation_ids(HistoryScope::Function("f"), 10)
            .await
            .unwrap(),
        ["old1", "old2", "new"]
    );
    let old: Vec<String> = store.invocation_ids(before, 10).await.unwrap();
    assert_eq!(store.delete_invocations(&old).await.unwrap(), 3);
    assert_eq!(store.delete_invocations(&old).await.unwrap(), 0);
    assert!(store.invocation_ids(before, 10).await.unwrap().is_empty());
    assert!(store.get_invocation("old1").await.unwrap().is_none());
    assert!(store.get_invocation("new").await.unwrap().is_some());
}

async fn deleting_a_function_drops_its_history(backend: &Backend) {
    let store = backend.open().await;
    store.put_version("f", &spec(128), "aa", 1).await.unwrap();
    store
        .record_invocation(&invocation(
            "1",
            "f",
            InvocationStatus::Success,
            "2026-01-01T00:00:00Z",
            1.0,
        ))
        .await
        .unwrap();
    assert!(store.delete_function("f").await.unwrap());
    assert_eq!(store.get_invocation("1").await.unwrap(), None);
    assert_eq!(store.function_stats("f").await.unwrap().invocations, 0);
}

async fn processes_starting_together_migrate_once(backend: &Backend) {
    // Eight processes start at once on a fresh database: every one opens it (the
    // migrations ran once, the others found them done) and all see the same data.
    let opens: Vec<_> = (0..8)
        .map(|_| tokio::spawn(backend.target.clone().try_open()))
        .collect();
    let stores: Vec<_> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(|opened| {
            opened
                .unwrap()
                .unwrap_or_else(|e| panic!("a concurrent start failed: {e}"))
        })
        .collect();
    stores[0]
        .put_version("f", &spec(128), "aa", 1)
        .await
        .unwrap();
    for store in &stores {
        assert_eq!(store.get_function("f").await.unwrap().unwrap().version, 1);
    }
}

async fn names_sort_by_bytes(backend: &Backend) {
    // Both backends order by bytes (PostgreSQL's collation would put "b" before "C").
    let store = backend.open().await;
    for name in ["b", "C", "a-1", "a_1", "a1"] {
        store.put_version(name, &spec(128), "aa", 1).await.unwrap();
    }
    let names: Vec<_> = store
        .list_functions()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["C", "a-1", "a1", "a_1", "b"]);
}

async fn a_batch_of_invocations_is_written_all_or_none(backend: &Backend) {
    let store = backend.open().await;
    let at = "2026-01-01T00:00:00Z";
    let done = invocation("b0", "f", InvocationStatus::Success, at, 5.0);
    store.record_invocation(&done).await.unwrap();
    let batch: Vec<Invocation> = (1..=40)
        .map(|i| invocation(&format!("b{i}"), "f", InvocationStatus::Success, at, 1.0))
        .chain([invocation("b0", "f", InvocationStatus::Running, at, 0.0)])
        .collect();
    let rows: Vec<&Invocation> = batch.iter().collect();
    store.record_invocations(&rows).await.unwrap();
    for inv in &batch[..40] {
        assert_eq!(
            store.get_invocation(&inv.id).await.unwrap().as_ref(),
            Some(inv)
        );
    }
    assert_eq!(
        store.get_invocation("b0").await.unwrap(),
        Some(done),
        "the batch keeps the rule of single writes: an ended invocation stays ended"
    );
    store.record_invocations(&[]).await.unwrap();

    // One bad row fails the whole batch: none of it is written.
    let mut bad = invocation("c2", "f", InvocationStatus::Success, at, 1.0);
    bad.started_at = "yesterday".into();
    let good = invocation("c1", "f", InvocationStatus::Success, at, 1.0);
    assert!(matches!(
        store.record_invocations(&[&good, &bad]).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(store.get_invocation("c1").await.unwrap(), None);
}

async fn an_ended_invocation_never_goes_back_to_running(backend: &Backend) {
    // Two writers race (the dispatcher's "running" can land after the reporter's
    // "success"): the ended record stays.
    let store = backend.open().await;
    let at = "2026-01-01T00:00:00Z";
    let done = invocation("x", "f", InvocationStatus::Success, at, 5.0);
    store.record_invocation(&done).await.unwrap();
    store
        .record_invocation(&invocation("x", "f", InvocationStatus::Running, at, 0.0))
        .await
        .unwrap();
    assert_eq!(store.get_invocation("x").await.unwrap(), Some(done));
    // An ended one may still be corrected by another ending (a retry's outcome).
    let failed = invocation("x", "f", InvocationStatus::Failed, at, 7.0);
    store.record_invocation(&failed).await.unwrap();
    assert_eq!(store.get_invocation("x").await.unwrap(), Some(failed));
}

async fn jobs_are_claimed_once_retried_later_and_completed(backend: &Backend) {
    let store = backend.open().await;
    assert_eq!(store.pending().await.unwrap(), 0);
    store.enqueue(&job("a")).await.unwrap();
    store.enqueue(&job("b")).await.unwrap();
    let claimed = store.claim_due(10).await.unwrap();
    assert_eq!(claimed, vec![job("a"), job("b")], "oldest first, intact");
    assert!(
        store.claim_due(10).await.unwrap().is_empty(),
        "claimed jobs are not handed out twice"
    );
    store
        .retry_later("a", 1, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(
        store.claim_due(10).await.unwrap().is_empty(),
        "a retry is not due before its delay"
    );
    store.retry_later("a", 2, Duration::ZERO).await.unwrap();
    let again = store.claim_due(10).await.unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 2));
    store.complete("a").await.unwrap();
    store.complete("a").await.unwrap();
    assert_eq!(store.pending().await.unwrap(), 1);

    // The limit is honoured.
    for i in 0..5 {
        store.enqueue(&job(&format!("n{i}"))).await.unwrap();
    }
    assert_eq!(store.claim_due(3).await.unwrap().len(), 3);
    assert_eq!(store.claim_due(3).await.unwrap().len(), 2);
    // A duplicate id is refused, not silently merged.
    assert!(store.enqueue(&job("n0")).await.is_err());
}

async fn jobs_survive_reopening_and_stale_claims_are_released(backend: &Backend) {
    {
        let store = backend.open().await;
        store.enqueue(&job("a")).await.unwrap();
        assert_eq!(store.claim_due(10).await.unwrap().len(), 1);
    }
    let store = backend.open().await;
    assert!(store.claim_due(10).await.unwrap().is_empty());
    assert_eq!(store.release_claims().await.unwrap(), 1);
    assert_eq!(store.claim_due(10).await.unwrap(), vec![job("a")]);
}

async fn two_dispatchers_never_claim_one_job(backend: &Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    for i in 0..40 {
        a.enqueue(&job(&format!("j{i:02}"))).await.unwrap();
    }
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due(3).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let expected: Vec<_> = (0..40).map(|i| format!("j{i:02}")).collect();
    assert_eq!(all, expected, "each job claimed exactly once");
}

async fn huge_values_are_refused_as_bad_input(backend: &Backend) {
    let store = backend.open().await;
    let err = store
        .put_version("f", &spec(128), "aa", u64::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    assert!(!err.is_unavailable());
    assert_eq!(store.get_function("f").await.unwrap(), None);
}
