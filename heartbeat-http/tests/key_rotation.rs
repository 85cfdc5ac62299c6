//! Rotating `SHARED_KEY` with `SHARED_KEY_PREVIOUS`: devices playing across the rotation
//! never get a 406, and move to the new key at their next heartbeat.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, serve, settings};
use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore, MemorySessionStore};
use heartbeat_core::{HeartbeatData, Timestamp, TokenCodec, TokenFormat};
use heartbeat_http::server;
use serde_json::json;

const OLD_KEY: &str = "the key of last year, 32 bytes..";
const NEW_KEY: &str = "the key of this year, also long.";

fn data(user: i64) -> HeartbeatData {
    HeartbeatData::from_json(json!({
        "user_id": user, "asset_id": 5, "heartbeat_cycle": 1, "cycle_lower_tolerance": 1,
        "cycle_upper_tolerance": 60, "timestamp": Timestamp::now().to_string(),
        "session_limit": 2, "checking_threshold": 1, "sessions_edge": 10,
    }))
    .unwrap()
}

async fn instance(codec: TokenCodec, store: &MemorySessionStore) -> TestServer {
    let app = server::app(
        codec,
        store.clone(),
        MemoryJobStore::new(),
        MemoryEventBus::new(),
        settings(),
    );
    serve(app).await
}

/// One heartbeat; returns the status and the next token.
async fn beat(server: &TestServer, token: &str) -> (u16, String) {
    let (status, answer) = server.heartbeat(token).await;
    let next = answer["heartbeat_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_play_on_across_a_rotation_and_move_to_the_new_key() {
    let store = MemorySessionStore::new();
    let old = TokenCodec::new(OLD_KEY).unwrap();
    let before = instance(old.clone(), &store).await;
    // Two devices mid-session, one with a v2 token, one with a Node-era legacy token.
    let (status, v2) = beat(&before, &old.seal(&data(1)).unwrap()).await;
    assert_eq!(status, 200);
    let legacy = old.clone().issuing(TokenFormat::Legacy);
    let (status, node_era) = beat(&before, &legacy.seal(&data(2)).unwrap()).await;
    assert_eq!(status, 200);
    let session = old.open(&v2).unwrap().session_id;

    // The rotation: the new key, the old one as previous.
    let rotated = TokenCodec::new(NEW_KEY)
        .unwrap()
        .with_previous_keys([OLD_KEY])
        .unwrap();
    let after = instance(rotated, &store).await;
    let (status, next) = beat(&after, &v2).await;
    assert_eq!(
        status, 200,
        "no 406 for a device playing across the rotation"
    );
    let new_only = TokenCodec::new(NEW_KEY).unwrap();
    let opened = new_only
        .open(&next)
        .expect("answers are sealed with the new key");
    assert_eq!(opened.session_id, session, "the same session plays on");
    assert!(old.open(&next).is_err());
    let (status, next) = beat(&after, &node_era).await;
    assert_eq!(status, 200);
    assert!(new_only.open(&next).is_ok());
    // A backend still on the old key is accepted during the rotation too.
    assert_eq!(beat(&after, &old.seal(&data(3)).unwrap()).await.0, 200);
    // A key that is neither is refused.
    let stranger = TokenCodec::new("a key nobody configured at all..").unwrap();
    assert_eq!(beat(&after, &stranger.seal(&data(4)).unwrap()).await.0, 406);
}
