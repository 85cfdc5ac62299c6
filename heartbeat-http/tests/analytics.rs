//! Play history for analysts over real HTTP (SPEC §3.9): the NDJSON export, the live SSE
//! feed (also across two instances on one redis-server) and the `export-history` command.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    ADMIN_KEY, Kind, SHARED_KEY, Sse, TestServer, backend_token, codec, settings, start_on_clock,
};
use heartbeat_core::{Clock, ManualClock, SystemClock, Timestamp};
use heartbeat_store_redis::testkit::RedisServer;
use reqwest::Method;
use serde_json::{Value, json};

/// A backend token whose session expires one second after each heartbeat.
fn short_token(user: i64) -> String {
    common::seal(json!({
        "user_id": user, "asset_id": 7, "heartbeat_cycle": 1, "cycle_upper_tolerance": 0,
        "timestamp": Timestamp::now().to_string(),
        "session_limit": 5, "checking_threshold": 1, "sessions_edge": 50,
    }))
}

/// The export's lines, parsed.
async fn export(server: &TestServer, query: &str) -> (u16, String, Vec<Value>) {
    let response = server
        .http
        .get(format!("{}/admin/history{query}", server.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let lines = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (status, kind, lines)
}

/// Starts a counted session and returns its token and id.
async fn play(server: &TestServer, token: &str) -> (String, String) {
    let (status, answer) = server.heartbeat(token).await;
    assert_eq!(status, 200, "{answer}");
    let token = answer["heartbeat_token"].as_str().unwrap().to_owned();
    let data = codec().open(&token).unwrap();
    (token, data.session_id.unwrap())
}

async fn stop(server: &TestServer, token: &str) {
    let response = server
        .post_json("/heartbeat/stop", &json!({ "heartbeat_token": token }))
        .await;
    assert_eq!(response.status(), 200);
}

/// Waits for the feed's next `session` or `refusal` event, and how long it took.
async fn next_feed_event(feed: &mut Sse) -> (String, Value, Duration) {
    let started = Instant::now();
    let event = feed.next().await;
    (
        event.event,
        serde_json::from_str(&event.data).unwrap(),
        started.elapsed(),
    )
}

/// Moves `clock` past the settle time: the feed and the export read only settled entries.
fn settle(clock: &ManualClock) {
    clock.advance(Duration::from_secs(1));
}

async fn export_and_feed(kind: Kind) {
    let clock = ManualClock::new(Timestamp::now());
    let (server, _backing) = start_on_clock(kind, settings(), clock.clone()).await;
    let since = clock.now().add_millis(-1);
    let mut feed = Sse::open_admin(&server, "/admin/history/events", None).await;

    // Stopped: reaches the feed.
    let (token, stopped) = play(&server, &backend_token(501, 1, "MOST_RECENT")).await;
    stop(&server, &token).await;
    settle(&clock);
    let (event, session, _) = next_feed_event(&mut feed).await;
    assert_eq!(event, "session");
    assert_eq!(
        (
            &session["session_id"],
            &session["ended_by"],
            &session["user_id"]
        ),
        (&json!(stopped), &json!("stopped"), &json!(501))
    );

    // Refused: a second device over the limit of one (at its second heartbeat: a new
    // session is checked once it is counted).
    let (_, evicted) = play(&server, &backend_token(502, 1, "MOST_RECENT")).await;
    // The second device starts later (MOST_RECENT: the earlier one keeps playing).
    clock.advance(Duration::from_millis(10));
    let (second, _) = play(&server, &backend_token(502, 1, "MOST_RECENT")).await;
    let (status, _) = server.heartbeat(&second).await;
    assert_eq!(status, 412);
    settle(&clock);
    let (event, refusal, _) = next_feed_event(&mut feed).await;
    assert_eq!(event, "refusal");
    assert_eq!(
        (&refusal["user_id"], &refusal["reason"], &refusal["limit"]),
        (&json!(502), &json!("over_limit"), &json!(1))
    );

    // Evicted by an administrator.
    let (status, _) = server
        .admin(
            Method::DELETE,
            &format!("/admin/users/502/sessions/{evicted}"),
        )
        .await;
    assert_eq!(status, 200);
    settle(&clock);
    let (event, session, _) = next_feed_event(&mut feed).await;
    assert_eq!(
        (event.as_str(), &session["ended_by"]),
        ("session", &json!("evicted"))
    );

    // Expired: the player crashes and its user never returns.
    let (_, expired) = play(&server, &short_token(503)).await;
    // Its deadline (one second after the heartbeat) passes, and it settles.
    clock.advance(Duration::from_secs(2));
    let (event, session, _) = next_feed_event(&mut feed).await;
    assert_eq!(
        (event.as_str(), &session["session_id"], &session["ended_by"]),
        ("session", &json!(expired), &json!("expired"))
    );

    // The export: the same three sessions, in order, then the cursor line.
    let (status, content_type, lines) = export(&server, &format!("?since={since}")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let ids: Vec<&Value> = lines.iter().map(|line| &line["session_id"]).collect();
    assert_eq!(
        ids,
        [
            &json!(stopped),
            &json!(evicted),
            &json!(expired),
            &Value::Null
        ]
    );
    let last = lines.last().unwrap();
    assert_eq!(last["complete"], json!(true));
    // One at a time through the cursor: the same sessions.
    let mut cursor = String::new();
    let mut paged = Vec::new();
    for _ in 0..10 {
        let (_, _, page) = export(&server, &format!("?limit=1&cursor={cursor}")).await;
        let end = page.last().unwrap().clone();
        paged.extend(
            page[..page.len() - 1]
                .iter()
                .map(|line| line["session_id"].clone()),
        );
        cursor = end["cursor"].as_str().unwrap().to_owned();
        if end["complete"] == json!(true) {
            break;
        }
    }
    assert_eq!(paged, [json!(stopped), json!(evicted), json!(expired)]);
    // `until` before the expiry leaves it out.
    let (_, _, lines) = export(
        &server,
        &format!("?until={}", clock.now().add_millis(-1500)),
    )
    .await;
    assert!(
        !lines
            .iter()
            .any(|line| line["session_id"] == json!(expired))
    );

    // Bad input: a clear 400, and the admin key is required.
    for query in [
        "?since=yesterday",
        "?cursor=%21%21",
        "?limit=0",
        "?colour=red",
    ] {
        let (status, _, lines) = export(&server, query).await;
        assert_eq!(status, 400, "{query}");
        assert!(lines[0]["error"].is_string(), "{query}: {lines:?}");
    }
    let anonymous = server
        .http
        .get(format!("{}/admin/history", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // The feed resumes after any event with Last-Event-ID.
    let mut from_start = Sse::open_admin(&server, "/admin/history/events", Some("unknown")).await;
    let first = from_start.next().await;
    let mut resumed =
        Sse::open_admin(&server, "/admin/history/events", Some(first.id.as_str())).await;
    let (event, refusal, _) = next_feed_event(&mut resumed).await;
    assert_eq!(
        (event.as_str(), &refusal["user_id"]),
        ("refusal", &json!(502))
    );
}

for_each_store!(export_and_feed);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_on_one_instance_sees_sessions_finished_on_another() {
    let redis = RedisServer::start();
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(common::redis_instance(&redis.url(), common::settings(), SystemClock).await);
    }
    let mut feed = Sse::open_admin(&instances[1], "/admin/history/events", None).await;
    let (token, session) = play(&instances[0], &backend_token(601, 2, "MOST_RECENT")).await;
    stop(&instances[0], &token).await;
    let (event, finished, took) = next_feed_event(&mut feed).await;
    assert_eq!(
        (event.as_str(), &finished["session_id"]),
        ("session", &json!(session))
    );
    eprintln!("a session stopped on one instance reached the other's feed in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_command_writes_what_the_http_export_answers() {
    let redis = RedisServer::start();
    let server = common::redis_instance(&redis.url(), common::settings(), SystemClock).await;
    for user in [701, 702] {
        let (token, _) = play(&server, &backend_token(user, 2, "MOST_RECENT")).await;
        stop(&server, &token).await;
    }
    // Settled (past the settle time): both sessions and the cursor line, so both exports
    // see the same entries.
    let deadline = Instant::now() + common::EVENT_WAIT;
    let lines = loop {
        let (status, _, lines) = export(&server, "").await;
        assert_eq!(status, 200);
        if lines.len() == 3 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "the two sessions did not settle: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_heartbeat-server"))
        .env_clear()
        .current_dir(dir.path())
        .envs([
            ("STORAGE", "redis"),
            ("REDIS_URL", redis.url().as_str()),
            ("REDIS_NAMESPACE", "http-test:"),
            ("SHARED_KEY", SHARED_KEY),
        ])
        .args(["export-history", "--since", "2000-01-01T00:00:00Z"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let cli: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(cli, lines);

    // A bad option is refused with a message, and nothing is written.
    let output = Command::new(env!("CARGO_BIN_EXE_heartbeat-server"))
        .env_clear()
        .current_dir(dir.path())
        .envs([
            ("STORAGE", "redis"),
            ("REDIS_URL", redis.url().as_str()),
            ("SHARED_KEY", SHARED_KEY),
        ])
        .args(["export-history", "--since", "last tuesday"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("since must be an ISO 8601 time"));
}
