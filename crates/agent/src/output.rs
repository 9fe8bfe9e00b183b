//! The per-invocation output directory (`$OUTPUT_DIR`). After every invocation (its
//! processes dead, the sweep done) the agent looks into it (one `getdents`); when it
//! holds anything, it streams a tar of it to the worker in `Output` frames, then empties
//! it, so every invocation starts with an empty directory.
//!
//! Everything works relative to directory fds (`openat`, `fstatat`, `readlinkat`,
//! `unlinkat`) with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`: a symlink is archived and
//! removed as a symlink, never followed; a FIFO, device or socket is never opened. The
//! agent runs with the function's own credentials, so this is about correctness (no
//! `/etc/passwd` in the outputs, no hang on a FIFO, nothing removed outside), not about
//! privilege.
//!
//! The quota is enforced twice: a sized tmpfs (native mode) gives the function ENOSPC,
//! and the archive counts the sizes of the files it adds and leaves out any file past
//! the quota (Existing mode has no tmpfs to size; a sparse file fits a tmpfs and
//! would still stream gigabytes of zeros).

use crate::error::{AgentError, ConfigError, SettleError};
use crate::process::MAX_CHUNK;

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Most entries (files, directories, links) the outputs of one invocation may hold; the
/// native tmpfs has as many inodes.
pub const MAX_ENTRIES: usize = 100_000;
/// Deepest directory nesting archived and cleared; deeper trees make the instance
/// unhealthy (it is replaced).
const MAX_DEPTH: usize = 128;
/// Mode the directory is kept at.
const DIR_MODE: libc::mode_t = 0o755;
/// Names read per `getdents64` call.
const DIRENT_BUFFER: usize = 8 * 1024;

/// What one invocation left in the output directory.
#[derive(Debug, Default)]
pub struct Collected {
    /// Bytes of regular files archived (hard links count once).
    pub bytes: u64,
    /// Whether the directory filled up, or a file was left out of the archive because
    /// it went past the quota.
    pub quota_exceeded: bool,
    /// Why the directory could not be archived or emptied: the instance must not serve
    /// again (the next invocation would not start empty).
    pub fault: Option<String>,
}

/// The output directory of an instance.
#[derive(Debug)]
pub struct OutputDir {
    path: PathBuf,
    path_c: CString,
    quota_bytes: u64,
    /// The directory is a file system of its own (a sized tmpfs): its free space says
    /// when the function hit the quota.
    own_fs: bool,
}

impl OutputDir {
    /// Takes the directory at `path` (created by the sandbox setup, owned by the uid the
    /// agent runs as now) with a quota of `quota_mb` MB, and empties it.
    pub fn open(path: PathBuf, quota_mb: u64) -> Result<OutputDir, AgentError> {
        let path_c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| ConfigError::NulInPath(path.clone()))?;
        let mut out = OutputDir {
            path,
            path_c,
            quota_bytes: quota_mb.saturating_mul(1 << 20),
            own_fs: false,
        };
        let dir = out
            .open_top()
            .map_err(|e| AgentError::at("open the output dir", &out.path, e))?;
        let st = fstat(dir.as_raw_fd()).map_err(|e| AgentError::at("stat", &out.path, e))?;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if st.st_uid != me {
            return Err(ConfigError::OutputDirOwner {
                path: out.path.clone(),
                owner: st.st_uid,
                me,
            }
            .into());
        }
        if let Some(parent) = out.path.parent() {
            let parent_dev = std::fs::metadata(parent)
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                .map_err(|e| AgentError::at("stat", parent, e))?;
            out.own_fs = parent_dev != st.st_dev;
        }
        clear(&dir, 0).map_err(|e| AgentError::at("empty", &out.path, e))?;
        Ok(out)
    }

    /// The directory, as the function sees it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Archives what the invocation left and empties the directory. The tar goes to
    /// `send` in pieces of at most [`MAX_CHUNK`] bytes; nothing is sent when the
    /// directory is empty. Must run when no process writes there any more.
    pub fn collect(&self, send: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> Collected {
        let mut collected = Collected::default();
        let fail = |what: &str, e: io::Error| Some(format!("{what} {}: {e}", self.path.display()));
        let dir = match self.open_top() {
            Ok(dir) => dir,
            Err(e) => {
                collected.fault = fail("open", e);
                return collected;
            }
        };
        match is_empty(&dir) {
            Ok(true) => return collected,
            Ok(false) => {}
            Err(e) => {
                collected.fault = fail("read", e);
                return collected;
            }
        }
        collected.quota_exceeded = self.own_fs && is_full(&dir);
        let (whole, bytes, exceeded) = Archiver::new(send, self.quota_bytes).archive(&dir);
        collected.bytes = bytes;
        collected.quota_exceeded |= exceeded;
        if let Err(e) = whole {
            collected.fault = fail("send the outputs of", e);
        }
        if let Err(e) = clear(&dir, 0) {
            collected.fault = collected.fault.or(fail("empty", e));
        }
        collected
    }

    /// Whether the directory holds nothing now (false when it cannot be read): an
    /// invocation may be answered before its process has ended only then.
    pub fn is_clean(&self) -> bool {
        self.open_top()
            .and_then(|dir| is_empty(&dir))
            .unwrap_or(false)
    }

    /// Empties the directory without archiving it: what a process of an invocation
    /// already answered wrote there before the sweep killed it (it is nobody's output).
    /// Returns whether it held anything, or why it could not be emptied.
    pub fn discard(&self) -> Result<bool, SettleError> {
        let fail = |what: &'static str, source: io::Error| SettleError::Output {
            path: self.path.display().to_string(),
            what,
            source,
        };
        let dir = self.open_top().map_err(|e| fail("open", e))?;
        if is_empty(&dir).map_err(|e| fail("read", e))? {
            return Ok(false);
        }
        clear(&dir, 0).map_err(|e| fail("empty", e))?;
        Ok(true)
    }

    /// Opens the directory itself (never a symlink in its place), repairing what the
    /// function may have done to it: its mode changed, or (when the agent owns the
    /// parent) the directory removed or replaced.
    fn open_top(&self) -> io::Result<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let dir = match open_at(libc::AT_FDCWD, &self.path_c, flags) {
            Ok(dir) => dir,
            Err(e) => {
                self.repair(e)?;
                open_at(libc::AT_FDCWD, &self.path_c, flags)?
            }
        };
        let st = fstat(dir.as_raw_fd())?;
        if st.st_mode & 0o7777 != DIR_MODE {
            // SAFETY: fchmod on an fd we own.
            cvt(unsafe { libc::fchmod(dir.as_raw_fd(), DIR_MODE) })?;
        }
        Ok(dir)
    }

    fn repair(&self, error: io::Error) -> io::Result<()> {
        let path = self.path_c.as_ptr();
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let mkdir = || cvt(unsafe { libc::mkdir(path, DIR_MODE) }).map(drop);
        match error.raw_os_error() {
            // A directory the function made unreadable (open failed with O_NOFOLLOW, so
            // it is no symlink).
            // SAFETY: as above.
            Some(libc::EACCES) => cvt(unsafe { libc::chmod(path, DIR_MODE) }).map(drop),
            Some(libc::ENOENT) => mkdir(),
            Some(libc::ELOOP | libc::ENOTDIR) => {
                // SAFETY: as above; unlink never follows a link.
                cvt(unsafe { libc::unlink(path) })?;
                mkdir()
            }
            _ => Err(error),
        }
    }
}

/// Turns a `-1` return into the current `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`.
fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let fd = cvt(unsafe { libc::openat(dir, name.as_ptr(), flags) })?;
    // SAFETY: openat just returned this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// `lstat` of `name` in `dir`.
fn stat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `st` valid for writes.
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// Sets the mode of `name` in `dir`, which the caller has just seen to be a directory
/// or a regular file (chmod has no "do not follow" on Linux).
fn chmod_at(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::fchmodat(dir, name.as_ptr(), mode, 0) }).map(drop)
}

fn unlink_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
}

/// Moves a directory fd back to its first entry.
fn rewind(dir: &OwnedFd) -> io::Result<()> {
    // SAFETY: lseek on an fd we own.
    if unsafe { libc::lseek(dir.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Calls `each` with the name and `d_type` of every entry of `dir` from its current
/// position on, `.` and `..` aside, until `each` returns false.
fn for_each_entry(dir: &OwnedFd, mut each: impl FnMut(&CStr, u8) -> bool) -> io::Result<()> {
    let mut buf = [0u8; DIRENT_BUFFER];
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let filled = &buf[..n.unsigned_abs() as usize];
        if filled.is_empty() {
            return Ok(());
        }
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        let mut at = 0;
        while at < filled.len() {
            let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed directory entry");
            let record = filled.get(at..at + 19).ok_or_else(bad)?;
            let reclen = usize::from(u16::from_ne_bytes([record[16], record[17]]));
            let d_type = record[18];
            let name_bytes = filled.get(at + 19..at + reclen).ok_or_else(bad)?;
            let name = CStr::from_bytes_until_nul(name_bytes).map_err(|_| bad())?;
            at += reclen;
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            if !each(name, d_type) {
                return Ok(());
            }
        }
    }
}

/// Whether a freshly opened directory has no entry.
pub(crate) fn is_empty(dir: &OwnedFd) -> io::Result<bool> {
    let mut empty = true;
    for_each_entry(dir, |_, _| {
        empty = false;
        false
    })?;
    Ok(empty)
}

/// Up to `limit` entries of `dir` from its start, as (name, `d_type`).
fn list(dir: &OwnedFd, limit: usize) -> io::Result<Vec<(CString, u8)>> {
    rewind(dir)?;
    let mut names = Vec::new();
    for_each_entry(dir, |name, d_type| {
        names.push((name.to_owned(), d_type));
        names.len() < limit
    })?;
    Ok(names)
}

/// Whether the file system of `dir` has no free block or no free inode left.
fn is_full(dir: &OwnedFd) -> bool {
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `vfs` is valid for writes.
    if unsafe { libc::fstatvfs(dir.as_raw_fd(), &mut vfs) } != 0 {
        return false;
    }
    vfs.f_bavail == 0 || (vfs.f_files > 0 && vfs.f_favail == 0)
}

/// Removes everything inside `dir`, without following any symlink.
pub(crate) fn clear(dir: &OwnedFd, depth: usize) -> io::Result<()> {
    loop {
        let names = list(dir, 4096)?;
        if names.is_empty() {
            return Ok(());
        }
        for (name, d_type) in names {
            let is_dir = match d_type {
                libc::DT_DIR => true,
                libc::DT_UNKNOWN => {
                    stat_at(dir.as_raw_fd(), &name)?.st_mode & libc::S_IFMT == libc::S_IFDIR
                }
                _ => false,
            };
            if !is_dir {
                unlink_at(dir.as_raw_fd(), &name, 0)?;
                continue;
            }
            if depth + 1 >= MAX_DEPTH {
                return Err(io::Error::other(format!(
                    "directories nested deeper than {MAX_DEPTH} levels"
                )));
            }
            // The function may have taken its own permissions away.
            chmod_at(dir.as_raw_fd(), &name, 0o700)?;
            let sub = open_at(dir.as_raw_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY)?;
            clear(&sub, depth + 1)?;
            drop(sub);
            unlink_at(dir.as_raw_fd(), &name, libc::AT_REMOVEDIR)?;
        }
    }
}

/// An `io::Write` that cuts the tar stream into pieces of [`MAX_CHUNK`] bytes for
/// `send`. Pieces go out when full and at [`Frames::finish`]; a failed send fails
/// every later write.
struct Frames<'a> {
    send: &'a mut dyn FnMut(&[u8]) -> io::Result<()>,
    buf: Vec<u8>,
    failed: bool,
}

impl Frames<'_> {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = (self.send)(&self.buf) {
            self.failed = true;
            return Err(e);
        }
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

impl Write for Frames<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(MAX_CHUNK);
        }
        let n = data.len().min(MAX_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A regular file's content, exactly `left` bytes of it, read in pieces of the size of
/// `buf`. A file that ends early or fails to read is padded with zeros: the tar stream
/// must stay whole once its header went out.
struct FileData<'a> {
    fd: OwnedFd,
    left: u64,
    buf: &'a mut [u8],
    pos: usize,
    len: usize,
    short: bool,
}

impl Read for FileData<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            if self.left == 0 {
                return Ok(0);
            }
            let want = usize::try_from(self.left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let got = loop {
                // SAFETY: `buf` is valid for writes of `want` bytes.
                let n =
                    unsafe { libc::read(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), want) };
                if n >= 0 {
                    break n.unsigned_abs();
                }
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break 0;
                }
            };
            let got = if got == 0 {
                self.short = true;
                self.buf[..want].fill(0);
                want
            } else {
                got
            };
            self.left -= got as u64;
            self.pos = 0;
            self.len = got;
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Walks the directory tree into a tar stream.
struct Archiver<'a> {
    tar: tar::Builder<Frames<'a>>,
    quota: u64,
    bytes: u64,
    entries: usize,
    exceeded: bool,
    /// First path of every multiply-linked regular file archived, by (dev, ino).
    links: HashMap<(u64, u64), Vec<u8>>,
    /// The read buffer for file contents, allocated at the first file.
    buf: Vec<u8>,
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn header(st: &libc::stat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(0);
    header.set_mode(st.st_mode & 0o777);
    header.set_uid(u64::from(st.st_uid));
    header.set_gid(u64::from(st.st_gid));
    header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    header
}

impl<'a> Archiver<'a> {
    fn new(send: &'a mut dyn FnMut(&[u8]) -> io::Result<()>, quota: u64) -> Self {
        let frames = Frames {
            send,
            buf: Vec::new(),
            failed: false,
        };
        Archiver {
            tar: tar::Builder::new(frames),
            quota,
            bytes: 0,
            entries: 0,
            exceeded: false,
            links: HashMap::new(),
            buf: Vec::new(),
        }
    }

    /// Archives the tree under `top` and ends the stream; sends nothing when no entry
    /// went in. Returns whether the stream is whole (an error: sending failed), the
    /// bytes of regular files archived, and whether the quota was passed.
    fn archive(mut self, top: &OwnedFd) -> (io::Result<()>, u64, bool) {
        let walked = self.directory(top, b"", 0);
        let (bytes, exceeded) = (self.bytes, self.exceeded);
        let whole = match walked {
            // Dropping the builder writes its end blocks into a buffer never sent.
            Ok(()) if self.entries == 0 => Ok(()),
            Ok(()) => self.tar.into_inner().and_then(Frames::finish),
            Err(e) => Err(e),
        };
        (whole, bytes, exceeded)
    }

    fn directory(&mut self, dir: &OwnedFd, prefix: &[u8], depth: usize) -> io::Result<()> {
        let mut names = match list(dir, MAX_ENTRIES + 1) {
            Ok(names) => names,
            Err(e) => {
                crate::diag!("output dir {:?}: cannot list: {e}", as_path(prefix));
                return Ok(());
            }
        };
        names.sort_unstable();
        for (name, _) in names {
            if self.entries >= MAX_ENTRIES {
                self.exceeded = true;
                return Ok(());
            }
            let Ok(st) = stat_at(dir.as_raw_fd(), &name) else {
                continue;
            };
            let mut rel = prefix.to_vec();
            rel.extend_from_slice(name.to_bytes());
            let added = match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    rel.push(b'/');
                    self.subdirectory(dir, &name, &rel, &st, depth)
                }
                libc::S_IFREG => self.file(dir, &name, &rel, &st),
                libc::S_IFLNK => self.symlink(dir, &name, &rel, &st),
                libc::S_IFIFO => self.special(&rel, &st, tar::EntryType::Fifo),
                libc::S_IFCHR => self.special(&rel, &st, tar::EntryType::Char),
                libc::S_IFBLK => self.special(&rel, &st, tar::EntryType::Block),
                _ => Ok(()), // sockets have no meaning outside
            };
            if let Err(e) = added {
                if self.tar.get_ref().failed {
                    return Err(e);
                }
                crate::diag!("output {:?} left out: {e}", as_path(&rel));
            }
        }
        Ok(())
    }

    fn subdirectory(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        rel: &[u8],
        st: &libc::stat,
        depth: usize,
    ) -> io::Result<()> {
        let mut header = header(st, tar::EntryType::Directory);
        self.tar
            .append_data(&mut header, as_path(rel), io::empty())?;
        self.entries += 1;
        if depth + 1 >= MAX_DEPTH {
            return Err(io::Error::other(format!(
                "its content is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        if st.st_mode & 0o500 != 0o500 {
            chmod_at(dir.as_raw_fd(), name, (st.st_mode & 0o7777) | 0o700)?;
        }
        let sub = open_at(dir.as_raw_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY)?;
        self.directory(&sub, rel, depth + 1)
    }

    fn file(&mut self, dir: &OwnedFd, name: &CStr, rel: &[u8], st: &libc::stat) -> io::Result<()> {
        let id = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&id) {
                let mut header = header(st, tar::EntryType::Link);
                self.tar
                    .append_link(&mut header, as_path(rel), as_path(first))?;
                self.entries += 1;
                return Ok(());
            }
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if self.bytes.saturating_add(size) > self.quota {
            self.exceeded = true;
            return Err(io::Error::other(format!(
                "{size} bytes would pass the output quota of {} bytes",
                self.quota
            )));
        }
        let flags = libc::O_RDONLY | libc::O_NONBLOCK;
        let fd = match open_at(dir.as_raw_fd(), name, flags) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                chmod_at(dir.as_raw_fd(), name, (st.st_mode & 0o7777) | 0o400)?;
                open_at(dir.as_raw_fd(), name, flags)?
            }
            other => other?,
        };
        let now = fstat(fd.as_raw_fd())?;
        if now.st_mode & libc::S_IFMT != libc::S_IFREG || (now.st_dev, now.st_ino) != id {
            return Err(io::Error::other("it changed while being archived"));
        }
        if self.buf.is_empty() {
            self.buf = vec![0u8; MAX_CHUNK];
        }
        let mut header = header(st, tar::EntryType::Regular);
        header.set_size(size);
        let mut data = FileData {
            fd,
            left: size,
            buf: &mut self.buf,
            pos: 0,
            len: 0,
            short: false,
        };
        self.tar.append_data(&mut header, as_path(rel), &mut data)?;
        if data.short {
            crate::diag!("output {:?} ended early; padded with zeros", as_path(rel));
        }
        self.bytes += size;
        self.entries += 1;
        if st.st_nlink > 1 {
            self.links.insert(id, rel.to_vec());
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        rel: &[u8],
        st: &libc::stat,
    ) -> io::Result<()> {
        let mut target = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: `name` is NUL-terminated; `target` is valid for writes of its length.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                target.as_mut_ptr().cast(),
                target.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        target.truncate(n.unsigned_abs());
        let mut header = header(st, tar::EntryType::Symlink);
        self.tar
            .append_link(&mut header, as_path(rel), as_path(&target))?;
        self.entries += 1;
        Ok(())
    }

    fn special(&mut self, rel: &[u8], st: &libc::stat, kind: tar::EntryType) -> io::Result<()> {
        let mut header = header(st, kind);
        if kind != tar::EntryType::Fifo {
            header.set_device_major(libc::major(st.st_rdev))?;
            header.set_device_minor(libc::minor(st.st_rdev))?;
        }
        self.tar
            .append_data(&mut header, as_path(rel), io::empty())?;
        self.entries += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn output_dir(quota_mb: u64) -> (tempfile::TempDir, OutputDir) {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("output");
        fs::create_dir(&path).unwrap();
        let out = OutputDir::open(path, quota_mb).unwrap();
        (base, out)
    }

    /// Collects into (the pieces sent, what was collected).
    fn collect(out: &OutputDir) -> (Vec<Vec<u8>>, Collected) {
        let mut pieces = Vec::new();
        let collected = out.collect(&mut |piece| {
            pieces.push(piece.to_vec());
            Ok(())
        });
        (pieces, collected)
    }

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[derive(Debug, PartialEq)]
    struct Entry {
        path: String,
        kind: tar::EntryType,
        link: Option<String>,
        data: Vec<u8>,
    }

    fn entries(tar_bytes: &[u8]) -> Vec<Entry> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                Entry {
                    path: e.path().unwrap().to_string_lossy().into_owned(),
                    kind: e.header().entry_type(),
                    link: e
                        .link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    data,
                }
            })
            .collect()
    }

    #[test]
    fn an_empty_dir_sends_nothing() {
        let (_base, out) = output_dir(1);
        let (pieces, collected) = collect(&out);
        assert!(pieces.is_empty());
        assert_eq!(collected.bytes, 0);
        assert!(!collected.quota_exceeded);
        assert!(collected.fault.is_none());
    }

    #[test]
    fn files_dirs_and_links_are_archived_without_following_and_then_removed() {
        let (_base, out) = output_dir(64);
        let p = out.path().to_path_buf();
        let big: Vec<u8> = (0..3 * MAX_CHUNK + 77).map(|i| (i % 251) as u8).collect();
        fs::write(p.join("report.csv"), "a,b\n1,2\n").unwrap();
        fs::create_dir_all(p.join("sub/dir")).unwrap();
        fs::write(p.join("sub/dir/x.bin"), &big).unwrap();
        fs::create_dir(p.join("empty")).unwrap();
        symlink("/etc/passwd", p.join("passwd")).unwrap();
        symlink("/etc", p.join("etc")).unwrap();
        fs::hard_link(p.join("report.csv"), p.join("twin.csv")).unwrap();
        mkfifo(&p.join("pipe"));
        let long = "n".repeat(150);
        fs::write(p.join(&long), "long name").unwrap();
        let locked = p.join("locked");
        fs::create_dir(&locked).unwrap();
        fs::write(locked.join("secret"), "s").unwrap();
        fs::set_permissions(locked.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let socket = std::os::unix::net::UnixListener::bind(p.join("sock")).unwrap();

        let (pieces, collected) = collect(&out);
        drop(socket);
        assert!(collected.fault.is_none(), "{:?}", collected.fault);
        assert!(pieces.iter().all(|p| p.len() <= MAX_CHUNK && !p.is_empty()));
        assert!(pieces[..pieces.len() - 1]
            .iter()
            .all(|p| p.len() == MAX_CHUNK));
        let stream = pieces.concat();
        assert_eq!(stream.len() % 512, 0);
        assert!(stream.ends_with(&[0u8; 1024]));
        let got = entries(&stream);
        let find = |path: &str| {
            got.iter()
                .find(|e| e.path == path)
                .unwrap_or_else(|| panic!("{path} not in {got:#?}"))
        };
        assert_eq!(find("report.csv").kind, tar::EntryType::Regular);
        assert_eq!(find("report.csv").data, b"a,b\n1,2\n");
        // Directories carry the trailing slash GNU tar gives them.
        assert_eq!(find("sub/").kind, tar::EntryType::Directory);
        assert_eq!(find("sub/dir/").kind, tar::EntryType::Directory);
        assert!(find("sub/dir/x.bin").data == big);
        assert_eq!(find("empty/").kind, tar::EntryType::Directory);
        let passwd = find("passwd");
        assert_eq!(passwd.kind, tar::EntryType::Symlink);
        assert_eq!(passwd.link.as_deref(), Some("/etc/passwd"));
        assert!(passwd.data.is_empty());
        assert_eq!(find("etc").kind, tar::EntryType::Symlink);
        assert!(!got.iter().any(|e| e.path.starts_with("etc/")));
        let twin = find("twin.csv");
        assert_eq!(twin.kind, tar::EntryType::Link);
        assert_eq!(twin.link.as_deref(), Some("report.csv"));
        assert_eq!(find("pipe").kind, tar::EntryType::Fifo);
        assert_eq!(find(&long).data, b"long name");
        assert_eq!(find("locked/secret").data, b"s");
        assert!(!got.iter().any(|e| e.path == "sock"));
        assert_eq!(collected.bytes, 8 + big.len() as u64 + 9 + 1);
        assert!(!collected.quota_exceeded);
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0, "emptied");
        assert!(
            fs::metadata("/etc/passwd").is_ok(),
            "links were not followed"
        );
    }

    #[test]
    fn files_past_the_quota_are_left_out_and_flagged() {
        let (_base, out) = output_dir(1);
        let p = out.path();
        fs::write(p.join("a-small"), vec![1u8; 1000]).unwrap();
        fs::write(p.join("b-big"), vec![2u8; 3 << 20]).unwrap();
        fs::write(p.join("c-small"), vec![3u8; 1000]).unwrap();
        // A sparse file: no blocks, a huge size.
        fs::File::create(p.join("d-sparse"))
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let (pieces, collected) = collect(&out);
        assert!(collected.quota_exceeded);
        assert_eq!(collected.bytes, 2000);
        let names: Vec<String> = entries(&pieces.concat())
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(names, ["a-small", "c-small"]);
        assert_eq!(fs::read_dir(p).unwrap().count(), 0);
    }

    #[test]
    fn a_dir_with_only_a_socket_sends_nothing_and_is_emptied() {
        let (_base, out) = output_dir(1);
        let socket = std::os::unix::net::UnixListener::bind(out.path().join("s")).unwrap();
        let (pieces, collected) = collect(&out);
        drop(socket);
        assert!(pieces.is_empty());
        assert!(collected.fault.is_none());
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_broken_stream_stops_the_archive_but_the_dir_is_still_emptied() {
        let (_base, out) = output_dir(64);
        fs::write(out.path().join("big"), vec![7u8; 3 << 20]).unwrap();
        let mut calls = 0;
        let collected = out.collect(&mut |_| {
            calls += 1;
            Err(io::ErrorKind::BrokenPipe.into())
        });
        assert_eq!(calls, 1);
        assert!(collected.fault.is_some());
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn what_the_function_did_to_the_dir_itself_is_undone() {
        let (_base, out) = output_dir(1);
        fs::write(out.path().join("f"), "x").unwrap();
        fs::set_permissions(out.path(), fs::Permissions::from_mode(0o000)).unwrap();
        let (pieces, collected) = collect(&out);
        assert!(collected.fault.is_none(), "{:?}", collected.fault);
        assert_eq!(entries(&pieces.concat()).len(), 1);
        let mode = fs::metadata(out.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);

        fs::remove_dir(out.path()).unwrap();
        symlink("/etc", out.path()).unwrap();
        let (pieces, collected) = collect(&out);
        assert!(pieces.is_empty() && collected.fault.is_none());
        assert!(fs::symlink_metadata(out.path()).unwrap().is_dir());
    }

    #[test]
    fn opening_empties_what_an_earlier_agent_left() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("output");
        fs::create_dir_all(path.join("a/b")).unwrap();
        fs::write(path.join("a/b/c"), "old").unwrap();
        let out = OutputDir::open(path.clone(), 1).unwrap();
        assert!(!out.own_fs);
        assert_eq!(fs::read_dir(&path).unwrap().count(), 0);
    }
}
