//! Jobs over a real socket with a real SSE client, on every store: the HeyGen routes and
//! stream, the /v1 API and its resumable event stream.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{ADMIN_KEY, Kind, Sse, start};
use reqwest::Method;
use serde_json::{Value, json};

async fn create(server: &common::TestServer, owner: &str) -> u64 {
    let response = server
        .http
        .post(format!("{}/create?uuid={owner}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.text().await.unwrap().parse().unwrap()
}

async fn heygen_stream_multiplexes_an_owners_completions(kind: Kind) {
    let (server, _backing) = start(kind).await;
    let mut alice = Sse::open(&server, "/status?uuid=alice", None).await;
    let mut bob = Sse::open(&server, "/status?uuid=bob", None).await;
    let mut expected = BTreeSet::new();
    for _ in 0..3 {
        let id = create(&server, "alice").await;
        assert_eq!(
            server.get_text(&format!("/status/{id}?uuid=alice")).await,
            (200, "pending".to_owned())
        );
        expected.insert(id);
    }
    let bobs = create(&server, "bob").await;
    let mut seen = BTreeSet::new();
    while seen.len() < 3 {
        let event = alice.next().await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        let id = data["id"].as_u64().unwrap();
        assert_eq!(event.event, format!("status_{id}"));
        assert_eq!(data, json!({ "id": id, "message": "completed" }));
        assert!(!event.id.is_empty(), "events carry ids for Last-Event-ID");
        assert!(seen.insert(id), "each completion once");
    }
    assert_eq!(seen, expected);
    let event = bob.next().await;
    assert_eq!(
        event.event,
        format!("status_{bobs}"),
        "bob sees only his job"
    );
    assert!(
        alice
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "nothing else for alice"
    );
    for id in &expected {
        assert_eq!(
            server.get_text(&format!("/status/{id}?uuid=alice")).await,
            (200, "completed".to_owned())
        );
        assert_eq!(
            server.get_text(&format!("/status/{id}?uuid=bob")).await,
            (401, "unauthorized".to_owned())
        );
    }
    server.stop().await;
}

async fn v1_events_resume_after_the_last_event_id(kind: Kind) {
    let settings = heartbeat_http::Settings {
        job_time: None,
        ..common::settings()
    };
    let (server, _backing) = common::start_with(kind, settings).await;
    let created: Value = server
        .http
        .post(format!("{}/v1/jobs?uuid=carol", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    let mut events = Sse::open(&server, "/v1/events?uuid=carol", None).await;
    let update = |body: Value| {
        server
            .http
            .patch(format!("{}/v1/jobs/{id}", server.url))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    assert_eq!(
        update(json!({ "state": "running", "progress": 10 }))
            .await
            .unwrap()
            .status(),
        200
    );
    let first = events.next().await;
    assert_eq!(first.event, "job");
    let job: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(
        (job["state"].as_str(), job["progress"].as_u64()),
        (Some("running"), Some(10))
    );
    drop(events); // the client goes away...

    assert_eq!(
        update(json!({ "progress": 60 })).await.unwrap().status(),
        200
    );
    assert_eq!(
        update(json!({ "state": "completed" }))
            .await
            .unwrap()
            .status(),
        200
    );
    let response = update(json!({ "state": "running" })).await.unwrap();
    assert_eq!(response.status(), 409, "a finished job never changes");

    // ...and comes back with the last id it saw: it gets what it missed, in order, once.
    let mut resumed = Sse::open(&server, "/v1/events?uuid=carol", Some(&first.id)).await;
    let missed: Vec<Value> = vec![
        serde_json::from_str(&resumed.next().await.data).unwrap(),
        serde_json::from_str(&resumed.next().await.data).unwrap(),
    ];
    assert_eq!(missed[0]["progress"], 60);
    assert_eq!(missed[1]["state"], "completed");
    assert!(
        resumed
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    let (status, listed) = server.admin(Method::GET, "/v1/jobs?uuid=carol").await;
    assert_eq!(
        (status, listed["jobs"][0]["state"].as_str()),
        (200, Some("completed"))
    );
    let (status, _) = server
        .admin(Method::GET, &format!("/v1/jobs/{id}?uuid=dave"))
        .await;
    assert_eq!(status, 403);
    server.stop().await;
}

async fn shutdown_closes_event_streams(kind: Kind) {
    let (server, _backing) = start(kind).await;
    let mut stream = Sse::open(&server, "/status?uuid=erin", None).await;
    let stopping = tokio::spawn(server.stop());
    assert!(stream.ends().await, "the stream ends cleanly on shutdown");
    stopping.await.unwrap();
}

for_each_store!(
    heygen_stream_multiplexes_an_owners_completions,
    v1_events_resume_after_the_last_event_id,
    shutdown_closes_event_streams,
);

#[tokio::test]
async fn streams_start_with_retry_and_send_keep_alives() {
    use futures_util::StreamExt;
    let (server, _backing) = start(Kind::Memory).await;
    let response = server
        .http
        .get(format!("{}/v1/events?uuid=frank", server.url))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while !text.contains(": keep-alive") {
        let chunk = tokio::time::timeout(common::EVENT_WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.starts_with(": connected\nretry: 2000\n") || text.starts_with("retry: 2000\n"),
        "{text}"
    );
    server.stop().await;
}

/// More events than an owner's live channel holds (16), published while the stream's task
/// cannot run (one-threaded runtime, no await yields in the memory store): the stream
/// lags, replays from the last id it sent, and the client still gets every event once,
/// in order.
#[tokio::test]
async fn a_stream_that_lags_replays_what_it_missed() {
    use heartbeat_core::jobs::Owner;
    use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore, MemorySessionStore};

    let settings = heartbeat_http::Settings {
        job_time: None,
        ..common::settings()
    };
    let app = heartbeat_http::server::app(
        common::codec(),
        MemorySessionStore::new(),
        MemoryJobStore::new(),
        MemoryEventBus::new(),
        settings,
    );
    let server = common::serve(app.clone()).await;
    let mut events = Sse::open(&server, "/v1/events?uuid=lagger", None).await;
    let owner = Owner::new("lagger").unwrap();
    let mut created = Vec::new();
    for _ in 0..40 {
        created.push(app.jobs().create(&owner).await.unwrap().id);
    }
    let mut received = Vec::new();
    for _ in 0..40 {
        let job: Value = serde_json::from_str(&events.next().await.data).unwrap();
        received.push(job["id"].as_u64().unwrap());
    }
    let created: Vec<u64> = created.iter().map(|id| id.0).collect();
    assert_eq!(received, created);
    assert!(
        events
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing twice"
    );
    server.stop().await;
}

/// A memory server restarts while a browser (or the HeyGen client) holds `Last-Event-ID:
/// 1000` from before: ids never go back, so the next completion reaches it; a client
/// whose id is ahead of every kept event is not left silent either (SPEC §4).
#[tokio::test]
async fn clients_from_before_a_restart_get_the_next_completion() {
    let (before, _backing) = start(Kind::Memory).await;
    let url = before.url.clone();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    before.stop().await;
    // The same port, a new process state: the memory store starts empty.
    let app = heartbeat_http::server::app(
        common::codec(),
        heartbeat_core::memory::MemorySessionStore::new(),
        heartbeat_core::memory::MemoryJobStore::new(),
        heartbeat_core::memory::MemoryEventBus::new(),
        common::settings(),
    );
    let after = common::serve_on(app, port).await;
    for last_seen in ["1000", "18446744073709551000"] {
        let owner = format!("restart-{}", last_seen.len());
        let mut stream = Sse::open(&after, &format!("/status?uuid={owner}"), Some(last_seen)).await;
        let id = create(&after, &owner).await;
        let event = stream.next().await;
        assert_eq!(
            event.event,
            format!("status_{id}"),
            "Last-Event-ID {last_seen}"
        );
        let event_id: u64 = event.id.parse().unwrap();
        assert!(event_id > 1000, "{event_id}");
    }
    after.stop().await;
}

/// `POST /create` never answers an error for a job it stored (the HeyGen client would
/// read the error text as a job id): a publication the bus refuses goes out later, and the
/// SSE client still gets the completion (SPEC §4, at least once).
#[tokio::test]
async fn a_refused_publication_still_reaches_the_stream() {
    let app = heartbeat_http::server::app(
        common::codec(),
        heartbeat_core::memory::MemorySessionStore::new(),
        heartbeat_core::memory::MemoryJobStore::new(),
        heartbeat_core::testkit::FlakyBus::new(heartbeat_core::memory::MemoryEventBus::new(), 3),
        common::settings(),
    );
    let server = common::serve(app).await;
    let mut stream = Sse::open(&server, "/status?uuid=flaky", None).await;
    let id = create(&server, "flaky").await;
    let event = stream.next().await;
    assert_eq!(event.event, format!("status_{id}"));
    assert_eq!(
        serde_json::from_str::<Value>(&event.data).unwrap(),
        json!({ "id": id, "message": "completed" })
    );
    server.stop().await;
}

/// REQUEST_TIMEOUT bounds the time to an answer's head: a stream whose head came at once
/// lives on past it, and events keep coming (docs/configuration.md, `REQUEST_TIMEOUT_MS`).
#[tokio::test]
async fn a_stream_lives_past_the_request_timeout() {
    let settings = heartbeat_http::Settings {
        request_timeout: Duration::from_millis(300),
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let mut stream = Sse::open(&server, "/status?uuid=alice", None).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let id = create(&server, "alice").await;
    let event = stream.next().await;
    assert!(event.data.contains(&id.to_string()), "{event:?}");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let second = create(&server, "alice").await;
    let event = stream.next().await;
    assert!(event.data.contains(&second.to_string()), "{event:?}");
    server.stop().await;
}
