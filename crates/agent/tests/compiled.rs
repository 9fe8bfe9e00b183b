//! The compiled runtimes (C++, Go) through a real agent in Existing mode: one agent
//! builds (`Purpose::Build`), another serves the artifact it made. Needs g++ and Go on
//! the host (`scripts/setup.sh` installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::compiled::{build, serve};
use common::{Agent, Reply};
use hearth_core::protocol::OutcomeStatus;
use hearth_core::Runtime;
use serde_json::{json, Value};

fn call(agent: &mut Agent, rid: &str, event: &Value) -> Reply {
    agent.invoke(rid, 5000, &event.to_string())
}

fn success(reply: &Reply) -> Value {
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Success,
        "{:#?}",
        reply.outcome
    );
    reply.value()
}

const CPP_HANDLER: &str = r#"
#include <string>
#include <stdexcept>
#include <unistd.h>
#include <cstdlib>
#include <iostream>

std::string handler(const std::string& event) {
  if (event.find("\"raise\"") != std::string::npos) throw std::invalid_argument("bad input: 42");
  if (event.find("\"loop\"") != std::string::npos) { volatile unsigned long n = 0; for (;;) n++; }
  if (event.find("\"text\"") != std::string::npos) return "plain text";
  std::cout << "hello from the handler" << std::endl;
  std::cerr << "to stderr" << std::endl;
  const char* rid = std::getenv("HEARTH_REQUEST_ID");
  return "{\"echo\":" + event + ",\"pid\":" + std::to_string(getpid()) +
         ",\"uid\":" + std::to_string(getuid()) + ",\"rid\":\"" + (rid ? rid : "") +
         "\",\"greeting\":\"" + std::getenv("GREETING") + "\"}";
}
"#;

#[test]
fn a_cpp_handler_runs_in_a_fresh_process_per_invocation() {
    let mut agent = serve(Runtime::Cpp, &[("main.cpp", CPP_HANDLER)]);
    let mut pids = Vec::new();
    for i in 0..3 {
        let rid = format!("c{i}");
        let reply = call(&mut agent, &rid, &json!({"i": i}));
        let v = success(&reply);
        assert_eq!(v["echo"], json!({"i": i}));
        assert_eq!(v["rid"], rid);
        assert_eq!(v["uid"], 65534);
        assert_eq!(v["greeting"], "hello");
        assert_eq!(reply.outcome.output.stdout, "hello from the handler\n");
        assert_eq!(reply.outcome.output.stderr, "to stderr\n");
        assert_eq!(
            reply.log(hearth_core::protocol::LogStream::Stdout),
            b"hello from the handler\n"
        );
        pids.push(v["pid"].as_i64().unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "a fresh process each time: {pids:?}");

    let text = call(&mut agent, "t", &json!({"action": "text"}));
    assert_eq!(success(&text), json!("plain text"));

    let raised = call(&mut agent, "r", &json!({"action": "raise"}));
    assert_eq!(raised.outcome.status, OutcomeStatus::Error);
    let error = raised.outcome.error.as_ref().unwrap();
    assert_eq!(error.kind, "std::invalid_argument");
    assert_eq!(error.message, "bad input: 42");

    let looped = agent.invoke("l", 500, &json!({"action": "loop"}).to_string());
    assert_eq!(looped.outcome.status, OutcomeStatus::Timeout);
    assert!(looped.outcome.healthy);
    success(&call(&mut agent, "after", &json!({})));
    agent.shutdown();
}

#[test]
fn a_c_style_handler_works_too() {
    let code = r#"
#include <cstring>
#include <cstdio>
extern "C" const char* handler(const char* event) {
  static char out[256];
  std::snprintf(out, sizeof out, "{\"length\": %zu}", std::strlen(event));
  return out;
}
"#;
    let mut agent = serve(Runtime::Cpp, &[("main.cpp", code)]);
    let reply = call(&mut agent, "c", &json!([1, 2, 3]));
    assert_eq!(success(&reply), json!({"length": 7}));
}

const CPP_PROGRAM: &str = r#"
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

int main() {
  const char* payload = std::getenv("PAYLOAD");
  const char* file = std::getenv("PAYLOAD_FILE");
  std::string event;
  std::string source;
  if (payload) { event = payload; source = "env"; }
  else if (file) { std::ifstream in(file); std::stringstream s; s << in.rdbuf(); event = s.str(); source = "file"; }
  std::stringstream stdin_copy;
  stdin_copy << std::cin.rdbuf();
  if (event.find("\"fail\"") != std::string::npos) { std::cerr << "cannot do that" << std::endl; return 3; }
  if (event.find("\"garbage\"") != std::string::npos) { std::cout << "not json at all" << std::endl; return 0; }
  std::cout << "working..." << std::endl;
  std::cout << "{\"source\":\"" << source << "\",\"length\":" << event.size()
            << ",\"stdin_length\":" << stdin_copy.str().size() << "}" << std::endl;
  return 0;
}
"#;

#[test]
fn a_cpp_program_reads_payload_and_prints_its_result() {
    let mut agent = serve(Runtime::Cpp, &[("main.cpp", CPP_PROGRAM)]);
    let small = json!({"n": 1});
    let reply = call(&mut agent, "p1", &small);
    let len = small.to_string().len();
    assert_eq!(
        success(&reply),
        json!({"source": "env", "length": len, "stdin_length": len})
    );
    assert!(reply.outcome.output.stdout.starts_with("working...\n"));

    let big = json!({"blob": "x".repeat(200 * 1024)});
    let len = big.to_string().len();
    let reply = call(&mut agent, "p2", &big);
    assert_eq!(
        success(&reply),
        json!({"source": "file", "length": len, "stdin_length": len})
    );

    let failed = call(&mut agent, "p3", &json!({"action": "fail"}));
    assert_eq!(failed.outcome.status, OutcomeStatus::Error);
    assert_eq!(failed.outcome.exit_code, Some(3));
    let message = &failed.outcome.error.as_ref().unwrap().message;
    assert!(
        message.contains("code 3") && message.contains("cannot do that"),
        "{message}"
    );

    let garbage = call(&mut agent, "p4", &json!({"action": "garbage"}));
    assert_eq!(garbage.outcome.status, OutcomeStatus::Error);
    let error = garbage.outcome.error.as_ref().unwrap();
    assert_eq!(error.kind, "InvalidOutput");
    assert!(error.message.contains("not JSON"), "{}", error.message);
    success(&call(&mut agent, "p5", &small));
}

#[test]
fn a_cpp_syntax_error_fails_the_build_with_the_compilers_line() {
    let code = "#include <string>\nstd::string handler(const std::string& e) {\n  return e\n}\n";
    let reply = build(Runtime::Cpp, &[("main.cpp", code)]);
    assert_eq!(
        reply.outcome.status,
        OutcomeStatus::Error,
        "{:#?}",
        reply.outcome
    );
    let error = reply.outcome.error.as_ref().unwrap();
    assert_eq!(error.kind, "BuildFailed");
    assert!(error.message.contains("main.cpp:3:"), "{}", error.message);
    assert!(!error.message.contains("hearth-build"), "{}", error.message);
    assert!(reply.payload.is_empty());
}

const GO_HANDLER: &str = r#"package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

func failDeeply(detail interface{}) {
	panic(fmt.Sprint("bad input: ", detail))
}

func Handler(ctx context.Context, event map[string]interface{}) (interface{}, error) {
	switch event["action"] {
	case "raise":
		return nil, errors.New(fmt.Sprint("bad input: ", event["detail"]))
	case "panic":
		failDeeply(event["detail"])
	}
	deadline, _ := ctx.Deadline()
	fmt.Println("hello from go")
	return map[string]interface{}{
		"echo":      event,
		"pid":       os.Getpid(),
		"rid":       os.Getenv("HEARTH_REQUEST_ID"),
		"remaining": time.Until(deadline).Milliseconds(),
	}, nil
}
"#;

#[test]
fn a_go_handler_gets_its_event_decoded_and_a_deadline() {
    let mut agent = serve(Runtime::Go, &[("main.go", GO_HANDLER)]);
    let mut pids = Vec::new();
    for i in 0..2 {
        let rid = format!("g{i}");
        let reply = call(&mut agent, &rid, &json!({"i": i}));
        let v = success(&reply);
        assert_eq!(v["echo"], json!({"i": i}));
        assert_eq!(v["rid"], rid);
        let remaining = v["remaining"].as_i64().unwrap();
        assert!(remaining > 0 && remaining <= 5000, "{remaining}");
        assert_eq!(reply.outcome.output.stdout, "hello from go\n");
        pids.push(v["pid"].as_i64().unwrap());
    }
    assert_ne!(pids[0], pids[1]);
    let raised = call(&mut agent, "r", &json!({"action": "raise", "detail": 42}));
    assert_eq!(raised.outcome.status, OutcomeStatus::Error);
    let error = raised.outcome.error.as_ref().unwrap();
    assert_eq!(
        (error.kind.as_str(), error.message.as_str()),
        ("error", "bad input: 42")
    );
    let panicked = call(&mut agent, "p", &json!({"action": "panic", "detail": 7}));
    let error = panicked.outcome.error.as_ref().unwrap();
    assert_eq!(error.kind, "panic");
    assert_eq!(error.message, "bad input: 7");
    assert!(error.trace.contains("main.failDeeply"), "{}", error.trace);
    let wrong = call(&mut agent, "w", &json!([1, 2]));
    assert_eq!(wrong.outcome.status, OutcomeStatus::Error);
    assert_eq!(wrong.outcome.error.as_ref().unwrap().kind, "InvalidEvent");
}

#[test]
fn a_go_program_and_a_go_compile_error() {
    let program = r#"package main

import (
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	var event map[string]interface{}
	json.Unmarshal([]byte(os.Getenv("PAYLOAD")), &event)
	out, _ := json.Marshal(map[string]interface{}{"got": event})
	fmt.Println(string(out))
}
"#;
    let mut agent = serve(Runtime::Go, &[("main.go", program)]);
    let reply = call(&mut agent, "gp", &json!({"x": [1]}));
    assert_eq!(success(&reply), json!({"got": {"x": [1]}}));

    let broken = "package main\n\nfunc Handler(e map[string]interface{}) (interface{}, error) {\n\treturn undefinedThing, nil\n}\n";
    let reply = build(Runtime::Go, &[("main.go", broken)]);
    assert_eq!(reply.outcome.status, OutcomeStatus::Error);
    let message = &reply.outcome.error.as_ref().unwrap().message;
    assert!(message.contains("main.go:4:"), "{message}");
    assert!(message.contains("undefinedThing"), "{message}");

    let networked =
        "package main\n\nimport \"github.com/nowhere/thing\"\n\nfunc main() { thing.Do() }\n";
    let reply = build(Runtime::Go, &[("main.go", networked)]);
    let message = &reply.outcome.error.as_ref().unwrap().message;
    assert!(message.contains("no network"), "{message}");
}
