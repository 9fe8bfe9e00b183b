//! Building a compiled function (C++, Go): the instance was started with
//! `Purpose::Build`, its code is the uploaded source, and its one invocation runs the
//! toolchain in a fresh process, under the same limits, sweep and deadline as any
//! invocation. The `Result` is a success whose payload is the artifact (a tar of the
//! program and its manifest), or an error whose message is the compiler's output.
//!
//! Two ways to write a function, told apart by scanning the source for a `main`
//! ([`detect`]): a full program is compiled as it is; a handler-only one gets the
//! runtime's entrypoint template (`runtimes/cpp/hearth_main.cpp`,
//! `runtimes/go/hearth_main.go`), which supplies `main` and calls the handler. The
//! source is copied to a scratch dir under `/tmp` first: the code dir is read-only.
//!
//! A python "build" installs the function's dependencies instead ([`crate::install`]).
//!
//! Nothing of the user's environment reaches the toolchain (a build depends on the code
//! alone, which is what the artifact is keyed by), and there is no network: only the
//! standard libraries, Go modules vendored in the zip, and the module cache the worker
//! fetched at deploy (read-only at `/deps/gomod`) are there.

use crate::channel::LogSink;
use crate::error::{AgentError, ConfigError, RuntimeError};
use crate::instance::Instance;
use crate::manifest::{Kind, Manifest};
use crate::process::{self, ChildState, SpawnSpec};
use crate::run::{self, Ending, Finished, Pipes, Report};
use crate::runner::Runner;
use hearth_core::env::SANDBOX_PATH;
use hearth_core::paths::BuildDirs;
use hearth_core::protocol::{InvokeSpec, LogStream, ARTIFACT_MANIFEST, ARTIFACT_PROGRAM};
use hearth_core::protocol::{OutcomeStatus, BUILD_VERSION, DEPS_GOMOD};
use hearth_core::Runtime;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The C++ entrypoint template, compiled with the user's `main.cpp` included above it.
const CPP_TEMPLATE: &str = include_str!("../../../runtimes/cpp/hearth_main.cpp");
/// The Go entrypoint template, added to the user's package main.
const GO_TEMPLATE: &str = include_str!("../../../runtimes/go/hearth_main.go");
/// The name the template takes among the user's files (reserved).
const CPP_ENTRY: &str = "hearth_main.cpp";
/// See [`CPP_ENTRY`].
const GO_ENTRY: &str = "hearth_main.go";
/// Largest program a build may produce.
const MAX_PROGRAM_BYTES: u64 = 256 << 20;
/// Compiler output kept (each of stdout and stderr).
const OUTPUT_KEEP: usize = 256 << 10;
/// Longest compiler message put in the error.
const MESSAGE_KEEP: usize = 64 << 10;

/// A file's text with comments, string and character literals blanked out (newlines
/// kept), so that a `main` in a comment or a string is not taken for one. Handles `//`,
/// `/* */`, `"…"` and `'…'` with escapes, and Go's raw `` `…` `` strings.
fn strip(source: &str, go: bool) -> String {
    #[derive(PartialEq)]
    enum In {
        Code,
        Line,
        Block,
        Quote(char),
        Raw,
    }
    let mut out = String::with_capacity(source.len());
    let mut state = In::Code;
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
        match state {
            In::Code => match c {
                '/' if chars.peek() == Some(&'/') => {
                    chars.next();
                    state = In::Line;
                    out.push_str("  ");
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    state = In::Block;
                    out.push_str("  ");
                }
                '"' | '\'' => {
                    state = In::Quote(c);
                    out.push(' ');
                }
                '`' if go => {
                    state = In::Raw;
                    out.push(' ');
                }
                _ => out.push(c),
            },
            In::Line => {
                if c == '\n' {
                    state = In::Code;
                }
                blank(&mut out, c);
            }
            In::Block => {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    state = In::Code;
                    out.push(' ');
                }
                blank(&mut out, c);
            }
            In::Quote(q) => {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        blank(&mut out, next);
                    }
                } else if c == q || c == '\n' {
                    state = In::Code;
                }
                blank(&mut out, c);
            }
            In::Raw => {
                if c == '`' {
                    state = In::Code;
                }
                blank(&mut out, c);
            }
        }
    }
    out
}

/// Identifiers and single punctuation characters of stripped code.
fn tokens(code: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        let word = c.is_ascii_alphanumeric() || c == '_';
        match (word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(&code[s..i]);
                start = None;
            }
            _ => {}
        }
        if !word && !c.is_whitespace() {
            out.push(&code[i..i + c.len_utf8()]);
        }
    }
    if let Some(s) = start {
        out.push(&code[s..]);
    }
    out
}

/// Whether one source file defines `main`: `int main(` (or `auto`/`signed main(`) in
/// C++, `func main(` in Go.
fn defines_main(runtime: Runtime, source: &str) -> bool {
    let code = strip(source, runtime == Runtime::Go);
    let tokens = tokens(&code);
    tokens.windows(3).any(|w| {
        let opener = match runtime {
            Runtime::Go => w[0] == "func",
            _ => matches!(w[0], "int" | "auto" | "signed"),
        };
        opener && w[1] == "main" && w[2] == "("
    })
}

/// Handler-only or full program: a program when any of the sources defines `main`.
pub fn detect<'a>(runtime: Runtime, sources: impl IntoIterator<Item = &'a str>) -> Kind {
    if sources.into_iter().any(|s| defines_main(runtime, s)) {
        Kind::Program
    } else {
        Kind::Handler
    }
}

/// Source files of `runtime` under `dir`, as paths relative to it, sorted. C++: every
/// `.cpp`/`.cc`/`.cxx` file at any depth; Go: the `.go` files at the top (the package
/// main; other packages are imported, not listed), tests left out.
fn source_files(runtime: Runtime, dir: &Path) -> Result<Vec<PathBuf>, AgentError> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let entries = fs::read_dir(&here).map_err(|e| AgentError::at("list", &here, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| AgentError::at("list", &here, e))?;
            let path = rel.join(entry.file_name());
            let name = entry.file_name().to_string_lossy().into_owned();
            let file_type = entry
                .file_type()
                .map_err(|e| AgentError::at("stat", &entry.path(), e))?;
            if file_type.is_dir() {
                if runtime == Runtime::Cpp {
                    stack.push(path);
                }
                continue;
            }
            let wanted = match runtime {
                Runtime::Go => name.ends_with(".go") && !name.ends_with("_test.go"),
                _ => [".cpp", ".cc", ".cxx"]
                    .iter()
                    .any(|ext| name.ends_with(ext)),
            };
            if wanted {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Copies the tree at `from` to `to` (files, directories, links as links).
fn copy_tree(from: &Path, to: &Path) -> Result<(), AgentError> {
    fs::create_dir_all(to).map_err(|e| AgentError::at("mkdir", to, e))?;
    for entry in fs::read_dir(from).map_err(|e| AgentError::at("list", from, e))? {
        let entry = entry.map_err(|e| AgentError::at("list", from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let file_type = entry
            .file_type()
            .map_err(|e| AgentError::at("stat", &src, e))?;
        if file_type.is_dir() {
            copy_tree(&src, &dst)?;
        } else if file_type.is_symlink() {
            let target = fs::read_link(&src).map_err(|e| AgentError::at("readlink", &src, e))?;
            std::os::unix::fs::symlink(&target, &dst)
                .map_err(|e| AgentError::at("symlink", &dst, e))?;
        } else {
            fs::copy(&src, &dst).map_err(|e| AgentError::at("copy", &src, e))?;
        }
    }
    Ok(())
}

/// What to run for one build, in the scratch dir.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recipe {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn recipe(runtime: Runtime, scratch: &BuildDirs, sources: &[PathBuf], has_go_mod: bool) -> Recipe {
    let program = scratch.program.to_string_lossy().into_owned();
    let home = scratch.home.to_string_lossy().into_owned();
    let mut env = vec![
        ("PATH".to_string(), SANDBOX_PATH.to_string()),
        ("HOME".to_string(), home.clone()),
        ("TMPDIR".to_string(), home.clone()),
        // ASCII messages: gcc's quotes stay plain in the JSON error.
        ("LC_ALL".to_string(), "C".to_string()),
    ];
    let files = sources.iter().map(|p| p.to_string_lossy().into_owned());
    let args = match runtime {
        Runtime::Go => {
            for (k, v) in [
                ("GOCACHE", format!("{home}/go-cache")),
                ("GOPATH", format!("{home}/go")),
                ("GOTMPDIR", home.clone()),
                // No network: modules come from the zip's vendor dir or not at all.
                ("GOPROXY", "off".to_string()),
                ("GOSUMDB", "off".to_string()),
                ("GOTOOLCHAIN", "local".to_string()),
                ("GOTELEMETRY", "off".to_string()),
                // A static binary: nothing of the host's libc needed to run it.
                ("CGO_ENABLED", "0".to_string()),
            ] {
                env.push((k.to_string(), v));
            }
            let mut args: Vec<String> = ["build", "-o", &program, "-ldflags=-s -w"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if has_go_mod {
                args.push(".".into());
            } else {
                args.extend(files);
            }
            args
        }
        _ => {
            let mut args: Vec<String> = [
                "-std=gnu++17",
                "-O2",
                "-pipe",
                "-static",
                // No symbol table: a smaller program to copy, unpack and map at every
                // cold start (a crash still names the signal; Go builds with -s too).
                "-s",
                "-pthread",
                "-fdiagnostics-color=never",
                "-I.",
                "-o",
                &program,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(files);
            args
        }
    };
    Recipe { args, env }
}

/// The recipe of a python "build": pip installs the wheels the worker fetched.
fn install_recipe(inst: &Instance, scratch: &BuildDirs) -> Recipe {
    let home = scratch.home.to_string_lossy().into_owned();
    let mut env = vec![
        ("PATH".to_string(), SANDBOX_PATH.to_string()),
        ("HOME".to_string(), home.clone()),
        ("TMPDIR".to_string(), home),
        ("LC_ALL".to_string(), "C.UTF-8".to_string()),
    ];
    env.extend(crate::install::env());
    let target = crate::install::target(&scratch.out);
    Recipe {
        args: crate::install::args(&inst.layout.code, &target),
        env,
    }
}

/// A Go build with the module cache the worker fetched (read-only, at
/// `/deps/gomod`): modules come from it alone, checked against go.sum.
fn use_module_cache(recipe: &mut Recipe, module_cache: &Path) {
    recipe.env.retain(|(k, _)| k != "GOFLAGS");
    recipe.env.push((
        "GOMODCACHE".to_string(),
        module_cache.to_string_lossy().into_owned(),
    ));
    recipe
        .env
        .push(("GOFLAGS".to_string(), "-mod=mod".to_string()));
}

/// Makes the compiler's output readable in an API error: scratch paths dropped, cut to
/// [`MESSAGE_KEEP`], with a hint for the common mistakes.
fn compiler_message(runtime: Runtime, kind: Kind, scratch: &BuildDirs, output: &str) -> String {
    let src = format!("{}/", scratch.src.display());
    let mut text: String = output
        .replace(&src, "")
        .lines()
        // go build's package header names no package the user wrote.
        .filter(|line| *line != "# command-line-arguments")
        .map(|line| line.strip_prefix("./").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string();
    if text.len() > MESSAGE_KEEP {
        let mut cut = MESSAGE_KEEP;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (cut)");
    }
    // The template's own lines in the errors: the handler is missing or misshapen.
    let about_handler = match runtime {
        Runtime::Go => text.contains(&format!("{GO_ENTRY}:")),
        _ => text.contains("'handler' was not declared") || text.contains("hearth_entry::call"),
    };
    let hint = if kind == Kind::Handler && about_handler {
        Some(match runtime {
            Runtime::Go => {
                "hint: a handler-only Go function is package main with `func Handler(event \
                 map[string]interface{}) (interface{}, error)` (or another event type); a \
                 full program has its own `func main()`"
            }
            _ => {
                "hint: a handler-only C++ function defines `std::string handler(const \
                 std::string& event)` or `extern \"C\" const char* handler(const char* \
                 event)`; a full program has its own `int main()`"
            }
        })
    } else if runtime == Runtime::Go
        && [
            "GOPROXY=off",
            "cannot find module",
            "no required module provides",
            "is not in GOROOT",
            "cannot find package",
        ]
        .iter()
        .any(|needle| text.contains(needle))
    {
        Some(
            "hint: builds have no network: only the standard library is available, the \
             modules go.mod requires (fetched at deploy, checked against go.sum), and \
             modules vendored in the zip (go mod vendor)",
        )
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{text}\n{hint}"),
        None => text,
    }
}

/// The artifact: an uncompressed tar of the program (0755) and its manifest.
fn artifact(program: &[u8], manifest: &Manifest) -> Result<Vec<u8>, AgentError> {
    let manifest = serde_json::to_vec(manifest).map_err(|source| RuntimeError::Encode {
        what: "the manifest",
        source,
    })?;
    let mut builder = tar::Builder::new(Vec::new());
    for (name, mode, data) in [
        (ARTIFACT_PROGRAM, 0o755, program),
        (ARTIFACT_MANIFEST, 0o644, manifest.as_slice()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, data)
            .map_err(|e| AgentError::io("pack the artifact", e))?;
    }
    builder
        .into_inner()
        .map_err(|e| AgentError::io("pack the artifact", e))
}

/// Drops what the compiler prints: it goes into the outcome, not the log.
struct Quiet;

impl LogSink for Quiet {
    fn log(&mut self, _: LogStream, _: &[u8]) {}
}

/// A build instance: one build, then it is done.
#[derive(Debug)]
pub struct Builder {
    runtime: Runtime,
    built: bool,
}

impl Runner for Builder {
    fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        _event: &[u8],
        _log: &mut dyn LogSink,
    ) -> Result<Finished, AgentError> {
        Builder::serve(self, inst, spec)
    }
}

impl Builder {
    /// Checks the toolchain is there; the build itself waits for the invocation.
    pub fn start(runtime: Runtime, inst: &Instance) -> Result<Builder, AgentError> {
        if !runtime.is_compiled() && runtime != Runtime::Python {
            return Err(ConfigError::NothingToBuild(runtime).into());
        }
        if !Path::new(&inst.interpreter).is_file() {
            return Err(ConfigError::MissingToolchain {
                runtime,
                path: inst.interpreter.clone(),
            }
            .into());
        }
        Ok(Builder {
            runtime,
            built: false,
        })
    }

    /// Runs the build; the outcome's payload is the artifact on success.
    pub fn serve(
        &mut self,
        inst: &mut Instance,
        spec: &InvokeSpec,
    ) -> Result<Finished, AgentError> {
        if std::mem::replace(&mut self.built, true) {
            return Ok(run::not_run(
                &spec.request_id,
                "a build instance builds once".into(),
            ));
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(spec.timeout_ms);
        let scratch = BuildDirs::under(&inst.layout.tmp);
        let prepared = self.prepare(inst, &scratch);
        let finished = match prepared {
            Ok((kind, recipe)) => self.compile(inst, spec, &scratch, kind, &recipe, deadline),
            Err(Refusal(message)) => Ok(refused(spec, message, started.elapsed())),
        };
        if let Err(e) = fs::remove_dir_all(&scratch.root) {
            crate::diag!("cannot remove {}: {e}", scratch.root.display());
        }
        finished
    }

    /// Copies the source, adds the template when needed; the recipe to run.
    fn prepare(&self, inst: &Instance, scratch: &BuildDirs) -> Result<(Kind, Recipe), Refusal> {
        let runtime = self.runtime;
        let io = |e: AgentError| Refusal(format!("cannot prepare the build: {e}"));
        if runtime == Runtime::Python {
            for dir in [&scratch.home, &scratch.src, &scratch.out] {
                fs::create_dir_all(dir).map_err(|e| io(AgentError::at("mkdir", dir, e)))?;
            }
            return Ok((Kind::Program, install_recipe(inst, scratch)));
        }
        copy_tree(&inst.layout.code, &scratch.src).map_err(io)?;
        for dir in [&scratch.home, &scratch.out] {
            fs::create_dir_all(dir).map_err(|e| io(AgentError::at("mkdir", dir, e)))?;
        }
        let mut sources = source_files(runtime, &scratch.src).map_err(io)?;
        let texts: Vec<String> = sources
            .iter()
            .map(|rel| {
                String::from_utf8_lossy(&fs::read(scratch.src.join(rel)).unwrap_or_default())
                    .into_owned()
            })
            .collect();
        let kind = detect(runtime, texts.iter().map(String::as_str));
        let entry = if runtime == Runtime::Go {
            GO_ENTRY
        } else {
            CPP_ENTRY
        };
        if sources.iter().any(|p| p == Path::new(entry)) {
            return Err(Refusal(format!(
                "{entry} is reserved for hearth's entrypoint: rename that file"
            )));
        }
        if kind == Kind::Handler {
            let path = scratch.src.join(entry);
            let text = match runtime {
                Runtime::Go => GO_TEMPLATE.to_string(),
                _ => {
                    // main.cpp is compiled as part of the entry, above the template.
                    sources.retain(|p| p != Path::new(runtime.entrypoint()));
                    format!(
                        "#include \"{}\"\n#line 1 \"{CPP_ENTRY}\"\n{CPP_TEMPLATE}",
                        runtime.entrypoint()
                    )
                }
            };
            fs::write(&path, text).map_err(|e| io(AgentError::at("write", &path, e)))?;
            sources.push(PathBuf::from(entry));
        }
        let has_go_mod = scratch.src.join("go.mod").is_file();
        let mut recipe = recipe(runtime, scratch, &sources, has_go_mod);
        let module_cache = inst.layout.deps.join(DEPS_GOMOD);
        if runtime == Runtime::Go && module_cache.is_dir() {
            use_module_cache(&mut recipe, &module_cache);
        }
        Ok((kind, recipe))
    }

    /// Runs the toolchain to its end or the deadline, then packs the artifact.
    fn compile(
        &self,
        inst: &mut Instance,
        spec: &InvokeSpec,
        scratch: &BuildDirs,
        kind: Kind,
        recipe: &Recipe,
        deadline: Instant,
    ) -> Result<Finished, AgentError> {
        let (out_r, out_w) = process::pipe()?;
        let (err_r, err_w) = process::pipe()?;
        let (res_r, res_w) = process::pipe()?;
        drop(res_w); // the toolchain has nothing to report on fd 3
        let mut pipes = Pipes::new(out_r, err_r, res_r, OUTPUT_KEEP)?;
        let started = Instant::now();
        let pid = process::spawn(SpawnSpec {
            program: &inst.interpreter,
            args: &recipe.args,
            env: &recipe.env,
            cwd: &scratch.src,
            fds: [process::dev_null()?, out_w, err_w, process::dev_null()?],
        })?;
        inst.reaper.track(pid);
        let pidfd = process::pidfd_open(pid)?;
        let ending = loop {
            let now = Instant::now();
            if now >= deadline {
                break Ending::TimedOut(None);
            }
            let mut fds = vec![process::pollfd(pidfd.as_raw_fd(), libc::POLLIN)];
            fds.extend(pipes.pollfds());
            if let Err(e) = process::poll(&mut fds, Some(deadline - now)) {
                break Ending::Lost(e.to_string(), None);
            }
            pipes.pump(&mut Quiet);
            if let ChildState::Exited(info) = inst.reaper.state(pid) {
                break Ending::Exited(info);
            }
        };
        let duration = started.elapsed();
        let (ending, sweep) = run::settle(inst, pid, ending, &mut pipes, &mut Quiet);
        let succeeded = matches!(&ending, Ending::Exited(info) if info.exit_code() == Some(0));
        let mut payload = Vec::new();
        let result = if succeeded {
            match self.pack(scratch, kind) {
                Ok(tar) => {
                    payload = tar;
                    serde_json::json!({ "ok": null })
                }
                Err(why) => failure(&why.to_string()),
            }
        } else if matches!(&ending, Ending::Exited(info) if info.exit_code().is_some()) {
            let mut output = String::from_utf8_lossy(pipes.stderr.data()).into_owned();
            let stdout = String::from_utf8_lossy(pipes.stdout.data());
            if !stdout.trim().is_empty() {
                output = format!("{}\n{output}", stdout.trim_end());
            }
            if self.runtime == Runtime::Python {
                failure(&crate::install::message(&output))
            } else {
                failure(&compiler_message(self.runtime, kind, scratch, &output))
            }
        } else {
            // Killed (by the deadline or a signal): the generic outcome says so.
            serde_json::Value::Null
        };
        let result = if result.is_null() {
            Vec::new()
        } else {
            result.to_string().into_bytes()
        };
        let report = Report {
            request_id: &spec.request_id,
            timeout_ms: spec.timeout_ms,
            ending,
            duration,
            sweep,
            runtime_healthy: true,
        };
        let mut finished = run::finish(report, &mut pipes, &result);
        if finished.outcome.status == OutcomeStatus::Success {
            finished.payload = payload;
        }
        Ok(finished)
    }

    /// Reads the program the toolchain left and packs it with its manifest.
    fn pack(&self, scratch: &BuildDirs, kind: Kind) -> Result<Vec<u8>, PackError> {
        if self.runtime == Runtime::Python {
            return crate::install::pack(&crate::install::target(&scratch.out))
                .map_err(PackError::InstalledPackages);
        }
        let size = fs::metadata(&scratch.program)
            .map_err(PackError::NoProgram)?
            .len();
        if size > MAX_PROGRAM_BYTES {
            return Err(PackError::TooLarge(size));
        }
        let program = fs::read(&scratch.program).map_err(PackError::Unreadable)?;
        let manifest = Manifest {
            runtime: self.runtime,
            kind,
            build_version: BUILD_VERSION,
        };
        Ok(artifact(&program, &manifest)?)
    }
}

/// Why a build that succeeded left no artifact: the build's error says so.
#[derive(Debug, thiserror::Error)]
enum PackError {
    /// The toolchain exited 0 without writing the program.
    #[error("the compiler succeeded but left no program: {0}")]
    NoProgram(#[source] std::io::Error),
    /// The program is over [`MAX_PROGRAM_BYTES`].
    #[error("the program is {} MB: the limit is {} MB", .0 >> 20, MAX_PROGRAM_BYTES >> 20)]
    TooLarge(u64),
    /// The program is there but cannot be read.
    #[error("cannot read the program: {0}")]
    Unreadable(#[source] std::io::Error),
    /// pip's tree cannot be packed.
    #[error("cannot pack the installed packages: {0}")]
    InstalledPackages(#[source] AgentError),
    /// The artifact cannot be packed.
    #[error(transparent)]
    Artifact(#[from] AgentError),
}

/// Why a build did not start (the user's package cannot be built as it is).
struct Refusal(String);

/// The result JSON of a failed build.
fn failure(message: &str) -> serde_json::Value {
    serde_json::json!({
        "error": {"type": "BuildFailed", "message": message, "trace": ""}
    })
}

/// The outcome of a build refused before the toolchain ran.
fn refused(spec: &InvokeSpec, message: String, duration: Duration) -> Finished {
    let mut finished = run::not_run(&spec.request_id, message.clone());
    finished.outcome.status = OutcomeStatus::Error;
    finished.outcome.healthy = true;
    finished.outcome.handler_duration_ms = duration.as_secs_f64() * 1000.0;
    if let Some(error) = finished.outcome.error.as_mut() {
        error.kind = "BuildFailed".into();
        error.message = message;
    }
    finished
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_in_code_makes_a_program_and_main_in_comments_or_strings_does_not() {
        let cpp = |s: &str| detect(Runtime::Cpp, [s]);
        assert_eq!(cpp("int main() { return 0; }"), Kind::Program);
        assert_eq!(cpp("int\nmain (int argc, char** argv) {}"), Kind::Program);
        assert_eq!(cpp("auto main() -> int { return 0; }"), Kind::Program);
        assert_eq!(
            cpp("std::string handler(const std::string& e) { return e; }"),
            Kind::Handler
        );
        assert_eq!(cpp("// int main() is supplied by hearth\n"), Kind::Handler);
        assert_eq!(cpp("/* int main(\n) */ int x;"), Kind::Handler);
        assert_eq!(cpp(r#"const char* s = "int main(";"#), Kind::Handler);
        assert_eq!(cpp(r#"const char* s = "\"int main(";"#), Kind::Handler);
        assert_eq!(cpp("int domain(int x);"), Kind::Handler);
        assert_eq!(
            detect(Runtime::Cpp, ["int f();", "int main() {}"]),
            Kind::Program
        );

        let go = |s: &str| detect(Runtime::Go, [s]);
        assert_eq!(go("package main\nfunc main() {}\n"), Kind::Program);
        assert_eq!(go("package main\nfunc  main ( ) {}\n"), Kind::Program);
        assert_eq!(
            go("package main\nfunc Handler(e map[string]interface{}) (interface{}, error)"),
            Kind::Handler
        );
        assert_eq!(go("package main\n// func main() {}\n"), Kind::Handler);
        assert_eq!(
            go("package main\nvar s = `\nfunc main() {\n`\n"),
            Kind::Handler
        );
        assert_eq!(go("package main\nfunc mainly() {}\n"), Kind::Handler);
    }

    #[test]
    fn recipes_compile_the_right_files_statically_with_no_user_environment() {
        let scratch = BuildDirs::under(Path::new("/tmp"));
        let files = [
            PathBuf::from("hearth_main.cpp"),
            PathBuf::from("lib/util.cc"),
        ];
        let cpp = recipe(Runtime::Cpp, &scratch, &files, false);
        assert!(cpp.args.contains(&"-static".to_string()));
        assert!(
            cpp.args.contains(&"-s".to_string()),
            "stripped: less to copy at a cold start"
        );
        assert!(cpp.args.contains(&"-std=gnu++17".to_string()));
        assert!(cpp
            .args
            .ends_with(&["hearth_main.cpp".into(), "lib/util.cc".into()]));
        let o = cpp.args.iter().position(|a| a == "-o").unwrap();
        assert_eq!(cpp.args[o + 1], "/tmp/hearth-build/out/function");

        let go = recipe(Runtime::Go, &scratch, &[PathBuf::from("main.go")], false);
        assert_eq!(go.args[0], "build");
        assert_eq!(go.args.last().unwrap(), "main.go");
        let env: std::collections::BTreeMap<_, _> = go.env.iter().cloned().collect();
        assert_eq!(env["CGO_ENABLED"], "0");
        assert_eq!(env["GOPROXY"], "off");
        assert!(env["GOCACHE"].starts_with("/tmp/hearth-build/"));
        let with_mod = recipe(Runtime::Go, &scratch, &[PathBuf::from("main.go")], true);
        assert_eq!(with_mod.args.last().unwrap(), ".");
    }

    #[test]
    fn compiler_messages_lose_scratch_paths_and_gain_hints() {
        let scratch = BuildDirs::under(Path::new("/tmp"));
        let message = |runtime, kind, raw: &str| compiler_message(runtime, kind, &scratch, raw);
        let raw = "/tmp/hearth-build/src/main.cpp:3:5: error: expected ';'";
        let plain = message(Runtime::Cpp, Kind::Program, raw);
        assert_eq!(plain, "main.cpp:3:5: error: expected ';'");
        let raw = "# command-line-arguments\n./main.go:5:1: syntax error\n";
        let plain = message(Runtime::Go, Kind::Program, raw);
        assert_eq!(plain, "main.go:5:1: syntax error");
        // The compiler's words, and the hint they must bring (none: no hint at all).
        let cases = [
            (
                Runtime::Cpp,
                Kind::Handler,
                "hearth_main.cpp:80:57: error: 'handler' was not declared in this scope",
                Some("hint: a handler-only C++ function"),
            ),
            (
                Runtime::Cpp,
                Kind::Handler,
                "In file included from hearth_main.cpp:1:\nmain.cpp:3:11: error: expected ';'",
                None,
            ),
            (
                Runtime::Go,
                Kind::Handler,
                "./hearth_main.go:87:24: undefined: Handler",
                Some("hint: a handler-only Go function"),
            ),
            (
                Runtime::Go,
                Kind::Program,
                "main.go:4:2: no required module provides package github.com/x/y",
                Some("no network"),
            ),
        ];
        for (runtime, kind, raw, hint) in cases {
            let text = message(runtime, kind, raw);
            match hint {
                Some(hint) => assert!(text.contains(hint), "{text}"),
                None => assert!(!text.contains("hint"), "a plain syntax error: {text}"),
            }
        }
        let long = "x".repeat(2 * MESSAGE_KEEP);
        let message = compiler_message(Runtime::Go, Kind::Program, &scratch, &long);
        assert!(message.len() < MESSAGE_KEEP + 100);
    }

    #[test]
    fn the_artifact_holds_an_executable_program_and_its_manifest() {
        let manifest = Manifest {
            runtime: Runtime::Go,
            kind: Kind::Handler,
            build_version: BUILD_VERSION,
        };
        let tar = artifact(b"\x7fELF...", &manifest).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (ARTIFACT_PROGRAM.to_string(), 0o755),
                (ARTIFACT_MANIFEST.to_string(), 0o644)
            ]
        );
    }

    #[test]
    fn source_files_skip_tests_and_find_nested_cpp() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "main.go",
            "util.go",
            "util_test.go",
            "sub/x.go",
            "README.md",
        ] {
            let path = dir.path().join(f);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        let go = source_files(Runtime::Go, dir.path()).unwrap();
        assert_eq!(go, vec![PathBuf::from("main.go"), PathBuf::from("util.go")]);
        for f in ["main.cpp", "lib/a.cc", "lib/deep/b.cxx", "lib/c.h"] {
            let path = dir.path().join(f);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        let cpp = source_files(Runtime::Cpp, dir.path()).unwrap();
        assert_eq!(
            cpp,
            vec![
                PathBuf::from("lib/a.cc"),
                PathBuf::from("lib/deep/b.cxx"),
                PathBuf::from("main.cpp")
            ]
        );
    }
}
