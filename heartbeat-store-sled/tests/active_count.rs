//! The active session count (the session gauges ask for it every second) follows starts,
//! stops and restarts on the system clock, as the finished index says.

#![allow(clippy::unwrap_used)]

use heartbeat_core::{HeartbeatData, HeartbeatOutcome, Heartbeats, Timestamp, TokenCodec};
use heartbeat_store_sled::{SledConfig, SledStore};

fn service(store: &SledStore) -> Heartbeats<SledStore> {
    Heartbeats::new(
        TokenCodec::new("sled active count key").unwrap(),
        store.clone(),
    )
}

/// Starts a playback of `user` now; returns its current token.
async fn start(heartbeats: &Heartbeats<SledStore>, user: i64) -> String {
    let data = HeartbeatData::from_json(serde_json::json!({
        "user_id": user, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "timestamp": Timestamp::now().to_string(), "session_limit": 1,
    }))
    .unwrap();
    let token = heartbeats.codec().seal(&data).unwrap();
    match heartbeats.heartbeat(&token, None).await.unwrap() {
        HeartbeatOutcome::Accepted { token, .. } => token,
        other => panic!("expected accepted, got {other:?}"),
    }
}

#[tokio::test]
async fn the_active_count_follows_starts_stops_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
    let heartbeats = service(&store);
    let mut tokens = Vec::new();
    for user in 1..=3 {
        tokens.push(start(&heartbeats, user).await);
    }
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 3);
    // A heartbeat moves its entry: still three.
    let next = match heartbeats.heartbeat(&tokens[0], None).await.unwrap() {
        HeartbeatOutcome::Accepted { token, .. } => token,
        other => panic!("expected accepted, got {other:?}"),
    };
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 3);
    assert!(heartbeats.stop(&next, None).await.unwrap());
    // The stopped session's entry ends now: active within this millisecond, not after.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 2);
    drop(heartbeats);
    drop(store);

    let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
    let heartbeats = service(&store);
    assert_eq!(
        heartbeats.active_session_count().await.unwrap(),
        2,
        "read at open"
    );
    start(&heartbeats, 4).await;
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 3);
}
