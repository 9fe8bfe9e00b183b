//! Turning a function directory into the zip the API takes.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::Path;

/// Directory names never packed: caches and VCS data, not code.
const SKIPPED_DIRS: &[&str] = &[".git", "__pycache__", ".hearth"];

/// The zip bytes for `path`: a directory is zipped, a `.zip` file is taken as it is.
pub fn zip_path(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_file() {
        return std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    }
    if !meta.is_dir() {
        bail!("{} is neither a directory nor a zip file", path.display());
    }
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    add_dir(&mut writer, path, "")?;
    Ok(writer.finish()?.into_inner())
}

fn add_dir(
    writer: &mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>,
    dir: &Path,
    prefix: &str,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        let zip_name = format!("{prefix}{name}");
        if kind.is_dir() {
            if SKIPPED_DIRS.contains(&name.as_str()) {
                continue;
            }
            writer.add_directory(
                format!("{zip_name}/"),
                zip::write::SimpleFileOptions::default(),
            )?;
            add_dir(writer, &entry.path(), &format!("{zip_name}/"))?;
        } else if kind.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata()?.permissions().mode() & 0o777;
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(mode);
            writer.start_file(zip_name, options)?;
            writer.write_all(&std::fs::read(entry.path())?)?;
        }
        // Symlinks and special files are left out: the platform refuses them.
    }
    Ok(())
}
