//! Function dependencies end to end against a real `hearth up` (native sandbox; Go
//! modules on the Docker sandbox too, whose builds get them copied in):
//! `requirements.txt` (numpy from PyPI, a pure wheel from a local `--find-links` dir),
//! `package.json` (a local npm registry) and `go.mod` (a local file proxy) are fetched
//! on the host executing nothing, installed once per set (`cached` after), mounted
//! read-only at `/deps`; what cannot be installed is a 422 naming it, and no package
//! code runs on the host (markers stay absent).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod deps_fixtures;

use deps_fixtures::{
    publish_go_module, stalling_server, write_sdist, write_wheel, write_wheel_padded, Registry,
};
use hearth_testkit::{expect_error, zip_files, Hearth};
use serde_json::{json, Value};
use std::path::Path;

const NUMPY_MAIN: &str = r#"
import os, numpy, hearthpure

def handler(event, context):
    try:
        open(os.path.join(os.path.dirname(numpy.__file__), "evil.py"), "w").write("x")
        wrote = True
    except OSError as e:
        wrote = str(e)
    return {
        "sum": int(numpy.arange(int(event.get("n", 10))).sum()),
        "numpy": numpy.__file__,
        "pure": hearthpure.VALUE,
        "wrote": wrote,
    }
"#;

fn names(deployed: &Value) -> Vec<String> {
    deployed["dependencies"]["packages"]
        .as_array()
        .unwrap_or_else(|| panic!("no dependencies listed: {deployed}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_lowercase())
        .collect()
}

fn start(extra: &[&str]) -> Hearth {
    let mut args = vec!["--sandbox", "native"];
    args.extend_from_slice(extra);
    Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &args)
}

#[test]
fn python_requirements_install_once_run_read_only_and_cold_start_beside_vendored() {
    let wheels = tempfile::tempdir().unwrap();
    write_wheel(wheels.path(), "hearthpure", "1.0", "pure ok");
    let links = wheels.path().to_string_lossy().into_owned();
    let hearth = start(&["--pip-find-links", &links]);
    let requirements = "numpy\nhearthpure==1.0  # a local wheel\n";
    let files = [("main.py", NUMPY_MAIN), ("requirements.txt", requirements)];

    let deployed = hearth.deploy_files("np", &files, json!({"runtime": "python"}));
    let deps = &deployed["dependencies"];
    assert_eq!(deps["cached"], false, "{deployed}");
    assert_eq!(names(&deployed), ["hearthpure", "numpy"], "{deployed}");
    let size = deps["size_bytes"].as_u64().unwrap();
    assert!(size > 10 << 20, "numpy is large: {deployed}");
    for package in deps["packages"].as_array().unwrap() {
        assert!(package["size_bytes"].as_u64().unwrap() > 0, "{deployed}");
        assert!(!package["version"].as_str().unwrap().is_empty());
    }

    let inv = hearth.invoke("np", json!({"n": 100}));
    assert_eq!(inv["status"], "success", "{inv}");
    assert_eq!(inv["result"]["sum"], 4950);
    assert_eq!(inv["result"]["pure"], "pure ok");
    assert!(
        inv["result"]["numpy"]
            .as_str()
            .unwrap()
            .starts_with("/deps/python/numpy/"),
        "{inv}"
    );
    let wrote = &inv["result"]["wrote"];
    assert!(
        wrote.as_str().is_some_and(|e| e.contains("Read-only")),
        "the layer must be read-only: {inv}"
    );

    // The same requirements again (another function, changed code): nothing installed.
    let changed = NUMPY_MAIN.replace("def handler", "# changed\ndef handler");
    let again = hearth.deploy_files(
        "np-again",
        &[("main.py", &changed), ("requirements.txt", requirements)],
        json!({"runtime": "python"}),
    );
    assert_eq!(again["dependencies"]["cached"], true, "{again}");
    assert_eq!(again["dependencies"]["duration_ms"], 0.0, "{again}");
    assert_eq!(names(&again), names(&deployed));
    let inv = hearth.invoke("np-again", json!({}));
    assert_eq!(inv["result"]["sum"], 45, "{inv}");

    // The same numpy vendored in the zip (the way that worked before): copied from the
    // unpacked layer, beside a main.py that imports it from the code dir.
    let layers = hearth.data_dir().join("deps/layers");
    let layer = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .unwrap()
        .path();
    let main_py = NUMPY_MAIN
        .replace("import os, numpy, hearthpure", "import os, numpy")
        .replace("hearthpure.VALUE", "'vendored'");
    // As `hearth deploy DIR` packs it: no `__pycache__` (and a zip's times would not
    // match the `.pyc` files' anyway).
    let zip_of_layer = |with_pyc: bool| {
        let mut files: Vec<(String, Vec<u8>)> =
            vec![("main.py".into(), main_py.clone().into_bytes())];
        collect(&layer.join("python"), "", with_pyc, &mut files);
        files.retain(|(name, _)| !name.contains("/tests/") && !name.starts_with("hearthpure"));
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        zip_files(&refs)
    };
    let zips = [("np-vendored", zip_of_layer(false))];
    for (name, zip) in &zips {
        let response = hearth.deploy_zip(name, zip.clone(), json!({"runtime": "python"}));
        assert!(
            response.status().is_success(),
            "{}",
            response.text().unwrap()
        );
    }

    // Cold starts, alternating, each on a fresh version (the env changes).
    let mut cold: [Vec<f64>; 2] = Default::default();
    for round in 0..3 {
        let config = json!({"runtime": "python", "env": {"ROUND": round.to_string()}});
        hearth.deploy_files("np", &files, config.clone());
        for (name, zip) in &zips {
            let response = hearth.deploy_zip(name, zip.clone(), config.clone());
            assert!(response.status().is_success());
        }
        for (i, name) in ["np", "np-vendored"].iter().enumerate() {
            let inv = hearth.invoke(name, json!({}));
            assert_eq!(inv["status"], "success", "{inv}");
            assert_eq!(inv["cold_start"], true, "{inv}");
            assert_eq!(inv["result"]["sum"], 45, "{inv}");
            cold[i].push(inv["duration_ms"].as_f64().unwrap());
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "cold start ms, median of 3 (each: {cold:?}): numpy installed (layer at /deps) {:.0}; \
         the same numpy vendored in a {:.1} MB zip {:.0}",
        median(&cold[0]),
        zips[0].1.len() as f64 / 1e6,
        median(&cold[1]),
    );
}

/// Every file under `dir` as (zip path, bytes), `.pyc` caches only `with_pyc`.
fn collect(dir: &Path, prefix: &str, with_pyc: bool, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if with_pyc || entry.file_name() != "__pycache__" {
                collect(&entry.path(), &format!("{name}/"), with_pyc, out);
            }
        } else if kind.is_file() {
            out.push((name, std::fs::read(entry.path()).unwrap()));
        }
    }
}

#[test]
fn what_cannot_be_installed_is_a_422_naming_it_and_no_package_code_runs_on_the_host() {
    let work = tempfile::tempdir().unwrap();
    let links = work.path().join("links");
    std::fs::create_dir_all(&links).unwrap();
    let pip_marker = work.path().join("setup-py-ran");
    write_sdist(&links, "hearth-sdist-only", "1.0", &pip_marker);
    let registry = Registry::start();
    let npm_marker = work.path().join("npm-script-ran");
    let script = format!(
        "node -e \"require('fs').writeFileSync('{}', 'ran')\"",
        npm_marker.display()
    );
    registry.publish(
        "hearth-scripted",
        "1.0.0",
        "module.exports = (x) => 'scripted ' + x;\n",
        json!({"preinstall": script, "install": script, "postinstall": script}),
    );
    let hearth = start(&[
        "--pip-find-links",
        links.to_str().unwrap(),
        "--npm-registry",
        &registry.url,
    ]);
    let python = json!({"runtime": "python"});
    let deploy = |name: &str, requirements: &str| {
        hearth.deploy_zip(
            name,
            zip_files(&[
                ("main.py", b"def handler(e, c):\n    return 1\n".as_slice()),
                ("requirements.txt", requirements.as_bytes()),
            ]),
            python.clone(),
        )
    };

    let message = expect_error(
        deploy("sdist", "hearth-sdist-only\n"),
        422,
        "dependencies_failed",
    );
    assert!(message.contains("hearth-sdist-only"), "{message}");
    assert!(message.contains("source distribution"), "{message}");
    let message = expect_error(
        deploy("unknown", "hearth-no-such-package-4b1d\n"),
        422,
        "dependencies_failed",
    );
    assert!(message.contains("hearth-no-such-package-4b1d"), "{message}");
    assert!(message.contains("no such package"), "{message}");
    let message = expect_error(
        deploy("option", "-r /etc/passwd\n"),
        422,
        "dependencies_failed",
    );
    assert!(message.contains("line 1"), "{message}");
    assert!(!message.contains("root:"), "{message}");
    // No version was made.
    let missing = hearth
        .request(reqwest::Method::GET, "/v1/functions/sdist")
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);

    // npm: the package and the function's own package.json have install scripts.
    let package_json = json!({
        "name": "fn", "version": "1.0.0",
        "dependencies": {"hearth-scripted": "^1.0.0"},
        "scripts": {"preinstall": script, "postinstall": script},
    });
    let index = "const s = require('hearth-scripted');\n\
                 exports.handler = async (e) => ({ said: s('hi'), at: require.resolve('hearth-scripted') });\n";
    let node = json!({"runtime": "nodejs"});
    let files = [
        ("index.js", index),
        ("package.json", &package_json.to_string()),
    ];
    let deployed = hearth.deploy_files("scripted", &files, node.clone());
    assert_eq!(names(&deployed), ["hearth-scripted"], "{deployed}");
    assert_eq!(
        deployed["dependencies"]["scripts_not_run"],
        json!(["hearth-scripted@1.0.0"]),
        "{deployed}"
    );
    let inv = hearth.invoke("scripted", json!({}));
    assert_eq!(inv["status"], "success", "{inv}");
    assert_eq!(inv["result"]["said"], "scripted hi");
    assert_eq!(
        inv["result"]["at"],
        "/deps/node_modules/hearth-scripted/index.js"
    );
    let again = hearth.deploy_files("scripted-again", &files, node.clone());
    assert_eq!(again["dependencies"]["cached"], true, "{again}");

    let unknown = json!({"dependencies": {"hearth-not-published": "1.0.0"}}).to_string();
    let message = expect_error(
        hearth.deploy_zip(
            "npm-unknown",
            zip_files(&[
                ("index.js", index.as_bytes()),
                ("package.json", unknown.as_bytes()),
            ]),
            node.clone(),
        ),
        422,
        "dependencies_failed",
    );
    assert!(message.contains("hearth-not-published"), "{message}");
    let local = json!({"dependencies": {"x": "file:/etc"}}).to_string();
    let message = expect_error(
        hearth.deploy_zip(
            "npm-file",
            zip_files(&[
                ("index.js", b"".as_slice()),
                ("package.json", local.as_bytes()),
            ]),
            node,
        ),
        422,
        "dependencies_failed",
    );
    assert!(message.contains("only registry"), "{message}");

    assert!(!pip_marker.exists(), "a setup.py ran on the host");
    assert!(
        !npm_marker.exists(),
        "an npm install script ran on the host"
    );
}

// Go modules on both backends: mounted read-only into a native build, copied into a
// Docker build container's `/deps` volume (the container stays offline either way).
hearth_testkit::on_both_backends!(
    go_modules_come_from_the_proxy_checked_against_go_sum_and_build_offline
);

fn go_modules_come_from_the_proxy_checked_against_go_sum_and_build_offline(sandbox: &str) {
    let proxy = tempfile::tempdir().unwrap();
    let sum = publish_go_module(
        proxy.path(),
        "example.com/greet",
        "v1.0.0",
        &[(
            "greet.go",
            "package greet\n\nfunc Hello(name string) string { return \"hello, \" + name }\n",
        )],
    );
    let goproxy = format!("file://{}", proxy.path().display());
    let hearth = Hearth::start_with(
        env!("CARGO_BIN_EXE_hearth"),
        &["--sandbox", sandbox, "--goproxy", &goproxy],
    );
    let go_mod = "module fn\n\ngo 1.19\n\nrequire example.com/greet v1.0.0\n";
    let main_go = "package main\n\nimport \"example.com/greet\"\n\n\
                   func Handler(event map[string]interface{}) (interface{}, error) {\n\
                   \treturn map[string]string{\"greeting\": greet.Hello(\"go\")}, nil\n}\n";
    let go = json!({"runtime": "go"});
    let deployed = hearth.deploy_files(
        "greeter",
        &[("main.go", main_go), ("go.mod", go_mod), ("go.sum", &sum)],
        go.clone(),
    );
    assert_eq!(names(&deployed), ["example.com/greet"], "{deployed}");
    assert_eq!(deployed["dependencies"]["cached"], false);
    assert_eq!(deployed["build"]["cached"], false);
    let inv = hearth.invoke("greeter", json!({}));
    assert_eq!(inv["status"], "success", "{inv}");
    assert_eq!(inv["result"]["greeting"], "hello, go");

    // New code, same modules: built again, nothing fetched.
    let louder = main_go.replace("greet.Hello(\"go\")", "greet.Hello(\"GO\")");
    let again = hearth.deploy_files(
        "greeter",
        &[("main.go", &louder), ("go.mod", go_mod), ("go.sum", &sum)],
        go.clone(),
    );
    assert_eq!(again["dependencies"]["cached"], true, "{again}");
    assert_eq!(again["build"]["cached"], false, "{again}");
    assert_eq!(
        hearth.invoke("greeter", json!({}))["result"]["greeting"],
        "hello, GO"
    );

    // A go.sum that does not match the proxy's module, or none: refused.
    // The module's line carries its go.mod's hash: well-formed, and wrong.
    let lines: Vec<&str> = sum.lines().collect();
    let mod_hash = lines[1].rsplit(' ').next().unwrap();
    let module_line = lines[0].rsplit_once(' ').unwrap().0;
    let tampered = format!("{module_line} {mod_hash}\n{}\n", lines[1]);
    let message = expect_error(
        hearth.deploy_zip(
            "tampered",
            zip_files(&[
                ("main.go", main_go.as_bytes()),
                ("go.mod", go_mod.as_bytes()),
                ("go.sum", tampered.as_bytes()),
            ]),
            go.clone(),
        ),
        422,
        "dependencies_failed",
    );
    assert!(message.contains("example.com/greet"), "{message}");
    let message = expect_error(
        hearth.deploy_zip(
            "unsummed",
            zip_files(&[
                ("main.go", main_go.as_bytes()),
                ("go.mod", go_mod.as_bytes()),
            ]),
            go,
        ),
        422,
        "dependencies_failed",
    );
    assert!(message.contains("go.sum"), "{message}");
}

#[test]
fn the_docker_sandbox_refuses_dependencies_at_deploy_and_takes_vendored_code() {
    let hearth = Hearth::start_with(env!("CARGO_BIN_EXE_hearth"), &["--sandbox", "docker"]);
    let index = "exports.handler = async () => require('./node_modules/vendored')();\n";
    let package_json = json!({"dependencies": {"is-number": "7.0.0"}}).to_string();
    let message = expect_error(
        hearth.deploy_zip(
            "deps-on-docker",
            zip_files(&[
                ("index.js", index.as_bytes()),
                ("package.json", package_json.as_bytes()),
            ]),
            json!({"runtime": "nodejs"}),
        ),
        400,
        "runtime_unavailable",
    );
    assert!(message.contains("vendor"), "{message}");
    // Vendored in the zip (node_modules/ present): nothing to fetch, it runs.
    let deployed = hearth.deploy_files(
        "vendored-on-docker",
        &[
            ("index.js", index),
            ("package.json", &package_json),
            (
                "node_modules/vendored/index.js",
                "module.exports = () => 'vendored ok';\n",
            ),
        ],
        json!({"runtime": "nodejs"}),
    );
    assert!(deployed.get("dependencies").is_none(), "{deployed}");
    let inv = hearth.invoke("vendored-on-docker", json!({}));
    assert_eq!(inv["result"], "vendored ok", "{inv}");
}

#[test]
fn past_the_size_or_time_limit_is_a_422_with_the_figure() {
    let links = tempfile::tempdir().unwrap();
    write_wheel_padded(links.path(), "hearthbig", "1.0", "big", 3 << 20);
    let hearth = start(&[
        "--pip-find-links",
        links.path().to_str().unwrap(),
        "--deps-max-mb",
        "1",
    ]);
    let message = expect_error(
        hearth.deploy_zip(
            "big",
            zip_files(&[
                ("main.py", b"def handler(e, c):\n    return 1\n".as_slice()),
                ("requirements.txt", b"hearthbig==1.0\n".as_slice()),
            ]),
            json!({"runtime": "python"}),
        ),
        422,
        "dependencies_failed",
    );
    assert!(message.contains("take 4 MB installed"), "{message}");
    assert!(message.contains("limit is 1 MB"), "{message}");

    // A registry that never answers: the deadline stops the fetch.
    let registry = stalling_server();
    let hearth = start(&["--npm-registry", &registry, "--deps-timeout", "1"]);
    let package_json = json!({"dependencies": {"anything": "1.0.0"}}).to_string();
    let message = expect_error(
        hearth.deploy_zip(
            "slow",
            zip_files(&[
                ("index.js", b"exports.handler = () => 1;\n".as_slice()),
                ("package.json", package_json.as_bytes()),
            ]),
            json!({"runtime": "nodejs"}),
        ),
        422,
        "dependencies_failed",
    );
    assert!(message.contains("longer than 1 s"), "{message}");
}
