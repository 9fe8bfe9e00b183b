//! The janitor against the real Redis of `scripts/services.sh`: what dead workers left in
//! the sync queues goes; live workers' entries and every pending async entry stay.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use hearth_cluster::janitor::{sweep, Rules, Swept};
use hearth_cluster::{ensure_group, RedisConfig, GROUP};
use redis::aio::ConnectionManager;
use std::time::Duration;

/// A stream entry: its id and its fields.
type Entry = (String, Vec<(String, String)>);

fn config() -> RedisConfig {
    let url = std::env::var("HEARTH_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "HEARTH_TEST_REDIS_URL is not set: run `eval \"$(scripts/services.sh --env)\"` first"
        )
    });
    RedisConfig {
        url,
        prefix: format!("t{}", ulid::Ulid::new().to_string().to_lowercase()),
    }
}

async fn add(conn: &mut ConnectionManager, stream: &str, body: &str) -> String {
    redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("m")
        .arg(body)
        .query_async(conn)
        .await
        .unwrap()
}

/// Delivers the next new entry of `stream` to `consumer` (it becomes pending there).
async fn read_as(conn: &mut ConnectionManager, stream: &str, consumer: &str) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
}

/// Makes pending entry `id` look idle for a minute (as if its reader died then).
async fn age(conn: &mut ConnectionManager, stream: &str, consumer: &str, id: &str) {
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(stream)
        .arg(GROUP)
        .arg(consumer)
        .arg(0)
        .arg(id)
        .arg("IDLE")
        .arg(60_000)
        .arg("JUSTID")
        .query_async(conn)
        .await
        .unwrap();
}

/// (id, consumer) of every pending entry of `stream`.
async fn pending(conn: &mut ConnectionManager, stream: &str) -> Vec<(String, String)> {
    let listed: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(conn)
        .await
        .unwrap();
    listed.into_iter().map(|(id, c, ..)| (id, c)).collect()
}

async fn consumer_names(conn: &mut ConnectionManager, stream: &str) -> Vec<String> {
    let listed: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(GROUP)
        .query_async(conn)
        .await
        .unwrap();
    listed
        .iter()
        .map(|c| redis::from_redis_value(c["name"].clone()).unwrap())
        .collect()
}

async fn len(conn: &mut ConnectionManager, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn dead_workers_sync_leftovers_go_and_async_leases_stay() {
    let config = config();
    let mut conn = config.manager().await.unwrap();
    let (shared, async_queue) = (config.shared_queue(), config.async_queue());
    let (dead_own, live_own) = (config.worker_queue("dead"), config.worker_queue("live"));
    for stream in [&shared, &async_queue, &dead_own, &live_own] {
        ensure_group(&mut conn, stream).await.unwrap();
    }
    // "live" heartbeats; "dead" never did (or its key expired long ago).
    let _: () = redis::cmd("SET")
        .arg(config.worker_status("live"))
        .arg("{}")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();

    // Shared sync stream: "dead" read an entry and died before acking it; "live" read
    // one a minute ago and never acked it (it crashed and came back); "live" has just
    // read a third, which it is about to acknowledge.
    let dead_read = add(&mut conn, &shared, "dead read me").await;
    read_as(&mut conn, &shared, "dead").await;
    let stale = add(&mut conn, &shared, "stale").await;
    read_as(&mut conn, &shared, "live").await;
    age(&mut conn, &shared, "live", &stale).await;
    let fresh = add(&mut conn, &shared, "fresh").await;
    read_as(&mut conn, &shared, "live").await;
    // Own streams: a call left for the dead worker; one waiting for the live one.
    add(&mut conn, &dead_own, "taken back by its controller").await;
    add(&mut conn, &live_own, "waiting").await;
    // Async stream: the dead worker's lease (to be reclaimed, never deleted), and a
    // finished worker ("gone") whose consumer holds nothing.
    let lease = add(&mut conn, &async_queue, "lease").await;
    read_as(&mut conn, &async_queue, "dead").await;
    age(&mut conn, &async_queue, "dead", &lease).await;
    let done = add(&mut conn, &async_queue, "done").await;
    read_as(&mut conn, &async_queue, "gone").await;
    let _: u64 = redis::cmd("XACK")
        .arg(&async_queue)
        .arg(GROUP)
        .arg(&done)
        .query_async(&mut conn)
        .await
        .unwrap();
    add(&mut conn, &async_queue, "not yet read").await;

    let swept = sweep(&config, &mut conn, Rules::default()).await.unwrap();
    assert_eq!(
        swept,
        Swept {
            // The stale entry by its age (the dead worker's goes with its consumer).
            sync_entries: 1,
            streams: 1,
            // "dead" from the shared group, "gone" from the async group.
            consumers: 2,
        }
    );

    assert_eq!(
        pending(&mut conn, &shared).await,
        vec![(fresh.clone(), "live".to_string())],
        "only the live worker's fresh entry is still pending"
    );
    assert_eq!(
        len(&mut conn, &shared).await,
        1,
        "stale entries are deleted"
    );
    let ids: Vec<String> = redis::cmd("XRANGE")
        .arg(&shared)
        .arg("-")
        .arg("+")
        .query_async::<Vec<Entry>>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, vec![fresh]);
    assert!(!ids.contains(&dead_read));
    assert_eq!(consumer_names(&mut conn, &shared).await, vec!["live"]);
    let dead_stream_exists: bool = redis::cmd("EXISTS")
        .arg(&dead_own)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!dead_stream_exists, "a dead worker's own stream goes");
    assert_eq!(len(&mut conn, &live_own).await, 1, "a live worker's stays");

    // Async: the lease is still pending, on the dead worker, until another takes it.
    assert_eq!(
        pending(&mut conn, &async_queue).await,
        vec![(lease.clone(), "dead".to_string())]
    );
    assert_eq!(consumer_names(&mut conn, &async_queue).await, vec!["dead"]);
    assert_eq!(
        len(&mut conn, &async_queue).await,
        3,
        "no async entry deleted"
    );
    let reclaimed: (String, Vec<Entry>, Vec<String>) = redis::cmd("XAUTOCLAIM")
        .arg(&async_queue)
        .arg(GROUP)
        .arg("live")
        .arg(Duration::from_secs(15).as_millis() as u64)
        .arg("0-0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(reclaimed.1.len(), 1, "{reclaimed:?}");
    assert_eq!(reclaimed.1[0].0, lease, "the lease is reclaimed whole");
    assert_eq!(reclaimed.1[0].1[0].1, "lease");
    // Once its lease moved, the dead worker's consumer goes too; entries not yet read
    // are there for the next reader.
    let swept = sweep(&config, &mut conn, Rules::default()).await.unwrap();
    assert_eq!(swept.consumers, 1, "{swept:?}");
    assert_eq!(consumer_names(&mut conn, &async_queue).await, vec!["live"]);

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", config.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: u64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_worker_heard_from_recently_is_not_swept_even_without_its_status_key() {
    let config = config();
    let mut conn = config.manager().await.unwrap();
    let own = config.worker_queue("restarting");
    ensure_group(&mut conn, &own).await.unwrap();
    add(&mut conn, &own, "a call").await;
    // Its status key expired a moment ago, but it is in the set with a fresh heartbeat.
    let _: u64 = redis::cmd("ZADD")
        .arg(config.workers())
        .arg(hearth_cluster::now_ms())
        .arg("restarting")
        .query_async(&mut conn)
        .await
        .unwrap();
    let swept = sweep(&config, &mut conn, Rules::default()).await.unwrap();
    assert_eq!(swept, Swept::default());
    assert_eq!(len(&mut conn, &own).await, 1);
    let _: u64 = redis::cmd("DEL")
        .arg(&own)
        .arg(config.workers())
        .query_async(&mut conn)
        .await
        .unwrap();
}
