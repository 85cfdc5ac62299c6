//! SPEC §3.2 "The limit holds against replays" over HTTP, on every store: what a player
//! that replays a token gets (a 412 that says `replayed`), what an honest player whose
//! answer was lost gets (it plays on), and the answers that help a backend (`expired`, the
//! field an authentic token lacks) next to the uniform 406 of every other token.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Kind, SHARED_KEY, backend_token, start};
use heartbeat_core::token::backend::BackendKey;
use heartbeat_core::{TokenCodec, TokenFormat};
use serde_json::{Value, json};

/// A spent token replayed is refused with the reason and no limit; the device playing
/// plays on; the lost answer retried (the same token again) plays on with one session.
async fn a_replayed_token_is_refused_and_a_retry_plays_on(kind: Kind) {
    let (server, _backing) = start(kind).await;
    let (status, body) = server.heartbeat(&backend_token(31, 1, "MOST_RECENT")).await;
    assert_eq!(status, 200, "{body}");
    let spent = body["heartbeat_token"].as_str().unwrap().to_owned();
    let (status, body) = server.heartbeat(&spent).await;
    assert_eq!(status, 200, "{body}");
    let current = body["heartbeat_token"].as_str().unwrap().to_owned();
    // The same token again: its answer was lost. It continues the one session.
    let (status, body) = server.heartbeat(&spent).await;
    assert_eq!(status, 200, "{body}");
    let retried = body["heartbeat_token"].as_str().unwrap().to_owned();
    // The lost answer is no longer current, the retry's is.
    let (status, body) = server.heartbeat(&current).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(
        (&body["reason"], &body["limit"], &body["error"]),
        (
            &json!("replayed"),
            &Value::Null,
            &json!("You have exceeded the maximum allowed number of devices.")
        ),
        "{body}"
    );
    let (status, body) = server.heartbeat(&retried).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .admin(reqwest::Method::GET, "/admin/users/31/sessions")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1, "{body}");
}

/// A `b1.` token a backend minted in 2019 (or without a timestamp) cannot start a
/// playback: 412 `expired`. An authentic token that lacks a field says which (406 with
/// `reason` and `field`); a legacy one, which anyone can forge, gets the uniform 406.
async fn old_and_incomplete_tokens_say_why(kind: Kind) {
    let (server, _backing) = start(kind).await;
    let key = BackendKey::derive(SHARED_KEY.as_bytes());
    let data = json!({
        "user_id": 32, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "session_limit": 1, "timestamp": "2019-06-01T12:00:00.000Z",
    });
    let old = key.seal(data.to_string().as_bytes()).unwrap();
    let (status, body) = server.heartbeat(&old).await;
    assert_eq!(
        (status, &body["reason"]),
        (412, &json!("expired")),
        "{body}"
    );

    let mut incomplete = data.clone();
    incomplete
        .as_object_mut()
        .unwrap()
        .remove("heartbeat_cycle");
    let (status, body) = server
        .heartbeat(&key.seal(incomplete.to_string().as_bytes()).unwrap())
        .await;
    assert_eq!(status, 406, "{body}");
    assert_eq!(
        (&body["error"], &body["reason"], &body["field"]),
        (
            &json!("Heartbeat token is not valid."),
            &json!("missing_field"),
            &json!("heartbeat_cycle")
        ),
        "{body}"
    );
    let legacy = TokenCodec::new(SHARED_KEY)
        .unwrap()
        .issuing(TokenFormat::Legacy);
    let forged_incomplete = legacy
        .seal_bytes(incomplete.to_string().as_bytes())
        .unwrap();
    let (status, body) = server.heartbeat(&forged_incomplete).await;
    assert_eq!(
        (status, body),
        (406, json!({"error": "Heartbeat token is not valid."}))
    );
}

/// A backend token near the length limit whose answer, sealed in this server's format,
/// would pass it (a `b1.` token grows as `v2.`): a 406 that says so, not a 500, and
/// nothing stored; the same data a little smaller plays.
async fn a_token_whose_answer_cannot_be_sealed_is_refused_and_changes_nothing(kind: Kind) {
    let (server, _backing) = start(kind).await;
    let key = BackendKey::derive(SHARED_KEY.as_bytes());
    let token_of = |note_len: usize| {
        let data = json!({
            "user_id": 33, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "session_limit": 1, "timestamp": heartbeat_core::Timestamp::now().to_string(),
            "note": "n".repeat(note_len),
        });
        key.seal(data.to_string().as_bytes()).unwrap()
    };
    let mut note_len = 5_900;
    while token_of(note_len + 1).len() <= heartbeat_core::token::MAX_TOKEN_LEN {
        note_len += 1;
    }
    let (status, body) = server.heartbeat(&token_of(note_len)).await;
    assert_eq!(status, 406, "{body}");
    assert_eq!(
        (&body["error"], &body["reason"], &body["limit"]),
        (
            &json!("Heartbeat token is not valid."),
            &json!("too_large"),
            &json!(8192)
        ),
        "{body}"
    );
    let (_, sessions) = server
        .admin(reqwest::Method::GET, "/admin/users/33/sessions")
        .await;
    assert_eq!(sessions["sessions"], json!([]), "nothing stored");
    let (status, body) = server.heartbeat(&token_of(note_len - 200)).await;
    assert_eq!(status, 200, "{body}");
}

for_each_store!(
    a_replayed_token_is_refused_and_a_retry_plays_on,
    old_and_incomplete_tokens_say_why,
    a_token_whose_answer_cannot_be_sealed_is_refused_and_changes_nothing
);
