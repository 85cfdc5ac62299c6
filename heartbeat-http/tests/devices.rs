//! SPEC §3.7 and §3.8 over HTTP, on every store: refusals that say why and list the
//! playing devices, `POST /heartbeat/takeover`, and the pushed notices of
//! `GET /heartbeat/events`, read with a real SSE client; and the notice crossing two
//! instances on one redis-server.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Kind, Sse, TestServer, codec};
use heartbeat_core::{ManualClock, Timestamp, TokenFormat};
use heartbeat_http::OVER_LIMIT_MESSAGE;
use heartbeat_store_redis::testkit::RedisServer;
use serde_json::{Value, json};

/// A backend token of `user` on `device` (`family`), plan `{"tv": 1, "mobile": 2}`.
fn device_token(user: i64, device: &str, family: &str, limit: u32, strategy: &str) -> String {
    common::seal(json!({
        "user_id": user, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "reject_strategy": strategy, "timestamp": Timestamp::now().to_string(),
        "session_limit": limit, "checking_threshold": 1, "sessions_edge": 50,
        "device": device, "device_family": family, "family_limits": {"tv": 1, "mobile": 2},
    }))
}

/// The same data as `token`, sealed as a legacy (CryptoJS) token, as a Node-era fleet
/// would have it.
fn as_legacy(token: &str) -> String {
    let data = codec().open(token).unwrap();
    codec().issuing(TokenFormat::Legacy).seal(&data).unwrap()
}

/// Plays a backend token: returns the rotated token and the session id. Then moves the
/// server's clock 10 ms, so that the next session starts later (sessions started in the
/// same millisecond rank by id).
async fn play(server: &TestServer, clock: &ManualClock, token: &str) -> (String, String) {
    let (status, body) = server.heartbeat(token).await;
    assert_eq!(status, 200, "{body}");
    let token = body["heartbeat_token"].as_str().unwrap().to_owned();
    let session = codec().open(&token).unwrap().session_id.unwrap();
    clock.advance(Duration::from_millis(10));
    (token, session)
}

async fn take_over(server: &TestServer, body: Value) -> (u16, Value) {
    let response = server.post_json("/heartbeat/takeover", &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Every 412 keeps the Node body's `error` and says `reason` and `limit`; a v2 token is
/// shown the sessions that keep playing, a legacy token never.
async fn refusals_say_why_and_who_plays(kind: Kind) {
    let clock = ManualClock::new(Timestamp::now());
    let (server, _backing) = common::start_on_clock(kind, common::settings(), clock.clone()).await;
    let (_, living_room) = play(
        &server,
        &clock,
        &device_token(11, "Living-room TV", "tv", 3, "MOST_RECENT"),
    )
    .await;
    let (bedroom, _) = play(
        &server,
        &clock,
        &device_token(11, "Bedroom TV", "tv", 3, "MOST_RECENT"),
    )
    .await;
    let (status, body) = server.heartbeat(&bedroom).await;
    assert_eq!(status, 412);
    assert_eq!(body["error"], OVER_LIMIT_MESSAGE);
    assert_eq!(
        (&body["reason"], &body["limit"]),
        (&json!("family_limit"), &json!(1))
    );
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{body}");
    let playing = &sessions[0];
    assert_eq!(playing["session_id"], json!(living_room));
    assert_eq!(
        (&playing["device"], &playing["device_family"]),
        (&json!("Living-room TV"), &json!("tv"))
    );
    assert_eq!(playing["asset_id"], json!(14));
    for field in ["started_at", "last_seen"] {
        assert!(
            playing[field]
                .as_str()
                .unwrap()
                .parse::<Timestamp>()
                .is_ok(),
            "{field}: {playing}"
        );
    }

    let (status, body) = server.heartbeat(&as_legacy(&bedroom)).await;
    assert_eq!(status, 412);
    assert_eq!(
        (&body["reason"], &body["limit"]),
        (&json!("family_limit"), &json!(1))
    );
    assert!(
        body.get("sessions").is_none(),
        "a legacy token is shown no sessions: {body}"
    );
    server.stop().await;
}

/// `POST /heartbeat/takeover`: 400 without a session, 404 for one that is not active, 406
/// for a legacy token, 200 with the next token; the taken-over device is then 412
/// `taken_over`, and its history entry names who took over.
async fn takeover_over_http(kind: Kind) {
    let clock = ManualClock::new(Timestamp::now());
    let (server, _backing) = common::start_on_clock(kind, common::settings(), clock.clone()).await;
    let (tv, tv_id) = play(
        &server,
        &clock,
        &device_token(12, "TV", "tv", 1, "MOST_RECENT"),
    )
    .await;
    let (phone, phone_id) = play(
        &server,
        &clock,
        &device_token(12, "Phone", "mobile", 1, "MOST_RECENT"),
    )
    .await;
    let (status, body) = server.heartbeat(&phone).await;
    assert_eq!((status, &body["reason"]), (412, &json!("over_limit")));
    assert_eq!(body["sessions"][0]["session_id"], json!(tv_id));

    let (status, body) = take_over(&server, json!({"heartbeat_token": phone})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("session_id"));
    let (status, body) =
        take_over(&server, json!({"heartbeat_token": phone, "session_id": 7})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = take_over(
        &server,
        json!({"heartbeat_token": phone, "session_id": "gone"}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("The session is not active."))
    );
    let (status, _) = take_over(
        &server,
        json!({"heartbeat_token": as_legacy(&phone), "session_id": tv_id}),
    )
    .await;
    assert_eq!(status, 406);
    let (status, _) = take_over(
        &server,
        json!({"heartbeat_token": "garbage", "session_id": tv_id}),
    )
    .await;
    assert_eq!(status, 406);
    let (status, _) = server.heartbeat(&tv).await;
    assert_eq!(status, 200, "the refused calls changed nothing");

    let (status, body) = take_over(
        &server,
        json!({"heartbeat_token": phone, "session_id": tv_id, "progress": 61}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let next = body["heartbeat_token"].as_str().unwrap();
    assert_eq!(codec().open(next).unwrap().session_id.unwrap(), phone_id);
    let (status, body) = server.heartbeat(&tv).await;
    assert_eq!(status, 412);
    assert_eq!(
        (&body["reason"], &body["limit"]),
        (&json!("taken_over"), &Value::Null)
    );
    assert_eq!(body["error"], OVER_LIMIT_MESSAGE);

    let (status, history) = server
        .admin(reqwest::Method::GET, "/admin/users/12/history")
        .await;
    assert_eq!(status, 200);
    let entries = history
        .as_array()
        .or_else(|| history["history"].as_array())
        .unwrap()
        .clone();
    let taken = entries
        .iter()
        .find(|entry| entry["session_id"] == json!(tv_id))
        .unwrap();
    assert_eq!(
        (&taken["ended_by"], &taken["taken_over_by"]),
        (&json!("taken_over"), &json!(phone_id))
    );
    assert_eq!(taken["device"], json!("TV"));
    server.stop().await;
}

/// Reads the one `ended` event of a notice stream and checks the stream then closes.
async fn ended(stream: &mut Sse) -> Value {
    let event = stream.next().await;
    assert_eq!(event.event, "ended");
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert!(stream.ends().await, "the stream closes after the notice");
    data
}

/// `GET /heartbeat/events`: the notice of an eviction, a takeover (named by its device)
/// and a displacement reaches the player's stream, which then closes; opened by query or
/// by bearer token; 404 for a session that is not active, 406 for a legacy token.
async fn notices_over_sse(kind: Kind) {
    let clock = ManualClock::new(Timestamp::now());
    let (server, _backing) = common::start_on_clock(kind, common::settings(), clock.clone()).await;

    let (tv, tv_id) = play(
        &server,
        &clock,
        &device_token(13, "TV", "tv", 2, "LEAST_RECENT"),
    )
    .await;
    let mut stream = Sse::open(
        &server,
        &format!("/heartbeat/events?heartbeat_token={tv}"),
        None,
    )
    .await;
    let (status, _) = server
        .admin(
            reqwest::Method::DELETE,
            &format!("/admin/users/13/sessions/{tv_id}"),
        )
        .await;
    assert_eq!(status, 200);
    let data = ended(&mut stream).await;
    assert_eq!(
        data,
        json!({"session_id": tv_id, "reason": "evicted", "by": null})
    );

    let (tablet, tablet_id) = play(
        &server,
        &clock,
        &device_token(14, "Tablet", "mobile", 1, "MOST_RECENT"),
    )
    .await;
    let request = server
        .http
        .get(format!("{}/heartbeat/events", server.url))
        .bearer_auth(&tablet);
    let mut stream = Sse::from_request(request).await;
    let (phone, phone_id) = play(
        &server,
        &clock,
        &device_token(14, "Phone", "mobile", 1, "MOST_RECENT"),
    )
    .await;
    let (status, _) = take_over(
        &server,
        json!({"heartbeat_token": phone, "session_id": tablet_id}),
    )
    .await;
    assert_eq!(status, 200);
    let data = ended(&mut stream).await;
    assert_eq!(data["reason"], "taken_over");
    assert_eq!(
        data["by"],
        json!({"session_id": phone_id, "device": "Phone"})
    );

    let (old, old_id) = play(
        &server,
        &clock,
        &device_token(15, "Old phone", "mobile", 1, "LEAST_RECENT"),
    )
    .await;
    let mut stream = Sse::open(
        &server,
        &format!("/heartbeat/events?heartbeat_token={old}"),
        None,
    )
    .await;
    let (_, new_id) = play(
        &server,
        &clock,
        &device_token(15, "New phone", "mobile", 1, "LEAST_RECENT"),
    )
    .await;
    let data = ended(&mut stream).await;
    assert_eq!(
        (&data["session_id"], &data["reason"]),
        (&json!(old_id), &json!("displaced"))
    );
    assert_eq!(data["by"]["session_id"], json!(new_id));

    let backend = device_token(16, "TV", "tv", 1, "LEAST_RECENT");
    let (status, body) = server
        .get_text(&format!("/heartbeat/events?heartbeat_token={backend}"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not active"), "{body}");
    let (fresh, _) = play(
        &server,
        &clock,
        &device_token(17, "TV", "tv", 1, "LEAST_RECENT"),
    )
    .await;
    let (status, _) = server
        .get_text(&format!(
            "/heartbeat/events?heartbeat_token={}",
            as_legacy(&fresh)
        ))
        .await;
    assert_eq!(status, 406);
    // A token the session has moved past opens no stream (SPEC §3.8): 404, saying which
    // token does.
    clock.advance(Duration::from_secs(30));
    let (_, _) = play(&server, &clock, &fresh).await;
    let (status, body) = server
        .get_text(&format!("/heartbeat/events?heartbeat_token={fresh}"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not the session's current one"), "{body}");
    let (status, _) = server.get_text("/heartbeat/events").await;
    assert_eq!(status, 406);
    server.stop().await;
}

for_each_store!(
    refusals_say_why_and_who_plays,
    takeover_over_http,
    notices_over_sse
);

/// Two instances on one redis-server: a player's stream held on instance B is told within
/// a second when a device on instance A takes its session over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_reaches_a_stream_on_another_instance() {
    let redis = RedisServer::start();
    let clock = ManualClock::new(Timestamp::now());
    let a = common::redis_instance(&redis.url(), common::settings(), clock.clone()).await;
    let b = common::redis_instance(&redis.url(), common::settings(), clock.clone()).await;
    let (tablet, tablet_id) = play(
        &a,
        &clock,
        &device_token(21, "Tablet", "mobile", 1, "MOST_RECENT"),
    )
    .await;
    let mut stream = Sse::open(
        &b,
        &format!("/heartbeat/events?heartbeat_token={tablet}"),
        None,
    )
    .await;
    let (phone, phone_id) = play(
        &a,
        &clock,
        &device_token(21, "Phone", "mobile", 1, "MOST_RECENT"),
    )
    .await;
    let sent = Instant::now();
    let (status, _) = take_over(
        &a,
        json!({"heartbeat_token": phone, "session_id": tablet_id}),
    )
    .await;
    assert_eq!(status, 200);
    let data = ended(&mut stream).await;
    eprintln!(
        "the takeover on instance A reached the stream on instance B in {:?}",
        sent.elapsed()
    );
    assert_eq!(data["reason"], "taken_over");
    assert_eq!(data["by"]["session_id"], json!(phone_id));
    let (status, body) = b.heartbeat(&tablet).await;
    assert_eq!((status, &body["reason"]), (412, &json!("taken_over")));
}

/// `POST /admin/tokens` takes the §3.1 device and policy fields, and refuses bad ones with
/// a 400 that names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_issues_tokens_with_devices_and_policies() {
    let (server, _backing) = common::start(Kind::Memory).await;
    let issue = |fields: Value| {
        let mut body = json!({
            "user_id": 31, "asset_id": 7, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "session_limit": 3,
        });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        server
            .http
            .post(format!("{}/admin/tokens", server.url))
            .bearer_auth(common::ADMIN_KEY)
            .json(&body)
            .send()
    };
    let response = issue(json!({"device": "TV", "device_family": "tv",
        "family_limits": {"tv": 1, "mobile": 2}, "asset_limit": 1}))
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let data = codec()
        .open(body["heartbeat_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(data.device.as_deref(), Some("TV"));
    assert_eq!(data.family_limits.unwrap()["mobile"], 2);
    assert_eq!(data.asset_limit, Some(1));
    for (fields, field) in [
        (json!({"family_limits": {"tv": -1}}), "family_limits"),
        (json!({"device_family": ""}), "device_family"),
        (json!({"asset_limit": "lots"}), "asset_limit"),
    ] {
        let response = issue(fields.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{fields}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(field),
            "{fields}: {body}"
        );
    }
}
