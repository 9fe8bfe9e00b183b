//! hearth's HTTP API (`docs/API.md`, the contract): auth, deploy, invoke, invocations, status,
//! and the AutoTuner's endpoints (`tuning`: advice, apply with auto-revert, explore).
//!
//! Owns: routing, request parsing and limits (the bodies themselves are `hearth_api`'s
//! types, shared with the CLI), the one [`ApiError`] type every handler returns, the key checks (admin key, stored keys with roles, rate limits), the `queued` record of an accepted async invocation,
//! and a cache of the invocations it answered.
//!
//! Never: runs code or writes history (it hands invocations to the workers through the
//! [`Fleet`] seam: one worker in process for `hearth up`, Redis for a cluster; the
//! workers run, retry, and record), reads a worker's disk (logs and outputs come from
//! the object store), or knows how metadata and objects are stored (it holds a `dyn
//! MetadataStore` and a `CodeStore`). Handlers turn HTTP into domain calls and back;
//! nothing below this crate imports axum.
//!
//! The dashboard (`web/`, embedded) is served at `/` with its sessions and live feed
//! (`dashboard`, `session`, `events`, `stats`).
//!
//! The AWS Lambda API (`/2015-03-31/…`, SigV4-verified) is a translation layer over the
//! same deploy and invoke functions ([`lambda`]); retried invocations are answered once
//! (`idempotency`); `GET /v1/openapi.json` is generated from the handlers' annotations
//! (`openapi`, `schemas`).
//!
//! Verb (one per layer, README "One call, followed down"): `invoke`, the user's, ends here: the
//! handlers hand the call to [`Fleet::dispatch`](hearth_worker::fleet::Fleet::dispatch).
//!
//! Tenants: keys with roles and limits (`keys`, checked in `auth`), namespaces that
//! keep each key to its own functions (`tenancy`), and quotas (`quota`).

mod artifacts;
mod auth;
mod dashboard;
mod entry;
mod error;
mod events;
mod fleet_error;
mod functions;
mod history;
mod idempotency;
mod invoke;
mod keys;
pub mod lambda;
mod openapi;
mod quota;
mod rejection;
mod schemas;
mod session;
mod stats;
mod status;
mod telemetry;
mod tenancy;
mod tuning;

pub use error::ApiError;
pub use telemetry::install_metrics;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use hearth_store::{
    CodeStore, FunctionRecord, Limiter, LocalLimiter, LocalSessions, MetadataStore, SessionStore,
};
use hearth_worker::fleet::Fleet;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// Largest deploy request body: a 50 MB zip plus the config part and multipart framing.
const MAX_DEPLOY_BODY: usize = 51 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    metadata: Arc<dyn MetadataStore>,
    code: CodeStore,
    fleet: Arc<dyn Fleet>,
    api_key: Arc<str>,
    history: Arc<history::History>,
    metrics: Option<PrometheusHandle>,
    started: Instant,
    functions: Arc<std::sync::Mutex<FunctionCache>>,
    replays: Arc<idempotency::Replays>,
    /// How long a cached function record is trusted: forever when this process is
    /// the only writer of its metadata store, briefly when other controllers deploy too.
    function_ttl: Option<std::time::Duration>,
    tuner: Arc<tuning::Tuner>,
    /// Keys' rate limits and concurrency slots: in process, or shared on Redis.
    limiter: Arc<dyn Limiter>,
    quota_cache: Arc<quota::QuotaCache>,
    /// Dashboard sessions: in process, or shared on Redis.
    sessions: Arc<dyn SessionStore>,
}

/// Newest versions by name, and a generation that every deploy or delete bumps, so a
/// reader that raced with one never caches what it read before it.
#[derive(Default)]
struct FunctionCache {
    records: std::collections::HashMap<String, (FunctionRecord, Instant)>,
    generation: u64,
}

impl AppState {
    /// Wires the API to its stores and the workers and starts the pruning of old
    /// history. `metrics` renders `/metrics` when given.
    pub fn new(
        metadata: Arc<dyn MetadataStore>,
        code: CodeStore,
        fleet: Arc<dyn Fleet>,
        api_key: String,
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        let state = AppState {
            history: Arc::new(history::History::default()),
            metadata,
            code,
            fleet,
            api_key: api_key.into(),
            metrics,
            started: Instant::now(),
            functions: Default::default(),
            replays: Default::default(),
            function_ttl: None,
            tuner: Default::default(),
            limiter: Arc::new(LocalLimiter::default()),
            quota_cache: Default::default(),
            sessions: Arc::new(LocalSessions::default()),
        };
        history::prune_forever(state.metadata.clone(), state.code.clone());
        state
    }

    /// Trusts cached function records for `ttl` only: other processes deploy to the
    /// same metadata store (a cluster of controllers).
    pub fn with_function_ttl(mut self, ttl: std::time::Duration) -> AppState {
        self.function_ttl = Some(ttl);
        self
    }

    /// Keeps rate limits and concurrency slots in `limiter` (a cluster's controllers
    /// share one on Redis) instead of this process's memory.
    pub fn with_limiter(mut self, limiter: Arc<dyn Limiter>) -> AppState {
        self.limiter = limiter;
        self
    }

    /// Keeps dashboard sessions in `sessions` (a cluster's controllers share one on
    /// Redis, so any of them serves a browser signed in through another).
    pub fn with_sessions(mut self, sessions: Arc<dyn SessionStore>) -> AppState {
        self.sessions = sessions;
        self
    }

    fn function_cache(&self) -> std::sync::MutexGuard<'_, FunctionCache> {
        // Plain data: still consistent if a holder panicked.
        self.functions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached record of `name`, or the generation to pass to
    /// [`remember_read`](Self::remember_read) after reading the store.
    fn cached_function(&self, name: &str) -> Result<FunctionRecord, u64> {
        let cache = self.function_cache();
        match cache.records.get(name) {
            Some((record, read)) if self.function_ttl.is_none_or(|ttl| read.elapsed() < ttl) => {
                Ok(record.clone())
            }
            _ => Err(cache.generation),
        }
    }

    /// Caches a record read from the store, unless a deploy or delete happened since
    /// `generation`.
    fn remember_read(&self, record: &FunctionRecord, generation: u64) {
        let mut cache = self.function_cache();
        if cache.generation == generation {
            cache
                .records
                .insert(record.name.clone(), (record.clone(), Instant::now()));
        }
    }

    /// Records what the store now holds for `name` after a deploy (`Some`) or delete.
    fn cache_function(&self, record: Option<&FunctionRecord>, name: &str) {
        let mut cache = self.function_cache();
        cache.generation += 1;
        match record {
            Some(record) => cache
                .records
                .insert(name.to_string(), (record.clone(), Instant::now())),
            None => cache.records.remove(name),
        };
    }

    /// Stops the workers in this process (a local fleet destroys its warm instances).
    pub async fn shutdown(&self) {
        self.fleet.shutdown().await;
    }
}

/// The whole API as a router.
pub fn router(state: AppState) -> Router {
    let sessions = state.sessions.clone();
    let v1 = Router::new()
        .route("/functions", get(functions::list))
        .route(
            "/functions/{name}",
            get(functions::get)
                .put(functions::deploy)
                .delete(functions::delete)
                .layer(DefaultBodyLimit::max(MAX_DEPLOY_BODY)),
        )
        .route(
            "/functions/{name}/invoke",
            post(invoke::invoke)
                .layer(DefaultBodyLimit::disable())
                .layer(axum::middleware::from_fn_with_state(
                    state.replays.clone(),
                    idempotency::dedup,
                )),
        )
        .route("/functions/{name}/invocations", get(invoke::list))
        .route("/invocations/{id}", get(invoke::get))
        .route("/invocations/{id}/logs", get(artifacts::logs))
        .route("/invocations/{id}/outputs/{*path}", get(artifacts::output))
        .route("/status", get(status::status))
        .route("/events", get(events::stream))
        .route("/stats/functions", get(stats::functions))
        .route("/functions/{name}/tuning", get(tuning::advice))
        .route("/functions/{name}/tuning/apply", post(tuning::apply))
        .route("/functions/{name}/tuning/explore", post(tuning::explore))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}", delete(keys::delete))
        .route(
            "/namespaces/{namespace}",
            get(keys::get_namespace).put(keys::set_namespace),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .route("/openapi.json", get(openapi::serve))
        .layer(axum::middleware::from_fn(rejection::json_errors));
    let api = Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(status::healthz))
        .route("/metrics", get(status::metrics))
        .merge(lambda::router(state.clone()))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(
            rejection::close_after_error_with_body,
        ));
    dashboard::around(api, sessions)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
