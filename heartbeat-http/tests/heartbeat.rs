//! The heartbeat routes and the admin API against a real server over every store.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN_KEY, Kind, backend_token, start};
use reqwest::Method;
use serde_json::json;

const OVER_LIMIT: &str = "You have exceeded the maximum allowed number of devices.";

async fn rotated_tokens_keep_the_session_and_record_progress(kind: Kind) {
    let (server, _backing) = start(kind).await;
    let response = server
        .post_json(
            "/heartbeat",
            &json!({ "heartbeat_token": backend_token(13, 1, "LEAST_RECENT"), "progress": 12.5 }),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["heartbeat_token"].as_str().unwrap();
    assert!(token.starts_with("v2."));

    let (status, sessions) = server.admin(Method::GET, "/admin/users/13/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(sessions["sessions"][0]["hit_counter"], 1);
    let (status, progress) = server
        .admin(Method::GET, "/admin/users/13/progress/14")
        .await;
    assert_eq!((status, progress["progress"].clone()), (200, json!(12.5)));
    // `POST /` is the same route, as on the Node server.
    let response = server
        .post_json("/", &json!({ "heartbeat_token": token }))
        .await;
    assert_eq!(
        response.status(),
        200,
        "a second heartbeat at once is too early: a new session"
    );
    server.stop().await;
}

fn device_token(user: i64, strategy: &str, at: heartbeat_core::Timestamp) -> String {
    let data = heartbeat_core::HeartbeatData::from_json(json!({
        "user_id": user, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "reject_strategy": strategy, "timestamp": at.to_string(),
        "session_limit": 1, "checking_threshold": 1, "sessions_edge": 2,
    }))
    .unwrap();
    common::codec().seal(&data).unwrap()
}

async fn the_extra_device_gets_412_with_the_node_message(kind: Kind) {
    use heartbeat_core::Clock;
    let clock = heartbeat_core::ManualClock::new(heartbeat_core::Timestamp::now());
    let (server, _backing) = common::start_on_clock(kind, common::settings(), clock.clone()).await;
    for (user, strategy, refused) in [(20, "MOST_RECENT", 1), (21, "LEAST_RECENT", 0)] {
        let mut tokens = Vec::new();
        for _ in 0..2 {
            let (status, body) = server
                .heartbeat(&device_token(user, strategy, clock.now()))
                .await;
            assert_eq!(status, 200, "a backend token is never refused by the limit");
            tokens.push(body["heartbeat_token"].as_str().unwrap().to_owned());
            clock.advance(std::time::Duration::from_secs(1)); // the devices start in turn
        }
        clock.advance(std::time::Duration::from_secs(29)); // a cycle after the first
        for (device, token) in tokens.iter().enumerate() {
            let (status, body) = server.heartbeat(token).await;
            if device == refused {
                // The Node server's text, and why (SPEC §3.7); a v2 token is shown the
                // device that keeps playing.
                let (body, playing) = split_sessions(body);
                assert_eq!(playing.len(), 1, "{strategy}");
                assert_eq!(
                    (status, body),
                    (
                        412,
                        json!({ "error": OVER_LIMIT, "reason": "over_limit", "limit": 1 })
                    ),
                    "{strategy}"
                );
            } else {
                assert_eq!(status, 200, "{strategy}: {body}");
            }
        }
        // sessions_edge 2: with two active sessions a third device is refused at once,
        // even with a backend token (at most `sessions_edge` sessions, SPEC §3.2).
        let (status, body) = server
            .heartbeat(&device_token(user, strategy, clock.now()))
            .await;
        let (body, _) = split_sessions(body);
        assert_eq!(
            (status, body),
            (
                412,
                json!({ "error": OVER_LIMIT, "reason": "sessions_edge", "limit": 2 })
            )
        );
    }
    server.stop().await;
}

async fn invalid_tokens_get_406_and_change_nothing(kind: Kind) {
    let (server, _backing) = start(kind).await;
    for token in ["", "garbage", "v2.AAAA", &"a".repeat(9000)] {
        let (status, body) = server.heartbeat(token).await;
        assert_eq!(
            (status, body),
            (406, json!({ "error": "Heartbeat token is not valid." })),
            "{token:.20}"
        );
    }
    let other_key = heartbeat_core::TokenCodec::new("another key").unwrap();
    let data = heartbeat_core::HeartbeatData::from_json(json!({
        "user_id": 30, "asset_id": 1, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "timestamp": "2026-01-01T00:00:00.000Z", "session_limit": 1, "checking_threshold": 1, "sessions_edge": 2,
    }))
    .unwrap();
    let (status, _) = server.heartbeat(&other_key.seal(&data).unwrap()).await;
    assert_eq!(status, 406);
    let (_, sessions) = server.admin(Method::GET, "/admin/users/30/sessions").await;
    assert_eq!(sessions["sessions"], json!([]));
    server.stop().await;
}

async fn stop_frees_the_slot_and_goes_to_history(kind: Kind) {
    let (server, _backing) = start(kind).await;
    let (_, first) = server
        .heartbeat(&backend_token(40, 1, "LEAST_RECENT"))
        .await;
    let token = first["heartbeat_token"].as_str().unwrap();
    let response = server
        .post_json(
            "/heartbeat/stop",
            &json!({ "heartbeat_token": token, "progress": 99 }),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({})
    );
    let (_, sessions) = server.admin(Method::GET, "/admin/users/40/sessions").await;
    assert_eq!(sessions["sessions"], json!([]));
    let (status, history) = server
        .admin(Method::GET, "/admin/users/40/history?limit=5")
        .await;
    assert_eq!(status, 200);
    assert_eq!(history["history"][0]["ended_by"], "stopped");
    assert_eq!(history["history"][0]["progress"], 99.0);
    server.stop().await;
}

async fn admin_issues_tokens_and_evicts(kind: Kind) {
    let (server, _backing) = start(kind).await;
    let response = server
        .http
        .post(format!("{}/admin/tokens", server.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({
            "user_id": "alice", "asset_id": 7, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": heartbeat_core::Timestamp::now().to_string(), "session_limit": 2,
            "checking_threshold": 1, "sessions_edge": 3,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let issued: serde_json::Value = response.json().await.unwrap();
    let (status, _) = server
        .heartbeat(issued["heartbeat_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 200);
    let (_, sessions) = server
        .admin(Method::GET, "/admin/users/alice/sessions")
        .await;
    let session = sessions["sessions"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .admin(
            Method::DELETE,
            &format!("/admin/users/alice/sessions/{session}"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .admin(
            Method::DELETE,
            &format!("/admin/users/alice/sessions/{session}"),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, history) = server
        .admin(Method::GET, "/admin/users/alice/history")
        .await;
    assert_eq!(history["history"][0]["ended_by"], "evicted");
    server.stop().await;
}

/// The first failure reproduced from outside: a player that simply stops heartbeating
/// (crash, closed tab) is in the history as expired, without the user coming back.
async fn a_player_that_stops_heartbeating_is_in_the_history(kind: Kind) {
    use heartbeat_core::Clock;
    let clock = heartbeat_core::ManualClock::new(heartbeat_core::Timestamp::now());
    let (server, _backing) = common::start_on_clock(kind, common::settings(), clock.clone()).await;
    let started = clock.now();
    let (status, _) = server
        .heartbeat(&device_token(61, "LEAST_RECENT", started))
        .await;
    assert_eq!(status, 200);
    clock.advance(std::time::Duration::from_secs(3600));
    let (status, body) = server.admin(Method::GET, "/admin/users/61/history").await;
    assert_eq!(status, 200, "{body}");
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{body}");
    let entry = &history[0];
    assert_eq!(entry["ended_by"], "expired");
    assert_eq!(entry["ended_at"], started.add_millis(40_000).to_string());
    assert_eq!(entry["last_heartbeat"], started.to_string());
    for field in ["session_id", "asset_id", "started_at", "hit_counter"] {
        assert!(entry.get(field).is_some(), "{field} missing: {entry}");
    }
    server.stop().await;
}

/// The second: an evicted device is refused with `reason: evicted` instead of playing on.
async fn an_evicted_device_is_refused(kind: Kind) {
    use heartbeat_core::Clock;
    let clock = heartbeat_core::ManualClock::new(heartbeat_core::Timestamp::now());
    let (server, _backing) = common::start_on_clock(kind, common::settings(), clock.clone()).await;
    let (status, body) = server
        .heartbeat(&device_token(62, "LEAST_RECENT", clock.now()))
        .await;
    assert_eq!(status, 200);
    let token = body["heartbeat_token"].as_str().unwrap().to_owned();
    let (_, sessions) = server.admin(Method::GET, "/admin/users/62/sessions").await;
    let session = sessions["sessions"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .admin(
            Method::DELETE,
            &format!("/admin/users/62/sessions/{session}"),
        )
        .await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        clock.advance(std::time::Duration::from_secs(30));
        let (status, body) = server.heartbeat(&token).await;
        let (body, playing) = split_sessions(body);
        assert!(playing.is_empty(), "nobody else plays");
        assert_eq!(
            (status, body),
            (
                412,
                json!({ "error": OVER_LIMIT, "reason": "evicted", "limit": null })
            )
        );
    }
    let (_, sessions) = server.admin(Method::GET, "/admin/users/62/sessions").await;
    assert_eq!(
        sessions["sessions"],
        json!([]),
        "the evicted device does not play on"
    );
    let (status, _) = server
        .heartbeat(&device_token(62, "LEAST_RECENT", clock.now()))
        .await;
    assert_eq!(status, 200, "pressing play again starts a new session");
    server.stop().await;
}

for_each_store!(
    a_player_that_stops_heartbeating_is_in_the_history,
    an_evicted_device_is_refused,
    rotated_tokens_keep_the_session_and_record_progress,
    the_extra_device_gets_412_with_the_node_message,
    invalid_tokens_get_406_and_change_nothing,
    stop_frees_the_slot_and_goes_to_history,
    admin_issues_tokens_and_evicts,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_decisions_and_streams() {
    let (server, _backing) = start(Kind::Memory).await;
    let (status, _) = server
        .heartbeat(&backend_token(90, 1, "LEAST_RECENT"))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.heartbeat("not a token").await;
    assert_eq!(status, 406);
    // A body over the limit is a bad request too, though it is refused as it is read.
    let too_large = "x".repeat(common::settings().body_limit + 1);
    let response = server
        .post_json(
            "/heartbeat",
            &serde_json::json!({ "heartbeat_token": too_large }),
        )
        .await;
    assert_eq!(response.status(), 413);
    let _stream = common::Sse::open(&server, "/status?uuid=metrics", None).await;
    let (status, text) = server.get_text("/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        r#"heartbeat_http_requests_total{route="/heartbeat",method="POST",status="200"} 1"#,
        r#"heartbeat_http_requests_total{route="/heartbeat",method="POST",status="406"} 1"#,
        r#"heartbeat_heartbeat_decisions_total{outcome="accepted"} 1"#,
        r#"heartbeat_heartbeat_decisions_total{outcome="invalid_token"} 1"#,
        r#"heartbeat_heartbeat_decisions_total{outcome="bad_request"} 1"#,
        r#"heartbeat_http_requests_total{route="/heartbeat",method="POST",status="413"} 1"#,
        "heartbeat_sse_connections 1",
        r#"heartbeat_http_request_duration_seconds_count{route="/heartbeat"} 3"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    // Every route of the router is in the store-error count from the start, the ones
    // added last included (the list comes from the router, not a copy of it).
    for route in [
        "/heartbeat/takeover",
        "/heartbeat/events",
        "/admin/tokens",
        "/admin/users/{user}/history",
        "/admin/history/events",
        "/v1/jobs/{id}",
    ] {
        let expected = format!("heartbeat_store_errors_total{{route=\"{route}\"}} 0");
        assert!(text.contains(&expected), "{expected} missing from:\n{text}");
    }
    server.stop().await;
}

/// A 412 body without its `sessions` (SPEC §3.7), and those sessions.
fn split_sessions(mut body: serde_json::Value) -> (serde_json::Value, Vec<serde_json::Value>) {
    let sessions = body
        .as_object_mut()
        .and_then(|fields| fields.remove("sessions"))
        .and_then(|sessions| sessions.as_array().cloned())
        .unwrap_or_default();
    (body, sessions)
}
