//! Package fixtures for `dependencies.rs`, made by the test in its own temp dirs: a
//! wheel and a source distribution in a pip `--find-links` dir, an npm package served
//! by a tiny local registry, a Go module laid out as a file proxy (`GOPROXY=file://`).
//! Each "install" step that would run package code writes a marker file instead.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use sha2::{Digest, Sha256, Sha512};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Base64, standard or URL-safe alphabet, padded or not.
pub fn base64(data: &[u8], url_safe: bool, pad: bool) -> String {
    let alphabet: &[u8] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// A zip of `files`, without directory entries (as wheels and Go module zips are).
pub fn zip_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        writer
            .start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A pure-Python wheel `name-version-py3-none-any.whl` in `dir`, whose module `name`
/// has `VALUE = value`.
pub fn write_wheel(dir: &Path, name: &str, version: &str, value: &str) {
    write_wheel_padded(dir, name, version, value, 0);
}

/// The same, with a data file of `padding` bytes in the package.
pub fn write_wheel_padded(dir: &Path, name: &str, version: &str, value: &str, padding: usize) {
    let dist = format!("{name}-{version}.dist-info");
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (format!("{name}/padding.bin"), vec![7u8; padding]),
        (
            format!("{name}/__init__.py"),
            format!("VALUE = {value:?}\n").into_bytes(),
        ),
        (
            format!("{dist}/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").into_bytes(),
        ),
        (
            format!("{dist}/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: hearth-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_vec(),
        ),
    ];
    let mut record = String::new();
    for (path, data) in &files {
        let hash = base64(&Sha256::digest(data), true, false);
        record.push_str(&format!("{path},sha256={hash},{}\n", data.len()));
    }
    record.push_str(&format!("{dist}/RECORD,,\n"));
    files.push((format!("{dist}/RECORD"), record.into_bytes()));
    std::fs::write(
        dir.join(format!("{name}-{version}-py3-none-any.whl")),
        zip_of(&files),
    )
    .unwrap();
}

/// Runs `tar` (the system's) to make a `.tar.gz` of `dir`'s `top` in `out`.
fn tar_gz(dir: &Path, top: &str, out: &Path) {
    let status = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(top)
        .status()
        .unwrap();
    assert!(status.success(), "tar of {top}");
}

/// A source distribution `name-version.tar.gz` in `dir` whose `setup.py` writes
/// `marker` (were it ever run).
pub fn write_sdist(dir: &Path, name: &str, version: &str, marker: &Path) {
    let work = tempfile::tempdir().unwrap();
    let top = format!("{name}-{version}");
    let root = work.path().join(&top);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("setup.py"),
        format!(
            "open({:?}, 'w').write('setup.py ran')\nfrom setuptools import setup\nsetup(name={name:?}, version={version:?})\n",
            marker.to_string_lossy()
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("PKG-INFO"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"),
    )
    .unwrap();
    tar_gz(work.path(), &top, &dir.join(format!("{top}.tar.gz")));
}

/// A local npm registry: `GET /<name>` answers the packument, `GET /tarballs/<file>`
/// the tarball, from a directory; serves until the process ends.
pub struct Registry {
    /// `http://127.0.0.1:<port>/`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// An empty registry, listening.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tarballs")).unwrap();
        std::fs::create_dir_all(dir.path().join("packuments")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                std::thread::spawn(move || serve(stream, &root));
            }
        });
        Registry { url, dir }
    }

    /// Publishes `name@version` with `index_js` and `scripts` (a JSON object).
    pub fn publish(&self, name: &str, version: &str, index_js: &str, scripts: serde_json::Value) {
        let work = tempfile::tempdir().unwrap();
        let package = work.path().join("package");
        std::fs::create_dir_all(&package).unwrap();
        let manifest = serde_json::json!({
            "name": name, "version": version, "main": "index.js", "scripts": scripts,
        });
        std::fs::write(package.join("package.json"), manifest.to_string()).unwrap();
        std::fs::write(package.join("index.js"), index_js).unwrap();
        let file = format!("{name}-{version}.tgz");
        let tgz = self.dir.path().join("tarballs").join(&file);
        tar_gz(work.path(), "package", &tgz);
        let integrity = format!(
            "sha512-{}",
            base64(&Sha512::digest(std::fs::read(&tgz).unwrap()), false, true)
        );
        let mut version_doc = manifest.clone();
        version_doc["dist"] = serde_json::json!({
            "tarball": format!("{}tarballs/{file}", self.url),
            "integrity": integrity,
        });
        let packument = serde_json::json!({
            "name": name,
            "dist-tags": {"latest": version},
            "versions": {version: version_doc},
        });
        std::fs::write(
            self.dir.path().join("packuments").join(name),
            packument.to_string(),
        )
        .unwrap();
    }
}

fn serve(stream: std::net::TcpStream, root: &Path) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.trim_start_matches('/').replace("%2f", "/");
    let file: PathBuf = match path.strip_prefix("tarballs/") {
        Some(name) => root.join("tarballs").join(name),
        None => root.join("packuments").join(&path),
    };
    let body = if path.contains("..") {
        None
    } else {
        std::fs::read(&file).ok()
    };
    let mut stream = stream;
    let _ = match body {
        Some(body) => {
            let kind = if path.starts_with("tarballs/") {
                "application/octet-stream"
            } else {
                "application/json"
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream
                .write_all(head.as_bytes())
                .and_then(|_| stream.write_all(&body))
        }
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 21\r\nConnection: close\r\n\r\n{\"error\":\"not found\"}",
        ),
    };
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
}

/// A server that accepts connections and never answers (a registry that hangs); its URL.
pub fn stalling_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

/// Go's `h1:` hash of files (name, content): base64(sha256 of "sha256hex  name\n" lines,
/// sorted by name) (golang.org/x/mod/sumdb/dirhash `Hash1`).
fn go_h1(files: &[(String, Vec<u8>)]) -> String {
    let mut files: Vec<_> = files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut summary = String::new();
    for (name, data) in files {
        summary.push_str(&format!("{}  {name}\n", hex::encode(Sha256::digest(data))));
    }
    format!(
        "h1:{}",
        base64(&Sha256::digest(summary.as_bytes()), false, true)
    )
}

/// Lays out module `path@version` (one package, `files` beside its go.mod) as a Go file
/// proxy under `proxy`; returns its two `go.sum` lines.
pub fn publish_go_module(
    proxy: &Path,
    path: &str,
    version: &str,
    files: &[(&str, &str)],
) -> String {
    let go_mod = format!("module {path}\n\ngo 1.19\n");
    let dir = proxy.join(path).join("@v");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("list"), format!("{version}\n")).unwrap();
    std::fs::write(
        dir.join(format!("{version}.info")),
        format!(r#"{{"Version":"{version}","Time":"2026-01-01T00:00:00Z"}}"#),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{version}.mod")), &go_mod).unwrap();
    let prefix = format!("{path}@{version}");
    let mut zipped: Vec<(String, Vec<u8>)> =
        vec![(format!("{prefix}/go.mod"), go_mod.clone().into_bytes())];
    for (name, text) in files {
        zipped.push((format!("{prefix}/{name}"), text.as_bytes().to_vec()));
    }
    std::fs::write(dir.join(format!("{version}.zip")), zip_of(&zipped)).unwrap();
    let mod_hash = go_h1(&[("go.mod".to_string(), go_mod.into_bytes())]);
    format!(
        "{path} {version} {}\n{path} {version}/go.mod {mod_hash}\n",
        go_h1(&zipped)
    )
}
