//! Node.js: `package.json` (and `package-lock.json`) → `node_modules`, fetched on the
//! host with `npm ci --ignore-scripts` (`npm install --ignore-scripts` without a lock):
//! npm unpacks the registry's tarballs and runs no lifecycle script, the root
//! package's own included. Packages that have install scripts (or a `binding.gyp`) are
//! named in the answer: they were not run, so a native addon will not load.
//!
//! Dependencies must come from the registry: `file:`, `link:`, git and URL specs, and
//! lock entries resolved anywhere but http(s), are refused, so the host never reads a
//! path or clones a repository the user picked. The user's `.npmrc` is not used.

use super::layer::{self, Scratch, FETCH_PATH};
use super::python::PASSED_ENV;
use super::{DepsConfig, DepsError, Installed, Manifest, Package};
use hearth_core::protocol::DEPS_NODE;
use serde_json::Value;
use std::path::Path;

/// Whether `package.json` names any (production) dependency.
pub fn has_dependencies(package_json: &str) -> Result<bool, serde_json::Error> {
    let value: Value = serde_json::from_str(package_json)?;
    Ok(value["dependencies"]
        .as_object()
        .is_some_and(|deps| !deps.is_empty()))
}

/// Refuses specs that are not registry versions.
fn check_spec(name: &str, spec: &str) -> Result<(), DepsError> {
    let registry_spec = |s: &str| {
        !(s.contains(':')
            || s.contains('/')
            || s.starts_with('.')
            || s.starts_with('~') && s.contains('/'))
    };
    let ok = match spec.strip_prefix("npm:") {
        // An alias: `npm:other-name@range`.
        Some(alias) => {
            let (target, range) = match alias.rsplit_once('@') {
                Some((t, r)) if !t.is_empty() => (t, r),
                _ => (alias, ""),
            };
            !target.contains(':') && !target.starts_with('.') && registry_spec(range)
        }
        None => registry_spec(spec),
    };
    if ok {
        Ok(())
    } else {
        Err(DepsError::Refused(format!(
            "package.json: dependency {name} is {spec:?}: only registry versions are \
             supported (no file:, link:, git or URL dependencies)"
        )))
    }
}

/// Checks `package.json` and the lock, if any.
pub fn check(manifest: &Manifest) -> Result<(), DepsError> {
    let text = manifest
        .file("package.json")
        .ok_or_else(|| DepsError::Refused("package.json is not UTF-8 text".into()))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| DepsError::Refused(format!("package.json: {e}")))?;
    if value.get("workspaces").is_some() {
        return Err(DepsError::Refused(
            "package.json: workspaces are not supported".into(),
        ));
    }
    if let Some(deps) = value["dependencies"].as_object() {
        for (name, spec) in deps {
            check_spec(name, spec.as_str().unwrap_or_default())?;
        }
    }
    for lock_name in ["package-lock.json", "npm-shrinkwrap.json"] {
        let Some(lock) = manifest.file(lock_name) else {
            continue;
        };
        let lock: Value = serde_json::from_str(lock)
            .map_err(|e| DepsError::Refused(format!("{lock_name}: {e}")))?;
        let packages = lock["packages"].as_object().into_iter().flatten();
        let dependencies = lock["dependencies"].as_object().into_iter().flatten();
        for (path, entry) in packages.chain(dependencies) {
            if path.is_empty() {
                continue;
            }
            let resolved = entry["resolved"].as_str().unwrap_or("https://");
            let remote = resolved.starts_with("https://") || resolved.starts_with("http://");
            if entry["link"].as_bool() == Some(true) || !remote {
                return Err(DepsError::Refused(format!(
                    "{lock_name}: {path} comes from {resolved:?}: only registry packages \
                     are supported"
                )));
            }
        }
    }
    Ok(())
}

/// Fetches `manifest`'s dependencies; the layer tar and what it holds.
pub async fn install(
    config: &DepsConfig,
    manifest: &Manifest,
    scratch: &Scratch,
) -> Result<(Vec<u8>, Installed), DepsError> {
    check(manifest)?;
    let dir = scratch.path().join("app");
    let home = scratch.path().join("home");
    for d in [&dir, &home] {
        std::fs::create_dir_all(d).map_err(|e| DepsError::platform("scratch dir", e))?;
    }
    let locked = manifest
        .files
        .iter()
        .any(|(n, _)| n == "package-lock.json" || n == "npm-shrinkwrap.json");
    for (name, data) in &manifest.files {
        std::fs::write(dir.join(name), data)
            .map_err(|e| DepsError::platform("writing the manifest", e))?;
    }
    let userconfig = home.join(".npmrc");
    std::fs::write(&userconfig, "").map_err(|e| DepsError::platform("scratch dir", e))?;
    let mut args: Vec<String> = if locked {
        vec!["ci".into()]
    } else {
        vec!["install".into(), "--package-lock=false".into()]
    };
    args.extend(
        [
            "--ignore-scripts",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
            "--loglevel=warn",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.extend([
        "--cache".into(),
        config.dir.join("cache/npm").to_string_lossy().into_owned(),
    ]);
    if let Some(registry) = &config.npm_registry {
        args.extend(["--registry".into(), registry.clone()]);
    }
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), FETCH_PATH.into()),
        ("HOME".into(), home.to_string_lossy().into_owned()),
        (
            "npm_config_userconfig".into(),
            userconfig.to_string_lossy().into_owned(),
        ),
    ];
    env.extend(
        PASSED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))),
    );
    let ran = layer::run("npm", &args, &env, &dir).await?;
    if !ran.ok {
        let lines: Vec<&str> = ran
            .output
            .lines()
            .filter(|l| l.contains("ERR!"))
            .map(|l| {
                l.trim_start_matches("npm ERR! ")
                    .trim_start_matches("npm error ")
            })
            .collect();
        return Err(DepsError::Refused(format!(
            "npm could not fetch the dependencies:\n{}",
            if lines.is_empty() {
                ran.output.trim().to_string()
            } else {
                lines.join("\n")
            }
        )));
    }
    let modules = dir.join("node_modules");
    std::fs::create_dir_all(&modules).map_err(|e| DepsError::platform("node_modules", e))?;
    let installed = describe(&modules);
    let tar = layer::pack_dir(&modules, DEPS_NODE)?;
    Ok((tar, installed))
}

/// The top-level packages of `modules`, and those whose install scripts were skipped.
pub fn describe(modules: &Path) -> Installed {
    let mut packages = Vec::new();
    let mut scripts = Vec::new();
    let mut stack = vec![modules.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let top = dir == modules || dir.parent() == Some(modules);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || name.starts_with('.') {
                continue;
            }
            if name.starts_with('@') {
                stack.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(path.join("package.json")) else {
                continue;
            };
            let meta: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let (pkg, version) = (
                meta["name"].as_str().unwrap_or(&name).to_string(),
                meta["version"].as_str().unwrap_or("").to_string(),
            );
            let has_script = ["preinstall", "install", "postinstall"]
                .iter()
                .any(|s| meta["scripts"].get(s).is_some())
                || path.join("binding.gyp").is_file();
            if has_script {
                scripts.push(format!("{pkg}@{version}"));
            }
            if top {
                packages.push(Package {
                    name: pkg,
                    version,
                    size_bytes: layer::dir_size(&path),
                });
            }
            let nested = path.join("node_modules");
            if nested.is_dir() {
                stack.push(nested);
            }
        }
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    scripts.sort();
    Installed {
        cached: false,
        manifest: "package.json".into(),
        packages,
        size_bytes: layer::dir_size(modules),
        duration_ms: 0.0,
        scripts_not_run: scripts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::Runtime;

    fn manifest(files: &[(&str, &str)]) -> Manifest {
        Manifest {
            runtime: Runtime::Nodejs,
            files: files
                .iter()
                .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn only_registry_dependencies_are_taken() {
        let ok = manifest(&[(
            "package.json",
            r#"{"dependencies":{"a":"^1.2.0","b":"latest","@s/c":"1.x","d":"npm:e@^2"}}"#,
        )]);
        assert!(check(&ok).is_ok());
        for spec in [
            "file:../../etc",
            "link:/tmp",
            "git+https://x/y.git",
            "github:u/r",
            "u/r",
            "https://x/y.tgz",
            "./local",
        ] {
            let bad = manifest(&[(
                "package.json",
                &format!(r#"{{"dependencies":{{"a":"{spec}"}}}}"#),
            )]);
            let err = check(&bad).unwrap_err().to_string();
            assert!(err.contains("only registry"), "{spec}: {err}");
        }
        let lock = manifest(&[
            ("package.json", r#"{"dependencies":{"a":"1.0.0"}}"#),
            (
                "package-lock.json",
                r#"{"packages":{"":{},"node_modules/a":{"resolved":"file:/etc/a.tgz"}}}"#,
            ),
        ]);
        assert!(check(&lock)
            .unwrap_err()
            .to_string()
            .contains("node_modules/a"));
    }

    #[test]
    fn install_scripts_are_named_and_packages_listed() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path();
        for (path, json) in [
            ("a", r#"{"name":"a","version":"1.0.0"}"#),
            (
                "@s/b",
                r#"{"name":"@s/b","version":"2.0.0","scripts":{"postinstall":"x"}}"#,
            ),
            (
                "a/node_modules/c",
                r#"{"name":"c","version":"3.0.0","scripts":{"install":"y"}}"#,
            ),
        ] {
            std::fs::create_dir_all(m.join(path)).unwrap();
            std::fs::write(m.join(path).join("package.json"), json).unwrap();
        }
        let installed = describe(m);
        let names: Vec<_> = installed.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["@s/b", "a"]);
        assert_eq!(installed.scripts_not_run, ["@s/b@2.0.0", "c@3.0.0"]);
        assert!(installed.size_bytes > 0);
    }
}
