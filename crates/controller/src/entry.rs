//! A function's `handler` (`module.function`, as Lambda's `Handler`) honoured without the
//! runtimes knowing it: the code package gets an entry file (`main.py`, `index.js`) that
//! routes the runtime's default entry to the named function.
//!
//! The entry file is marked, so a later deploy of the same package (a configuration
//! update re-deploys the stored zip) replaces it instead of routing to itself. A user's
//! own entry file is never overwritten: a handler elsewhere then needs it renamed.

use crate::ApiError;
use bytes::Bytes;
use hearth_core::function::split_handler;
use hearth_core::Runtime;
use std::io::{Cursor, Read, Write};
use zip::write::SimpleFileOptions;

/// First line of an entry file hearth wrote.
const PY_ENTRY: &str = "# hearth: entry for handler ";
const JS_ENTRY: &str = "// hearth: entry for handler ";
/// Start of an alias hearth appended to the user's own entry file.
const PY_ALIAS: &str = "\n# hearth: handler alias\n";
const JS_ALIAS: &str = "\n// hearth: handler alias\n";

/// The zip to store for `handler` on `runtime`: unchanged when it needs no entry file.
pub(crate) fn route(
    zip: Bytes,
    runtime: Runtime,
    handler: Option<&str>,
) -> Result<Bytes, ApiError> {
    let (entry, marker, alias_marker) = match runtime {
        Runtime::Python => ("main.py", PY_ENTRY, PY_ALIAS),
        Runtime::Nodejs => ("index.js", JS_ENTRY, JS_ALIAS),
        Runtime::Cpp | Runtime::Go => return Ok(zip),
    };
    let invalid = |m: String| ApiError::bad_request("invalid_code", m);
    let mut archive = zip::ZipArchive::new(Cursor::new(zip.clone()))
        .map_err(|e| invalid(format!("the code is not a readable zip: {e}")))?;
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    let existing = match archive.by_name(entry) {
        Ok(mut file) => {
            let mut text = String::new();
            file.read_to_string(&mut text)
                .map_err(|e| invalid(format!("{entry} is not readable text: {e}")))?;
            Some(text)
        }
        Err(_) => None,
    };
    // The user's own entry file, without anything hearth added to it before.
    let users = existing.as_deref().and_then(|text| {
        if text.starts_with(marker) {
            None
        } else {
            Some(text.split(alias_marker).next().unwrap_or(text).to_string())
        }
    });
    let new_entry = match handler.map(|h| (h, split_handler(h))) {
        None => users.clone(),
        Some((h, None)) => {
            return Err(invalid(format!(
                "invalid handler {h:?}: use module.function"
            )))
        }
        Some((_, Some((module, function)))) => {
            entry_for(runtime, module, function, users.as_deref(), &names)?
        }
    };
    if new_entry == existing {
        return Ok(zip);
    }
    rewrite(&mut archive, entry, new_entry.as_deref())
        .map_err(|e| ApiError::internal("adding the handler's entry file", e))
}

fn entry_for(
    runtime: Runtime,
    module: &str,
    function: &str,
    users: Option<&str>,
    names: &[String],
) -> Result<Option<String>, ApiError> {
    let invalid = |m: String| ApiError::bad_request("invalid_code", m);
    let handler = format!("{module}.{function}");
    match runtime {
        Runtime::Python if module == "main" => {
            let text =
                users.ok_or_else(|| invalid("main.py not found at the root of the zip".into()))?;
            if function == "handler" {
                return Ok(Some(text.to_string()));
            }
            Ok(Some(format!("{text}{PY_ALIAS}handler = {function}\n")))
        }
        Runtime::Python => {
            if users.is_some() {
                return Err(invalid(format!("handler {handler} is not in main.py, but the zip has its own main.py, which hearth loads: rename it, or use handler main.<function>")));
            }
            let file = format!("{module}.py");
            let package = format!("{module}/__init__.py");
            if !names.iter().any(|n| *n == file || *n == package) {
                return Err(invalid(format!(
                    "handler {handler}: {file} is not in the zip"
                )));
            }
            let dotted = module.replace('/', ".");
            Ok(Some(format!(
                "{PY_ENTRY}{handler}\nfrom {dotted} import {function} as handler\n"
            )))
        }
        _ if module == "index" => {
            let text =
                users.ok_or_else(|| invalid("index.js not found at the root of the zip".into()))?;
            if function == "handler" {
                return Ok(Some(text.to_string()));
            }
            Ok(Some(format!(
                "{text}{JS_ALIAS}module.exports.handler = module.exports.{function};\n"
            )))
        }
        _ => {
            if users.is_some() {
                return Err(invalid(format!("handler {handler} is not in index.js, but the zip has its own index.js, which hearth loads: rename it, or use handler index.<function>")));
            }
            let found = ["js", "cjs", "mjs"]
                .iter()
                .map(|ext| format!("{module}.{ext}"))
                .find(|f| names.contains(f))
                .ok_or_else(|| {
                    invalid(format!(
                        "handler {handler}: {module}.js (or .cjs, .mjs) is not in the zip"
                    ))
                })?;
            let body = if found.ends_with(".mjs") {
                format!("exports.handler = async (event, context) => (await import('./{found}')).{function}(event, context);\n")
            } else {
                format!("module.exports.handler = require('./{found}').{function};\n")
            };
            Ok(Some(format!("{JS_ENTRY}{handler}\n{body}")))
        }
    }
}

/// The archive with `entry` replaced by `content` (or left out), other members copied raw.
fn rewrite(
    archive: &mut zip::ZipArchive<Cursor<Bytes>>,
    entry: &str,
    content: Option<&str>,
) -> Result<Bytes, zip::result::ZipError> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let file = archive.by_index_raw(i)?;
        if file.name() == entry {
            continue;
        }
        writer.raw_copy_file(file)?;
    }
    if let Some(content) = content {
        writer.start_file(entry, SimpleFileOptions::default().unix_permissions(0o644))?;
        writer.write_all(content.as_bytes())?;
    }
    Ok(Bytes::from(writer.finish()?.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(files: &[(&str, &str)]) -> Bytes {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, text) in files {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(text.as_bytes()).unwrap();
        }
        Bytes::from(w.finish().unwrap().into_inner())
    }

    fn read(zip: &Bytes, name: &str) -> Option<String> {
        let mut a = zip::ZipArchive::new(Cursor::new(zip.clone())).unwrap();
        let mut f = a.by_name(name).ok()?;
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        Some(s)
    }

    #[test]
    fn default_handlers_leave_the_zip_alone() {
        let zip = zip_of(&[("main.py", "def handler(e, c): return 1\n")]);
        for handler in [None, Some("main.handler")] {
            assert_eq!(route(zip.clone(), Runtime::Python, handler).unwrap(), zip);
        }
    }

    #[test]
    fn a_handler_in_another_module_gets_an_entry_that_a_later_deploy_replaces() {
        let zip = zip_of(&[
            ("app.py", "def lambda_handler(e, c): return 1\n"),
            ("other.py", "def go(e, c): return 2\n"),
        ]);
        let routed = route(zip, Runtime::Python, Some("app.lambda_handler")).unwrap();
        let entry = read(&routed, "main.py").unwrap();
        assert!(
            entry.contains("from app import lambda_handler as handler"),
            "{entry}"
        );
        assert!(read(&routed, "app.py").is_some());
        let again = route(routed.clone(), Runtime::Python, Some("other.go")).unwrap();
        assert!(read(&again, "main.py")
            .unwrap()
            .contains("from other import go as handler"));
        // Back to the default: hearth's entry goes, and main.py is then missing.
        let plain = route(routed, Runtime::Python, None).unwrap();
        assert_eq!(read(&plain, "main.py"), None);
    }

    #[test]
    fn handlers_in_the_entry_module_get_an_alias_and_users_entry_files_are_kept() {
        let zip = zip_of(&[("main.py", "def lambda_handler(e, c): return 1\n")]);
        let routed = route(zip, Runtime::Python, Some("main.lambda_handler")).unwrap();
        assert!(read(&routed, "main.py")
            .unwrap()
            .ends_with("handler = lambda_handler\n"));
        let twice = route(routed, Runtime::Python, Some("main.other")).unwrap();
        let text = read(&twice, "main.py").unwrap();
        assert!(
            text.ends_with("handler = other\n") && !text.contains("= lambda_handler"),
            "{text}"
        );
        let clash = zip_of(&[("main.py", "x = 1\n"), ("app.py", "def h(e, c): pass\n")]);
        assert!(route(clash, Runtime::Python, Some("app.h")).is_err());
        let missing = zip_of(&[("main.py", "x = 1\n")]);
        assert!(route(missing, Runtime::Python, Some("app.h")).is_err());
    }

    #[test]
    fn node_handlers_route_through_index_js() {
        let zip = zip_of(&[("app.js", "exports.run = async () => 1;\n")]);
        let routed = route(zip, Runtime::Nodejs, Some("app.run")).unwrap();
        assert!(read(&routed, "index.js")
            .unwrap()
            .contains("require('./app.js').run"));
        let esm = zip_of(&[("app.mjs", "export const run = async () => 1;\n")]);
        let routed = route(esm, Runtime::Nodejs, Some("app.run")).unwrap();
        assert!(read(&routed, "index.js")
            .unwrap()
            .contains("import('./app.mjs')"));
    }
}
