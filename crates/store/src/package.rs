//! Checks of an uploaded code package, which is hostile input.
//!
//! [`inspect_zip`] is the only way in: it validates the zip (size, entry count, paths,
//! entry types, the runtime's entrypoint), decompresses it under a hard byte budget
//! that does not trust the sizes the zip declares, and re-packs the regular files as
//! a plain tar that the worker streams into a sandbox. Nothing here touches the disk.
//!
//! The work is CPU-bound (up to the uncompressed limit of inflating): call it from
//! `tokio::task::spawn_blocking`, not on an async worker thread.

use hearth_core::Runtime;
use sha2::{Digest, Sha256};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{Cursor, Read};
use zip::{CompressionMethod, ZipArchive};

/// Largest zip accepted, bytes (50 MiB, as Lambda's direct upload).
pub const MAX_ZIP_BYTES: u64 = 50 * 1024 * 1024;
/// Most bytes a zip may unpack to (250 MiB, as Lambda).
pub const MAX_UNCOMPRESSED_BYTES: u64 = 250 * 1024 * 1024;
/// Most entries (files and directories) a zip may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// Signature that opens every central-directory file header.
const CENTRAL_HEADER_SIG: [u8; 4] = *b"PK\x01\x02";
/// Fixed part of a central-directory file header, bytes.
const CENTRAL_HEADER_LEN: usize = 46;

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// The bounds a code package must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageLimits {
    /// Largest zip, bytes.
    pub max_zip_bytes: u64,
    /// Most bytes the files may unpack to, counted while inflating.
    pub max_uncompressed_bytes: u64,
    /// Most entries (files and directories, including ignored ones) in the zip.
    pub max_entries: usize,
}

impl Default for PackageLimits {
    fn default() -> Self {
        PackageLimits {
            max_zip_bytes: MAX_ZIP_BYTES,
            max_uncompressed_bytes: MAX_UNCOMPRESSED_BYTES,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// A checked code package, ready to store (the zip) and to ship to a sandbox (the tar).
#[derive(Clone, PartialEq, Eq)]
pub struct CodePackage {
    /// Hex SHA-256 of the zip bytes; the package's key in the object store.
    pub sha256: String,
    /// Size of the zip, bytes.
    pub size: u64,
    /// Regular files in the package (ignored entries not counted).
    pub files: usize,
    /// Total size of those files, bytes, as actually inflated.
    pub uncompressed_size: u64,
    /// The files and directories as an uncompressed tar: paths relative to the
    /// function's root, directories before their contents, mode 0644 (0755 when the
    /// zip marked the file executable, and for directories), mtime 0, uid/gid 0.
    pub tar: Vec<u8>,
}

impl fmt::Debug for CodePackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodePackage")
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("files", &self.files)
            .field("uncompressed_size", &self.uncompressed_size)
            .field("tar_len", &self.tar.len())
            .finish()
    }
}

/// Why a code package was refused; every message says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackageError {
    /// The zip itself is over the size limit.
    #[error("code zip is {size} bytes: the limit is {} MB; leave out files the function does not need (tests, caches, build output)", limit >> 20)]
    ZipTooLarge {
        /// Size of the upload.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not a readable zip archive.
    #[error("code is not a zip archive: {0}")]
    NotZip(String),
    /// More entries than allowed.
    #[error("code zip has {count} entries: the limit is {limit}; leave out files the function does not need")]
    TooManyEntries {
        /// Entries found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The files inflate to more than allowed (counted while inflating).
    #[error("code unpacks to more than {mb} MB: keep the uncompressed code under {mb} MB (large data belongs in object storage, not in the package)", mb = limit >> 20)]
    UncompressedTooLarge {
        /// The limit.
        limit: u64,
    },
    /// An entry with an absolute path.
    #[error("zip entry {0:?} has an absolute path: paths in the zip must be relative to its root")]
    AbsolutePath(String),
    /// An entry with a `..` component.
    #[error(
        "zip entry {0:?} contains a '..' component: every path must stay inside the zip's root"
    )]
    ParentDir(String),
    /// An entry whose name uses `\`.
    #[error("zip entry {0:?} contains a backslash: use '/' as the path separator (re-create the zip with a standard zip tool)")]
    Backslash(String),
    /// An entry whose name holds a NUL byte.
    #[error("zip entry {0:?} contains a NUL byte in its name: rename it")]
    NulInName(String),
    /// An entry whose name has no file name in it (`""`, `"."`).
    #[error("zip entry {0:?} has no file name: remove it")]
    EmptyName(String),
    /// A symbolic link.
    #[error(
        "zip entry {0:?} is a symbolic link: links are not allowed, put the file itself in the zip"
    )]
    Symlink(String),
    /// A device, FIFO, socket or other entry that is neither a file nor a directory.
    #[error("zip entry {path:?} is not a regular file or directory (mode {mode:o}): only files and directories are allowed")]
    SpecialFile {
        /// The entry's name.
        path: String,
        /// Its unix mode.
        mode: u32,
    },
    /// A password-protected entry.
    #[error("zip entry {0:?} is encrypted: upload a zip without a password")]
    Encrypted(String),
    /// An entry compressed with a method hearth does not inflate.
    #[error("zip entry {path:?} uses compression method {method}: re-create the zip with deflate or no compression")]
    UnsupportedCompression {
        /// The entry's name.
        path: String,
        /// The method, as the zip names it.
        method: String,
    },
    /// Two entries with the same path.
    #[error("zip holds {0:?} more than once: each path may appear only once")]
    DuplicatePath(String),
    /// A path that is a file in one entry and a directory in another.
    #[error("zip entry {0:?} is both a file and a directory: rename one of them")]
    PathConflict(String),
    /// An entry whose data cannot be inflated or does not match its checksum or size.
    #[error("zip entry {path:?} is corrupt: {reason}; re-create the zip")]
    Corrupt {
        /// The entry's name.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The runtime's entrypoint is not at the root.
    #[error("{}", missing_entrypoint_message(*runtime, found.as_deref()))]
    MissingEntrypoint {
        /// The function's runtime.
        runtime: Runtime,
        /// Where a file of that name was found instead, if anywhere.
        found: Option<String>,
    },
}

fn missing_entrypoint_message(runtime: Runtime, found: Option<&str>) -> String {
    let entry = runtime.entrypoint();
    let needs = match runtime {
        Runtime::Python => "main.py with handler(event, context)",
        Runtime::Nodejs => "index.js exporting handler(event, context)",
        Runtime::Cpp => "main.cpp with a handler or a main function",
        Runtime::Go => "main.go with a Handler or a main function",
    };
    let mut message =
        format!("{entry} not found at the root of the zip: a {runtime} function needs {needs}");
    if let Some(path) = found {
        message.push_str(&format!(
            " (found {path:?}: move it to the root of the zip)"
        ));
    }
    message
}

/// What one kept path is in the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File { index: usize, executable: bool },
}

/// Checks a code package and re-packs it as a tar; see the module doc.
///
/// Order of checks: zip size, entry count, names and entry types of every entry (before
/// inflating a byte), the entrypoint, then the data under the uncompressed budget.
/// `__MACOSX/` and `.DS_Store` entries are checked for safe names, then left out. When
/// the entrypoint is not at the root but the zip holds exactly one top-level directory
/// that has it (the user zipped the folder), that directory becomes the root.
pub fn inspect_zip(
    zip_bytes: &[u8],
    runtime: Runtime,
    limits: &PackageLimits,
) -> Result<CodePackage, PackageError> {
    let size = zip_bytes.len() as u64;
    if size > limits.max_zip_bytes {
        return Err(PackageError::ZipTooLarge {
            size,
            limit: limits.max_zip_bytes,
        });
    }
    // Every entry the zip reader parses starts with a central-header signature, so
    // counting signatures bounds the entries before the reader allocates for them.
    let signatures = count_signatures(zip_bytes, &CENTRAL_HEADER_SIG);
    if signatures > limits.max_entries {
        return Err(PackageError::TooManyEntries {
            count: signatures,
            limit: limits.max_entries,
        });
    }
    let mut archive =
        ZipArchive::new(Cursor::new(zip_bytes)).map_err(|e| PackageError::NotZip(e.to_string()))?;
    check_no_duplicates(zip_bytes, &archive)?;
    if archive.len() > limits.max_entries {
        return Err(PackageError::TooManyEntries {
            count: archive.len(),
            limit: limits.max_entries,
        });
    }

    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut declared_total: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| PackageError::NotZip(format!("entry {index}: {e}")))?;
        let name = entry.name().to_string();
        let components = checked_components(&name)?;
        let is_dir = check_entry_type(&name, entry.unix_mode())?;
        if is_ignored(&components) {
            continue;
        }
        if entry.encrypted() {
            return Err(PackageError::Encrypted(name));
        }
        if components.is_empty() {
            if is_dir {
                continue; // "./": the root itself.
            }
            return Err(PackageError::EmptyName(name));
        }
        let node = if is_dir {
            Node::Dir
        } else {
            match entry.compression() {
                CompressionMethod::Stored | CompressionMethod::Deflated => {}
                other => {
                    return Err(PackageError::UnsupportedCompression {
                        path: name,
                        method: other.to_string(),
                    })
                }
            }
            declared_total = declared_total.saturating_add(entry.size());
            Node::File {
                index,
                executable: entry.unix_mode().is_some_and(|m| m & 0o111 != 0),
            }
        };
        insert_node(&mut nodes, &components, node, &name)?;
    }
    // Declared sizes may lie low (checked again while inflating) but never usefully
    // high: refuse an honest oversized package before inflating anything.
    if declared_total > limits.max_uncompressed_bytes {
        return Err(PackageError::UncompressedTooLarge {
            limit: limits.max_uncompressed_bytes,
        });
    }
    let nodes = locate_root(nodes, runtime)?;

    // Sized for honest headers (data + a header block and padding per entry + the end),
    // so building the tar does not double its buffer.
    let capacity = declared_total.saturating_add(1024 * (nodes.len() as u64 + 2));
    let mut tar = tar::Builder::new(Vec::with_capacity(
        usize::try_from(capacity).unwrap_or(usize::MAX).min(1 << 30),
    ));
    let mut budget = limits.max_uncompressed_bytes;
    let mut files = 0;
    let mut buf = Vec::new();
    for (path, node) in &nodes {
        match *node {
            Node::Dir => append(&mut tar, &format!("{path}/"), 0o755, &[])?,
            Node::File { index, executable } => {
                let mut entry = archive.by_index(index).map_err(|e| PackageError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let declared = entry.size();
                buf.clear();
                buf.reserve(usize::try_from(declared.min(budget)).unwrap_or(0));
                // Read at most one byte past the budget: enough to know it is exceeded,
                // whatever the headers claim.
                let read = (&mut entry)
                    .take(budget.saturating_add(1))
                    .read_to_end(&mut buf)
                    .map_err(|e| PackageError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })? as u64;
                if read > budget {
                    return Err(PackageError::UncompressedTooLarge {
                        limit: limits.max_uncompressed_bytes,
                    });
                }
                if read != declared {
                    return Err(PackageError::Corrupt {
                        path: path.clone(),
                        reason: format!("it declares {declared} bytes but holds {read}"),
                    });
                }
                budget -= read;
                files += 1;
                let mode = if executable { 0o755 } else { 0o644 };
                append(&mut tar, path, mode, &buf)?;
            }
        }
    }
    let tar = tar.into_inner().map_err(|e| tar_error("", e))?;
    Ok(CodePackage {
        sha256: hex::encode(Sha256::digest(zip_bytes)),
        size,
        files,
        uncompressed_size: limits.max_uncompressed_bytes - budget,
        tar,
    })
}

fn count_signatures(bytes: &[u8], sig: &[u8; 4]) -> usize {
    bytes.windows(4).filter(|w| *w == sig).count()
}

/// The zip reader keeps only the last of several entries with the same name, so walk
/// the central directory ourselves to see every entry it lists.
fn check_no_duplicates(
    zip_bytes: &[u8],
    archive: &ZipArchive<Cursor<&[u8]>>,
) -> Result<(), PackageError> {
    let mut pos = usize::try_from(archive.central_directory_start()).unwrap_or(usize::MAX);
    let mut seen = HashSet::new();
    let mut count = 0usize;
    while let Some(header) = pos
        .checked_add(CENTRAL_HEADER_LEN)
        .and_then(|end| zip_bytes.get(pos..end))
    {
        if header[..4] != CENTRAL_HEADER_SIG {
            break;
        }
        let field = |at: usize| usize::from(u16::from_le_bytes([header[at], header[at + 1]]));
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let name_start = pos + CENTRAL_HEADER_LEN;
        let Some(name) = zip_bytes.get(name_start..name_start + name_len) else {
            break;
        };
        if !seen.insert(name) {
            return Err(PackageError::DuplicatePath(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        count += 1;
        pos = name_start + name_len + extra_len + comment_len;
    }
    if count > archive.len() {
        return Err(PackageError::DuplicatePath(
            "(a name given twice in different encodings)".to_string(),
        ));
    }
    Ok(())
}

/// Splits an entry name into its components, refusing every unsafe form. `.` and
/// empty components (`./a`, `a//b`) are dropped; a trailing `/` marks a directory.
fn checked_components(name: &str) -> Result<Vec<&str>, PackageError> {
    if name.contains('\0') {
        return Err(PackageError::NulInName(name.to_string()));
    }
    if name.contains('\\') {
        return Err(PackageError::Backslash(name.to_string()));
    }
    if name.starts_with('/') {
        return Err(PackageError::AbsolutePath(name.to_string()));
    }
    let mut components = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PackageError::ParentDir(name.to_string())),
            part => components.push(part),
        }
    }
    Ok(components)
}

/// Whether the entry is a directory; refuses links and special files.
fn check_entry_type(name: &str, unix_mode: Option<u32>) -> Result<bool, PackageError> {
    let by_name = name.ends_with('/');
    let Some(mode) = unix_mode else {
        return Ok(by_name);
    };
    match mode & S_IFMT {
        0 | S_IFREG => Ok(by_name),
        S_IFDIR => Ok(true),
        S_IFLNK => Err(PackageError::Symlink(name.to_string())),
        _ => Err(PackageError::SpecialFile {
            path: name.to_string(),
            mode,
        }),
    }
}

/// macOS Finder litter: resource forks and folder view settings.
fn is_ignored(components: &[&str]) -> bool {
    components.first() == Some(&"__MACOSX") || components.last() == Some(&".DS_Store")
}

fn insert_node(
    nodes: &mut BTreeMap<String, Node>,
    components: &[&str],
    node: Node,
    name: &str,
) -> Result<(), PackageError> {
    let mut path = String::new();
    for (i, component) in components.iter().enumerate() {
        if i > 0 {
            path.push('/');
        }
        path.push_str(component);
        let last = i + 1 == components.len();
        let wanted = if last { node } else { Node::Dir };
        match nodes.entry(path.clone()) {
            Entry::Vacant(slot) => {
                slot.insert(wanted);
            }
            Entry::Occupied(slot) => match (*slot.get(), wanted) {
                (Node::Dir, Node::Dir) => {}
                (Node::File { .. }, Node::File { .. }) => {
                    return Err(PackageError::DuplicatePath(name.to_string()))
                }
                _ => return Err(PackageError::PathConflict(path)),
            },
        }
    }
    Ok(())
}

/// Finds the entrypoint at the root, or under the single top-level directory (which
/// then becomes the root).
fn locate_root(
    nodes: BTreeMap<String, Node>,
    runtime: Runtime,
) -> Result<BTreeMap<String, Node>, PackageError> {
    let entry = runtime.entrypoint();
    let is_file = |nodes: &BTreeMap<String, Node>, path: &str| {
        matches!(nodes.get(path), Some(Node::File { .. }))
    };
    if is_file(&nodes, entry) {
        return Ok(nodes);
    }
    let mut top_level = nodes.keys().filter(|k| !k.contains('/'));
    if let (Some(top), None) = (top_level.next(), top_level.next()) {
        if nodes.get(top) == Some(&Node::Dir) && is_file(&nodes, &format!("{top}/{entry}")) {
            let prefix = format!("{top}/");
            return Ok(nodes
                .into_iter()
                .filter_map(|(path, node)| {
                    path.strip_prefix(&prefix)
                        .map(|rest| (rest.to_string(), node))
                })
                .collect());
        }
    }
    let found = nodes
        .iter()
        .find(|(path, node)| {
            matches!(node, Node::File { .. }) && path.rsplit('/').next() == Some(entry)
        })
        .map(|(path, _)| path.clone());
    Err(PackageError::MissingEntrypoint { runtime, found })
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> Result<(), PackageError> {
    hearth_core::tarball::append_entry(tar, path, mode, data).map_err(|e| tar_error(path, e))
}

/// Writing a tar into memory fails only on a path the tar format cannot hold.
fn tar_error(path: &str, e: std::io::Error) -> PackageError {
    PackageError::Corrupt {
        path: path.to_string(),
        reason: format!("cannot be re-packed as tar: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    use zip::ZipWriter;

    const PY: &[u8] = b"def handler(event, context):\n    return event\n";

    /// Builds a zip from (name, contents, unix mode); a name ending in '/' is a dir.
    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            let opts = SimpleFileOptions::default().unix_permissions(*mode);
            if name.ends_with('/') {
                w.add_directory(*name, opts).unwrap();
            } else {
                w.start_file(*name, opts).unwrap();
                w.write_all(data).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn files(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let with_mode: Vec<_> = entries.iter().map(|(n, d)| (*n, *d, 0o644)).collect();
        zip_of(&with_mode)
    }

    fn inspect(zip: &[u8]) -> Result<CodePackage, PackageError> {
        inspect_zip(zip, Runtime::Python, &PackageLimits::default())
    }

    /// (path, mode, entry type, contents) of every tar entry, in order.
    fn tar_entries(tar: &[u8]) -> Vec<(String, u32, tar::EntryType, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                assert_eq!(h.mtime().unwrap(), 0);
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                (path, h.mode().unwrap(), h.entry_type(), data)
            })
            .collect()
    }

    #[test]
    fn a_good_zip_becomes_a_tar_of_exactly_its_files() {
        let zip = zip_of(&[
            ("main.py", PY, 0o644),
            ("lib/", b"", 0o755),
            ("lib/util.py", b"X = 1\n", 0o644),
            ("bin/run.sh", b"#!/bin/sh\n", 0o755),
        ]);
        let package = inspect(&zip).unwrap();
        assert_eq!(package.size, zip.len() as u64);
        assert_eq!(package.sha256, hex::encode(Sha256::digest(&zip)));
        assert_eq!(package.files, 3);
        assert_eq!(package.uncompressed_size, (PY.len() + 6 + 10) as u64);
        let entries = tar_entries(&package.tar);
        let summary: Vec<_> = entries
            .iter()
            .map(|(p, m, t, d)| (p.as_str(), *m, t.is_dir(), d.as_slice()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("bin/", 0o755, true, &b""[..]),
                ("bin/run.sh", 0o755, false, &b"#!/bin/sh\n"[..]),
                ("lib/", 0o755, true, &b""[..]),
                ("lib/util.py", 0o644, false, &b"X = 1\n"[..]),
                ("main.py", 0o644, false, PY),
            ]
        );
    }

    #[test]
    fn long_and_dotted_paths_survive_the_tar() {
        let long = format!("{}deep.py", "dir/".repeat(40));
        let zip = files(&[("./main.py", PY), (&long, b"deep")]);
        let package = inspect(&zip).unwrap();
        let entries = tar_entries(&package.tar);
        let last = entries.last().unwrap();
        assert_eq!((last.0.as_str(), last.3.as_slice()), ("main.py", PY));
        assert!(entries.iter().any(|(p, .., d)| *p == long && d == b"deep"));
        assert_eq!(entries.len(), 40 + 2);
    }

    #[test]
    fn the_same_zip_gives_the_same_tar() {
        let zip = files(&[("main.py", PY), ("a/b.txt", b"b")]);
        assert_eq!(inspect(&zip).unwrap().tar, inspect(&zip).unwrap().tar);
    }

    #[test]
    fn a_zipped_folder_is_unwrapped() {
        let zip = zip_of(&[
            ("myfn/", b"", 0o755),
            ("myfn/main.py", PY, 0o644),
            ("myfn/pkg/mod.py", b"m", 0o644),
            ("__MACOSX/myfn/._main.py", b"junk", 0o644),
            ("myfn/.DS_Store", b"junk", 0o644),
        ]);
        let package = inspect(&zip).unwrap();
        let paths: Vec<_> = tar_entries(&package.tar)
            .into_iter()
            .map(|(p, ..)| p)
            .collect();
        assert_eq!(paths, ["main.py", "pkg/", "pkg/mod.py"]);
        assert_eq!(package.files, 2);
    }

    #[test]
    fn no_unwrapping_when_there_are_two_top_level_entries() {
        let zip = files(&[("myfn/main.py", PY), ("README.md", b"r")]);
        let err = inspect(&zip).unwrap_err();
        assert_eq!(
            err,
            PackageError::MissingEntrypoint {
                runtime: Runtime::Python,
                found: Some("myfn/main.py".into())
            }
        );
        assert!(err.to_string().contains("move it to the root"), "{err}");
    }

    #[test]
    fn a_missing_entrypoint_names_what_the_runtime_needs() {
        let zip = files(&[("handler.py", PY)]);
        assert_eq!(
            inspect(&zip).unwrap_err().to_string(),
            "main.py not found at the root of the zip: a python function needs main.py with handler(event, context)"
        );
        let err = inspect_zip(&zip, Runtime::Nodejs, &PackageLimits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "index.js not found at the root of the zip: a nodejs function needs index.js exporting handler(event, context)"
        );
        // A directory named like the entrypoint is not the entrypoint.
        let zip = zip_of(&[("main.py/", b"", 0o755), ("main.py/x", b"x", 0o644)]);
        assert!(matches!(
            inspect(&zip),
            Err(PackageError::MissingEntrypoint { .. })
        ));
    }

    #[test]
    fn nodejs_finds_index_js() {
        let zip = files(&[("index.js", b"exports.handler = async (e) => e;")]);
        let package = inspect_zip(&zip, Runtime::Nodejs, &PackageLimits::default()).unwrap();
        assert_eq!(package.files, 1);
    }

    #[test]
    fn not_a_zip() {
        let err = inspect(b"this is not a zip").unwrap_err();
        assert!(matches!(err, PackageError::NotZip(_)));
        assert!(
            err.to_string().starts_with("code is not a zip archive: "),
            "{err}"
        );
        assert!(matches!(inspect(b""), Err(PackageError::NotZip(_))));
    }

    #[test]
    fn an_oversized_zip_is_refused_before_reading() {
        let zip = files(&[("main.py", PY)]);
        let limits = PackageLimits {
            max_zip_bytes: zip.len() as u64 - 1,
            ..Default::default()
        };
        assert_eq!(
            inspect_zip(&zip, Runtime::Python, &limits),
            Err(PackageError::ZipTooLarge {
                size: zip.len() as u64,
                limit: zip.len() as u64 - 1
            })
        );
    }

    #[test]
    fn too_many_entries() {
        let names: Vec<String> = (0..11).map(|i| format!("f{i}.py")).collect();
        let mut entries: Vec<(&str, &[u8])> =
            names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        entries.push(("main.py", PY));
        let zip = files(&entries);
        let limits = PackageLimits {
            max_entries: 10,
            ..Default::default()
        };
        assert_eq!(
            inspect_zip(&zip, Runtime::Python, &limits),
            Err(PackageError::TooManyEntries {
                count: 12,
                limit: 10
            })
        );
        let limits = PackageLimits {
            max_entries: 12,
            ..Default::default()
        };
        assert!(inspect_zip(&zip, Runtime::Python, &limits).is_ok());
    }

    #[test]
    fn too_large_uncompressed_by_honest_headers() {
        let zip = files(&[("main.py", PY), ("data.bin", &[7u8; 4096])]);
        let limits = PackageLimits {
            max_uncompressed_bytes: 4096,
            ..Default::default()
        };
        assert_eq!(
            inspect_zip(&zip, Runtime::Python, &limits),
            Err(PackageError::UncompressedTooLarge { limit: 4096 })
        );
    }

    /// Offsets of the local and central headers of the entry named `name`.
    fn headers_of(zip: &[u8], name: &str) -> Vec<(usize, bool)> {
        let mut found = Vec::new();
        for i in 0..zip.len().saturating_sub(46) {
            let (central, name_at) = match &zip[i..i + 4] {
                b"PK\x03\x04" => (false, i + 30),
                b"PK\x01\x02" => (true, i + 46),
                _ => continue,
            };
            let len_at = if central { i + 28 } else { i + 26 };
            let len = usize::from(u16::from_le_bytes([zip[len_at], zip[len_at + 1]]));
            if zip.get(name_at..name_at + len) == Some(name.as_bytes()) {
                found.push((i, central));
            }
        }
        assert_eq!(found.len(), 2, "headers of {name}");
        found
    }

    /// Rewrites the uncompressed size that `name` declares, as a zip bomb would.
    fn lie_about_size(zip: &mut [u8], name: &str, size: u32) {
        for (at, central) in headers_of(zip, name) {
            let field = if central { at + 24 } else { at + 22 };
            zip[field..field + 4].copy_from_slice(&size.to_le_bytes());
        }
    }

    /// Rewrites the unix mode (file type included) of `name` in the central directory.
    fn set_unix_mode(zip: &mut [u8], name: &str, mode: u32) {
        for (at, central) in headers_of(zip, name) {
            if central {
                zip[at + 5] = 3; // made by: unix
                zip[at + 38..at + 42].copy_from_slice(&(mode << 16).to_le_bytes());
            }
        }
    }

    /// main.py plus `zeros.bin` holding `mib` MiB of zeros, streamed through the writer.
    fn bomb(mib: usize) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("main.py", SimpleFileOptions::default())
            .unwrap();
        w.write_all(PY).unwrap();
        w.start_file("zeros.bin", SimpleFileOptions::default())
            .unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..mib {
            w.write_all(&chunk).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn a_zip_bomb_is_stopped_while_inflating() {
        // 300 MiB of zeros deflate to about 300 KB.
        let mut zip = bomb(300);
        assert!(zip.len() < 2 << 20, "bomb is {} bytes", zip.len());
        let too_large = Err(PackageError::UncompressedTooLarge {
            limit: MAX_UNCOMPRESSED_BYTES,
        });
        // Honest headers: refused before inflating.
        assert_eq!(inspect(&zip), too_large);
        // Headers that claim 10 bytes: refused once 250 MiB have really been inflated.
        lie_about_size(&mut zip, "zeros.bin", 10);
        assert_eq!(inspect(&zip), too_large);
    }

    #[test]
    fn a_size_lie_within_the_budget_is_corruption() {
        let mut zip = bomb(1);
        lie_about_size(&mut zip, "zeros.bin", 10);
        let limits = PackageLimits {
            max_uncompressed_bytes: 64 * 1024,
            ..Default::default()
        };
        assert_eq!(
            inspect_zip(&zip, Runtime::Python, &limits),
            Err(PackageError::UncompressedTooLarge { limit: 64 * 1024 })
        );
        assert_eq!(
            inspect(&zip),
            Err(PackageError::Corrupt {
                path: "zeros.bin".into(),
                reason: "it declares 10 bytes but holds 1048576".into()
            })
        );
    }

    type MakeError = fn(String) -> PackageError;

    #[test]
    fn unsafe_names_are_refused() {
        let cases: [(&str, MakeError); 6] = [
            ("/etc/passwd", PackageError::AbsolutePath),
            ("../evil.py", PackageError::ParentDir),
            ("lib/../../evil.py", PackageError::ParentDir),
            ("lib\\evil.py", PackageError::Backslash),
            ("..\\evil.py", PackageError::Backslash),
            ("lib/a\0b.py", PackageError::NulInName),
        ];
        for (name, expected) in cases {
            let zip = files(&[("main.py", PY), (name, b"x")]);
            assert_eq!(inspect(&zip), Err(expected(name.to_string())), "{name:?}");
        }
    }

    #[test]
    fn symlinks_and_special_files_are_refused() {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("main.py", SimpleFileOptions::default())
            .unwrap();
        w.write_all(PY).unwrap();
        w.add_symlink("link.py", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        let zip = w.finish().unwrap().into_inner();
        assert_eq!(inspect(&zip), Err(PackageError::Symlink("link.py".into())));

        // A symlink made by another tool: the mode says link, the name says file.
        let mut zip = zip_of(&[("main.py", PY, 0o644), ("lib/x.py", b"/etc", 0o644)]);
        set_unix_mode(&mut zip, "lib/x.py", 0o120_777);
        assert_eq!(inspect(&zip), Err(PackageError::Symlink("lib/x.py".into())));

        let mut zip = zip_of(&[("main.py", PY, 0o644), ("fifo", b"", 0o644)]);
        set_unix_mode(&mut zip, "fifo", 0o010_644);
        assert_eq!(
            inspect(&zip),
            Err(PackageError::SpecialFile {
                path: "fifo".into(),
                mode: 0o010_644
            })
        );
    }

    #[test]
    fn duplicate_paths_are_refused() {
        // The same path spelled twice.
        let zip = files(&[("main.py", PY), ("a/b.py", b"1"), ("a//b.py", b"2")]);
        assert_eq!(
            inspect(&zip),
            Err(PackageError::DuplicatePath("a//b.py".into()))
        );
        // Byte-identical names, which the zip writer refuses to make: patch them in.
        let mut zip = files(&[("main.py", PY), ("mainXpy", b"evil")]);
        let positions: Vec<usize> = zip
            .windows(7)
            .enumerate()
            .filter(|(_, w)| *w == b"mainXpy")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(positions.len(), 2);
        for i in positions {
            zip[i + 4] = b'.';
        }
        assert_eq!(
            inspect(&zip),
            Err(PackageError::DuplicatePath("main.py".into()))
        );
        // A path that is a file and a directory.
        let zip = files(&[("main.py", PY), ("lib", b"f"), ("lib/x.py", b"x")]);
        assert_eq!(inspect(&zip), Err(PackageError::PathConflict("lib".into())));
    }

    #[test]
    fn encrypted_entries_are_refused() {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("main.py", SimpleFileOptions::default())
            .unwrap();
        w.write_all(PY).unwrap();
        let zip = w.finish().unwrap().into_inner();
        // Set the "encrypted" flag (bit 0) in the central header.
        let mut zip = zip;
        let at = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        zip[at + 8] |= 1;
        assert_eq!(
            inspect(&zip),
            Err(PackageError::Encrypted("main.py".into()))
        );
    }

    #[test]
    fn corrupt_data_is_refused() {
        let mut zip = zip_of(&[("main.py", PY, 0o644)]);
        // Flip a byte of the stored CRC-32 in the central header.
        let at = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        zip[at + 16] ^= 0xff;
        assert!(matches!(inspect(&zip), Err(PackageError::Corrupt { .. })));
    }
}
