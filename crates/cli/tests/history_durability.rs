//! What "nothing lost" means for invocation history (README, Performance: history
//! rows): a call whose answer the client received is in history after a clean
//! shutdown, even when history could not be written before it: the worker spills the
//! rows it still holds to its spool, and the next start writes them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::Hearth;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

fn deploy_echo(hearth: &Hearth) {
    hearth.deploy_files(
        "echo",
        &[(
            "main.py",
            "def handler(event, context):\n    return {'echo': event}\n",
        )],
        json!({"runtime": "python"}),
    );
}

fn status_of(hearth: &Hearth, id: &str) -> u16 {
    hearth
        .request(Method::GET, &format!("/v1/invocations/{id}"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn answered_calls_are_in_history_after_a_clean_stop_even_with_history_locked() {
    let mut hearth = Hearth::start(env!("CARGO_BIN_EXE_hearth"));
    deploy_echo(&hearth);
    let warm = hearth.invoke("echo", json!({"n": 0}));
    assert_eq!(warm["status"], "success", "{warm}");

    // Another process holds the database's write lock: no history row can be written
    // while these calls are answered (reads still work: SQLite's WAL).
    let db = hearth.data_dir().join("hearth.db");
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let ids: Vec<String> = (1..=5)
        .map(|n| {
            let answer = hearth.invoke("echo", json!({ "n": n }));
            assert_eq!(answer["status"], "success", "{answer}");
            answer["id"].as_str().unwrap().to_string()
        })
        .collect();
    hearth.stop();
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    hearth.restart();
    for id in &ids {
        hearth_testkit::eventually(
            Duration::from_secs(60),
            &format!("invocation {id} in history after the restart"),
            || status_of(&hearth, id) == 200,
        )
        .unwrap();
    }
    let listed = hearth
        .request(Method::GET, "/v1/functions/echo/invocations?limit=100")
        .send()
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed: serde_json::Value = listed.json().unwrap();
    let text = listed.to_string();
    for id in &ids {
        assert!(text.contains(id.as_str()), "{id} is listed: {text}");
    }
}
