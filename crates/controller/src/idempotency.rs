//! Retried invocations never run twice: a request carrying `X-Hearth-Idempotency-Key`
//! (or `amz-sdk-invocation-id`, which the AWS SDKs keep across the retries of one call)
//! gets the answer of the first request with that key, from the same caller, for
//! [`REPLAY_WINDOW`]. A retry that arrives while the first is still running waits for
//! it; the first runs to its end even if its client went away (a client's read timeout
//! is what makes SDKs retry).
//!
//! Answers that say nothing ran (429, 5xx) are not kept, so their retries run.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long an answer is replayed.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Headers that carry an idempotency key, in order of preference.
pub const KEY_HEADERS: [&str; 2] = ["x-hearth-idempotency-key", "amz-sdk-invocation-id"];
/// Most bytes of answers kept; the oldest go first beyond it.
const MAX_KEPT_BYTES: usize = 64 << 20;
/// Largest answer kept (larger ones are not deduplicated).
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Longest key accepted.
const MAX_KEY_CHARS: usize = 256;

/// A finished answer.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

enum Entry {
    Running(watch::Receiver<Option<Arc<Answer>>>),
    Done { at: Instant, answer: Arc<Answer> },
}

/// The answers kept, by caller and key.
#[derive(Default)]
pub struct Replays {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Replays {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Plain data: still consistent if a holder panicked.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired answers, then the oldest while over the byte budget.
    fn prune(entries: &mut HashMap<String, Entry>) {
        entries.retain(|_, e| match e {
            Entry::Done { at, .. } => at.elapsed() < REPLAY_WINDOW,
            Entry::Running(_) => true,
        });
        let mut kept: Vec<(Instant, usize, String)> = entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Done { at, answer } => Some((*at, answer.body.len(), k.clone())),
                Entry::Running(_) => None,
            })
            .collect();
        let mut total: usize = kept.iter().map(|(_, n, _)| n).sum();
        kept.sort();
        for (_, n, key) in kept {
            if total <= MAX_KEPT_BYTES {
                break;
            }
            entries.remove(&key);
            total -= n;
        }
    }
}

/// Who is calling, from the (already verified) credentials: keys of different callers
/// never meet. A dashboard session is its key (by hash), as a Bearer key is.
fn caller(request: &Request) -> String {
    let auth = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256") {
        let key = rest
            .split(',')
            .find_map(|p| p.trim().strip_prefix("Credential="))
            .and_then(|c| c.split('/').next())
            .unwrap_or("");
        return format!("aws:{key}");
    }
    if let Some(secret) = auth.strip_prefix("Bearer ") {
        return format!("key:{}", crate::auth::secret_sha256(secret.trim()));
    }
    match request.extensions().get::<crate::auth::SessionKey>() {
        Some(key) => format!("key:{}", key.0),
        None => format!("other:{}", hex::encode(Sha256::digest(auth.as_bytes()))),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    KEY_HEADERS.iter().find_map(|name| {
        let value = headers.get(*name)?.to_str().ok()?.trim();
        (!value.is_empty() && value.len() <= MAX_KEY_CHARS).then(|| format!("{name}:{value}"))
    })
}

/// Middleware on invocation routes: replays or waits for the first answer of a key.
pub(crate) async fn dedup(
    State(replays): State<Arc<Replays>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = idempotency_key(request.headers()) else {
        return next.run(request).await;
    };
    let key = format!(
        "{} {} {} {key}",
        caller(&request),
        request.method(),
        request.uri().path()
    );
    let mut request = Some(request);
    loop {
        let action = {
            let mut entries = replays.lock();
            Replays::prune(&mut entries);
            match entries.get(&key) {
                Some(Entry::Done { answer, .. }) => Action::Replay(answer.clone()),
                Some(Entry::Running(rx)) => Action::Wait(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    entries.insert(key.clone(), Entry::Running(rx));
                    Action::Run(tx)
                }
            }
        };
        match action {
            Action::Replay(answer) => return replay(&answer),
            Action::Run(tx) => {
                let Some(request) = request.take() else {
                    // Unreachable: the first runner returns, so the request is taken once.
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                };
                return run_first(replays.clone(), key, tx, next, request).await;
            }
            Action::Wait(mut rx) => {
                if rx.changed().await.is_err() {
                    // The first ended without an answer (its task failed): forget it.
                    replays.lock().remove(&key);
                    continue;
                }
                let answer = rx.borrow().clone();
                if let Some(answer) = answer {
                    return replay(&answer);
                }
                // The first's answer is not kept (nothing ran): run this one.
            }
        }
    }
}

enum Action {
    Replay(Arc<Answer>),
    Wait(watch::Receiver<Option<Arc<Answer>>>),
    Run(watch::Sender<Option<Arc<Answer>>>),
}

async fn run_first(
    replays: Arc<Replays>,
    key: String,
    tx: watch::Sender<Option<Arc<Answer>>>,
    next: Next,
    request: Request,
) -> Response {
    // Spawned, so a client that went away does not cancel what its retry will wait for.
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        let (parts, body) = response.into_parts();
        let body = match axum::body::to_bytes(body, MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(e) => {
                replays.lock().remove(&key);
                tracing::warn!(error = %e, "an answer too large to keep for retries");
                return Err(StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
        let answer = Arc::new(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        });
        let keep =
            !(answer.status.is_server_error() || answer.status == StatusCode::TOO_MANY_REQUESTS);
        {
            let mut entries = replays.lock();
            if keep {
                entries.insert(
                    key,
                    Entry::Done {
                        at: Instant::now(),
                        answer: answer.clone(),
                    },
                );
            } else {
                entries.remove(&key);
            }
        }
        // Waiters of an answer not kept run their own request.
        let _ = tx.send(keep.then(|| answer.clone()));
        Ok(answer)
    });
    match task.await {
        Ok(Ok(answer)) => respond(&answer, false),
        Ok(Err(status)) => status.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "an idempotent invocation's task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn replay(answer: &Answer) -> Response {
    respond(answer, true)
}

fn respond(answer: &Answer, replayed: bool) -> Response {
    let mut response = Response::new(Body::from(answer.body.clone()));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers.clone();
    if replayed {
        response.headers_mut().insert(
            "x-hearth-idempotent-replay",
            HeaderValue::from_static("true"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    fn app(runs: Arc<AtomicUsize>, status: StatusCode) -> Router {
        let replays = Arc::new(Replays::default());
        Router::new()
            .route(
                "/invoke",
                post(move || {
                    let runs = runs.clone();
                    async move {
                        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        (status, format!("run {n}"))
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(replays, dedup))
    }

    fn request(key: Option<&str>, auth: &str) -> Request {
        let mut b = Request::post("/invoke").header("authorization", auth);
        if let Some(key) = key {
            b = b.header("amz-sdk-invocation-id", key);
        }
        b.body(Body::empty()).unwrap()
    }

    async fn body(r: Response) -> String {
        String::from_utf8(
            axum::body::to_bytes(r.into_body(), 1 << 20)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_retry_gets_the_first_answer_even_while_it_runs() {
        let runs = Arc::new(AtomicUsize::new(0));
        let app = app(runs.clone(), StatusCode::OK);
        let (a, b) = tokio::join!(
            app.clone().oneshot(request(Some("k1"), "Bearer x")),
            app.clone().oneshot(request(Some("k1"), "Bearer x")),
        );
        assert_eq!(body(a.unwrap()).await, "run 1");
        assert_eq!(body(b.unwrap()).await, "run 1");
        let later = app
            .clone()
            .oneshot(request(Some("k1"), "Bearer x"))
            .await
            .unwrap();
        assert_eq!(later.headers()["x-hearth-idempotent-replay"], "true");
        assert_eq!(body(later).await, "run 1");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Another key, another caller, or no key: runs again.
        app.clone()
            .oneshot(request(Some("k2"), "Bearer x"))
            .await
            .unwrap();
        app.clone()
            .oneshot(request(Some("k1"), "Bearer y"))
            .await
            .unwrap();
        app.clone()
            .oneshot(request(None, "Bearer x"))
            .await
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn answers_that_ran_nothing_are_not_kept() {
        let runs = Arc::new(AtomicUsize::new(0));
        let app = app(runs.clone(), StatusCode::TOO_MANY_REQUESTS);
        app.clone()
            .oneshot(request(Some("k"), "Bearer x"))
            .await
            .unwrap();
        app.clone()
            .oneshot(request(Some("k"), "Bearer x"))
            .await
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
