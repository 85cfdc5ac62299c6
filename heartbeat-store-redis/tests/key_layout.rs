//! The key layout that lets one script commit a heartbeat on a Redis Cluster: progress,
//! history and the analytics index entry live in the slot of the user's session key (the
//! Node server's name, unchanged), and what builds before the slot tag wrote under the
//! old names is still read, on one server and on a cluster (a rolling upgrade loses
//! nothing).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use fred::prelude::{ClientLike, Config, HashesInterface, ListInterface, SortedSetsInterface};
use fred::types::Builder;
use heartbeat_core::sessions::analytics::{FinishedEntry, IndexKey};
use heartbeat_core::{
    Clock, HeartbeatData, HeartbeatOutcome, Heartbeats, Id, ManualClock, PlayRecord, ProgressRecord,
    Timestamp, TokenCodec,
};
use heartbeat_store_redis::testkit::{RedisCluster, RedisServer};
use heartbeat_store_redis::{RedisConfig, RedisStore};
use serde_json::json;

const NS: &str = "layout:";
const T0: &str = "2026-03-01T12:00:00.000Z";

fn at(offset_secs: i64) -> Timestamp {
    T0.parse::<Timestamp>().unwrap().add_millis(offset_secs * 1000)
}

async fn store(url: &str) -> RedisStore {
    let mut config = RedisConfig::new(url);
    config.namespace = NS.into();
    RedisStore::connect(config).await.unwrap()
}

async fn raw(url: &str) -> fred::clients::Client {
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

fn backend_token(codec: &TokenCodec, user: &Id, asset: i64, now: Timestamp) -> String {
    let data = json!({
        "user_id": user.to_json(), "asset_id": asset, "heartbeat_cycle": 30,
        "cycle_upper_tolerance": 10, "timestamp": now.to_string(), "session_limit": 3,
        "checking_threshold": 2, "sessions_edge": 4,
    });
    codec
        .seal(&HeartbeatData::from_json(data).unwrap())
        .unwrap()
}

/// Plays one session of `user` from `start` for `secs`, reporting `progress` on its last
/// heartbeat, and stops it then; its session id.
async fn play_and_stop(
    heartbeats: &Heartbeats<RedisStore, ManualClock>,
    clock: &ManualClock,
    codec: &TokenCodec,
    user: &Id,
    asset: i64,
    progress: f64,
) -> String {
    let token = backend_token(codec, user, asset, clock.now());
    let HeartbeatOutcome::Accepted { token, accepted } =
        heartbeats.heartbeat(&token, Some(0.0)).await.unwrap()
    else {
        panic!("refused")
    };
    clock.advance(Duration::from_secs(10));
    assert!(heartbeats.stop(&token, Some(progress)).await.unwrap());
    accepted.session_id
}

/// What a build before the slot tag wrote for a session of `user` that ended at `ended`:
/// its progress in `hb_progress:<user>`, its history entry in `hb_history:<user>` and,
/// on a cluster, its index entry in `{hb_history_index}:finished` (one server keeps that
/// name).
async fn write_as_an_earlier_build(
    redis: &fred::clients::Client,
    user: &Id,
    session_id: &str,
    asset: i64,
    progress: f64,
    ended: Timestamp,
) {
    let record: PlayRecord = serde_json::from_value(json!({
        "session_id": session_id, "asset_id": asset, "started_at": ended.add_millis(-60_000).to_string(),
        "last_heartbeat": ended.to_string(), "ended_at": ended.to_string(), "ended_by": "stopped",
        "hit_counter": 3, "progress": progress,
    }))
    .unwrap();
    let entry = ProgressRecord {
        progress,
        updated_at: ended,
        session_id: session_id.into(),
    };
    let _: () = redis
        .hset(
            format!("{NS}hb_progress:{user}"),
            (asset.to_string(), serde_json::to_string(&entry).unwrap()),
        )
        .await
        .unwrap();
    let _: () = redis
        .lpush(
            format!("{NS}hb_history:{user}"),
            serde_json::to_string(&record).unwrap(),
        )
        .await
        .unwrap();
    let index_entry = FinishedEntry::of_history(user, &record).unwrap().key();
    let _: () = redis
        .zadd(
            format!("{NS}{{hb_history_index}}:finished"),
            None,
            None,
            false,
            false,
            (0.0, index_entry.to_string()),
        )
        .await
        .unwrap();
}

/// Sessions an earlier build recorded and sessions this build records, side by side as
/// in a rolling upgrade (the earlier build still writing after this one started), all
/// come back: progress (the newer of the two names), history and the export.
async fn a_rolling_upgrade_loses_nothing(url: &str) {
    let (redis, store) = (raw(url).await, store(url).await);
    let clock = ManualClock::new(at(0));
    let codec = TokenCodec::new("layout key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), store.clone()).with_clock(clock.clone());
    // Braces in a user id move the session key's hash tag: the tag follows it.
    for user in [Id::Int(7), Id::Str("fan{42}".into())] {
        write_as_an_earlier_build(&redis, &user, "before-1", 100, 40.0, at(0)).await;
        write_as_an_earlier_build(&redis, &user, "before-2", 200, 10.0, at(1)).await;
    }
    clock.advance(Duration::from_secs(10));
    let user = Id::Int(7);
    let after = play_and_stop(&heartbeats, &clock, &codec, &user, 100, 55.0).await;
    // An instance of the earlier build, still running, records a later position.
    write_as_an_earlier_build(&redis, &user, "before-3", 200, 25.0, at(30)).await;

    let progress = |asset: i64| {
        let heartbeats = &heartbeats;
        let user = &user;
        async move {
            heartbeats
                .progress(user, &Id::Int(asset))
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(progress(100).await.progress, 55.0, "this build's, the newer");
    assert_eq!(progress(200).await.progress, 25.0, "the earlier build's, the newer");
    let history: Vec<String> = heartbeats
        .history(&user, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.session_id)
        .collect();
    assert_eq!(history, ["before-3", after.as_str(), "before-2", "before-1"]);
    let fan_history = heartbeats.history(&"fan{42}".into(), 10).await.unwrap();
    assert_eq!(fan_history.len(), 2, "{fan_history:?}");

    clock.advance(Duration::from_secs(60));
    let mut exported = Vec::new();
    let mut cursor = IndexKey::start();
    loop {
        let page = heartbeats
            .finished_sessions(&cursor, None, 2)
            .await
            .unwrap();
        exported.extend(
            page.sessions
                .iter()
                .map(|s| (s.user_id.to_string(), s.record.session_id.clone())),
        );
        if page.complete {
            break;
        }
        cursor = IndexKey::from_cursor(&page.next.cursor()).unwrap();
    }
    let (seven, fan) = ("7".to_owned(), "fan{42}".to_owned());
    let expected = [
        (&seven, "before-1"),
        (&fan, "before-1"),
        (&seven, "before-2"),
        (&fan, "before-2"),
        (&seven, after.as_str()),
        (&seven, "before-3"),
    ];
    let mut sorted_export = exported.clone();
    sorted_export.sort();
    let mut sorted_expected: Vec<(String, String)> = expected
        .iter()
        .map(|(user, session)| ((*user).clone(), (*session).to_owned()))
        .collect();
    sorted_expected.sort();
    assert_eq!(sorted_export, sorted_expected, "each once: {exported:?}");
    let order: Vec<&str> = exported.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        [&order[..2], &order[4..]].concat(),
        ["before-1", "before-1", after.as_str(), "before-3"],
        "in the order they ended: {exported:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_on_one_server_loses_nothing() {
    let server = RedisServer::start();
    a_rolling_upgrade_loses_nothing(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_on_a_cluster_loses_nothing() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    a_rolling_upgrade_loses_nothing(&cluster.url()).await;
    drop(cluster);
}

/// `INFO commandstats` of every node of the cluster: calls of `command`, summed.
fn calls(cluster: &RedisCluster, command: &str) -> Vec<u64> {
    cluster
        .ports()
        .iter()
        .map(|port| {
            let info = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "info", "commandstats"])
                .output()
                .unwrap();
            let info = String::from_utf8(info.stdout).unwrap();
            info.lines()
                .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
                .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_a_heartbeat_is_one_script_and_the_export_merges_every_master() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let store = store(&cluster.url()).await;
    let clock = ManualClock::new(at(0));
    let codec = TokenCodec::new("layout key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), store.clone()).with_clock(clock.clone());
    for port in cluster.ports() {
        let reset = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "config", "resetstat"])
            .output()
            .unwrap();
        assert!(reset.status.success(), "{reset:?}");
    }
    let users = 30;
    let mut ended = Vec::new();
    for user in 0..users {
        let user = Id::Str(format!("viewer-{user}"));
        let session = play_and_stop(&heartbeats, &clock, &codec, &user, 1, 5.0).await;
        ended.push((user.to_string(), session));
    }
    // Each heartbeat and each stop: one script (progress, history and the index entry
    // written by scripts of their own would each count here too).
    let scripts = calls(&cluster, "evalsha");
    assert_eq!(scripts.iter().sum::<u64>(), 2 * users, "{scripts:?}");
    assert_eq!(
        scripts.iter().filter(|calls| **calls > 0).count(),
        3,
        "every master commits for its users: {scripts:?}"
    );
    clock.advance(Duration::from_secs(60));
    let mut exported = Vec::new();
    let mut cursor = IndexKey::start();
    loop {
        let page = heartbeats
            .finished_sessions(&cursor, None, 4)
            .await
            .unwrap();
        exported.extend(
            page.sessions
                .iter()
                .map(|s| (s.user_id.to_string(), s.record.session_id.clone())),
        );
        if page.complete {
            break;
        }
        cursor = IndexKey::from_cursor(&page.next.cursor()).unwrap();
    }
    assert_eq!(exported, ended, "every session once, in the order they ended");
    drop(cluster);
}
