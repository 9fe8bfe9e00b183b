//! The background reporter: uploads what the spool holds (full logs, output files)
//! and writes the invocation to history, off the invocation path.
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

use crate::spool::{log_key, output_key, ReadyJob, Spool};
use hearth_core::protocol::LogStream;
use hearth_store::MetadataStore;
use object_store::{path::Path as ObjectPath, ObjectStore, PutPayload, WriteMultipart};
use std::io::SeekFrom;
use std::sync::Arc;
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

    /// Jobs not yet reported.
    pub fn pending(&self) -> usize {
        self.spool.pending()
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
            let failed = match self.spool.ready_jobs() {
                Ok(jobs) => {
                    let mut failed = false;
                    for job in jobs {
                        let reported = report(
                            &job,
                            objects.as_ref(),
                            metadata.as_ref(),
                            timing.call_timeout,
                        );
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
}

/// Uploads one job's logs and outputs, then records its invocation.
async fn report(
    job: &ReadyJob,
    objects: &dyn ObjectStore,
    metadata: &dyn MetadataStore,
    call_timeout: Duration,
) -> Result<(), String> {
    let store = Store {
        objects,
        call_timeout,
    };
    let spooled = job
        .read()
        .await
        .map_err(|e| format!("job unreadable: {e}"))?;
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
    .map_err(|e| format!("history: {e}"))
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
) -> Result<T, String> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| format!("{what}: no answer within {} ms", limit.as_millis()))
}

/// Uploads `len` bytes of `file` from `offset` to `key`, never holding more than a few
/// parts in memory.
async fn upload_range(
    store: &Store<'_>,
    key: &str,
    file: &std::path::Path,
    offset: u64,
    len: u64,
) -> Result<(), String> {
    let location = ObjectPath::parse(key).map_err(|e| format!("bad object key {key:?}: {e}"))?;
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what} {key}: {e}");
    let mut reader = tokio::fs::File::open(file)
        .await
        .map_err(|e| fail("open", &e))?;
    reader
        .seek(SeekFrom::Start(offset))
        .await
        .map_err(|e| fail("seek", &e))?;
    let mut reader = reader.take(len);
    if len <= SINGLE_PUT_LIMIT {
        let mut bytes = Vec::with_capacity(len as usize);
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| fail("read", &e))?;
        let put = store.objects.put(&location, PutPayload::from(bytes));
        within(store.call_timeout, &format!("upload {key}"), put)
            .await?
            .map_err(|e| fail("upload", &e))?;
        return Ok(());
    }
    let start = store.objects.put_multipart(&location);
    let upload = within(store.call_timeout, &format!("start upload {key}"), start)
        .await?
        .map_err(|e| fail("start upload", &e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buffer)
            .await
            .map_err(|e| fail("read", &e))?;
        if n == 0 {
            break;
        }
        let capacity = writer.wait_for_capacity(PARTS_IN_FLIGHT);
        within(store.call_timeout, &format!("upload {key}"), capacity)
            .await?
            .map_err(|e| fail("upload", &e))?;
        writer.write(&buffer[..n]);
    }
    within(
        store.call_timeout,
        &format!("finish upload {key}"),
        writer.finish(),
    )
    .await?
    .map_err(|e| fail("finish upload", &e))?;
    Ok(())
}

#[cfg(test)]
#[path = "reporter_tests.rs"]
mod tests;
