//! Unpacking the function's code tar, and writing the runtimes' bootstrap files.
//!
//! The tar comes from the worker, but its content was uploaded by a user: every entry must
//! be a relative path that stays inside the code directory, links included; device nodes,
//! fifos and absolute or `..` paths are refused. Files end up world-readable (and
//! executable when any execute bit was set), directories 0755, never setuid.

use crate::error::{AgentError, ConfigError, PackageError};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// The bootstrap files every runtime needs, as (path under the runtime dir, content).
pub const RUNTIME_FILES: &[(&str, &str)] = &[
    (
        "python/bootstrap.py",
        include_str!("../../../runtimes/python/bootstrap.py"),
    ),
    (
        "python/sdk.py",
        include_str!("../../../runtimes/python/sdk.py"),
    ),
    (
        "nodejs/bootstrap.js",
        include_str!("../../../runtimes/nodejs/bootstrap.js"),
    ),
];

/// Writes [`RUNTIME_FILES`] under `dir` (0644, directories 0755). A file already there
/// with the same content is left alone: a container image carries them, baked in by
/// `hearth images build`, on a read-only root.
pub fn write_runtime_files(dir: &Path) -> Result<(), AgentError> {
    for (rel, content) in RUNTIME_FILES {
        let path = dir.join(rel);
        if fs::read(&path).is_ok_and(|present| present == content.as_bytes()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| AgentError::at("create", parent, e))?;
            set_mode(parent, 0o755)?;
        }
        fs::write(&path, content).map_err(|e| AgentError::at("write", &path, e))?;
        set_mode(&path, 0o644)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), AgentError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| AgentError::at("chmod", path, e))
}

/// `path` as plain relative components, or `None` if it is absolute or climbs with `..`.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a symlink at `entry` (relative to the code dir) pointing at `target` resolves
/// inside the code dir, judged on the names alone.
fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    let mut depth = entry.components().count().saturating_sub(1) as isize;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Unpacks `tar_bytes` into `dest` in a child process that has left root for `id` (uid
/// and gid, no capabilities, no-new-privileges): whatever a hostile tar gets past the
/// checks of [`extract`], it does with no more power than that uid has over `dest`,
/// which is made its own first. Called by root, after the pivot, so no host path is
/// there to reach either. Returns the number of entries.
pub fn extract_as(tar_bytes: &[u8], dest: &Path, id: u32) -> Result<usize, AgentError> {
    let c = std::ffi::CString::new(dest.as_os_str().as_encoded_bytes())
        .map_err(|_| ConfigError::NulInPath(dest.to_path_buf()))?;
    // SAFETY: `c` is a NUL-terminated path; lchown never follows a link.
    if unsafe { libc::lchown(c.as_ptr(), id, id) } != 0 {
        return Err(AgentError::last_os(format!("chown {}", dest.display())));
    }
    unpack_in_child(tar_bytes, dest, &|| {
        crate::privileges::drop_to(id, id, None)
    })
}

/// Unpacks `tar_bytes` into a stem's `dest` (already `id`'s) after the agent has left
/// root: in a child that becomes `id` wholly (the agent's own real and saved ids, so no
/// privilege is needed), never as the function's uid, which must not own its code.
pub fn extract_as_agent(tar_bytes: &[u8], dest: &Path, id: u32) -> Result<usize, AgentError> {
    unpack_in_child(tar_bytes, dest, &|| {
        // SAFETY: setters of plain integers.
        let ret = unsafe {
            if libc::setresgid(id, id, id) != 0 {
                -1
            } else {
                libc::setresuid(id, id, id)
            }
        };
        crate::error::check(ret, || format!("become {id} to unpack"))?;
        Ok(())
    })
}

/// Forks, runs `leave_root` in the child, unpacks there and reports back.
fn unpack_in_child(
    tar_bytes: &[u8],
    dest: &Path,
    leave_root: &dyn Fn() -> Result<(), AgentError>,
) -> Result<usize, AgentError> {
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(AgentError::last_os("pipe for the unpacker"));
    }
    // SAFETY: pipe2 just returned these two descriptors; each is owned once.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the agent is single-threaded while it builds the sandbox, so the child may
    // go on running Rust code (and allocate) until it exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(AgentError::last_os("fork the unpacker"));
    }
    if pid == 0 {
        drop(read_end);
        let outcome = leave_root()
            .and_then(|()| crate::privileges::set_non_dumpable())
            .and_then(|()| extract(tar_bytes, dest));
        let mut report = std::fs::File::from(write_end);
        let code = match outcome {
            Ok(count) => {
                let _ = write!(report, "ok {count}");
                0
            }
            Err(AgentError::Package(refusal)) => {
                let _ = write!(report, "package {refusal}");
                1
            }
            Err(e) => {
                let _ = write!(report, "error {e}");
                1
            }
        };
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(write_end);
    let mut said = String::new();
    let read = std::fs::File::from(read_end).read_to_string(&mut said);
    let waited = crate::process::wait4(pid, false);
    let exited_ok = matches!(&waited, Ok(Some((_, info))) if info.exit_code() == Some(0));
    if read.is_ok() {
        if let Some(count) = said.strip_prefix("ok ").filter(|_| exited_ok) {
            if let Ok(count) = count.parse() {
                return Ok(count);
            }
        }
        for (prefix, bad_package) in [("package ", true), ("error ", false)] {
            if let Some(report) = said.strip_prefix(prefix) {
                let report = report.to_string();
                return Err(AgentError::Unpacker {
                    bad_package,
                    report,
                });
            }
        }
    }
    Err(AgentError::Unpacker {
        bad_package: false,
        report: format!("the unpacker ended ({waited:?}) without a report"),
    })
}

/// Unpacks `tar_bytes` into `dest` (which must exist); returns the number of entries.
pub fn extract(tar_bytes: &[u8], dest: &Path) -> Result<usize, AgentError> {
    let io_err = PackageError::Read;
    let mut archive = tar::Archive::new(tar_bytes);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    let mut count = 0;
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let raw_path = entry.path().map_err(io_err)?.into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let Some(rel) = safe_relative(&raw_path) else {
            return Err(PackageError::OutsidePath(raw_path).into());
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink => {
                let target = entry.link_name().map_err(io_err)?.unwrap_or_default();
                if !link_stays_inside(&rel, &target) {
                    return Err(link_outside("symlink", rel, target.into_owned()));
                }
            }
            EntryType::Link => {
                let target = entry.link_name().map_err(io_err)?.unwrap_or_default();
                if safe_relative(&target).is_none_or(|t| t.as_os_str().is_empty()) {
                    return Err(link_outside("hard link", rel, target.into_owned()));
                }
            }
            other => {
                return Err(PackageError::EntryType {
                    entry: rel,
                    kind: other,
                }
                .into());
            }
        }
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        if !entry
            .unpack_in(dest)
            .map_err(|source| PackageError::Unpack {
                entry: rel.clone(),
                source,
            })?
        {
            return Err(PackageError::Escapes(rel).into());
        }
        let path = dest.join(&rel);
        match kind {
            EntryType::Directory => set_mode(&path, 0o755)?,
            EntryType::Regular | EntryType::Continuous => {
                set_mode(&path, if executable { 0o755 } else { 0o644 })?
            }
            _ => {}
        }
        count += 1;
    }
    Ok(count)
}

fn link_outside(kind: &'static str, entry: PathBuf, target: PathBuf) -> AgentError {
    PackageError::LinkOutside {
        kind,
        entry,
        target,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(EntryType::Regular);
        // set_path refuses "..", so write the raw name like a hostile tar would.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn a_normal_package_unpacks_readable() {
        let tar = tar_of(|b| {
            file(b, "main.py", 0o600, b"print(1)");
            file(b, "lib/run.sh", 0o700, b"#!/bin/sh");
            link(b, EntryType::Symlink, "lib/alias.py", "../main.py");
        });
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(extract(&tar, dir.path()).unwrap(), 3);
        let mode = |p: &str| {
            fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("main.py"), 0o644);
        assert_eq!(mode("lib/run.sh"), 0o755);
        assert_eq!(
            fs::read_to_string(dir.path().join("lib/alias.py")).unwrap(),
            "print(1)"
        );
    }

    #[test]
    fn escaping_entries_are_refused() {
        for tar in [
            tar_of(|b| file(b, "../evil", 0o644, b"x")),
            tar_of(|b| file(b, "/etc/evil", 0o644, b"x")),
            tar_of(|b| link(b, EntryType::Symlink, "out", "../../etc/passwd")),
            tar_of(|b| link(b, EntryType::Symlink, "abs", "/etc/passwd")),
            tar_of(|b| link(b, EntryType::Link, "hard", "/etc/passwd")),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let err = extract(&tar, dir.path()).unwrap_err();
            assert!(matches!(err, AgentError::Package(_)), "{err}");
        }
    }

    #[test]
    fn device_nodes_are_refused() {
        let tar = tar_of(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Char);
            h.set_size(0);
            h.set_path("null").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        assert!(extract(&tar, dir.path()).is_err());
    }

    #[test]
    fn link_names_are_judged_from_their_directory() {
        assert!(link_stays_inside(Path::new("a/b/c"), Path::new("../x")));
        assert!(link_stays_inside(Path::new("a/b/c"), Path::new("../../x")));
        assert!(!link_stays_inside(
            Path::new("a/b/c"),
            Path::new("../../../x")
        ));
        assert!(!link_stays_inside(Path::new("c"), Path::new("/x")));
    }
}
