//! The worker's spool: where an invocation's full logs and output files land on disk,
//! chunk by chunk, before the reporter uploads them.
//!
//! Layout under the spool root: `running/<id>/` while the invocation runs (`stdout`,
//! `stderr`, `outputs.tar`), then, once its invocation record is written as `job.json`,
//! an atomic rename to `ready/<id>/`: a job is either complete or absent. At startup
//! `running/` is emptied (those invocations never answered) and `ready/` is what the
//! reporter still owes.
//!
//! The output tar comes from inside a sandbox and is hostile: it is never unpacked.
//! [`scan_outputs`] lists its regular files with their offsets (the reporter uploads
//! those byte ranges) and reports every other entry as skipped: links, devices, FIFOs,
//! absolute paths, `..`.

use async_trait::async_trait;
use hearth_core::invocation::{OutputFile, SkippedOutput};
use hearth_core::protocol::LogStream;
use hearth_core::Invocation;
use hearth_sandbox::InvocationSink;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::fs::File;
use tokio::io::AsyncWriteExt;

const STDOUT: &str = "stdout";
const STDERR: &str = "stderr";
const OUTPUTS: &str = "outputs.tar";
const JOB: &str = "job.json";

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
    /// Its directory.
    pub dir: PathBuf,
    /// The invocation id.
    pub id: String,
}

impl ReadyJob {
    /// A log file of the job.
    pub fn log_path(&self, stream: LogStream) -> PathBuf {
        self.dir.join(log_name(stream))
    }

    /// The spooled output tar.
    pub fn outputs_path(&self) -> PathBuf {
        self.dir.join(OUTPUTS)
    }

    /// Reads the job description.
    pub async fn read(&self) -> io::Result<Job> {
        let bytes = tokio::fs::read(self.dir.join(JOB)).await?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
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
}

impl Spool {
    /// Opens (creating) the spool at `root`, dropping what crashed invocations left in
    /// `running/` and counting the jobs still owed in `ready/`.
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
        };
        let owed = spool.ready_jobs()?.len();
        spool.ready_count.store(owed, Ordering::Relaxed);
        Ok(spool)
    }

    /// Jobs spooled and not yet reported.
    pub fn pending(&self) -> usize {
        self.ready_count.load(Ordering::Relaxed)
    }

    /// The jobs in `ready/`, oldest first (ids are ULIDs, which sort by time).
    pub fn ready_jobs(&self) -> io::Result<Vec<ReadyJob>> {
        let mut jobs: Vec<ReadyJob> = std::fs::read_dir(self.root.join("ready"))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let id = e.file_name().to_str()?.to_string();
                Some(ReadyJob { dir: e.path(), id })
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
        let dir = self.root.join("ready").join(id);
        dir.is_dir().then(|| ReadyJob {
            dir,
            id: id.to_string(),
        })
    }

    /// Removes a reported job.
    pub async fn remove(&self, job: &ReadyJob) -> io::Result<()> {
        tokio::fs::remove_dir_all(&job.dir).await?;
        self.ready_count.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Starts spooling invocation `id`. Nothing touches the disk until something
    /// arrives or the job is committed, so a quiet invocation costs one small write.
    pub fn begin(&self, id: &str) -> SpoolWriter {
        SpoolWriter {
            dir: self.root.join("running").join(id),
            dir_made: false,
            ready: self.root.join("ready").join(id),
            stdout: None,
            stderr: None,
            outputs: None,
            ready_count: self.ready_count.clone(),
        }
    }
}

/// Receives one invocation's logs and outputs; see the module doc.
pub struct SpoolWriter {
    dir: PathBuf,
    dir_made: bool,
    ready: PathBuf,
    stdout: Option<File>,
    stderr: Option<File>,
    outputs: Option<File>,
    ready_count: Arc<AtomicUsize>,
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
        self.make_dir().await?;
        let path = self.dir.join(log_name(stream));
        match stream {
            LogStream::Stdout => append(&mut self.stdout, path, bytes).await,
            LogStream::Stderr => append(&mut self.stderr, path, bytes).await,
        }
    }

    async fn output(&mut self, bytes: &[u8]) -> io::Result<()> {
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

    /// Writes the job and moves it to `ready/` in one rename.
    pub async fn commit(mut self, job: &Job) -> io::Result<()> {
        let body = serde_json::to_vec(job).map_err(io::Error::other)?;
        self.make_dir().await?;
        tokio::fs::write(self.dir.join(JOB), &body).await?;
        tokio::fs::rename(&self.dir, &self.ready).await?;
        self.ready_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drops everything spooled for this invocation.
    pub async fn discard(self) {
        if !self.dir_made {
            return;
        }
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a spool dir");
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

/// Object-store key of an output file.
pub fn output_key(id: &str, path: &str) -> String {
    format!("outputs/{id}/{path}")
}

/// Object-store key of a log.
pub fn log_key(id: &str, stream: LogStream) -> String {
    format!("logs/{id}/{}", log_name(stream))
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
        let mut writer = spool.begin("01ABC");
        writer.log(LogStream::Stdout, b"hi").await.unwrap();
        assert!(spool.ready_job("01ABC").is_none());
        let mut abandoned = spool.begin("01ABD");
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
}
