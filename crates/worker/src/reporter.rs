//! The background reporter: uploads what the spool holds (full logs, output files)
//! and writes the invocation to history, off the invocation path.
//!
//! It works through `ready/` oldest first. A job that fails (the object store is down
//! or slow, the database is locked) stays in the spool and is retried with exponential
//! backoff, so nothing is lost, not even across a restart: the spool is on disk. Jobs
//! are idempotent (uploads overwrite, history upserts), so a retry after a partial
//! success is harmless.

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
/// Size of one part of a multipart upload (also the read buffer).
const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once: bounds the memory an upload holds.
const PARTS_IN_FLIGHT: usize = 2;
/// First delay after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

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
        let reporter = Arc::new(Reporter {
            spool,
            wake: Notify::new(),
            drained: Notify::new(),
        });
        let task = reporter.clone();
        tokio::spawn(async move { task.run(objects, metadata).await });
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

    async fn run(&self, objects: Arc<dyn ObjectStore>, metadata: Arc<dyn MetadataStore>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let failed = match self.spool.ready_jobs() {
                Ok(jobs) => {
                    let mut failed = false;
                    for job in jobs {
                        if let Err(error) = report(&job, objects.as_ref(), metadata.as_ref()).await
                        {
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
            if self.pending() == 0 {
                self.drained.notify_waiters();
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else {
                backoff = FIRST_BACKOFF;
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
) -> Result<(), String> {
    let spooled = job
        .read()
        .await
        .map_err(|e| format!("job unreadable: {e}"))?;
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let path = job.log_path(stream);
        if let Ok(meta) = tokio::fs::metadata(&path).await {
            upload_range(objects, &log_key(&job.id, stream), &path, 0, meta.len()).await?;
        }
    }
    for output in &spooled.outputs {
        let key = output_key(&job.id, &output.path);
        upload_range(
            objects,
            &key,
            &job.outputs_path(),
            output.offset,
            output.size,
        )
        .await?;
    }
    metadata
        .record_invocation(&spooled.invocation)
        .await
        .map_err(|e| format!("history: {e}"))
}

/// Uploads `len` bytes of `file` from `offset` to `key`, never holding more than a few
/// parts in memory.
async fn upload_range(
    objects: &dyn ObjectStore,
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
        objects
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(|e| fail("upload", &e))?;
        return Ok(());
    }
    let upload = objects
        .put_multipart(&location)
        .await
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
        writer
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| fail("upload", &e))?;
        writer.write(&buffer[..n]);
    }
    writer
        .finish()
        .await
        .map_err(|e| fail("finish upload", &e))?;
    Ok(())
}
