//! The worker's side of the cluster: [`WorkerNode`].
//!
//! It publishes its status every 2 s, reads its own stream, the shared stream and the
//! async stream (only as much as it has free capacity for), and answers on each
//! controller's reply stream.
//!
//! - A sync call is acknowledged and deleted at once and claimed (`SET NX`) before it
//!   runs: it never runs twice.
//! - An async entry stays pending while it runs: that is its lease, renewed every 5 s
//!   (`XCLAIM … JUSTID`). Entries silent for [`LEASE`] are reclaimed by another worker
//!   (`XAUTOCLAIM`) and run again with the next attempt number; after three deliveries
//!   the invocation ends `failed`. A retry after a failed attempt is a new entry with a
//!   not-before time; the old one is acknowledged only after the new one is added.

use crate::janitor;
use crate::messages::{self, AsyncTask, Reply, ReplyOutcome, Task, FIELD};
use crate::{
    ensure_group, now_ms, status, ClusterError, RedisConfig, GROUP, HEARTBEAT_EVERY, LEASE,
};
use hearth_store::MetadataStore;
use hearth_worker::async_runner::{self, AttemptEnd, MAX_ATTEMPTS};
use hearth_worker::build::BuildRequest;
use hearth_worker::fleet::{FleetError, WorkerState};
use hearth_worker::{ExecuteRequest, Target, Worker};
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often a running async entry's lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often abandoned async entries are looked for.
const RECLAIM_EVERY: Duration = Duration::from_secs(3);
/// How long a blocking read waits for work.
const BLOCK_MS: u64 = 2000;

/// Settings of a worker node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the cluster's state lives.
    pub redis: RedisConfig,
    /// Tasks (sync calls, async attempts, builds) it runs at once at most.
    pub capacity: usize,
    /// How others may recognise it (host and data dir).
    pub address: String,
}

/// A worker serving a cluster.
pub struct WorkerNode {
    config: NodeConfig,
    worker: Arc<Worker>,
    metadata: Arc<dyn MetadataStore>,
    conn: ConnectionManager,
    active: AtomicUsize,
    freed: Notify,
    changed: Notify,
}

/// Counts a task as active until dropped.
struct Active(Arc<WorkerNode>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
        self.0.changed.notify_one();
    }
}

impl WorkerNode {
    /// Joins the cluster: creates the consumer groups, then heartbeats and takes work
    /// until the process ends.
    pub async fn start(
        config: NodeConfig,
        worker: Arc<Worker>,
        metadata: Arc<dyn MetadataStore>,
    ) -> Result<Arc<WorkerNode>, ClusterError> {
        let mut conn = config.redis.manager().await?;
        for stream in streams(&config.redis, worker.id()) {
            ensure_group(&mut conn, &stream)
                .await
                .map_err(|e| config.redis.error(e))?;
        }
        let node = Arc::new(WorkerNode {
            config,
            worker,
            metadata,
            conn,
            active: AtomicUsize::new(0),
            freed: Notify::new(),
            changed: Notify::new(),
        });
        node.heartbeat().await;
        tokio::spawn(heartbeat_forever(node.clone()));
        tokio::spawn(consume_forever(node.clone()));
        tokio::spawn(reclaim_forever(node.clone()));
        tokio::spawn(retire_forever(node.clone()));
        tokio::spawn(janitor::sweep_forever(
            node.config.redis.clone(),
            node.conn.clone(),
        ));
        Ok(node)
    }

    /// Leaves the cluster (its status key goes at once) and destroys warm instances.
    pub async fn stop(&self) {
        if let Err(error) =
            status::withdraw(&self.config.redis, &mut self.conn.clone(), self.worker.id()).await
        {
            tracing::warn!(%error, "cannot withdraw the worker's status");
        }
        self.worker.shutdown().await;
    }

    fn state(&self) -> WorkerState {
        let status = self.worker.status();
        WorkerState {
            id: status.id,
            address: self.config.address.clone(),
            backend: status.backend,
            capacity: self.config.capacity,
            active_invocations: self.active.load(Ordering::Relaxed),
            pools: status.pools,
            version: env!("CARGO_PKG_VERSION").into(),
            heartbeat_age_ms: 0,
        }
    }

    async fn heartbeat(&self) {
        let state = self.state();
        if let Err(error) =
            status::publish(&self.config.redis, &mut self.conn.clone(), &state).await
        {
            tracing::warn!(%error, "cannot publish the worker's status");
        }
    }

    fn take(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    fn free(&self) -> usize {
        self.config
            .capacity
            .saturating_sub(self.active.load(Ordering::Relaxed))
    }

    /// Runs a Redis command until it succeeds or `limit` passes (Redis may be away).
    async fn persist<T: redis::FromRedisValue>(
        &self,
        what: &str,
        command: &redis::Cmd,
        limit: Duration,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(100);
        loop {
            match command.query_async::<T>(&mut self.conn.clone()).await {
                Ok(value) => return Some(value),
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "{what} failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::error!(%error, "{what} failed; giving up");
                    return None;
                }
            }
        }
    }

    async fn reply(&self, to: &str, reply: Reply) {
        let Ok(body) = serde_json::to_vec(&reply) else {
            return;
        };
        let mut add = redis::cmd("XADD");
        add.arg(to).arg("*").arg(FIELD).arg(body);
        self.persist::<String>("sending a reply", &add, Duration::from_secs(30))
            .await;
    }

    async fn ack_and_delete(&self, stream: &str, entry_id: &str) {
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(stream)
            .arg(GROUP)
            .arg(entry_id)
            .ignore();
        pipe.cmd("XDEL").arg(stream).arg(entry_id).ignore();
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(error) = pipe.query_async::<()>(&mut self.conn.clone()).await {
            if Instant::now() > deadline {
                tracing::error!(%error, %entry_id, "cannot acknowledge a queue entry");
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs one sync task (already acknowledged).
    async fn run_task(self: Arc<Self>, task: Task, _active: Active) {
        match task {
            Task::Invoke {
                id,
                function,
                version,
                spec,
                code_sha256,
                event,
                started_at,
                dispatch,
                reply_to,
            } => {
                let mut claim = redis::cmd("SET");
                claim
                    .arg(self.config.redis.claim(&id, dispatch))
                    .arg(self.worker.id())
                    .arg("NX")
                    .arg("EX")
                    .arg(3600);
                match claim
                    .query_async::<Option<String>>(&mut self.conn.clone())
                    .await
                {
                    Ok(Some(_)) => {}
                    Ok(None) => return, // taken back by its controller: it runs elsewhere
                    Err(error) => {
                        tracing::warn!(%id, %error, "cannot claim a call; leaving it to its controller");
                        return;
                    }
                }
                let target = Target {
                    name: function,
                    version,
                    spec,
                    code_sha256,
                };
                let request = ExecuteRequest {
                    id: id.clone(),
                    event: event.into(),
                    received: Instant::now(),
                    started_at,
                    attempt: 1,
                };
                let cold = !self
                    .worker
                    .status()
                    .pools
                    .iter()
                    .any(|p| p.function == target.name && p.version == target.version);
                let outcome = match self.worker.execute(&target, request).await {
                    Ok(invocation) => ReplyOutcome::Invoked {
                        invocation: Box::new(invocation),
                    },
                    Err(error) => {
                        let (refusal, message) = FleetError::Worker(error).refusal();
                        ReplyOutcome::Refused { refusal, message }
                    }
                };
                self.reply(&reply_to, Reply { id, outcome }).await;
                if cold {
                    // A new warm pool: let controllers route to it now, not in 2 s.
                    self.heartbeat().await;
                }
            }
            Task::Build {
                id,
                function,
                runtime,
                code_sha256,
                reply_to,
            } => {
                let outcome = self.build(function, runtime, code_sha256).await;
                self.reply(&reply_to, Reply { id, outcome }).await;
            }
        }
    }

    async fn build(
        &self,
        function: String,
        runtime: hearth_core::Runtime,
        code_sha256: String,
    ) -> ReplyOutcome {
        let refused = |error: FleetError| {
            let (refusal, message) = error.refusal();
            ReplyOutcome::Refused { refusal, message }
        };
        let package = match self.worker.code().get_package(&code_sha256, runtime).await {
            Ok(package) => package,
            Err(e) => return refused(FleetError::Unavailable(format!("loading the code: {e}"))),
        };
        let request = BuildRequest {
            function,
            runtime,
            code_sha256,
            code_tar: package.tar.into(),
        };
        match self.worker.build(request).await {
            Ok(built) => ReplyOutcome::Built {
                cached: built.as_ref().map(|b| b.cached),
                duration_ms: built.map(|b| b.duration_ms).unwrap_or(0.0),
            },
            Err(error) => refused(FleetError::Build(error)),
        }
    }

    /// Runs one delivery of an async entry; the entry stays pending (leased) until then.
    async fn run_async(
        self: Arc<Self>,
        entry_id: String,
        task: AsyncTask,
        deliveries: u32,
        _active: Active,
    ) {
        let stream = self.config.redis.async_queue();
        let renew = tokio::spawn(renew_lease(self.clone(), entry_id.clone()));
        let attempt = task.attempt + deliveries.saturating_sub(1);
        let job = task.job();
        let end = if deliveries > MAX_ATTEMPTS || attempt > MAX_ATTEMPTS {
            let lost = async_runner::lost(&self.worker, &job, deliveries.min(attempt));
            async_runner::write(self.metadata.as_ref(), &lost).await;
            AttemptEnd::Finished(Box::new(lost))
        } else {
            let wait = task.not_before_ms.saturating_sub(now_ms());
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            async_runner::run_attempt(&self.worker, self.metadata.as_ref(), &job, attempt).await
        };
        match end {
            AttemptEnd::RetryAfter(delay) => {
                let next = AsyncTask {
                    attempt: attempt + 1,
                    not_before_ms: now_ms() + delay.as_millis() as u64,
                    ..task
                };
                if let Ok(body) = serde_json::to_vec(&next) {
                    let mut add = redis::cmd("XADD");
                    add.arg(&stream).arg("*").arg(FIELD).arg(body);
                    if self
                        .persist::<String>("queueing a retry", &add, Duration::from_secs(60))
                        .await
                        .is_none()
                    {
                        // Leave the entry pending: another worker reclaims it.
                        renew.abort();
                        return;
                    }
                }
                renew.abort();
                self.ack_and_delete(&stream, &entry_id).await;
            }
            AttemptEnd::Finished(invocation) => {
                renew.abort();
                self.ack_and_delete(&stream, &entry_id).await;
                if let Some(url) = &job.callback_url {
                    async_runner::post_callback(url, &invocation).await;
                }
            }
        }
    }
}

fn streams(config: &RedisConfig, worker: &str) -> [String; 3] {
    [
        config.worker_queue(worker),
        config.shared_queue(),
        config.async_queue(),
    ]
}

async fn heartbeat_forever(node: Arc<WorkerNode>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = node.changed.notified() => {
                // Coalesce bursts of changes.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        node.heartbeat().await;
    }
}

async fn renew_lease(node: Arc<WorkerNode>, entry_id: String) {
    let stream = node.config.redis.async_queue();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let renewed: Result<redis::Value, _> = redis::cmd("XCLAIM")
            .arg(&stream)
            .arg(GROUP)
            .arg(node.worker.id())
            .arg(0)
            .arg(&entry_id)
            .arg("JUSTID")
            .query_async(&mut node.conn.clone())
            .await;
        if let Err(error) = renewed {
            tracing::warn!(%entry_id, %error, "cannot renew an async lease");
        }
    }
}

/// Reads work as capacity frees up, on a connection of its own.
async fn consume_forever(node: Arc<WorkerNode>) {
    let [own, shared, async_queue] = streams(&node.config.redis, node.worker.id());
    loop {
        let mut blocking = match node.config.redis.blocking().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "cannot read the queues; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let free = node.free();
            if free == 0 {
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), node.freed.notified()).await;
                continue;
            }
            let read: Result<Option<StreamReadReply>, redis::RedisError> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(node.worker.id())
                .arg("COUNT")
                .arg(free)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&own)
                .arg(&shared)
                .arg(&async_queue)
                .arg(">")
                .arg(">")
                .arg(">")
                .query_async(&mut blocking)
                .await;
            let read = match read {
                Ok(read) => read,
                Err(error) => {
                    if error.code() == Some("NOGROUP") {
                        // Redis lost its data (a restart without persistence): start over.
                        let mut conn = node.conn.clone();
                        for stream in [&own, &shared, &async_queue] {
                            let _ = ensure_group(&mut conn, stream).await;
                        }
                    } else {
                        tracing::warn!(%error, "reading the queues failed; reconnecting");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            };
            for key in read.into_iter().flat_map(|r| r.keys) {
                for entry in key.ids {
                    dispatch(&node, &key.key, &async_queue, entry).await;
                }
            }
        }
    }
}

async fn dispatch(node: &Arc<WorkerNode>, stream: &str, async_queue: &str, entry: StreamId) {
    if stream == async_queue {
        if let Some(task) = messages::decode::<AsyncTask>(&entry) {
            let active = node.take();
            tokio::spawn(node.clone().run_async(entry.id, task, 1, active));
        } else {
            node.ack_and_delete(stream, &entry.id).await;
        }
        return;
    }
    // A sync task is never delivered twice: acknowledge it before anything else.
    node.ack_and_delete(stream, &entry.id).await;
    if let Some(task) = messages::decode::<Task>(&entry) {
        let active = node.take();
        tokio::spawn(node.clone().run_task(task, active));
    }
}

/// Takes over async entries whose worker went silent.
async fn reclaim_forever(node: Arc<WorkerNode>) {
    let stream = node.config.redis.async_queue();
    loop {
        tokio::time::sleep(RECLAIM_EVERY).await;
        let free = node.free();
        if free == 0 {
            continue;
        }
        let claimed: Result<StreamAutoClaimReply, _> = redis::cmd("XAUTOCLAIM")
            .arg(&stream)
            .arg(GROUP)
            .arg(node.worker.id())
            .arg(LEASE.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(free)
            .query_async(&mut node.conn.clone())
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed.claimed,
            Err(error) => {
                tracing::debug!(%error, "cannot look for abandoned async entries");
                continue;
            }
        };
        for entry in claimed {
            let pending: Result<StreamPendingCountReply, _> = redis::cmd("XPENDING")
                .arg(&stream)
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1)
                .query_async(&mut node.conn.clone())
                .await;
            let deliveries = pending
                .ok()
                .and_then(|p| p.ids.first().map(|p| p.times_delivered as u32))
                .unwrap_or(2);
            match messages::decode::<AsyncTask>(&entry) {
                Some(task) => {
                    tracing::info!(id = %task.id, deliveries, "reclaimed an async invocation from a silent worker");
                    let active = node.take();
                    tokio::spawn(node.clone().run_async(entry.id, task, deliveries, active));
                }
                None => node.ack_and_delete(&stream, &entry.id).await,
            }
        }
    }
}

/// Destroys warm instances of versions that deploys and deletes replaced.
async fn retire_forever(node: Arc<WorkerNode>) {
    use futures::StreamExt;
    loop {
        let client = match redis::Client::open(node.config.redis.url.as_str()) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "bad redis url; no retire messages");
                return;
            }
        };
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if pubsub
            .subscribe(node.config.redis.retire_channel())
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Ok(body) = message.get_payload::<String>() else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            if let Some(function) = value["function"].as_str() {
                node.worker
                    .retire(function, value["keep_version"].as_u64())
                    .await;
                node.changed.notify_one();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
