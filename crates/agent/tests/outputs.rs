//! Full logs (`Log` frames) and output files (`Output` frames, a tar of `$OUTPUT_DIR`)
//! through a real agent in Existing mode. The harness checks every invocation's frame
//! order (`Log`*, `Output`*, `Result`) and frame sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{spec, Agent, Reply};
use hearth_core::protocol::{FromAgent, LogStream, OutcomeStatus, RootSetup};
use hearth_core::Runtime;
use serde_json::json;

const HANDLER: &str = r#"
import os, sys, time

def pattern(n):
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]

def handler(event, context):
    action = event.get("action")
    out = os.environ.get("OUTPUT_DIR")
    if action == "shout":
        sys.stdout.write("".join("line %07d\n" % i for i in range(event["lines"])))
        for i in range(event["errors"]):
            sys.stderr.write("err %d\n" % i)
        return "shouted"
    if action == "env":
        return {"output_dir": out, "listing": sorted(os.listdir(out)) if out else None}
    if action == "files":
        with open(os.path.join(out, "report.csv"), "w") as f:
            f.write("a,b\n1,2\n")
        os.makedirs(os.path.join(out, "sub", "dir"))
        with open(os.path.join(out, "sub", "dir", "x.bin"), "wb") as f:
            f.write(pattern(1000))
        with open(os.path.join(out, "big.bin"), "wb") as f:
            f.write(pattern(event["big"]))
        return "written"
    if action == "links":
        os.symlink("/etc/passwd", os.path.join(out, "passwd"))
        with open(os.path.join(out, "data.txt"), "w") as f:
            f.write("shared")
        os.link(os.path.join(out, "data.txt"), os.path.join(out, "hard.txt"))
        os.mkfifo(os.path.join(out, "fifo"))
        os.makedirs(os.path.join(out, "locked", "inner"))
        with open(os.path.join(out, "locked", "inner", "secret"), "w") as f:
            f.write("s")
        os.chmod(os.path.join(out, "locked", "inner", "secret"), 0)
        os.chmod(os.path.join(out, "locked", "inner"), 0)
        os.chmod(os.path.join(out, "locked"), 0)
        return "linked"
    if action == "write-then-loop":
        with open(os.path.join(out, "partial.txt"), "w") as f:
            f.write("before the timeout")
        while True:
            pass
    if action == "write-then-die":
        with open(os.path.join(out, "crash.txt"), "w") as f:
            f.write("before the crash")
        os.kill(os.getpid(), 9)
    if action == "write":
        with open(os.path.join(out, event["name"]), "wb") as f:
            f.write(pattern(event["size"]))
        return "written"
    return "quiet"
"#;

fn python_agent(output_size_mb: u64) -> Agent {
    let mut init = spec(Runtime::Python, RootSetup::Existing);
    init.output_size_mb = output_size_mb;
    init.env.insert("OUTPUT_DIR".into(), "/spoofed".into());
    let (agent, first) = Agent::existing(init, &[("main.py", HANDLER)]);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    agent
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn assert_success(reply: &Reply) {
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        reply.outcome
    );
}

/// The next invocation finds `$OUTPUT_DIR` empty and sends no `Output` frame.
fn assert_starts_empty(agent: &mut Agent, rid: &str) {
    let reply = agent.invoke(rid, 5000, r#"{"action": "env"}"#);
    assert_success(&reply);
    assert_eq!(reply.value()["listing"], json!([]));
    assert!(reply.output_pieces.is_empty());
    assert_eq!(reply.outcome.output_bytes, 0);
}

#[test]
fn every_byte_printed_arrives_in_log_frames_and_the_inline_copy_is_capped() {
    let mut agent = python_agent(0);
    let lines = 250_000; // 13 bytes each: 3.25 MB
    let errors = 2000;
    let event = json!({"action": "shout", "lines": lines, "errors": errors}).to_string();
    let reply = agent.invoke("loud", 30_000, &event);
    assert_success(&reply);
    let expected_out: String = (0..lines).map(|i| format!("line {i:07}\n")).collect();
    let expected_err: String = (0..errors).map(|i| format!("err {i}\n")).collect();
    let out = reply.log(LogStream::Stdout);
    assert_eq!(out.len(), expected_out.len());
    assert!(out == expected_out.as_bytes(), "stdout differs");
    assert_eq!(reply.log(LogStream::Stderr), expected_err.as_bytes());
    assert!(
        reply.logs.len() >= 4,
        "3 MB come in several frames: {}",
        reply.logs.len()
    );
    assert!(reply.outcome.output.truncated);
    assert_eq!(reply.outcome.output.stdout.len(), 64 * 1024);
    assert!(expected_out.starts_with(&reply.outcome.output.stdout));
    assert!(expected_err.starts_with(&reply.outcome.output.stderr));
    assert!(reply.output_pieces.is_empty());

    let reply = agent.invoke("silent", 5000, r#"{"action": "quiet"}"#);
    assert_success(&reply);
    assert!(
        reply.logs.is_empty(),
        "no Log frame for a silent invocation"
    );
    assert!(!reply.outcome.output.truncated);
}

#[test]
fn without_an_output_dir_there_is_no_output_dir_variable() {
    let mut agent = python_agent(0);
    let reply = agent.invoke("e", 5000, r#"{"action": "env"}"#);
    assert_success(&reply);
    assert_eq!(reply.value()["output_dir"], json!(null));
    let root = agent.root.as_ref().unwrap().path();
    assert!(!root.join("output").exists());
}

#[test]
fn files_written_to_the_output_dir_come_back_as_a_tar_and_are_removed() {
    let mut agent = python_agent(64);
    let reply = agent.invoke("env", 5000, r#"{"action": "env"}"#);
    let dir = reply.value()["output_dir"].as_str().unwrap().to_string();
    let root = agent.root.as_ref().unwrap().path();
    assert_eq!(
        dir,
        root.join("output").to_string_lossy(),
        "the user's value loses"
    );
    assert_eq!(reply.value()["listing"], json!([]));

    let big = 20 << 20;
    let event = json!({"action": "files", "big": big}).to_string();
    let reply = agent.invoke("files", 30_000, &event);
    assert_success(&reply);
    assert!(
        reply.output_pieces.len() > 20,
        "{}",
        reply.output_pieces.len()
    );
    let mut paths: Vec<String> = reply.outputs().into_iter().map(|e| e.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["big.bin", "report.csv", "sub/", "sub/dir/", "sub/dir/x.bin"]
    );
    assert_eq!(reply.output("report.csv").data, b"a,b\n1,2\n");
    assert_eq!(reply.output("sub/").kind, tar::EntryType::Directory);
    assert!(reply.output("sub/dir/x.bin").data == pattern(1000));
    let got = reply.output("big.bin");
    assert_eq!(got.kind, tar::EntryType::Regular);
    assert_eq!(got.data.len(), big);
    assert!(got.data == pattern(big), "big.bin differs");
    assert_eq!(reply.outcome.output_bytes, (8 + 1000 + big) as u64);
    assert!(!reply.outcome.output_quota_exceeded);
    assert!(reply.outcome.healthy);

    assert_starts_empty(&mut agent, "after");
    assert!(agent.shutdown().success());
}

#[test]
fn links_and_fifos_are_archived_as_such_and_never_followed() {
    let mut agent = python_agent(16);
    // A hang (a fifo opened for reading, a link followed in a loop) fails the call
    // when the result frame does not arrive within the harness's FRAME_WAIT.
    let reply = agent.invoke("links", 10_000, r#"{"action": "links"}"#);
    assert_success(&reply);
    let passwd = reply.output("passwd");
    assert_eq!(passwd.kind, tar::EntryType::Symlink);
    assert_eq!(passwd.link.as_deref(), Some("/etc/passwd"));
    assert!(passwd.data.is_empty(), "the link's target was not read");
    assert_eq!(reply.output("data.txt").data, b"shared");
    let hard = reply.output("hard.txt");
    assert_eq!(hard.kind, tar::EntryType::Link);
    assert_eq!(hard.link.as_deref(), Some("data.txt"));
    assert_eq!(reply.output("fifo").kind, tar::EntryType::Fifo);
    // What the function locked itself out of is still archived and removed.
    assert_eq!(reply.output("locked/inner/secret").data, b"s");
    assert_eq!(reply.outcome.output_bytes, 7);
    assert!(reply.outcome.healthy, "{:#?}", reply.outcome);
    assert_starts_empty(&mut agent, "after");
}

#[test]
fn the_dir_is_emptied_after_a_timeout_and_after_a_crash() {
    let mut agent = python_agent(16);
    let reply = agent.invoke("slow", 500, r#"{"action": "write-then-loop"}"#);
    assert_eq!(reply.outcome.status, OutcomeStatus::Timeout);
    assert_eq!(reply.output("partial.txt").data, b"before the timeout");
    assert_starts_empty(&mut agent, "after-timeout");

    let reply = agent.invoke("die", 5000, r#"{"action": "write-then-die"}"#);
    assert_eq!(reply.outcome.status, OutcomeStatus::Crashed);
    assert_eq!(reply.output("crash.txt").data, b"before the crash");
    assert_starts_empty(&mut agent, "after-crash");
}

#[test]
fn files_past_the_quota_are_left_out_and_flagged() {
    let mut agent = python_agent(1);
    let event = json!({"action": "write", "name": "big.bin", "size": 3 << 20}).to_string();
    let reply = agent.invoke("big", 10_000, &event);
    assert_success(&reply);
    assert!(reply.outcome.output_quota_exceeded, "{:#?}", reply.outcome);
    assert_eq!(reply.outcome.output_bytes, 0);
    assert!(reply.output_pieces.is_empty(), "nothing within the quota");
    assert!(reply.outcome.healthy);

    let event = json!({"action": "write", "name": "small.bin", "size": 1000}).to_string();
    let reply = agent.invoke("small", 10_000, &event);
    assert!(!reply.outcome.output_quota_exceeded);
    assert_eq!(reply.outcome.output_bytes, 1000);
    assert!(reply.output("small.bin").data == pattern(1000));
}

#[test]
fn a_node_handler_writes_an_output_file_and_its_load_output_is_logged() {
    let code = r#"
const fs = require('fs');
const path = require('path');
console.log('loading');
exports.handler = async (event) => {
  const dir = process.env.OUTPUT_DIR;
  const before = fs.readdirSync(dir);
  fs.writeFileSync(path.join(dir, 'hello.txt'), 'hi from node ' + event.n);
  console.error('wrote it');
  return { dir, before };
};
"#;
    let mut init = spec(Runtime::Nodejs, RootSetup::Existing);
    init.output_size_mb = 8;
    let (mut agent, first) = Agent::existing(init, &[("index.js", code)]);
    assert!(matches!(first, FromAgent::Ready(_)), "{first:?}");
    for n in 0..2 {
        let reply = agent.invoke("n", 10_000, &json!({"n": n}).to_string());
        assert_success(&reply);
        let v = reply.value();
        assert!(v["dir"].as_str().unwrap().ends_with("/output"), "{v}");
        assert_eq!(v["before"], json!([]));
        let file = reply.output("hello.txt");
        assert_eq!(file.data, format!("hi from node {n}").as_bytes());
        assert_eq!(reply.outputs().len(), 1);
        assert_eq!(reply.outcome.output_bytes, file.data.len() as u64);
        assert_eq!(reply.log(LogStream::Stdout), b"loading\n");
        assert_eq!(reply.log(LogStream::Stderr), b"wrote it\n");
    }
    assert!(agent.shutdown().success());
}
