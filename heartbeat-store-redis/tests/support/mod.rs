//! What the layout and migration tests share: the namespace, times, a store, and a
//! session played through this build.
#![allow(clippy::unwrap_used, dead_code)]

use std::process::Command;
use std::time::Duration;

use heartbeat_core::sessions::analytics::IndexKey;
use heartbeat_core::testkit::sessions::export_all;
use heartbeat_core::{
    Clock, HeartbeatData, HeartbeatOutcome, Heartbeats, Id, ManualClock, Timestamp, TokenCodec,
};
use heartbeat_store_redis::testkit::RedisCluster;
use heartbeat_store_redis::{RedisConfig, RedisStore};
use serde_json::json;

pub const NS: &str = "layout:";
pub const T0: &str = "2026-03-01T12:00:00.000Z";

pub fn at(offset_secs: i64) -> Timestamp {
    T0.parse::<Timestamp>()
        .unwrap()
        .add_millis(offset_secs * 1000)
}

/// A 3+3 cluster of its own, started off the async threads.
pub async fn start_cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap()
}

pub async fn store(url: &str) -> RedisStore {
    let mut config = RedisConfig::new(url);
    config.namespace = NS.into();
    RedisStore::connect(config).await.unwrap()
}

pub fn backend_token(codec: &TokenCodec, user: &Id, asset: i64, now: Timestamp) -> String {
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
pub async fn play_and_stop(
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

/// The session ids of `user`'s history, newest first (at most 10).
pub async fn history_ids(
    heartbeats: &Heartbeats<RedisStore, ManualClock>,
    user: &Id,
) -> Vec<String> {
    heartbeats
        .history(user, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.session_id)
        .collect()
}

/// Every finished session the export gives, paged by `page` through the cursor: user and
/// session id.
pub async fn exported(
    heartbeats: &Heartbeats<RedisStore, ManualClock>,
    page: usize,
) -> Vec<(String, String)> {
    export_all(heartbeats, IndexKey::start(), None, page)
        .await
        .into_iter()
        .map(|s| (s.user_id.to_string(), s.record.session_id))
        .collect()
}

/// Runs `redis-cli` with `args` on each node of `ports`: their answers.
pub fn on_each_node(ports: &[u16], args: &[&str]) -> Vec<String> {
    ports
        .iter()
        .map(|port| {
            let out = Command::new("redis-cli")
                .arg("-p")
                .arg(port.to_string())
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        })
        .collect()
}

/// `INFO commandstats` of each node of `ports`: calls of `command`, per node.
pub fn calls(ports: &[u16], command: &str) -> Vec<u64> {
    on_each_node(ports, &["info", "commandstats"])
        .iter()
        .map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
                .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
        })
        .collect()
}

/// A TCP proxy on a free loopback port to the Redis at `target`, that holds back, by
/// `delay`, every chunk a client sends that holds all of `parts`; `held` is told each
/// time it starts holding one. For tests of races between two clients.
pub async fn delaying_proxy(
    target: u16,
    parts: &'static [&'static [u8]],
    delay: Duration,
    held: std::sync::Arc<tokio::sync::Notify>,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", target))
                .await
                .unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let held = std::sync::Arc::clone(&held);
            tokio::spawn(async move {
                let mut buffer = vec![0_u8; 64 * 1024];
                while let Ok(read) = client_read.read(&mut buffer).await {
                    if read == 0 {
                        return;
                    }
                    let chunk = &buffer[..read];
                    let holds = |part: &&[u8]| chunk.windows(part.len()).any(|w| w == *part);
                    if parts.iter().all(holds) {
                        held.notify_one();
                        tokio::time::sleep(delay).await;
                    }
                    if server_write.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
        }
    });
    port
}
