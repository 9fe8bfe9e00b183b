//! The controller's side of the cluster: [`RedisFleet`].
//!
//! A sync call goes to the stream of a worker that holds a warm instance of its
//! function version (from the workers' published pools, or the worker that answered
//! the last call of that version), else to the shared stream that any worker with free
//! capacity reads. The worker claims the call (`SET NX`) before it runs it, so it runs
//! at most once: while waiting for the reply the controller checks the claim every
//! second; a claim held by a worker whose status key expired answers `worker_lost`,
//! and a call no worker claimed while its chosen worker died is taken back (the
//! controller sets the claim itself) and dispatched again to the shared stream.
//! Replies arrive on this controller's own reply stream, read from the last id seen,
//! so a reconnect loses none.

use crate::messages::{self, AsyncTask, Reply, ReplyOutcome, Task, FIELD};
use crate::{status, ClusterError, RedisConfig};
use async_trait::async_trait;
use hearth_core::Invocation;
use hearth_store::AsyncJob;
use hearth_worker::build::{BuildRequest, Built};
use hearth_worker::fleet::{Fleet, FleetError, WorkerState};
use hearth_worker::{ExecuteRequest, Target};
use rand::seq::SliceRandom;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Async jobs waiting before new ones are refused.
const MAX_PENDING: u64 = 10_000;
/// How often a waiting call checks its claim.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a call may wait for an instance on its worker (the worker's queue timeout).
const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// Slack past the function's timeout before a silent worker is presumed lost.
const GRACE: Duration = Duration::from_secs(15);
/// Longest a build may take, queue included.
const BUILD_WAIT: Duration = Duration::from_secs(300);
/// How long the list of live workers is reused for routing.
const ROUTING_TTL: Duration = Duration::from_millis(500);
/// The claim value a controller sets to take back a call no worker started.
const TAKEN_BACK: &str = "-taken-back-";

type Waiters = Mutex<HashMap<String, oneshot::Sender<ReplyOutcome>>>;

/// The workers of a cluster, reached through Redis.
pub struct RedisFleet {
    config: RedisConfig,
    reply_stream: String,
    conn: ConnectionManager,
    waiters: Arc<Waiters>,
    routing: Mutex<Option<(Instant, Arc<Vec<WorkerState>>)>>,
    affinity: Mutex<HashMap<String, String>>,
}

/// Removes a waiter when its call ends, however it ends.
struct Waiting<'a> {
    waiters: &'a Waiters,
    id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(self.waiters).remove(&self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(error: ClusterError) -> FleetError {
    FleetError::Unavailable(error.to_string())
}

impl RedisFleet {
    /// Connects as controller `controller_id` and starts reading its reply stream.
    pub async fn start(
        config: RedisConfig,
        controller_id: &str,
    ) -> Result<Arc<RedisFleet>, ClusterError> {
        let conn = config.manager().await?;
        let fleet = Arc::new(RedisFleet {
            reply_stream: config.reply_stream(controller_id),
            config,
            conn,
            waiters: Default::default(),
            routing: Mutex::new(None),
            affinity: Default::default(),
        });
        tokio::spawn(read_replies(
            fleet.config.clone(),
            fleet.reply_stream.clone(),
            fleet.conn.clone(),
            fleet.waiters.clone(),
        ));
        Ok(fleet)
    }

    fn wait_for(&self, id: &str) -> (Waiting<'_>, oneshot::Receiver<ReplyOutcome>) {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id.to_string(), tx);
        (
            Waiting {
                waiters: &self.waiters,
                id: id.to_string(),
            },
            rx,
        )
    }

    async fn add(&self, stream: &str, message: &impl serde::Serialize) -> Result<(), FleetError> {
        let body = serde_json::to_vec(message)
            .map_err(|e| FleetError::Unavailable(format!("encoding a task: {e}")))?;
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(FIELD)
            .arg(body)
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(|e| unavailable(self.config.error(e)))
    }

    /// The live workers, reused for [`ROUTING_TTL`].
    async fn routing(&self) -> Result<Arc<Vec<WorkerState>>, FleetError> {
        if let Some((read, workers)) = lock(&self.routing).as_ref() {
            if read.elapsed() < ROUTING_TTL {
                return Ok(workers.clone());
            }
        }
        let workers = Arc::new(
            status::live(&self.config, &mut self.conn.clone())
                .await
                .map_err(unavailable)?,
        );
        *lock(&self.routing) = Some((Instant::now(), workers.clone()));
        Ok(workers)
    }

    /// A live worker holding warm instances of `target`, if any.
    async fn warm_worker(&self, target: &Target) -> Result<Option<String>, FleetError> {
        let workers = self.routing().await?;
        if workers.is_empty() {
            return Err(FleetError::NoWorkers);
        }
        let key = format!("{}@{}", target.name, target.version);
        let remembered = lock(&self.affinity).get(&key).cloned();
        let mut warm: Vec<&WorkerState> = workers
            .iter()
            .filter(|w| {
                Some(&w.id) == remembered.as_ref()
                    || w.pools.iter().any(|p| {
                        p.function == target.name
                            && p.version == target.version
                            && p.idle + p.busy > 0
                    })
            })
            .collect();
        warm.shuffle(&mut rand::thread_rng());
        // Among warm workers, one with an idle instance first.
        warm.sort_by_key(|w| {
            !w.pools
                .iter()
                .any(|p| p.function == target.name && p.version == target.version && p.idle > 0)
        });
        Ok(warm.first().map(|w| w.id.clone()))
    }

    async fn claim_holder(&self, id: &str, dispatch: u32) -> Result<Option<String>, ClusterError> {
        redis::cmd("GET")
            .arg(self.config.claim(id, dispatch))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.config.error(e))
    }

    /// Takes back a call no worker claimed: true when this controller now holds it.
    async fn take_back(&self, id: &str, dispatch: u32) -> Result<bool, ClusterError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.config.claim(id, dispatch))
            .arg(TAKEN_BACK)
            .arg("NX")
            .arg("EX")
            .arg(3600)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.config.error(e))?;
        Ok(set.is_some())
    }

    async fn is_alive(&self, worker: &str) -> Result<bool, ClusterError> {
        status::is_alive(&self.config, &mut self.conn.clone(), worker).await
    }
}

/// Reads this controller's reply stream forever, on a connection of its own.
async fn read_replies(
    config: RedisConfig,
    stream: String,
    mut conn: ConnectionManager,
    waiters: Arc<Waiters>,
) {
    let mut last_id = "0-0".to_string();
    let mut read_since_trim = 0u32;
    loop {
        let mut blocking = match config.blocking().await {
            Ok(blocking) => blocking,
            Err(error) => {
                tracing::warn!(%error, "cannot read replies; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let read: Result<Option<redis::streams::StreamReadReply>, _> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(256)
                .arg("BLOCK")
                .arg(5000)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last_id)
                .query_async(&mut blocking)
                .await;
            let read = match read {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(%error, "reading replies failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            };
            let entries = read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
            for entry in entries {
                last_id = entry.id.clone();
                read_since_trim += 1;
                if let Some(reply) = messages::decode::<Reply>(&entry) {
                    if let Some(waiter) = lock(&waiters).remove(&reply.id) {
                        let _ = waiter.send(reply.outcome);
                    }
                }
            }
            if read_since_trim >= 256 || read_since_trim > 0 && entries_idle(&last_id) {
                // Everything below the last id read has been handed over.
                let trimmed: Result<u64, _> = redis::pipe()
                    .cmd("XTRIM")
                    .arg(&stream)
                    .arg("MINID")
                    .arg(&last_id)
                    .cmd("EXPIRE")
                    .arg(&stream)
                    .arg(24 * 3600)
                    .ignore()
                    .query_async::<(u64,)>(&mut conn)
                    .await
                    .map(|(n,)| n);
                if trimmed.is_ok() {
                    read_since_trim = 0;
                }
            }
        }
    }
}

/// Whether the reply stream has been quiet a moment (the last read id is over a second
/// old), a good time to trim it.
fn entries_idle(last_id: &str) -> bool {
    let ms = last_id
        .split('-')
        .next()
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0);
    crate::now_ms().saturating_sub(ms) > 1000
}

fn refused(outcome: ReplyOutcome) -> FleetError {
    match outcome {
        ReplyOutcome::Refused { refusal, message } => FleetError::Refused { refusal, message },
        other => FleetError::Unavailable(format!("a worker sent an unexpected reply: {other:?}")),
    }
}

#[async_trait]
impl Fleet for RedisFleet {
    async fn dispatch(
        &self,
        target: Target,
        request: ExecuteRequest,
    ) -> Result<Invocation, FleetError> {
        let id = request.id.clone();
        let (_waiting, mut reply) = self.wait_for(&id);
        let mut dispatch = 1;
        let mut chosen = self.warm_worker(&target).await?;
        let task = |dispatch: u32| Task::Invoke {
            id: id.clone(),
            function: target.name.clone(),
            version: target.version,
            spec: target.spec.clone(),
            code_sha256: target.code_sha256.clone(),
            event: String::from_utf8_lossy(&request.event).into_owned(),
            started_at: request.started_at.clone(),
            dispatch,
            reply_to: self.reply_stream.clone(),
        };
        let stream = match &chosen {
            Some(worker) => self.config.worker_queue(worker),
            None => self.config.shared_queue(),
        };
        self.add(&stream, &task(dispatch)).await?;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(target.spec.timeout_ms) + QUEUE_WAIT + GRACE;
        loop {
            tokio::select! {
                outcome = &mut reply => {
                    return match outcome {
                        Ok(ReplyOutcome::Invoked { invocation }) => {
                            let key = format!("{}@{}", target.name, target.version);
                            lock(&self.affinity).insert(key, invocation.worker.clone());
                            Ok(*invocation)
                        }
                        Ok(other) => Err(refused(other)),
                        Err(_) => Err(FleetError::Unavailable("the reply reader stopped".into())),
                    };
                }
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let overdue = Instant::now() > deadline;
            match self.claim_holder(&id, dispatch).await {
                Ok(Some(worker)) if worker != TAKEN_BACK => match self.is_alive(&worker).await {
                    Ok(false) => return Err(FleetError::WorkerLost { worker }),
                    Ok(true) if overdue && Instant::now() > deadline + GRACE => {
                        return Err(FleetError::WorkerLost { worker })
                    }
                    _ => {}
                },
                Ok(_) => {
                    let chosen_died = match &chosen {
                        Some(worker) => !self.is_alive(worker).await.unwrap_or(true),
                        None => false,
                    };
                    if (chosen_died || overdue)
                        && self.take_back(&id, dispatch).await.unwrap_or(false)
                    {
                        if overdue {
                            return Err(FleetError::NoWorkers);
                        }
                        tracing::info!(%id, "the chosen worker died before starting the call; dispatching it again");
                        dispatch += 1;
                        chosen = None;
                        self.add(&self.config.shared_queue(), &task(dispatch))
                            .await?;
                    }
                }
                Err(error) if overdue => return Err(unavailable(error)),
                Err(_) => {}
            }
        }
    }

    async fn submit(&self, job: AsyncJob) -> Result<(), FleetError> {
        let pending: u64 = redis::cmd("XLEN")
            .arg(self.config.async_queue())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| unavailable(self.config.error(e)))?;
        if pending >= MAX_PENDING {
            return Err(FleetError::QueueFull { pending });
        }
        let task = AsyncTask {
            id: job.id,
            function: job.function,
            event: String::from_utf8_lossy(&job.event).into_owned(),
            callback_url: job.callback_url,
            started_at: job.started_at,
            attempt: job.attempts + 1,
            not_before_ms: 0,
        };
        self.add(&self.config.async_queue(), &task).await
    }

    async fn build(&self, request: BuildRequest) -> Result<Option<Built>, FleetError> {
        if !request.runtime.is_compiled() {
            return Ok(None);
        }
        if self.routing().await?.is_empty() {
            return Err(FleetError::NoWorkers);
        }
        let id = ulid::Ulid::new().to_string();
        let (_waiting, reply) = self.wait_for(&id);
        let task = Task::Build {
            id: id.clone(),
            function: request.function,
            runtime: request.runtime,
            code_sha256: request.code_sha256,
            reply_to: self.reply_stream.clone(),
        };
        self.add(&self.config.shared_queue(), &task).await?;
        match tokio::time::timeout(BUILD_WAIT, reply).await {
            Ok(Ok(ReplyOutcome::Built {
                cached,
                duration_ms,
            })) => Ok(cached.map(|cached| Built {
                cached,
                duration_ms,
            })),
            Ok(Ok(other)) => Err(refused(other)),
            Ok(Err(_)) => Err(FleetError::Unavailable("the reply reader stopped".into())),
            Err(_) => Err(FleetError::Unavailable(format!(
                "no worker finished the build within {} s",
                BUILD_WAIT.as_secs()
            ))),
        }
    }

    async fn retire(&self, name: &str, keep_version: Option<u64>) {
        let message = serde_json::json!({"function": name, "keep_version": keep_version});
        let published: Result<u64, _> = redis::cmd("PUBLISH")
            .arg(self.config.retire_channel())
            .arg(message.to_string())
            .query_async(&mut self.conn.clone())
            .await;
        if let Err(error) = published {
            tracing::warn!(function = %name, %error, "cannot tell workers to retire old instances; they expire when idle");
        }
    }

    async fn workers(&self) -> Result<Vec<WorkerState>, FleetError> {
        status::live(&self.config, &mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn settle(&self, _limit: Duration) {}

    async fn shutdown(&self) {
        let _: Result<u64, _> = redis::cmd("DEL")
            .arg(&self.reply_stream)
            .query_async(&mut self.conn.clone())
            .await;
    }
}
