//! The background reporter: uploads what the spool holds (full logs, output files)
//! and writes the invocation to history, off the invocation path.
//!
//! The history rows of answered calls that spooled nothing come in memory
//! ([`Reporter::record`]): the reporter writes whatever is queued as soon as it comes,
//! in one transaction per batch, and removes rows from the queue only once written. The
//! queue is bounded (a full queue sends rows to the spool as files). [`Reporter::close`]
//! spills what is left to the spool at shutdown; only a crash of the worker loses rows,
//! those of its last moments (their callers had the whole invocation in the answer).
//!
//! It works through `ready/` oldest first. A job that fails (the object store is down
//! or slow, the database is locked) stays in the spool and is retried with exponential
//! backoff, so nothing is lost, not even across a restart: the spool is on disk. Jobs
//! are idempotent (uploads overwrite, history upserts), so a retry after a partial
//! success is harmless.
//!
//! A store that hangs instead of failing (an S3 endpoint that accepts and never
//! answers) is a failure too: every call to the store or the database gets
//! [`ReporterTiming::call_timeout`], after which the job is retried like any other.

use crate::spool::{log_key, output_key, Job, ReadyJob, Spool};
use hearth_core::protocol::LogStream;
use hearth_core::Invocation;
use hearth_store::MetadataStore;
use object_store::{path::Path as ObjectPath, ObjectStore, PutPayload, WriteMultipart};
use std::collections::VecDeque;
use std::io::SeekFrom;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Notify;

/// Files up to this size are uploaded in one request; larger ones in parts.
const SINGLE_PUT_LIMIT: u64 = 8 << 20;
/// Size of one part of a multipart upload: S3's smallest, since every part in flight
/// (and the one being filled) is held in memory.
const PART_BYTES: usize = 5 << 20;
/// Parts in flight at once: bounds the memory an upload holds.
const PARTS_IN_FLIGHT: usize = 2;
/// First delay after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Most history rows queued in memory; past it, rows go to the spool as files.
pub const QUEUED_ROWS_LIMIT: usize = 4096;
/// How often [`Reporter::close`] looks whether the queued rows are written.
const CLOSE_POLL: Duration = Duration::from_millis(10);
/// Most jobs without files written to history in one transaction.
const HISTORY_BATCH: usize = 512;
/// Longest a single call to the object store or the database may take (one put, one
/// part, one history write) before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How the reporter paces its retries and how long it waits on one call.
#[derive(Debug, Clone, Copy)]
pub struct ReporterTiming {
    /// Longest wait for one store or database call.
    pub call_timeout: Duration,
    /// First delay after a failure; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
}

impl Default for ReporterTiming {
    fn default() -> Self {
        ReporterTiming {
            call_timeout: CALL_TIMEOUT,
            first_backoff: FIRST_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }
}

/// Handle to the reporter task.
pub struct Reporter {
    spool: Spool,
    /// Answered invocations that spooled nothing, oldest first, waiting for their
    /// history row. The reporter removes a batch from the front only once it is written,
    /// so what is here (including a batch being written) is exactly what is not yet in
    /// history: at shutdown it is written or spilled to the spool ([`Reporter::close`]).
    records: Mutex<VecDeque<Arc<Invocation>>>,
    /// Set by [`Reporter::close`]: the reporter starts nothing new (what is left is in
    /// the spool for the next start).
    closed: AtomicBool,
    wake: Notify,
    drained: Notify,
}

impl Reporter {
    /// Starts the reporter over `spool`.
    pub fn start(
        spool: Spool,
        objects: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
    ) -> Arc<Reporter> {
        Self::start_with(spool, objects, metadata, ReporterTiming::default())
    }

    /// [`start`](Self::start) with its own timing.
    pub fn start_with(
        spool: Spool,
        objects: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        timing: ReporterTiming,
    ) -> Arc<Reporter> {
        let reporter = Arc::new(Reporter {
            spool,
            records: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            drained: Notify::new(),
        });
        let task = reporter.clone();
        tokio::spawn(async move { task.run(objects, metadata, timing).await });
        reporter
    }

    /// A job was committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Queues the history row of an answered invocation that spooled nothing (no logs,
    /// no outputs): no file, written with others in one transaction. The queue is
    /// bounded ([`QUEUED_ROWS_LIMIT`]): when it is full (history is slow or down) the
    /// invocation comes back, for the caller to spool as a job record instead.
    #[must_use = "an invocation that comes back was not queued: spool it"]
    pub fn record(&self, invocation: Invocation) -> Option<Invocation> {
        {
            let mut records = self.lock_records();
            if records.len() >= QUEUED_ROWS_LIMIT {
                return Some(invocation);
            }
            records.push_back(Arc::new(invocation));
        }
        self.wake.notify_one();
        None
    }

    /// Jobs not yet reported (spooled, and queued in memory).
    pub fn pending(&self) -> usize {
        self.spool.pending() + self.lock_records().len()
    }

    /// At shutdown: waits (at most `limit`) for the queued history rows to be written,
    /// then spills what is left to the spool as job records, which the next start
    /// reports. Rows being written at that moment are spilled too (history upserts, so
    /// a row written twice is harmless). Returns how many rows were spilled.
    pub async fn close(&self, limit: Duration) -> usize {
        self.closed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        let deadline = tokio::time::Instant::now() + limit;
        // Polled: a shutdown is rare, and the spool's own jobs may keep the reporter busy
        // long after the queued rows are written.
        while !self.lock_records().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(CLOSE_POLL).await;
        }
        let left: Vec<Arc<Invocation>> = self.lock_records().drain(..).collect();
        let mut spilled = 0;
        for invocation in &left {
            let job = Job {
                invocation: Invocation::clone(invocation),
                outputs: Vec::new(),
            };
            match self.spool.begin(&job.invocation.id, 0).commit(&job).await {
                Ok(()) => spilled += 1,
                Err(error) => {
                    tracing::error!(id = %invocation.id, %error, "cannot spill a history row to the spool: it is lost")
                }
            }
        }
        if spilled > 0 {
            tracing::warn!(
                spilled,
                "history rows not written before shutdown were spooled; the next start writes them"
            );
        }
        spilled
    }

    fn lock_records(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Invocation>>> {
        // Plain data: a panic while holding the lock leaves it usable.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the queued rows, a batch at a time; a batch leaves the queue only once
    /// written.
    async fn record_queued(
        &self,
        metadata: &dyn MetadataStore,
        call_timeout: Duration,
    ) -> Result<(), ReportError> {
        loop {
            let batch: Vec<Arc<Invocation>> = self
                .lock_records()
                .iter()
                .take(HISTORY_BATCH)
                .cloned()
                .collect();
            if batch.is_empty() {
                return Ok(());
            }
            let rows: Vec<&Invocation> = batch.iter().map(|i| i.as_ref()).collect();
            within(call_timeout, "history", metadata.record_invocations(&rows))
                .await?
                .map_err(ReportError::History)?;
            {
                let mut records = self.lock_records();
                // `close` may have taken them meanwhile (and spilled them).
                let written = batch.len().min(records.len());
                records.drain(..written);
            }
            metrics::counter!("hearth_reports_total").increment(batch.len() as u64);
        }
    }

    /// Waits until every job is reported, or `limit` passes.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending() > 0 {
            if tokio::time::timeout_at(deadline, self.drained.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    async fn run(
        &self,
        objects: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        timing: ReporterTiming,
    ) {
        let mut backoff = timing.first_backoff;
        loop {
            let queued = self.record_queued(metadata.as_ref(), timing.call_timeout);
            let failed = match queued.await {
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "recording history failed; will retry");
                    true
                }
                Ok(()) if self.closed.load(Ordering::Relaxed) => {
                    self.drained.notify_waiters();
                    return;
                }
                Ok(()) if self.spool.pending() == 0 => false,
                Ok(()) => {
                    self.report_spooled(objects.as_ref(), metadata.as_ref(), timing, backoff)
                        .await
                }
            };
            metrics::gauge!("hearth_report_queue").set(self.pending() as f64);
            metrics::gauge!("hearth_spool_bytes").set(self.spool.used_bytes() as f64);
            if self.pending() == 0 {
                self.drained.notify_waiters();
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(timing.max_backoff);
            } else {
                backoff = timing.first_backoff;
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }

    /// One pass over the spool; whether something failed (and is to be retried).
    async fn report_spooled(
        &self,
        objects: &dyn ObjectStore,
        metadata: &dyn MetadataStore,
        timing: ReporterTiming,
        backoff: Duration,
    ) -> bool {
        match self.spool.ready_jobs_listed().await {
            Ok(jobs) => {
                let (records, jobs): (Vec<ReadyJob>, Vec<ReadyJob>) =
                    jobs.into_iter().partition(ReadyJob::is_record_only);
                let mut failed = false;
                for batch in records.chunks(HISTORY_BATCH) {
                    let recorded = self.record_batch(batch, metadata, timing.call_timeout);
                    if let Err(error) = recorded.await {
                        tracing::warn!(jobs = batch.len(), %error, retry_in_ms = backoff.as_millis() as u64, "recording history failed; will retry");
                        failed = true;
                        break;
                    }
                }
                let jobs = if failed { Vec::new() } else { jobs };
                for job in jobs {
                    let reported = report(&job, objects, metadata, timing.call_timeout);
                    if let Err(error) = reported.await {
                        tracing::warn!(id = %job.id, %error, retry_in_ms = backoff.as_millis() as u64, "reporting failed; will retry");
                        failed = true;
                        break;
                    }
                    if let Err(error) = self.spool.remove(&job).await {
                        tracing::error!(id = %job.id, %error, "cannot remove a reported job");
                    }
                    metrics::counter!("hearth_reports_total").increment(1);
                }
                failed
            }
            Err(error) => {
                tracing::error!(%error, "cannot list the spool");
                true
            }
        }
    }
}

impl Reporter {
    /// Writes the invocations of jobs without files to history in one transaction, then
    /// removes them: a handful of hand-offs for the lot instead of several per job.
    async fn record_batch(
        &self,
        batch: &[ReadyJob],
        metadata: &dyn MetadataStore,
        call_timeout: Duration,
    ) -> Result<(), ReportError> {
        let jobs = self.spool.read_all(batch).await.map_err(ReportError::Job)?;
        let invocations: Vec<&Invocation> = jobs.iter().map(|job| &job.invocation).collect();
        within(
            call_timeout,
            "history",
            metadata.record_invocations(&invocations),
        )
        .await?
        .map_err(ReportError::History)?;
        if let Err(error) = self.spool.remove_all(batch).await {
            tracing::error!(%error, "cannot remove reported jobs");
        }
        metrics::counter!("hearth_reports_total").increment(batch.len() as u64);
        Ok(())
    }
}

/// Why one job could not be reported (it stays in the spool and is retried).
#[derive(Debug, thiserror::Error)]
enum ReportError {
    /// The job's record in the spool cannot be read.
    #[error("job unreadable: {0}")]
    Job(#[source] std::io::Error),
    /// A call to a store did not answer in time.
    #[error("{what}: no answer within {} ms", waited.as_millis())]
    Timeout {
        /// The call.
        what: String,
        /// How long it was given.
        waited: Duration,
    },
    /// The object key is not valid.
    #[error("bad object key {key:?}: {source}")]
    Key {
        /// The key.
        key: String,
        /// Why.
        source: object_store::path::Error,
    },
    /// The spooled file to upload cannot be read.
    #[error("{op} {key}: {source}")]
    File {
        /// What was being done to the file.
        op: &'static str,
        /// The object key it goes to.
        key: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The object store failed an upload.
    #[error("{op} {key}: {source}")]
    Upload {
        /// The step of the upload.
        op: &'static str,
        /// The object key.
        key: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The invocation could not be written to history.
    #[error("history: {0}")]
    History(#[source] hearth_store::StoreError),
}

/// Uploads one job's logs and outputs, then records its invocation.
async fn report(
    job: &ReadyJob,
    objects: &dyn ObjectStore,
    metadata: &dyn MetadataStore,
    call_timeout: Duration,
) -> Result<(), ReportError> {
    let store = Store {
        objects,
        call_timeout,
    };
    let spooled = job.read().await.map_err(ReportError::Job)?;
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let path = job.log_path(stream);
        if let Ok(meta) = tokio::fs::metadata(&path).await {
            upload_range(&store, &log_key(&job.id, stream), &path, 0, meta.len()).await?;
        }
    }
    for output in &spooled.outputs {
        let key = output_key(&job.id, &output.path);
        upload_range(
            &store,
            &key,
            &job.outputs_path(),
            output.offset,
            output.size,
        )
        .await?;
    }
    within(
        call_timeout,
        "history",
        metadata.record_invocation(&spooled.invocation),
    )
    .await?
    .map_err(ReportError::History)
}

/// The object store, with the time one call may take.
struct Store<'a> {
    objects: &'a dyn ObjectStore,
    call_timeout: Duration,
}

/// Runs one call to a store, failing it when it takes longer than `limit` (a store
/// that hangs must not stall the reporter).
async fn within<T>(
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = T>,
) -> Result<T, ReportError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| ReportError::Timeout {
            what: what.to_string(),
            waited: limit,
        })
}

/// Uploads `len` bytes of `file` from `offset` to `key`, never holding more than a few
/// parts in memory.
async fn upload_range(
    store: &Store<'_>,
    key: &str,
    file: &std::path::Path,
    offset: u64,
    len: u64,
) -> Result<(), ReportError> {
    let location = ObjectPath::parse(key).map_err(|source| ReportError::Key {
        key: key.to_string(),
        source,
    })?;
    let file_error = |op: &'static str| {
        move |source| ReportError::File {
            op,
            key: key.to_string(),
            source,
        }
    };
    let upload_error = |op: &'static str| {
        move |source| ReportError::Upload {
            op,
            key: key.to_string(),
            source,
        }
    };
    let mut reader = tokio::fs::File::open(file)
        .await
        .map_err(file_error("open"))?;
    reader
        .seek(SeekFrom::Start(offset))
        .await
        .map_err(file_error("seek"))?;
    let mut reader = reader.take(len);
    if len <= SINGLE_PUT_LIMIT {
        let mut bytes = Vec::with_capacity(len as usize);
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(file_error("read"))?;
        let put = store.objects.put(&location, PutPayload::from(bytes));
        within(store.call_timeout, &format!("upload {key}"), put)
            .await?
            .map_err(upload_error("upload"))?;
        return Ok(());
    }
    let start = store.objects.put_multipart(&location);
    let upload = within(store.call_timeout, &format!("start upload {key}"), start)
        .await?
        .map_err(upload_error("start upload"))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer).await.map_err(file_error("read"))?;
        if n == 0 {
            break;
        }
        let capacity = writer.wait_for_capacity(PARTS_IN_FLIGHT);
        within(store.call_timeout, &format!("upload {key}"), capacity)
            .await?
            .map_err(upload_error("upload"))?;
        writer.write(&buffer[..n]);
    }
    within(
        store.call_timeout,
        &format!("finish upload {key}"),
        writer.finish(),
    )
    .await?
    .map_err(upload_error("finish upload"))?;
    Ok(())
}

#[cfg(test)]
#[path = "reporter_tests.rs"]
mod tests;
