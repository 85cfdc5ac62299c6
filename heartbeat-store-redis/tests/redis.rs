//! What only the Redis store promises: the Node server's keys, a TTL on every key, fast
//! failure during an outage and recovery afterwards, events across reconnections.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::{ClientLike, HashesInterface, KeysInterface};
use fred::types::{ClusterHash, CustomCommand};
use futures_util::StreamExt;
use heartbeat_core::jobs::{
    EventBus, EventId, JobId, JobStore, JobUpdate, Jobs, JobsConfig, NewJob, Owner,
};
use heartbeat_core::sessions::AnalyticsStore;
use heartbeat_core::sessions::analytics::IndexReads;
use heartbeat_core::{
    HeartbeatData, HeartbeatError, HeartbeatOutcome, Heartbeats, Id, ManualClock, SessionStore,
    StoreError, Timestamp, TokenCodec,
};
use heartbeat_store_redis::testkit::{RedisServer, plain_client};
use heartbeat_store_redis::{ConnectError, RedisConfig, RedisStore};
use serde_json::{Value, json};

const NS: &str = "hbtest:";

async fn store(server: &RedisServer) -> RedisStore {
    store_with(server, false).await
}

async fn store_with(server: &RedisServer, one_script_per_key: bool) -> RedisStore {
    let mut config = RedisConfig::new(server.url());
    config.one_script_per_key = one_script_per_key;
    config.namespace = NS.into();
    config.command_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(500);
    // The Node server's progress hash is one key: not written in a user's slot.
    config.node_progress = !one_script_per_key;
    RedisStore::connect(config).await.unwrap()
}

fn token(codec: &TokenCodec, data: Value) -> String {
    codec
        .seal(&HeartbeatData::from_json(data).unwrap())
        .unwrap()
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

#[tokio::test]
async fn sessions_written_by_the_node_server_are_read_and_ours_are_readable_by_it() {
    let server = RedisServer::start();
    let redis = plain_client(&server.url()).await;
    let key = format!("{NS}hb_sessions:13:active_sessions");
    // Exactly what the Node server's setSession writes (hit_counter sometimes a string).
    let node_record = r#"{"timestamp":"2026-01-01T00:00:00.000Z","hit_counter":"4","started_at":"2025-12-31T23:59:00.000Z"}"#;
    let _: () = redis
        .hset(&key, ("node-session", node_record))
        .await
        .unwrap();

    let store = store(&server).await;
    let loaded = store.load(&Id::Int(13)).await.unwrap();
    let record = &loaded.sessions.sessions[&"node-session".to_owned()];
    assert_eq!(record.hit_counter, 4);
    assert_eq!(record.started_at, Some(at("2025-12-31T23:59:00.000Z")));

    // The player of that session sends its next heartbeat here.
    let clock = ManualClock::new(at("2026-01-01T00:00:30.000Z"));
    let codec = TokenCodec::new("migration key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), store.clone()).with_clock(clock);
    let rotated = token(
        &codec,
        json!({
            "user_id": 13, "asset_id": 14, "session_id": "node-session", "heartbeat_cycle": 30,
            "cycle_upper_tolerance": 10, "timestamp": "2026-01-01T00:00:00.000Z",
            "session_limit": 2, "checking_threshold": 2, "sessions_edge": 3,
        }),
    );
    let outcome = heartbeats.heartbeat(&rotated, Some(12.5)).await.unwrap();
    let HeartbeatOutcome::Accepted { accepted, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(accepted.session_id, "node-session");

    // What the Node server reads back: JSON with its three fields, in its types.
    let stored: HashMap<String, String> = redis.hgetall(&key).await.unwrap();
    let ours: Value = serde_json::from_str(&stored["node-session"]).unwrap();
    assert_eq!(ours["hit_counter"], json!(5));
    assert_eq!(ours["timestamp"], json!("2026-01-01T00:00:30.000Z"));
    assert_eq!(ours["started_at"], json!("2025-12-31T23:59:00.000Z"));
    // And the Node server's progress hash, kept up to date on request.
    let progress: Option<String> = redis
        .hget(format!("{NS}user_progress"), "13:14")
        .await
        .unwrap();
    assert_eq!(progress.as_deref(), Some("12.5"));
}

async fn keys_with_ttls(redis: &fred::clients::Client) -> Vec<(String, i64)> {
    let keys: Vec<String> = redis
        .custom(
            CustomCommand::new_static("KEYS", ClusterHash::FirstKey, false),
            vec![format!("{NS}*")],
        )
        .await
        .unwrap();
    let mut with_ttls = Vec::new();
    for key in keys {
        let ttl: i64 = redis.pttl(&key).await.unwrap();
        with_ttls.push((key, ttl));
    }
    with_ttls.sort();
    with_ttls
}

#[tokio::test]
async fn every_key_written_has_a_ttl() {
    keys_written_have_ttls(false).await;
}

#[tokio::test]
async fn every_key_written_has_a_ttl_with_one_script_per_key() {
    keys_written_have_ttls(true).await;
}

async fn keys_written_have_ttls(one_script_per_key: bool) {
    let server = RedisServer::start();
    let store = store_with(&server, one_script_per_key).await;
    // An index in a part per slot is read part by part: the store-wide readers poll less.
    let reads = if one_script_per_key {
        IndexReads::Spread
    } else {
        IndexReads::Cheap
    };
    assert_eq!(store.index_reads(), reads);
    let clock = ManualClock::new(at("2026-01-01T00:00:00.000Z"));
    let codec = TokenCodec::new("ttl key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), store.clone()).with_clock(clock.clone());
    let backend = token(
        &codec,
        json!({
            "user_id": "u-1", "asset_id": 9, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": "2026-01-01T00:00:00.000Z", "session_limit": 2, "checking_threshold": 2,
            "sessions_edge": 3,
        }),
    );
    let HeartbeatOutcome::Accepted { token: next, .. } =
        heartbeats.heartbeat(&backend, Some(1.0)).await.unwrap()
    else {
        panic!("refused")
    };
    clock.advance(Duration::from_secs(30));
    assert!(
        heartbeats.stop(&next, Some(31.0)).await.unwrap(),
        "the session ends: history"
    );
    // A second session keeps the session hash alive.
    heartbeats.heartbeat(&backend, None).await.unwrap();

    let jobs = Jobs::new(store.clone(), store.clone())
        .with_clock(clock.clone())
        .with_config(JobsConfig {
            job_time: Some(Duration::from_secs(2)),
            ..JobsConfig::default()
        });
    let owner = Owner::new("ttl-owner").unwrap();
    let job = jobs.create(&owner).await.unwrap();
    jobs.update(
        job.id,
        &JobUpdate {
            progress: Some(50),
            ..JobUpdate::default()
        },
    )
    .await
    .unwrap();
    // The worker took that one over (it left the due index); this one is still due.
    jobs.create(&owner).await.unwrap();

    let redis = plain_client(&server.url()).await;
    let keys = keys_with_ttls(&redis).await;
    let names: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
    // Progress and history carry a tag of the session key's slot (`{…}`).
    let user_key = |kind: &str| {
        let name = names
            .iter()
            .find(|name| name.starts_with(&format!("{NS}{kind}:{{")) && name.ends_with("}:u-1"))
            .unwrap_or_else(|| panic!("{kind} missing: {names:?}"));
        name[NS.len()..].to_owned()
    };
    let (progress, history) = (user_key("hb_progress"), user_key("hb_history"));
    let index = if one_script_per_key {
        // The analytics index in the user's slot, with the same tag.
        let tag = &progress["hb_progress:".len()..progress.len() - ":u-1".len()];
        format!("hb_index:{tag}:finished")
    } else {
        "{hb_history_index}:finished".to_owned()
    };
    // Jobs and events carry a tag of the owner's slot.
    let owner_key = |prefix: &str, suffix: &str| {
        names
            .iter()
            .find(|name| {
                name.starts_with(&format!("{NS}{prefix}:{{"))
                    && name.ends_with(&format!("}}:{suffix}"))
            })
            .unwrap_or_else(|| panic!("{prefix}:{{…}}:{suffix} missing: {names:?}"))[NS.len()..]
            .to_owned()
    };
    let owner_keys = [
        owner_key("hb_jobs", "last_id"),
        owner_key("hb_jobs", "owner:ttl-owner"),
        owner_key("hb_events", "last_id"),
        owner_key("hb_events", "owner:ttl-owner"),
    ];
    let jobs = names
        .iter()
        .filter(|name| name.starts_with(&format!("{NS}hb_job:{{")))
        .count();
    assert_eq!(jobs, 2, "{names:?}");
    // The due index: one key, or (cluster layout) one of a few shards.
    let due = if one_script_per_key {
        names
            .iter()
            .find(|name| name.starts_with(&format!("{NS}hb_jobs:due:{{")))
            .unwrap_or_else(|| panic!("no due shard: {names:?}"))[NS.len()..]
            .to_owned()
    } else {
        "hb_jobs:due".to_owned()
    };
    let mut expected = vec![
        "hb_sessions:u-1:active_sessions",
        &progress,
        &history,
        &index,
        &due,
    ];
    expected.extend(owner_keys.iter().map(String::as_str));
    if !one_script_per_key {
        expected.push("user_progress");
    }
    for expected in expected {
        assert!(
            names.contains(&format!("{NS}{expected}").as_str()),
            "{expected} missing: {names:?}"
        );
    }
    for (key, ttl) in &keys {
        // The layout version is a marker of what the Redis holds, kept for good.
        if *key == format!("{NS}hb_layout:version") {
            assert_eq!(*ttl, -1, "{key}");
            continue;
        }
        assert!(*ttl > 0, "{key} has no TTL ({ttl})");
    }
    let sessions_ttl = keys
        .iter()
        .find(|(key, _)| key.contains("active_sessions"))
        .unwrap()
        .1;
    // Sessions are kept past their expiry for as long as the history (SPEC §3.6): the
    // session's life (40 s) plus the retention (30 days), so that a session that times out
    // is in the history without a later visit, and a session the Node server (which sets
    // no TTL) writes last is not dropped early by ours (SPEC §6).
    let retention = 30 * 86_400_000;
    assert!(
        sessions_ttl > retention && sessions_ttl <= retention + 40_000,
        "sessions live their life plus the retention, not {sessions_ttl} ms"
    );
}

#[tokio::test]
async fn an_outage_fails_fast_with_a_typed_error_and_the_store_recovers() {
    let mut server = RedisServer::start();
    let store = store(&server).await;
    let listener = store_with_same_server(&server).await;
    let owner = Owner::new("outage").unwrap();
    let mut live = listener.subscribe(&owner).await.unwrap();
    assert!(store.load(&Id::Int(1)).await.is_ok());

    server.stop();
    let started = tokio::time::Instant::now();
    let failed = tokio::time::timeout(Duration::from_secs(10), store.load(&Id::Int(1)))
        .await
        .expect("no hang: the command timeout ends the wait");
    assert!(
        matches!(failed, Err(StoreError::Unavailable { .. })),
        "{failed:?} after {:?}",
        started.elapsed()
    );
    let codec = TokenCodec::new("outage key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), store.clone());
    let backend = token(
        &codec,
        json!({
            "user_id": 1, "asset_id": 1, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": Timestamp::now().to_string(),
            "session_limit": 1, "checking_threshold": 1, "sessions_edge": 2,
        }),
    );
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        heartbeats.heartbeat(&backend, None),
    )
    .await
    .expect("no hang");
    assert!(
        matches!(refused, Err(HeartbeatError::Store(ref error)) if error.is_transient()),
        "{refused:?}"
    );

    server.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if heartbeats.heartbeat(&backend, None).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the store did not recover after redis-server came back"
    );

    // Subscribers hear that they may have missed events, then get new ones again.
    let gap = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .unwrap()
        .unwrap();
    assert!(gap.is_err(), "a reconnection is reported as a lag: {gap:?}");
    let job = store
        .create(NewJob {
            owner: owner.clone(),
            created_at: Timestamp::now(),
            complete_at: None,
        })
        .await
        .unwrap();
    let mut delivered = None;
    for _ in 0..50 {
        let event = store.publish(&job).await.unwrap();
        if let Ok(Some(Ok(received))) =
            tokio::time::timeout(Duration::from_millis(200), live.next()).await
        {
            assert_eq!(received.job.owner, owner);
            delivered = Some((event.id, received.id));
            break;
        }
    }
    assert!(
        delivered.is_some(),
        "events reach the other client after the restart"
    );
}

async fn store_with_same_server(server: &RedisServer) -> RedisStore {
    store(server).await
}

#[tokio::test]
async fn replay_after_an_id_works_from_a_new_connection() {
    let server = RedisServer::start();
    let owner = Owner::new("replayer").unwrap();
    let (job_id, ids): (JobId, Vec<EventId>) = {
        let first = store(&server).await;
        let job = first
            .create(NewJob {
                owner: owner.clone(),
                created_at: Timestamp::now(),
                complete_at: None,
            })
            .await
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(first.publish(&job).await.unwrap().id);
        }
        (job.id, ids)
    };
    let second = store(&server).await;
    let replayed: Vec<EventId> = second
        .replay(&owner, Some(ids[0]))
        .await
        .unwrap()
        .iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(replayed, ids[1..]);
    assert_eq!(
        JobStore::get(&second, job_id)
            .await
            .unwrap()
            .unwrap()
            .0
            .owner,
        owner
    );
}

/// Settings a cluster cannot honour are refused before anything is connected or written.
#[tokio::test]
async fn settings_a_cluster_cannot_honour_are_refused_with_the_reason() {
    let mut config = RedisConfig::new("redis-cluster://127.0.0.1:1");
    config.node_progress = true;
    let error = RedisStore::connect(config).await.unwrap_err();
    assert!(matches!(error, ConnectError::Invalid { .. }), "{error}");
    assert!(error.to_string().contains("turn it off"), "{error}");

    let mut config = RedisConfig::new("redis://127.0.0.1:1");
    config.one_script_per_key = true;
    config.namespace = "{prod}:".into();
    let error = RedisStore::connect(config).await.unwrap_err();
    assert!(error.to_string().contains("without braces"), "{error}");
}

#[tokio::test]
async fn connection_problems_are_reported_clearly() {
    let error = RedisStore::connect(RedisConfig::new("http://nope"))
        .await
        .unwrap_err();
    assert!(matches!(error, ConnectError::Invalid { .. }), "{error}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = RedisConfig::new(format!("redis://127.0.0.1:{closed}"));
    config.connect_timeout = Duration::from_millis(300);
    let error = tokio::time::timeout(Duration::from_secs(10), RedisStore::connect(config))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(error, ConnectError::Unreachable { .. }), "{error}");
    assert!(
        error.to_string().contains("is redis-server running there?"),
        "{error}"
    );
}

#[tokio::test]
async fn keys_of_another_namespace_are_left_alone() {
    let server = RedisServer::start();
    let redis = plain_client(&server.url()).await;
    let _: () = redis
        .set("hb_sessions:13:active_sessions", "other", None, None, false)
        .await
        .unwrap();
    let store = store(&server).await;
    assert!(store.load(&Id::Int(13)).await.unwrap().sessions.is_empty());
    let untouched: String = redis.get("hb_sessions:13:active_sessions").await.unwrap();
    assert_eq!(untouched, "other");
}

/// `PASSWORD` (the Node server's setting) authenticates when `REDIS_URL` carries none.
#[tokio::test]
async fn a_password_beside_the_url_authenticates() {
    let server = RedisServer::start();
    let admin = plain_client(&server.url()).await;
    let _: String = admin
        .custom(
            CustomCommand::new_static("CONFIG", ClusterHash::FirstKey, false),
            vec!["SET", "requirepass", "s3cret pass"],
        )
        .await
        .unwrap();
    let connect = |password: Option<&str>| {
        let mut config = RedisConfig::new(server.url());
        config.password = password.map(str::to_owned);
        config.connect_timeout = Duration::from_millis(500);
        config.command_timeout = Duration::from_millis(500);
        RedisStore::connect(config)
    };
    assert!(
        connect(None).await.is_err(),
        "a password-protected Redis refuses a client without one"
    );
    assert!(connect(Some("wrong")).await.is_err());
    let store = connect(Some("s3cret pass")).await.unwrap();
    store.ping().await.unwrap();
}

/// Mixed fleet (SPEC §6): a device moves from this server to a Node.js server on the same
/// Redis, whose `HSET` sets no TTL. The key keeps the TTL our last write gave it, which is
/// the session's life plus the history retention: Node's later heartbeats are not dropped
/// after our 40 s, so the device does not come back at hit counter 1 and escape the limit.
#[tokio::test]
async fn a_session_the_node_server_writes_last_outlives_our_ttl() {
    let server = RedisServer::start();
    let redis = plain_client(&server.url()).await;
    let store = store(&server).await;
    let clock = ManualClock::new(at("2026-01-01T00:00:00.000Z"));
    let codec = TokenCodec::new("mixed fleet key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), store.clone()).with_clock(clock.clone());
    let backend = token(
        &codec,
        json!({
            "user_id": 21, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": "2026-01-01T00:00:00.000Z", "session_limit": 1,
            "checking_threshold": 1, "sessions_edge": 5,
        }),
    );
    let HeartbeatOutcome::Accepted { accepted, .. } =
        heartbeats.heartbeat(&backend, None).await.unwrap()
    else {
        panic!("refused")
    };
    let key = format!("{NS}hb_sessions:21:active_sessions");
    // Exactly the Node server's setSession: HSET, no TTL.
    let node_record = r#"{"timestamp":"2026-01-01T00:00:30.000Z","hit_counter":2,"started_at":"2026-01-01T00:00:00.000Z"}"#;
    let _: () = redis
        .hset(&key, (accepted.session_id.as_str(), node_record))
        .await
        .unwrap();
    let ttl: i64 = redis.pttl(&key).await.unwrap();
    let life = 40_000;
    assert!(
        ttl > 29 * 86_400_000,
        "the Node server's session is kept for days, not {ttl} ms"
    );
    assert!(ttl <= 30 * 86_400_000 + life, "and never forever: {ttl} ms");
    // Our server still sees the session the Node server wrote, counter included.
    let loaded = store.load(&Id::Int(21)).await.unwrap();
    assert_eq!(
        loaded.sessions.sessions[&accepted.session_id].hit_counter,
        2
    );
}

/// Event ids never go back (SPEC §4), however Redis loses the counter: the key expires or
/// is deleted, FLUSHALL, a restart without persistence. A client resuming with the last
/// id it saw then still gets the next events.
#[tokio::test]
async fn event_ids_never_go_back_when_redis_loses_its_data() {
    let mut server = RedisServer::start();
    let store = store(&server).await;
    let redis = plain_client(&server.url()).await;
    let owner = Owner::new("survivor").unwrap();
    let job = store
        .create(NewJob {
            owner: owner.clone(),
            created_at: Timestamp::now(),
            complete_at: None,
        })
        .await
        .unwrap();
    let mut last = store.publish(&job).await.unwrap().id;

    let _: i64 = redis
        .del(format!("{NS}{{hb_events}}:last_id"))
        .await
        .unwrap();
    let after_expiry = store.publish(&job).await.unwrap().id;
    assert!(after_expiry > last, "{after_expiry:?} after {last:?}");
    last = after_expiry;

    let _: () = redis
        .custom(
            CustomCommand::new_static("FLUSHALL", ClusterHash::FirstKey, false),
            Vec::<String>::new(),
        )
        .await
        .unwrap();
    let after_flush = store.publish(&job).await.unwrap().id;
    assert!(after_flush > last, "{after_flush:?} after {last:?}");
    last = after_flush;

    server.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after_restart = loop {
        match store.publish(&job).await {
            Ok(event) => break event.id,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("Redis did not come back: {error}"),
        }
    };
    assert!(after_restart > last, "{after_restart:?} after {last:?}");

    // A client that saw `last` before the data was lost resumes and is not left silent.
    let jobs = Jobs::new(store.clone(), store.clone());
    let mut events = Box::pin(jobs.events(owner.clone(), Some(last)).await.unwrap());
    let next = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.id, after_restart);
}

/// A slot's job counter that goes back (lost, or restored from an older backup) never
/// hands out the id of a stored job again: the job stays as it was and the new one gets
/// the next free id.
#[tokio::test]
async fn a_job_counter_that_goes_back_never_overwrites_a_job() {
    let server = RedisServer::start();
    let (store, redis) = (store(&server).await, plain_client(&server.url()).await);
    let owner = Owner::new("counted").unwrap();
    let new_job = || NewJob {
        owner: owner.clone(),
        created_at: Timestamp::now(),
        complete_at: None,
    };
    let first = store.create(new_job()).await.unwrap();
    let counters: Vec<String> = keys_with_ttls(&redis)
        .await
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| key.starts_with(&format!("{NS}hb_jobs:")) && key.ends_with(":last_id"))
        .collect();
    assert_eq!(counters.len(), 1, "{counters:?}");
    // Back to just before the first job's number.
    let n = (first.id.0 - (1 << 34)) / 16_384;
    let _: () = redis
        .set(&counters[0], n - 1, None, None, false)
        .await
        .unwrap();
    let second = store.create(new_job()).await.unwrap();
    assert!(second.id > first.id, "{} after {}", second.id, first.id);
    let (stored, _) = JobStore::get(&store, first.id).await.unwrap().unwrap();
    assert_eq!(stored, first, "the first job is untouched");
    let listed = JobStore::list_by_owner(&store, &owner, 10).await.unwrap();
    assert_eq!(listed, [second, first]);
}
