//! Layers on disk: the scratch dirs fetches work in, packing a fetched tree into a layer
//! tar, unpacking a layer once per worker, and running a fetch client.
//!
//! An unpacked layer lives at `<dir>/layers/<key>`: made under a temporary name and
//! renamed into place when whole, owned by the worker's user, never written again
//! (immutable: its key is the hash of what decided its content). Links in a layer must
//! stay inside it.

use super::DepsError;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncReadExt;

/// Where a worker's unpacked layers are.
pub fn layers_dir(dir: &Path) -> PathBuf {
    dir.join("layers")
}

/// A scratch dir for one fetch, removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh dir under `<dir>/scratch`.
    pub fn new(dir: &Path) -> Result<Scratch, DepsError> {
        let parent = dir.join("scratch");
        std::fs::create_dir_all(&parent)
            .map_err(|e| DepsError::platform(&format!("making {}", parent.display()), e))?;
        let dir = tempfile::Builder::new()
            .prefix("fetch-")
            .tempdir_in(&parent)
            .map_err(|e| DepsError::platform("making a scratch dir", e))?;
        Ok(Scratch { dir })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Bytes of the regular files under `dir` (links not followed).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(here) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&here) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// An uncompressed tar of `dir` under `prefix/`: links kept as links, modes made
/// plain (directories 0755, files 0644 or 0755), owners dropped.
pub fn pack_dir(dir: &Path, prefix: &str) -> Result<Vec<u8>, DepsError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    let io = |e: std::io::Error| DepsError::platform("packing the layer", e);
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&here)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = rel.join(entry.file_name());
            let name = Path::new(prefix).join(&rel);
            let kind = entry.file_type().map_err(io)?;
            if kind.is_dir() {
                builder.append_dir(&name, entry.path()).map_err(io)?;
                stack.push(rel);
            } else {
                builder
                    .append_path_with_name(entry.path(), &name)
                    .map_err(io)?;
            }
        }
    }
    builder.into_inner().map_err(io)
}

/// Whether link `target`, found at `entry` (relative to the layer's root), stays
/// inside the layer.
fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = entry.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Unpacks layer `tar` at `<root>/<key>` unless it is there already; its path.
pub fn unpack_once(tar: &[u8], root: &Path, key: &str) -> Result<PathBuf, DepsError> {
    let dir = root.join(key);
    if dir.is_dir() {
        return Ok(dir);
    }
    let io = |what: &str, e: std::io::Error| DepsError::platform(what, e);
    std::fs::create_dir_all(root).map_err(|e| io("making the layers dir", e))?;
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{key}-"))
        .tempdir_in(root)
        .map_err(|e| io("making a layer dir", e))?;
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    archive.set_preserve_mtime(true);
    for entry in archive.entries().map_err(|e| io("reading the layer", e))? {
        let mut entry = entry.map_err(|e| io("reading the layer", e))?;
        let path = entry
            .path()
            .map_err(|e| io("reading the layer", e))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| io("reading the layer", e))?
                .unwrap_or_default();
            if kind.is_hard_link() || !link_stays_inside(&path, &target) {
                return Err(DepsError::Refused(format!(
                    "the installed packages hold a link leaving them: {} -> {}",
                    path.display(),
                    target.display()
                )));
            }
        } else if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        entry
            .unpack_in(partial.path())
            .map_err(|e| io(&format!("unpacking {}", path.display()), e))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(partial.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("opening the layer dir", e))?;
    let made = partial.keep();
    match std::fs::rename(&made, &dir) {
        Ok(()) => Ok(dir),
        // Another unpacking of the same layer won the race: keep theirs.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&made);
            Ok(dir)
        }
        Err(e) => Err(io("placing the layer", e)),
    }
}

/// What a fetch client printed, and whether it succeeded.
pub struct Ran {
    /// Exit status 0.
    pub ok: bool,
    /// stdout then stderr, lossy UTF-8, the last 256 KB.
    pub output: String,
}

/// Runs `program` with exactly `env` (nothing of the worker's environment) in `cwd`;
/// killed when the caller's deadline drops the future.
pub async fn run(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> Result<Ran, DepsError> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| {
        DepsError::Unavailable(format!("cannot run {program} to fetch dependencies: {e}"))
    })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read_out = async {
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
    };
    let read_err = async {
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
    };
    tokio::join!(read_out, read_err);
    let status = child
        .wait()
        .await
        .map_err(|e| DepsError::platform(&format!("waiting for {program}"), e))?;
    out.extend_from_slice(&err);
    let keep = out.len().saturating_sub(256 << 10);
    Ok(Ran {
        ok: status.success(),
        output: String::from_utf8_lossy(&out[keep..]).into_owned(),
    })
}

/// PATH for fetch clients: the system's directories only.
pub const FETCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_stay_inside_the_layer() {
        let at = |e: &str, t: &str| link_stays_inside(Path::new(e), Path::new(t));
        assert!(at("node_modules/.bin/x", "../x/bin.js"));
        assert!(at("a/b", "c"));
        assert!(!at("a", "../../etc/passwd"));
        assert!(!at("node_modules/.bin/x", "../../../etc"));
        assert!(!at("a/b", "/etc/passwd"));
    }

    #[test]
    fn layers_unpack_once_and_refuse_escaping_links() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("pkg/.bin")).unwrap();
        std::fs::write(src.path().join("pkg/mod.py"), "X = 1\n").unwrap();
        std::os::unix::fs::symlink("../mod.py", src.path().join("pkg/.bin/m")).unwrap();
        let tar = pack_dir(src.path(), "python").unwrap();
        let root = tempfile::tempdir().unwrap();
        let dir = unpack_once(&tar, root.path(), "k1").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("python/pkg/.bin/m")).unwrap(),
            "X = 1\n"
        );
        assert_eq!(dir_size(&dir), 6);
        // Already there: not unpacked again (a broken tar is not even read).
        assert_eq!(unpack_once(b"junk", root.path(), "k1").unwrap(), dir);

        std::os::unix::fs::symlink("/etc", src.path().join("pkg/etc")).unwrap();
        let tar = pack_dir(src.path(), "python").unwrap();
        let err = unpack_once(&tar, root.path(), "k2").unwrap_err();
        assert!(err.to_string().contains("link leaving"), "{err}");
        assert!(!root.path().join("k2").exists());
    }
}
