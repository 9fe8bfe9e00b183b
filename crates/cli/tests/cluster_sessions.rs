//! Dashboard sessions in a cluster of two controllers (Redis, PostgreSQL, S3 of
//! `scripts/services.sh`): a browser signed in through one controller is served by the
//! other, a sign-out on either ends the session on both, a revoked key ends its
//! sessions, and Redis never holds a session token or an API key.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_testkit::cluster::{Cluster, CLUSTER_KEY};
use hearth_testkit::{expect_error, expect_ok};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A browser: no Bearer header, only what the dashboard gave it.
struct Browser {
    http: Client,
    cookie: String,
    csrf_token: String,
}

impl Browser {
    /// Signs in with `api_key` through the controller at `url`.
    fn sign_in(url: &str, api_key: &str) -> Browser {
        let http = client();
        let response = http
            .post(format!("{url}/ui/session"))
            .json(&json!({ "api_key": api_key }))
            .send()
            .unwrap();
        let cookie = hearth_testkit::session_cookie(&response);
        let body = expect_ok(response, "sign in");
        let csrf_token = body["csrf_token"].as_str().unwrap().to_string();
        Browser {
            http,
            cookie,
            csrf_token,
        }
    }

    fn token(&self) -> &str {
        self.cookie.split_once('=').unwrap().1
    }

    fn request(&self, method: Method, url: &str, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{url}{path}"))
            .header("cookie", &self.cookie)
    }

    fn get(&self, url: &str, path: &str) -> Response {
        self.request(Method::GET, url, path).send().unwrap()
    }

    fn session(&self, url: &str) -> Value {
        expect_ok(self.get(url, "/ui/session"), "GET /ui/session")
    }

    fn sign_out(&self, url: &str) -> Response {
        self.request(Method::DELETE, url, "/ui/session")
            .header("x-csrf-token", &self.csrf_token)
            .send()
            .unwrap()
    }
}

/// Every key under the cluster's prefix with its value (strings only: sessions are).
fn redis_contents(cluster: &Cluster) -> Vec<(String, String)> {
    let client = redis::Client::open(cluster.backing.redis.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", cluster.backing.prefix))
        .query(&mut conn)
        .unwrap();
    keys.into_iter()
        .map(|key| {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
            let value = if kind == "string" {
                redis::cmd("GET").arg(&key).query(&mut conn).unwrap()
            } else {
                String::new()
            };
            (key, value)
        })
        .collect()
}

#[test]
fn a_session_opened_on_one_controller_is_served_and_ended_on_the_other() {
    let cluster = Cluster::start_on_services(env!("CARGO_BIN_EXE_hearth"), 2, 0);
    let (a, b) = (cluster.url(0).to_string(), cluster.url(1).to_string());

    // Signed in on A, the browser reads /v1 on B and writes there with its CSRF token.
    let admin = Browser::sign_in(&a, CLUSTER_KEY);
    let on_b = admin.session(&b);
    assert_eq!(on_b["signed_in"], true, "{on_b}");
    assert_eq!(on_b["csrf_token"], admin.csrf_token.as_str(), "{on_b}");
    expect_ok(admin.get(&b, "/v1/functions"), "list on B with A's session");
    let made = expect_ok(
        admin
            .request(Method::POST, &b, "/v1/keys")
            .header("x-csrf-token", &admin.csrf_token)
            .json(&json!({"namespace": "s", "role": "developer"}))
            .send()
            .unwrap(),
        "create a key on B with A's session",
    );
    let write_without_csrf = admin
        .request(Method::POST, &b, "/v1/keys")
        .json(&json!({"namespace": "s", "role": "developer"}))
        .send()
        .unwrap();
    expect_error(write_without_csrf, 403, "csrf_failed");

    // A stored key's session, opened on B, is resolved by A from its hash.
    let (key_id, secret) = (
        made["id"].as_str().unwrap().to_string(),
        made["secret"].as_str().unwrap().to_string(),
    );
    let developer = Browser::sign_in(&b, &secret);
    expect_ok(
        developer.get(&a, "/v1/functions"),
        "list on A with B's session",
    );
    // The developer's role holds on the other controller: keys are the admin's.
    expect_error(developer.get(&a, "/v1/keys"), 403, "forbidden");

    // Redis holds the sessions, but neither a token nor a key, in names or values.
    let contents = redis_contents(&cluster);
    let sessions = contents
        .iter()
        .filter(|(key, _)| key.contains(":session:"))
        .count();
    assert_eq!(sessions, 2, "{contents:?}");
    for secret in [admin.token(), developer.token(), CLUSTER_KEY, &secret] {
        for (key, value) in &contents {
            assert!(
                !key.contains(secret) && !value.contains(secret),
                "Redis holds a secret under {key}: {value}"
            );
        }
    }

    // Signed out on B, the session is refused by A at once.
    assert_eq!(admin.sign_out(&b).status(), 204);
    expect_error(admin.get(&a, "/v1/functions"), 401, "session_expired");
    let on_a = admin.session(&a);
    assert_eq!(on_a["signed_in"], false, "{on_a}");
    // The other session is untouched.
    expect_ok(
        developer.get(&a, "/v1/functions"),
        "the developer's session",
    );

    // A key revoked through A ends its session on B.
    let revoked = cluster
        .request(0, Method::DELETE, &format!("/v1/keys/{key_id}"))
        .send()
        .unwrap();
    assert_eq!(revoked.status(), 204);
    expect_error(developer.get(&b, "/v1/functions"), 401, "unauthorized");
}
