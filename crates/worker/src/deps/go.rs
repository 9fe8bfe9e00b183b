//! Go: `go.mod`/`go.sum` → a module cache, fetched on the host with `go mod download`
//! from `GOPROXY`, every module checked against the code's `go.sum` (a module `go.sum`
//! does not list is refused: go would have trusted it on first use). Go runs no module
//! code when downloading. The build then runs in its sandbox offline
//! (`GOPROXY=off`), the cache read-only at `/deps/gomod`.
//!
//! Local `replace` directives are refused (the host would read a path the user picked);
//! vendored modules (`vendor/modules.txt`) need no fetch.

use super::layer::{self, Scratch, FETCH_PATH};
use super::python::PASSED_ENV;
use super::{DepsConfig, DepsError, Installed, Manifest, Package};
use hearth_core::protocol::DEPS_GOMOD;
use std::collections::BTreeSet;

/// The default module proxy when the worker names none.
const DEFAULT_GOPROXY: &str = "https://proxy.golang.org";

/// Whether `go.mod` requires any module.
pub fn has_requirements(go_mod: &str) -> bool {
    let mut in_block = false;
    for line in go_mod.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        if in_block {
            if line == ")" {
                in_block = false;
            } else if !line.is_empty() {
                return true;
            }
        } else if line == "require (" || line.starts_with("require(") {
            in_block = true;
        } else if line.starts_with("require ") {
            return true;
        }
    }
    false
}

/// Checks `go.mod` and `go.sum` before anything is fetched.
pub fn check(manifest: &Manifest) -> Result<(), DepsError> {
    let go_mod = manifest
        .file("go.mod")
        .ok_or_else(|| DepsError::Refused("go.mod is not UTF-8 text".into()))?;
    if manifest.file("go.sum").is_none() {
        return Err(DepsError::Refused(
            "go.mod requires modules but the zip has no go.sum: run `go mod tidy` \
                    and deploy again (modules are checked against it)"
                .into(),
        ));
    }
    let mut in_replace = false;
    for line in go_mod.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        let replacement = if in_replace {
            if line == ")" {
                in_replace = false;
            }
            line
        } else if let Some(rest) = line.strip_prefix("replace") {
            if rest.trim() == "(" {
                in_replace = true;
                continue;
            }
            rest
        } else {
            continue;
        };
        if let Some((_, target)) = replacement.split_once("=>") {
            let target = target.trim();
            if target.starts_with('.') || target.starts_with('/') {
                return Err(DepsError::Refused(format!(
                    "go.mod: `replace … => {target}` points at a local path: only modules \
                     from the proxy are supported (vendor local modules with go mod vendor)"
                )));
            }
        }
    }
    Ok(())
}

/// The lines of `after` missing from `before`.
fn added_lines(before: &str, after: &str) -> Vec<String> {
    let had: BTreeSet<&str> = before.lines().map(str::trim).collect();
    after
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !had.contains(l))
        .map(str::to_string)
        .collect()
}

/// Fetches `manifest`'s modules; the layer tar and what it holds.
pub async fn install(
    config: &DepsConfig,
    manifest: &Manifest,
    scratch: &Scratch,
) -> Result<(Vec<u8>, Installed), DepsError> {
    check(manifest)?;
    let root = scratch.path();
    let (src, cache) = (root.join("src"), root.join("gomod"));
    for dir in [&src, &root.join("home"), &root.join("gopath")] {
        std::fs::create_dir_all(dir).map_err(|e| DepsError::platform("scratch dir", e))?;
    }
    for (name, data) in &manifest.files {
        std::fs::write(src.join(name), data)
            .map_err(|e| DepsError::platform("writing the manifest", e))?;
    }
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), FETCH_PATH.into()),
        ("HOME".into(), path(&root.join("home"))),
        ("GOPATH".into(), path(&root.join("gopath"))),
        ("GOMODCACHE".into(), path(&cache)),
        ("GOCACHE".into(), path(&root.join("gocache"))),
        (
            "GOPROXY".into(),
            config
                .goproxy
                .clone()
                .unwrap_or_else(|| DEFAULT_GOPROXY.into()),
        ),
        (
            "GOSUMDB".into(),
            config.gosumdb.clone().unwrap_or_else(|| "off".into()),
        ),
        ("GOFLAGS".into(), "-mod=mod".into()),
        ("GOTOOLCHAIN".into(), "local".into()),
        ("GOTELEMETRY".into(), "off".into()),
        ("CGO_ENABLED".into(), "0".into()),
    ];
    env.extend(
        PASSED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))),
    );
    let args = ["mod", "download", "-json"].map(String::from);
    let ran = layer::run("go", &args, &env, &src).await?;
    let mut modules = Vec::new();
    let mut errors = Vec::new();
    let stream = serde_json::Deserializer::from_str(&ran.output).into_iter::<serde_json::Value>();
    for value in stream.flatten() {
        if let Some(error) = value["Error"].as_str() {
            errors.push(error.to_string());
        }
        if let (Some(module), Some(version)) = (value["Path"].as_str(), value["Version"].as_str()) {
            let dir = value["Dir"].as_str().map(std::path::PathBuf::from);
            modules.push(Package {
                name: module.to_string(),
                version: version.to_string(),
                size_bytes: dir.map(|d| layer::dir_size(&d)).unwrap_or(0),
            });
        }
    }
    if !ran.ok || !errors.is_empty() {
        let text = if errors.is_empty() {
            ran.output.trim().to_string()
        } else {
            errors.join("\n")
        };
        return Err(DepsError::Refused(format!(
            "go mod download failed:\n{text}"
        )));
    }
    let before = manifest.file("go.sum").unwrap_or_default();
    let after = std::fs::read_to_string(src.join("go.sum")).unwrap_or_default();
    let unchecked = added_lines(before, &after);
    if !unchecked.is_empty() {
        return Err(DepsError::Refused(format!(
            "go.sum has no checksum for: {} (run `go mod tidy` and deploy again)",
            unchecked
                .iter()
                .filter_map(|l| l.split_whitespace().next())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // Version-control checkouts are never used offline.
    let _ = std::fs::remove_dir_all(cache.join("cache/vcs"));
    std::fs::create_dir_all(&cache).map_err(|e| DepsError::platform("module cache", e))?;
    let tar = layer::pack_dir(&cache, DEPS_GOMOD)?;
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    let installed = Installed {
        cached: false,
        manifest: "go.mod".into(),
        packages: modules,
        size_bytes: layer::dir_size(&cache),
        duration_ms: 0.0,
        scripts_not_run: Vec::new(),
    };
    // The cache's files are read-only: let the scratch dir go.
    make_writable(&cache);
    Ok((tar, installed))
}

/// Gives the owner write access everywhere under `dir` (go leaves its cache 0555).
fn make_writable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(here) = stack.pop() {
        if let Ok(meta) = std::fs::symlink_metadata(&here) {
            if meta.is_dir() {
                let mode = meta.permissions().mode() | 0o700;
                let _ = std::fs::set_permissions(&here, std::fs::Permissions::from_mode(mode));
                if let Ok(entries) = std::fs::read_dir(&here) {
                    stack.extend(entries.flatten().map(|e| e.path()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::Runtime;

    fn manifest(go_mod: &str, go_sum: Option<&str>) -> Manifest {
        let mut files = vec![("go.mod".to_string(), go_mod.as_bytes().to_vec())];
        if let Some(sum) = go_sum {
            files.push(("go.sum".to_string(), sum.as_bytes().to_vec()));
        }
        Manifest {
            runtime: Runtime::Go,
            files,
        }
    }

    #[test]
    fn requirements_are_seen_in_lines_and_blocks() {
        assert!(has_requirements("module m\nrequire example.com/x v1.0.0\n"));
        assert!(has_requirements(
            "module m\nrequire (\n\texample.com/x v1.0.0\n)\n"
        ));
        assert!(!has_requirements("module m\n\ngo 1.19\n// require x v1\n"));
        assert!(!has_requirements("module m\nrequire (\n)\n"));
    }

    #[test]
    fn local_replacements_and_a_missing_go_sum_are_refused() {
        let m = "module m\nrequire example.com/x v1.0.0\n";
        assert!(check(&manifest(m, None))
            .unwrap_err()
            .to_string()
            .contains("go.sum"));
        assert!(check(&manifest(m, Some(""))).is_ok());
        let local = format!("{m}replace example.com/x => ../x\n");
        assert!(check(&manifest(&local, Some("")))
            .unwrap_err()
            .to_string()
            .contains("local path"));
        let block = format!("{m}replace (\n\texample.com/x => /abs/x\n)\n");
        assert!(check(&manifest(&block, Some(""))).is_err());
        let remote = format!("{m}replace example.com/x => example.com/y v1.0.1\n");
        assert!(check(&manifest(&remote, Some(""))).is_ok());
    }

    #[test]
    fn lines_go_added_to_go_sum_are_found() {
        assert_eq!(
            added_lines("a h1:x\n", "a h1:x\nb h1:y\n"),
            vec!["b h1:y".to_string()]
        );
        assert!(added_lines("a\nb\n", "b\na\n").is_empty());
    }
}
