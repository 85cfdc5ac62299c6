//! The active session count (the session gauges ask for it every second) follows starts,
//! stops and restarts, as the finished index says, on a clock a second ahead of the
//! system's (the store holds the entries that end later than the system clock's now in
//! memory, and rebuilds them when it opens).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use heartbeat_core::{
    Clock, HeartbeatData, HeartbeatOutcome, Heartbeats, ManualClock, Timestamp, TokenCodec,
};
use heartbeat_store_sled::{SledConfig, SledStore};

type Service = Heartbeats<SledStore, ManualClock>;

fn service(store: &SledStore, clock: &ManualClock) -> Service {
    let codec = TokenCodec::new("sled active count key").unwrap();
    Heartbeats::new(codec, store.clone()).with_clock(clock.clone())
}

/// Starts a playback of `user` now; returns its current token.
async fn start(heartbeats: &Service, clock: &ManualClock, user: i64) -> String {
    let data = HeartbeatData::from_json(serde_json::json!({
        "user_id": user, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "timestamp": clock.now().to_string(), "session_limit": 1,
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
    let clock = ManualClock::new(Timestamp::now() + Duration::from_secs(1));
    let heartbeats = service(&store, &clock);
    let mut tokens = Vec::new();
    for user in 1..=3 {
        tokens.push(start(&heartbeats, &clock, user).await);
    }
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 3);
    // A heartbeat moves its entry: still three.
    clock.advance(Duration::from_secs(1));
    let next = match heartbeats.heartbeat(&tokens[0], None).await.unwrap() {
        HeartbeatOutcome::Accepted { token, .. } => token,
        other => panic!("expected accepted, got {other:?}"),
    };
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 3);
    assert!(heartbeats.stop(&next, None).await.unwrap());
    // The stopped session's entry ends now: active within this millisecond, not after.
    clock.advance(Duration::from_millis(1));
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 2);
    drop(heartbeats);
    drop(store);

    let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
    let heartbeats = service(&store, &clock);
    assert_eq!(
        heartbeats.active_session_count().await.unwrap(),
        2,
        "read at open"
    );
    start(&heartbeats, &clock, 4).await;
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 3);
}
