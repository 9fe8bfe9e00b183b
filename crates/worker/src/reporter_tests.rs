//! The reporter against real stores: an in-memory object store and SQLite for the
//! plain path, and moto's S3 (`scripts/services.sh`) behind a gate that can hang, to
//! show that a store which stops answering never stalls the reporter and that its own
//! retries deliver everything once the store answers again, without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use super::*;
use crate::spool::{Job, OutputEntry};
use hearth_core::invocation::{Invocation, InvocationStatus};
use hearth_sandbox::InvocationSink;
use hearth_store::SqliteMetadataStore;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Deadline for what must become true; polled, never a measured duration.
const WITHIN: Duration = Duration::from_secs(60);

fn invocation(id: &str) -> Invocation {
    Invocation {
        id: id.into(),
        function: "reported".into(),
        version: 1,
        status: InvocationStatus::Success,
        result: Some(serde_json::json!({"ok": true})),
        error: None,
        exit_code: Some(0),
        output: hearth_core::CapturedOutput {
            stdout: "hello\n".into(),
            stderr: String::new(),
            truncated: false,
        },
        cold_start: false,
        worker: "w-test".into(),
        started_at: "2026-01-01T00:00:00Z".into(),
        duration_ms: 1.0,
        handler_duration_ms: 0.5,
        memory: Default::default(),
        cpu: Default::default(),
        io: Default::default(),
        outputs: vec![],
        skipped_outputs: vec![],
        advice: None,
        attempt: 1,
    }
}

/// Spools one finished invocation `id` with a stdout log and one output file, as the
/// worker does; returns the output's content.
async fn spool_job(spool: &Spool, id: &str) -> Vec<u8> {
    let content = format!("output of {id}").into_bytes();
    let mut writer = spool.begin(id, hearth_core::logs::DEFAULT_LOG_LIMIT_BYTES);
    writer
        .log(LogStream::Stdout, format!("log of {id}\n").as_bytes())
        .await
        .unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "result.txt", content.as_slice())
        .unwrap();
    writer.output(&tar.into_inner().unwrap()).await.unwrap();
    let scan = writer.close_and_scan().await.unwrap();
    assert_eq!(scan.files.len(), 1, "{scan:?}");
    let outputs: Vec<OutputEntry> = scan.files.clone();
    writer
        .commit(&Job {
            invocation: invocation(id),
            outputs,
        })
        .await
        .unwrap();
    content
}

/// Polls `cond` every 20 ms until it holds, failing after [`WITHIN`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not true within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn object(store: &dyn ObjectStore, key: &str) -> Option<Vec<u8>> {
    let location = ObjectPath::parse(key).unwrap();
    match store.get(&location).await {
        Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("reading {key}: {e}"),
    }
}

#[tokio::test]
async fn a_job_is_uploaded_recorded_and_removed_from_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let content = spool_job(&spool, "01JOB").await;
    let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let metadata = Arc::new(SqliteMetadataStore::open_in_memory().unwrap());
    let reporter = Reporter::start(spool.clone(), objects.clone(), metadata.clone());
    eventually("the job is reported", || reporter.pending() == 0).await;
    assert_eq!(
        object(objects.as_ref(), &log_key("01JOB", LogStream::Stdout)).await,
        Some(b"log of 01JOB\n".to_vec())
    );
    assert_eq!(
        object(objects.as_ref(), &output_key("01JOB", "result.txt")).await,
        Some(content)
    );
    let recorded = metadata.get_invocation("01JOB").await.unwrap().unwrap();
    assert_eq!(recorded, invocation("01JOB"));
    assert!(
        spool.ready_jobs().unwrap().is_empty(),
        "the job left the spool"
    );
}

/// Whether history holds invocation `id`.
async fn in_history(metadata: &SqliteMetadataStore, id: &str) -> bool {
    metadata.get_invocation(id).await.unwrap().is_some()
}

#[tokio::test]
async fn quiet_rows_are_written_in_batches_and_spilled_at_shutdown_when_history_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let db = dir.path().join("history.db");
    let metadata = Arc::new(SqliteMetadataStore::open(&db).unwrap());
    let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let reporter = Reporter::start(spool.clone(), objects.clone(), metadata.clone());

    // More rows than one batch holds, queued at once.
    let ids: Vec<String> = (0..HISTORY_BATCH + 88)
        .map(|i| format!("01QUIET{i:05}"))
        .collect();
    for id in &ids {
        assert!(reporter.record(invocation(id)).is_none());
    }
    assert!(reporter.pending() > 0);
    eventually("every queued row is written", || reporter.pending() == 0).await;
    for id in &ids {
        assert!(in_history(&metadata, id).await, "{id} is in history");
    }
    assert!(
        spool.ready_jobs().unwrap().is_empty(),
        "queued rows never touch the spool while history answers"
    );

    // Another process holds the database's write lock: rows cannot be written, and a
    // shutdown spills them to the spool instead of losing them.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert!(reporter.record(invocation("01LOCKED1")).is_none());
    assert!(reporter.record(invocation("01LOCKED2")).is_none());
    // The queue is bounded: past its limit a row comes back (the worker spools it).
    for i in 2..QUEUED_ROWS_LIMIT {
        let queued = reporter.record(invocation(&format!("01FILL{i:05}")));
        assert!(queued.is_none(), "row {i} fits the queue");
    }
    let refused = reporter.record(invocation("01OVER")).unwrap();
    assert_eq!(refused.id, "01OVER");
    reporter.lock_records().truncate(2);
    let spilled = reporter.close(Duration::from_millis(200)).await;
    assert_eq!(spilled, 2);
    assert_eq!(reporter.lock_records().len(), 0);
    let owed: Vec<String> = spool
        .ready_jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(owed, ["01LOCKED1", "01LOCKED2"]);
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    // The next start reports what was spilled.
    let reopened = Spool::open(&dir.path().join("spool")).unwrap();
    assert_eq!(reopened.pending(), 2);
    let next = Reporter::start(reopened.clone(), objects, metadata.clone());
    eventually("the spilled rows are written after a restart", || {
        next.pending() == 0
    })
    .await;
    assert!(in_history(&metadata, "01LOCKED1").await);
    assert_eq!(
        metadata.get_invocation("01LOCKED2").await.unwrap().unwrap(),
        invocation("01LOCKED2")
    );
}

/// A TCP front for an S3 endpoint that either forwards (open) or accepts connections
/// and never answers them (hanging), counting what it accepted.
struct Gate {
    address: String,
    open: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    held: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Gate {
    fn start(upstream: String) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (open_, accepted_, held_) = (open.clone(), accepted.clone(), held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                accepted_.fetch_add(1, Ordering::SeqCst);
                if open_.load(Ordering::SeqCst) {
                    let upstream = TcpStream::connect(&upstream).unwrap();
                    pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    pipe(upstream, client);
                } else {
                    // Hanging: keep the connection open, read nothing, answer nothing.
                    held_.lock().unwrap().push(client);
                }
            }
        });
        Gate {
            address,
            open,
            accepted,
            held,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Forwards new connections from now on, and drops the hung ones.
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        for stream in self.held.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The shared S3 endpoint of `scripts/services.sh`, as host:port.
fn s3_endpoint() -> String {
    let url = std::env::var("HEARTH_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "HEARTH_TEST_S3_ENDPOINT is not set: run `eval \"$(scripts/services.sh --env)\"` \
             (scripts/test.sh does) so this test has moto's S3 to talk to"
        )
    });
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Creates a bucket of this test's own on moto (which does not check signatures).
fn create_bucket(endpoint: &str, bucket: &str) {
    let mut stream = TcpStream::connect(endpoint)
        .unwrap_or_else(|e| panic!("moto's S3 at {endpoint} is not answering: {e}"));
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "creating {bucket}: {answer}"
    );
}

fn s3(endpoint_url: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint_url)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_virtual_hosted_style_request(false)
        // No retries inside the client: recovery must come from the reporter's own.
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        // The client's own timeout is far beyond the reporter's call timeout, so it
        // is the reporter that gives up on a hung call.
        .with_client_options(
            object_store::ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(600)),
        )
        .build()
        .unwrap();
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_s3_endpoint_never_stalls_the_reporter_which_recovers_by_itself() {
    let endpoint = s3_endpoint();
    let bucket = format!("reporter-{}", ulid::Ulid::new().to_string().to_lowercase());
    create_bucket(&endpoint, &bucket);
    let gate = Gate::start(endpoint.clone());

    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let first = spool_job(&spool, "01HUNG").await;
    let metadata = Arc::new(SqliteMetadataStore::open_in_memory().unwrap());
    let timing = ReporterTiming {
        call_timeout: Duration::from_secs(1),
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    let reporter = Reporter::start_with(
        spool.clone(),
        s3(&gate.address, &bucket),
        metadata.clone(),
        timing,
    );

    // The store hangs: the reporter's call is stuck on a connection that never
    // answers, then given up and retried on a new one (it is not stalled for good).
    eventually("the reporter calls the hanging store", || {
        gate.accepted() >= 1
    })
    .await;
    eventually("the reporter gives up on the hung call and retries", || {
        gate.accepted() >= 3
    })
    .await;
    // New jobs keep being spooled meanwhile (the invocation path never waits on the
    // store), and nothing is lost or half-reported.
    let second = spool_job(&spool, "01LATER").await;
    assert_eq!(reporter.pending(), 2);
    assert_eq!(metadata.get_invocation("01HUNG").await.unwrap(), None);

    // The store answers again: the running reporter's own retries deliver both.
    gate.open();
    reporter.wake();
    eventually("both jobs are reported after the store recovers", || {
        reporter.pending() == 0
    })
    .await;
    let direct = s3(&format!("http://{endpoint}"), &bucket);
    for (id, content) in [("01HUNG", first), ("01LATER", second)] {
        assert_eq!(
            object(direct.as_ref(), &output_key(id, "result.txt")).await,
            Some(content),
            "{id}'s output"
        );
        assert_eq!(
            object(direct.as_ref(), &log_key(id, LogStream::Stdout)).await,
            Some(format!("log of {id}\n").into_bytes()),
            "{id}'s log"
        );
        let recorded = metadata.get_invocation(id).await.unwrap();
        assert_eq!(recorded, Some(invocation(id)), "{id} in history");
    }
}
