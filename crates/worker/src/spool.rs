//! The worker's spool: where an invocation's full logs and output files land on disk,
//! chunk by chunk, before the reporter uploads them.
//!
//! Layout under the spool root: `running/<id>/` while the invocation runs (`stdout`,
//! `stderr`, `outputs.tar`), then, once its invocation record is written as `job.json`,
//! an atomic rename to `ready/<id>/`: a job is either complete or absent. An invocation
//! that wrote no logs and no outputs (most warm calls) has no directory at all: its
//! record is written as `running/<id>.json` and renamed to `ready/<id>.json`, which
//! keeps the same promise with one file instead of a directory to create, list and
//! remove (a quiet call whose caller got the answer has no record here at all: its row
//! waits in the reporter's memory queue, see [`crate::reporter`]). At startup
//! `running/` is emptied (those invocations never answered) and
//! `ready/` is what the reporter still owes.
//!
//! Two limits keep the spool from filling the host's disk. Each invocation's log (stdout
//! and stderr together) is cut at its cap plus room for the agent's marker, whatever
//! the agent sends, and marked ([`hearth_core::logs::truncation_marker`]). And the whole
//! spool (running and ready jobs) has a quota: a write that would pass it fails with
//! [`io::ErrorKind::StorageFull`] and marks its writer ([`SpoolWriter::quota_hit`]);
//! [`Spool::is_full`] tells the worker to refuse new invocations until the reporter has
//! caught up.
//!
//! The output tar comes from inside a sandbox and is hostile: it is never unpacked.
//! [`scan_outputs`] lists its regular files with their offsets (the reporter uploads
//! those byte ranges) and reports every other entry as skipped: links, devices, FIFOs,
//! absolute paths, `..`.

use async_trait::async_trait;
use hearth_core::invocation::{OutputFile, SkippedOutput};
use hearth_core::logs::{truncation_marker, MARKER_ALLOWANCE_BYTES};
use hearth_core::protocol::LogStream;
use hearth_core::Invocation;
use hearth_sandbox::InvocationSink;
pub use hearth_store::objects::{log_key, output_key};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::fs::File;
use tokio::io::AsyncWriteExt;

const STDOUT: &str = "stdout";
const STDERR: &str = "stderr";
const OUTPUTS: &str = "outputs.tar";
const JOB: &str = "job.json";
/// Suffix of a lone job record in `running/` and `ready/` (a job without files).
const RECORD_SUFFIX: &str = ".json";

/// The spool's quota when the worker is not told otherwise: 20 GB, room for two
/// invocations that each fill the largest output quota.
pub const DEFAULT_SPOOL_QUOTA_BYTES: u64 = 20 << 30;

/// One regular file inside a spooled output tar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputEntry {
    /// Path relative to the output directory (checked: no `..`, not absolute).
    pub path: String,
    /// Byte offset of the file's data in `outputs.tar`.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What the reporter must do for one invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// The invocation record to write to history.
    pub invocation: Invocation,
    /// Output files to upload from `outputs.tar`.
    pub outputs: Vec<OutputEntry>,
}

/// A job waiting in `ready/`.
#[derive(Debug, Clone)]
pub struct ReadyJob {
    /// Its directory `ready/<id>/`, which exists only when the invocation spooled logs
    /// or outputs.
    dir: PathBuf,
    /// Its record: `ready/<id>/job.json`, or `ready/<id>.json` for a job without files.
    record: PathBuf,
    /// Whether the job is a lone record (no directory).
    record_only: bool,
    /// The invocation id.
    pub id: String,
}

impl ReadyJob {
    fn in_dir(ready: &Path, id: &str) -> ReadyJob {
        let dir = ready.join(id);
        ReadyJob {
            record: dir.join(JOB),
            dir,
            record_only: false,
            id: id.to_string(),
        }
    }

    fn lone_record(ready: &Path, id: &str) -> ReadyJob {
        ReadyJob {
            dir: ready.join(id),
            record: ready.join(record_name(id)),
            record_only: true,
            id: id.to_string(),
        }
    }

    /// Whether the job is its record alone (no logs, no outputs to upload): the
    /// reporter writes such jobs to history in batches.
    pub fn is_record_only(&self) -> bool {
        self.record_only
    }

    /// Reads the job description (blocking).
    fn read_blocking(&self) -> io::Result<Job> {
        let bytes = std::fs::read(&self.record)?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// A log file of the job (absent when the invocation logged nothing on `stream`).
    pub fn log_path(&self, stream: LogStream) -> PathBuf {
        self.dir.join(log_name(stream))
    }

    /// The spooled output tar.
    pub fn outputs_path(&self) -> PathBuf {
        self.dir.join(OUTPUTS)
    }

    /// Reads the job description.
    pub async fn read(&self) -> io::Result<Job> {
        let bytes = tokio::fs::read(&self.record).await?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Bytes the job holds on disk (blocking).
    fn bytes(&self) -> u64 {
        if self.record_only {
            std::fs::metadata(&self.record).map_or(0, |m| m.len())
        } else {
            dir_bytes(&self.dir)
        }
    }

    /// Deletes the job from disk (blocking).
    fn delete(&self) -> io::Result<()> {
        if self.record_only {
            std::fs::remove_file(&self.record)
        } else {
            std::fs::remove_dir_all(&self.dir)
        }
    }
}

/// The file name of a lone job record.
fn record_name(id: &str) -> String {
    format!("{id}{RECORD_SUFFIX}")
}

fn log_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => STDOUT,
        LogStream::Stderr => STDERR,
    }
}

/// The spool directory of one worker.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    ready_count: Arc<AtomicUsize>,
    /// Bytes on disk: every running and ready job's files.
    used: Arc<AtomicU64>,
    quota: u64,
}

impl Spool {
    /// Opens (creating) the spool at `root`, dropping what crashed invocations left in
    /// `running/` and counting the jobs (and bytes) still owed in `ready/`. Its quota is
    /// [`DEFAULT_SPOOL_QUOTA_BYTES`] until [`Spool::with_quota`] says otherwise.
    pub fn open(root: &Path) -> io::Result<Spool> {
        let running = root.join("running");
        if running.exists() {
            std::fs::remove_dir_all(&running)?;
        }
        std::fs::create_dir_all(&running)?;
        std::fs::create_dir_all(root.join("ready"))?;
        let spool = Spool {
            root: root.to_path_buf(),
            ready_count: Arc::new(AtomicUsize::new(0)),
            used: Arc::new(AtomicU64::new(0)),
            quota: DEFAULT_SPOOL_QUOTA_BYTES,
        };
        let owed = spool.ready_jobs()?;
        let bytes = owed.iter().map(ReadyJob::bytes).sum();
        spool.ready_count.store(owed.len(), Ordering::Relaxed);
        spool.used.store(bytes, Ordering::Relaxed);
        Ok(spool)
    }

    /// The same spool with a quota of `bytes` (set it before sharing the spool).
    pub fn with_quota(mut self, bytes: u64) -> Spool {
        self.quota = bytes;
        self
    }

    /// Jobs spooled and not yet reported.
    pub fn pending(&self) -> usize {
        self.ready_count.load(Ordering::Relaxed)
    }

    /// Bytes the spool holds now (running and ready jobs).
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The spool's quota, bytes.
    pub fn quota_bytes(&self) -> u64 {
        self.quota
    }

    /// Whether the spool is at its quota: new invocations must wait for the reporter.
    pub fn is_full(&self) -> bool {
        self.used_bytes() >= self.quota
    }

    /// The jobs in `ready/`, oldest first (ids are ULIDs, which sort by time).
    pub fn ready_jobs(&self) -> io::Result<Vec<ReadyJob>> {
        let ready = self.root.join("ready");
        let mut jobs: Vec<ReadyJob> = std::fs::read_dir(&ready)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                Some(match name.strip_suffix(RECORD_SUFFIX) {
                    Some(id) => ReadyJob::lone_record(&ready, id),
                    None => ReadyJob::in_dir(&ready, name),
                })
            })
            .collect();
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(jobs)
    }

    /// The job of invocation `id`, if it is still waiting in the spool.
    pub fn ready_job(&self, id: &str) -> Option<ReadyJob> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let ready = self.root.join("ready");
        let job = ReadyJob::in_dir(&ready, id);
        if job.dir.is_dir() {
            return Some(job);
        }
        let job = ReadyJob::lone_record(&ready, id);
        job.record.is_file().then_some(job)
    }

    /// [`ready_jobs`](Self::ready_jobs) from the blocking pool (a listing of a large
    /// backlog must not hold an async thread).
    pub async fn ready_jobs_listed(&self) -> io::Result<Vec<ReadyJob>> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || spool.ready_jobs())
            .await
            .map_err(io::Error::other)?
    }

    /// Reads the records of `jobs` in one blocking-pool hand-off, in order; the first
    /// that cannot be read fails the lot.
    pub async fn read_all(&self, jobs: &[ReadyJob]) -> io::Result<Vec<Job>> {
        let jobs = jobs.to_vec();
        tokio::task::spawn_blocking(move || jobs.iter().map(ReadyJob::read_blocking).collect())
            .await
            .map_err(io::Error::other)?
    }

    /// Removes reported jobs (measuring and deleting them in one blocking-pool
    /// hand-off); the first failure is returned after every job was tried.
    pub async fn remove_all(&self, jobs: &[ReadyJob]) -> io::Result<()> {
        let doomed = jobs.to_vec();
        let (freed, removed, first_error) = tokio::task::spawn_blocking(move || {
            let (mut freed, mut removed, mut first_error) = (0u64, 0usize, None);
            for job in &doomed {
                let bytes = job.bytes();
                match job.delete() {
                    Ok(()) => {
                        freed += bytes;
                        removed += 1;
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            (freed, removed, first_error)
        })
        .await
        .map_err(io::Error::other)?;
        release(&self.used, freed);
        let _ = self
            .ready_count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(removed))
            });
        first_error.map_or(Ok(()), Err)
    }

    /// Removes a reported job (measuring and deleting it in one blocking-pool hand-off).
    pub async fn remove(&self, job: &ReadyJob) -> io::Result<()> {
        let doomed = job.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let bytes = doomed.bytes();
            doomed.delete().map(|()| bytes)
        })
        .await
        .map_err(io::Error::other)??;
        release(&self.used, bytes);
        self.ready_count.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Starts spooling invocation `id`, whose log is cut at `log_limit_bytes` (plus room
    /// for the agent's own marker). Nothing touches the disk until something arrives or
    /// the job is committed, so a quiet invocation costs one small write.
    pub fn begin(&self, id: &str, log_limit_bytes: u64) -> SpoolWriter {
        SpoolWriter {
            dir: self.root.join("running").join(id),
            dir_made: false,
            ready: self.root.join("ready").join(id),
            lone_record: self.root.join("running").join(record_name(id)),
            ready_record: self.root.join("ready").join(record_name(id)),
            stdout: None,
            stderr: None,
            outputs: None,
            ready_count: self.ready_count.clone(),
            used: self.used.clone(),
            quota: self.quota,
            bytes: 0,
            quota_hit: false,
            log_limit: log_limit_bytes,
            log_bytes: 0,
            log_cut: false,
            finished: false,
        }
    }
}

/// Bytes of the files directly in `dir` (a job holds no subdirectories).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Gives `bytes` back to the spool's count, never below zero.
fn release(used: &AtomicU64, bytes: u64) {
    let _ = used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
        Some(now.saturating_sub(bytes))
    });
}

/// Receives one invocation's logs and outputs; see the module doc.
pub struct SpoolWriter {
    dir: PathBuf,
    dir_made: bool,
    ready: PathBuf,
    /// Where the record of a job without files is written, then renamed to `ready_record`.
    lone_record: PathBuf,
    ready_record: PathBuf,
    stdout: Option<File>,
    stderr: Option<File>,
    outputs: Option<File>,
    ready_count: Arc<AtomicUsize>,
    used: Arc<AtomicU64>,
    quota: u64,
    /// Bytes this writer put in the spool (counted in `used`).
    bytes: u64,
    quota_hit: bool,
    log_limit: u64,
    log_bytes: u64,
    log_cut: bool,
    /// Committed or discarded: nothing left to clean up on drop.
    finished: bool,
}

async fn append(slot: &mut Option<File>, path: PathBuf, bytes: &[u8]) -> io::Result<()> {
    if slot.is_none() {
        *slot = Some(File::create(path).await?);
    }
    match slot {
        Some(file) => file.write_all(bytes).await,
        None => Ok(()),
    }
}

#[async_trait]
impl InvocationSink for SpoolWriter {
    async fn log(&mut self, stream: LogStream, bytes: &[u8]) -> io::Result<()> {
        if self.log_cut {
            return Ok(());
        }
        // The agent cuts at the limit and adds its marker; past that the agent is not
        // keeping to it, and the spool cuts instead.
        let cap = self.log_limit.saturating_add(MARKER_ALLOWANCE_BYTES);
        let room = usize::try_from(cap.saturating_sub(self.log_bytes)).unwrap_or(usize::MAX);
        let keep = &bytes[..bytes.len().min(room)];
        let marker = (keep.len() < bytes.len()).then(|| truncation_marker(self.log_limit));
        let marker = marker.as_deref().unwrap_or_default().as_bytes();
        self.reserve((keep.len() + marker.len()) as u64)?;
        self.make_dir().await?;
        let path = self.dir.join(log_name(stream));
        let file = match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        };
        append(file, path.clone(), keep).await?;
        if !marker.is_empty() {
            append(file, path, marker).await?;
            self.log_cut = true;
        }
        self.log_bytes += keep.len() as u64;
        Ok(())
    }

    async fn output(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reserve(bytes.len() as u64)?;
        self.make_dir().await?;
        append(&mut self.outputs, self.dir.join(OUTPUTS), bytes).await
    }
}

impl SpoolWriter {
    async fn make_dir(&mut self) -> io::Result<()> {
        if !self.dir_made {
            tokio::fs::create_dir(&self.dir).await?;
            self.dir_made = true;
        }
        Ok(())
    }

    /// Counts `bytes` against the spool's quota, or fails (for good) when they do not fit.
    fn reserve(&mut self, bytes: u64) -> io::Result<()> {
        if !self.quota_hit {
            let before = self.used.fetch_add(bytes, Ordering::Relaxed);
            if before.saturating_add(bytes) <= self.quota {
                self.bytes += bytes;
                return Ok(());
            }
            release(&self.used, bytes);
            self.quota_hit = true;
        }
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "the worker's spool is at its quota of {} MB",
                self.quota >> 20
            ),
        ))
    }

    /// Whether a write did not fit the spool's quota (the invocation's logs and outputs
    /// are incomplete: it must not be reported as if they were).
    pub fn quota_hit(&self) -> bool {
        self.quota_hit
    }

    /// Whether anything was written to disk for this invocation (logs or outputs).
    pub fn holds_files(&self) -> bool {
        self.dir_made
    }

    /// Whether the log was cut at its cap.
    pub fn log_truncated(&self) -> bool {
        self.log_cut
    }

    /// Flushes what arrived and lists the outputs (blocking scan of the tar). No
    /// fsync: the spool must survive the worker's death, which the page cache does;
    /// a power loss may lose the last jobs.
    pub async fn close_and_scan(&mut self) -> io::Result<OutputScan> {
        for file in [&mut self.stdout, &mut self.stderr, &mut self.outputs]
            .into_iter()
            .flatten()
        {
            file.flush().await?;
        }
        self.stdout = None;
        self.stderr = None;
        if self.outputs.take().is_none() {
            return Ok(OutputScan::default());
        }
        let tar = self.dir.join(OUTPUTS);
        tokio::task::spawn_blocking(move || scan_outputs(&tar))
            .await
            .map_err(io::Error::other)?
    }

    /// Writes the job and moves it to `ready/` in one rename. The file system steps go
    /// to the blocking pool together: one hand-off on the invocation's path instead of
    /// one per step. A job with no files (nothing was spooled, so no directory) is one
    /// record file, renamed the same way.
    pub async fn commit(mut self, job: &Job) -> io::Result<()> {
        let body = serde_json::to_vec(job).map_err(io::Error::other)?;
        // The record is small and must be written: counted, never refused.
        let len = body.len() as u64;
        let (from, to, record) = if self.dir_made {
            (self.dir.clone(), self.ready.clone(), self.dir.join(JOB))
        } else {
            // `Drop` removes the directory only; a lone record left by a failed write
            // is in `running/`, which the next start empties.
            let record = self.lone_record.clone();
            (record.clone(), self.ready_record.clone(), record)
        };
        let lone = !self.dir_made;
        tokio::task::spawn_blocking(move || {
            let written = std::fs::write(&record, &body).and_then(|()| std::fs::rename(&from, &to));
            if written.is_err() && lone {
                let _ = std::fs::remove_file(&record);
            }
            written
        })
        .await
        .map_err(io::Error::other)??;
        self.used.fetch_add(len, Ordering::Relaxed);
        self.bytes += len;
        self.finished = true;
        self.ready_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drops everything spooled for this invocation.
    pub async fn discard(mut self) {
        self.finished = true;
        release(&self.used, self.bytes);
        if !self.dir_made {
            return;
        }
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a spool dir");
        }
    }
}

impl Drop for SpoolWriter {
    /// A writer dropped unfinished (its caller went away mid-invocation) gives its bytes
    /// back and removes its directory, so an abandoned invocation does not hold the
    /// quota until the next restart.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        release(&self.used, self.bytes);
        if !self.dir_made {
            return;
        }
        let dir = self.dir.clone();
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a spool dir");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}

/// What an output tar holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputScan {
    /// Regular files to upload.
    pub files: Vec<OutputEntry>,
    /// Everything else, with the reason.
    pub skipped: Vec<SkippedOutput>,
}

impl OutputScan {
    /// The API's output list for invocation `id`.
    pub fn output_files(&self, id: &str) -> Vec<OutputFile> {
        self.files
            .iter()
            .map(|f| OutputFile {
                path: f.path.clone(),
                size: f.size,
                key: output_key(id, &f.path),
            })
            .collect()
    }
}

/// Lists a hostile tar without unpacking it: regular files with checked relative
/// paths are kept, everything else is skipped with a reason.
pub fn scan_outputs(tar_path: &Path) -> io::Result<OutputScan> {
    let file = std::fs::File::open(tar_path)?;
    let mut archive = tar::Archive::new(file);
    let mut scan = OutputScan::default();
    let mut seen = std::collections::HashSet::new();
    for entry in archive.entries_with_seek()? {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                scan.skipped.push(SkippedOutput {
                    path: String::new(),
                    reason: format!("the rest of the output stream is unreadable: {e}"),
                });
                break;
            }
        };
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        let skip = |reason: String| SkippedOutput {
            path: raw.clone(),
            reason,
        };
        if kind.is_dir() {
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            scan.skipped.push(skip(format!(
                "{} entries are not kept: only regular files are outputs",
                kind_name(kind)
            )));
            continue;
        }
        let path = match checked_path(&raw) {
            Ok(path) => path,
            Err(why) => {
                scan.skipped.push(skip(why.to_string()));
                continue;
            }
        };
        if !seen.insert(path.clone()) {
            scan.skipped
                .push(skip("the path appears twice in the output stream".into()));
            continue;
        }
        scan.files.push(OutputEntry {
            path,
            offset: entry.raw_file_position(),
            size: entry.size(),
        });
    }
    Ok(scan)
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        _ => "special",
    }
}

/// Why an output's path is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BadOutputPath {
    #[error("the name is empty or has a NUL or a backslash")]
    BadName,
    #[error("the path climbs out with '..'")]
    Climbs,
    #[error("the path is absolute")]
    Absolute,
    #[error("the path names no file")]
    NoFile,
}

/// A relative path of normal components, joined with `/`.
fn checked_path(raw: &str) -> Result<String, BadOutputPath> {
    if raw.is_empty() || raw.contains('\0') || raw.contains('\\') {
        return Err(BadOutputPath::BadName);
    }
    let mut parts = Vec::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(BadOutputPath::Climbs),
            Component::RootDir | Component::Prefix(_) => return Err(BadOutputPath::Absolute),
        }
    }
    if parts.is_empty() {
        return Err(BadOutputPath::NoFile);
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    /// Writes a raw name into the header, bypassing the tar crate's own checks, as a
    /// hostile stream would.
    fn raw_name(h: &mut tar::Header, name: &str) {
        let bytes = name.as_bytes();
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
    }

    #[test]
    fn hostile_entries_are_skipped_and_files_listed_with_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTPUTS);
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut h = header(tar::EntryType::Regular, 5);
        builder
            .append_data(&mut h, "sub/ok.txt", &b"hello"[..])
            .unwrap();
        for (name, kind) in [
            ("../escape.txt", tar::EntryType::Regular),
            ("/etc/passwd", tar::EntryType::Regular),
            ("link", tar::EntryType::Symlink),
            ("hard", tar::EntryType::Link),
            ("fifo", tar::EntryType::Fifo),
            ("dev", tar::EntryType::Char),
        ] {
            let mut h = header(kind, if kind.is_file() { 3 } else { 0 });
            raw_name(&mut h, name);
            let data: &[u8] = if kind.is_file() { b"bad" } else { b"" };
            builder.append(&h, data).unwrap();
        }
        let mut h = header(tar::EntryType::Regular, 2);
        builder
            .append_data(&mut h, "sub/ok.txt", &b"xx"[..])
            .unwrap();
        builder.into_inner().unwrap();

        let scan = scan_outputs(&path).unwrap();
        assert_eq!(scan.files.len(), 1, "{scan:?}");
        let file = &scan.files[0];
        assert_eq!((file.path.as_str(), file.size), ("sub/ok.txt", 5));
        let bytes = std::fs::read(&path).unwrap();
        let at = file.offset as usize;
        assert_eq!(
            &bytes[at..at + 5],
            b"hello",
            "the offset points at the data"
        );
        let skipped: Vec<&str> = scan.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            skipped,
            [
                "../escape.txt",
                "/etc/passwd",
                "link",
                "hard",
                "fifo",
                "dev",
                "sub/ok.txt"
            ]
        );
        assert!(scan.skipped[0].reason.contains(".."));
        assert!(scan.skipped[2].reason.contains("symbolic link"));
        assert!(scan.skipped[3].reason.contains("hard link"));
    }

    #[tokio::test]
    async fn a_job_is_absent_until_committed_and_running_jobs_die_with_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut writer = spool.begin("01ABC", 1 << 20);
        writer.log(LogStream::Stdout, b"hi").await.unwrap();
        assert!(spool.ready_job("01ABC").is_none());
        let mut abandoned = spool.begin("01ABD", 1 << 20);
        abandoned.log(LogStream::Stderr, b"lost").await.unwrap();
        drop(abandoned);
        let scan = writer.close_and_scan().await.unwrap();
        assert_eq!(scan, OutputScan::default());
        let invocation: Invocation = serde_json::from_value(serde_json::json!({
            "id": "01ABC", "function": "f", "version": 1, "status": "success", "result": null,
            "error": null, "exit_code": 0, "stdout": "", "stderr": "", "truncated": false,
            "cold_start": false, "worker": "w", "started_at": "2026-11-28T10:00:00Z",
            "duration_ms": 1.0, "handler_duration_ms": 1.0,
            "memory": {"limit_mb": 128, "peak_bytes": 0, "max_rss_bytes": 0},
            "cpu": {"user_ms": 0.0, "system_ms": 0.0}, "io": {"read_bytes": 0, "write_bytes": 0},
            "outputs": [], "advice": null
        }))
        .unwrap();
        writer
            .commit(&Job {
                invocation,
                outputs: vec![],
            })
            .await
            .unwrap();
        assert_eq!(spool.pending(), 1);
        let reopened = Spool::open(dir.path()).unwrap();
        assert_eq!(reopened.pending(), 1, "a committed job survives a restart");
        let job = reopened.ready_job("01ABC").unwrap();
        assert_eq!(
            std::fs::read(job.log_path(LogStream::Stdout)).unwrap(),
            b"hi"
        );
        assert!(
            !dir.path().join("running/01ABD").exists(),
            "a job that never committed is dropped"
        );
        assert!(reopened.ready_job("../x").is_none());
    }

    fn job(id: &str) -> Job {
        let invocation = serde_json::from_value(serde_json::json!({
            "id": id, "function": "f", "version": 1, "status": "success", "result": null,
            "error": null, "exit_code": 0, "stdout": "", "stderr": "", "truncated": false,
            "cold_start": false, "worker": "w", "started_at": "2026-11-28T10:00:00Z",
            "duration_ms": 1.0, "handler_duration_ms": 1.0,
            "memory": {"limit_mb": 128, "peak_bytes": 0, "max_rss_bytes": 0},
            "cpu": {"user_ms": 0.0, "system_ms": 0.0}, "io": {"read_bytes": 0, "write_bytes": 0},
            "outputs": [], "advice": null
        }))
        .unwrap();
        Job {
            invocation,
            outputs: vec![],
        }
    }

    #[tokio::test]
    async fn a_quiet_job_is_one_record_file_that_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut writer = spool.begin("01QUIET", 1 << 20);
        assert_eq!(
            writer.close_and_scan().await.unwrap(),
            OutputScan::default()
        );
        writer.commit(&job("01QUIET")).await.unwrap();
        assert!(dir.path().join("ready/01QUIET.json").is_file());
        assert!(
            !dir.path().join("ready/01QUIET").exists(),
            "no directory for a job without files"
        );
        assert!(std::fs::read_dir(dir.path().join("running"))
            .unwrap()
            .next()
            .is_none());
        let used = spool.used_bytes();
        assert!(used > 0, "the record counts against the quota");

        // A record written but never renamed is a call that never answered.
        std::fs::write(dir.path().join("running/01LOST.json"), b"{}").unwrap();
        let reopened = Spool::open(dir.path()).unwrap();
        assert!(!dir.path().join("running/01LOST.json").exists());
        assert_eq!(
            reopened.pending(),
            1,
            "a committed record survives a restart"
        );
        assert_eq!(reopened.used_bytes(), used);
        let owed = reopened.ready_jobs().unwrap();
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0].id, "01QUIET");
        assert_eq!(owed[0].read().await.unwrap().invocation.id, "01QUIET");
        assert!(!owed[0].log_path(LogStream::Stdout).exists());
        assert!(reopened.ready_job("01QUIET").is_some());
        reopened.remove(&owed[0]).await.unwrap();
        assert_eq!(reopened.used_bytes(), 0);
        assert_eq!(reopened.pending(), 0);
        assert!(!dir.path().join("ready/01QUIET.json").exists());
        assert!(reopened.ready_job("01QUIET").is_none());
    }

    #[tokio::test]
    async fn a_log_past_its_cap_is_cut_and_marked_whatever_the_agent_sends() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let limit = 4096;
        let mut writer = spool.begin("01LOG", limit);
        // A forged stream that ignores the cap: 64 KiB on each stream.
        for _ in 0..16 {
            writer.log(LogStream::Stdout, &[b'o'; 4096]).await.unwrap();
            writer.log(LogStream::Stderr, &[b'e'; 4096]).await.unwrap();
        }
        assert!(writer.log_truncated());
        writer.close_and_scan().await.unwrap();
        writer.commit(&job("01LOG")).await.unwrap();
        let job = spool.ready_job("01LOG").unwrap();
        let stdout = std::fs::read(job.log_path(LogStream::Stdout)).unwrap();
        let stderr = std::fs::read(job.log_path(LogStream::Stderr)).unwrap();
        assert_eq!(
            stdout.len() + stderr.len(),
            (limit + MARKER_ALLOWANCE_BYTES) as usize + truncation_marker(limit).len()
        );
        assert_eq!(stdout.len(), 4096, "the first chunk fit whole");
        let text = String::from_utf8_lossy(&stderr);
        assert!(
            text.ends_with(&truncation_marker(limit)),
            "the cut is marked where it happened: {}",
            &text[text.len().saturating_sub(200)..]
        );
    }

    #[tokio::test]
    async fn the_quota_refuses_what_does_not_fit_and_frees_what_goes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap().with_quota(10_000);
        let mut first = spool.begin("01A", 1 << 20);
        first.output(&[0u8; 6000]).await.unwrap();
        assert!(!spool.is_full());
        let mut second = spool.begin("01B", 1 << 20);
        let refused = second.log(LogStream::Stdout, &[b'x'; 6000]).await;
        assert_eq!(
            refused.unwrap_err().kind(),
            io::ErrorKind::StorageFull,
            "6000 + 6000 bytes do not fit 10000"
        );
        assert!(second.quota_hit());
        assert!(
            second.log(LogStream::Stdout, b"x").await.is_err(),
            "a writer that hit the quota stays refused: its logs are incomplete"
        );
        second.discard().await;
        assert_eq!(spool.used_bytes(), 6000);

        first.output(&[0u8; 3900]).await.unwrap();
        first.close_and_scan().await.unwrap();
        first.commit(&job("01A")).await.unwrap();
        assert!(spool.is_full(), "{} of 10000", spool.used_bytes());
        let reopened = Spool::open(dir.path()).unwrap().with_quota(10_000);
        assert_eq!(
            reopened.used_bytes(),
            spool.used_bytes(),
            "a restart counts what is still owed"
        );
        let owed = spool.ready_job("01A").unwrap();
        spool.remove(&owed).await.unwrap();
        assert_eq!(spool.used_bytes(), 0);
        assert!(!spool.is_full());

        let mut abandoned = spool.begin("01C", 1 << 20);
        abandoned.log(LogStream::Stderr, b"lost").await.unwrap();
        assert_eq!(spool.used_bytes(), 4);
        drop(abandoned);
        assert_eq!(
            spool.used_bytes(),
            0,
            "an abandoned writer gives its bytes back"
        );
    }
}
