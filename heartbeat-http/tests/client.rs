//! The Rust clients against the real server: SSE, polling, auto, fallback when the stream
//! is refused or dropped, a server restart on sled, wrong owner, unknown job; the player's
//! heartbeats, 412, 406 and an unreachable server.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::response::IntoResponse;
use common::{Kind, TestServer, codec, settings, start};
use futures_util::StreamExt;
use heartbeat_core::HeartbeatData;
use heartbeat_core::jobs::JobId;
use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore, MemorySessionStore};
use heartbeat_http::client::jobs::{ClientError, JobStatus, JobsClient, Mode, Options};
use heartbeat_http::client::player::{
    Player, PlayerEvent, PlayerOptions, RefusalReason, StopReason,
};
use heartbeat_http::{Settings, server};
use heartbeat_store_sled::{SledConfig, SledStore};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn options(server: &TestServer, mode: Mode) -> Options {
    Options {
        poll_interval: Duration::from_millis(100),
        logging: true,
        ..Options::new(server.url.clone(), mode)
    }
}

async fn open_streams(server: &TestServer) -> i64 {
    let (_, metrics) = server.get_text("/metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("heartbeat_sse_connections "))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Waits (bounded) until the server counts `expected` open SSE streams; returns the count.
async fn streams_settle_at(server: &TestServer, expected: i64) -> i64 {
    let mut open = open_streams(server).await;
    for _ in 0..50 {
        if open == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = open_streams(server).await;
    }
    open
}

async fn wait_all(client: &JobsClient, ids: &[JobId]) -> Vec<Result<JobStatus, ClientError>> {
    let waits = ids.iter().map(|id| client.wait_for_job(*id));
    tokio::time::timeout(WAIT, futures_util::future::join_all(waits))
        .await
        .expect("every job resolves")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_resolves_every_job() {
    let (server, _backing) = start(Kind::Memory).await;
    for mode in [Mode::Sse, Mode::Poll, Mode::Auto] {
        let client = JobsClient::new(options(&server, mode)).unwrap();
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(client.create_job().await.unwrap());
        }
        let results = wait_all(&client, &ids).await;
        assert!(
            results
                .iter()
                .all(|result| *result == Ok(JobStatus::Completed)),
            "{mode:?}: {results:?}"
        );
        assert!(
            client.listening().is_empty(),
            "listeners end after the final status"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_carries_all_of_a_clients_jobs() {
    let (server, _backing) = start(Kind::Memory).await;
    let client = Arc::new(JobsClient::new(options(&server, Mode::Sse)).unwrap());
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(client.create_job().await.unwrap());
    }
    let waits = {
        let client = Arc::clone(&client);
        let ids = ids.clone();
        tokio::spawn(async move { wait_all(&client, &ids).await })
    };
    assert_eq!(
        streams_settle_at(&server, 1).await,
        1,
        "one SSE connection for five jobs"
    );
    assert!(
        waits
            .await
            .unwrap()
            .iter()
            .all(|result| *result == Ok(JobStatus::Completed))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_finished_before_listening_still_resolves() {
    let (server, _backing) = start(Kind::Memory).await;
    let client = JobsClient::new(options(&server, Mode::Sse)).unwrap();
    let id = client.create_job().await.unwrap();
    // The completion event is long gone by the time anybody listens.
    for _ in 0..100 {
        if server
            .get_text(&format!("/status/{id}?uuid={}", client.owner()))
            .await
            .1
            == "completed"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = tokio::time::timeout(WAIT, client.wait_for_job(id))
        .await
        .unwrap();
    assert_eq!(status, Ok(JobStatus::Completed));
    server.stop().await;
}

/// Completes job `id` as a worker does (`PATCH /v1/jobs/{id}` with the admin key).
async fn complete(server: &TestServer, id: JobId) {
    let response = server
        .http
        .patch(format!("{}/v1/jobs/{}", server.url, id.0))
        .bearer_auth(common::ADMIN_KEY)
        .json(&json!({ "state": "completed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Jobs completed while the client waits over SSE, after it switched to polling, and after
/// it switched back, all reach their waiters (the jobs complete when the test says, as a
/// worker completes them: no timing involved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_backends_mid_wait_loses_nothing() {
    let settings = Settings {
        job_time: None,
        ..settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let client = Arc::new(JobsClient::new(options(&server, Mode::Sse)).unwrap());
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(client.create_job().await.unwrap());
    }
    let waits = {
        let client = Arc::clone(&client);
        let ids = ids.clone();
        tokio::spawn(async move { wait_all(&client, &ids).await })
    };
    // The first completes over the stream.
    assert_eq!(streams_settle_at(&server, 1).await, 1, "the stream is open");
    complete(&server, ids[0]).await;
    assert_eq!(
        tokio::time::timeout(WAIT, client.wait_for_job(ids[0]))
            .await
            .unwrap(),
        Ok(JobStatus::Completed)
    );
    // The second while polling.
    client.change_backend(Mode::Poll);
    assert_eq!(
        streams_settle_at(&server, 0).await,
        0,
        "polling closed the stream"
    );
    complete(&server, ids[1]).await;
    let more = client.create_job().await.unwrap();
    // The rest after switching back.
    client.change_backend(Mode::Sse);
    complete(&server, ids[2]).await;
    complete(&server, more).await;
    let results = waits.await.unwrap();
    assert!(
        results
            .iter()
            .all(|result| *result == Ok(JobStatus::Completed)),
        "{results:?}"
    );
    assert_eq!(
        tokio::time::timeout(WAIT, client.wait_for_job(more))
            .await
            .unwrap(),
        Ok(JobStatus::Completed)
    );
    server.stop().await;
}

/// A server whose SSE route is broken while everything else works.
async fn server_refusing_sse() -> TestServer {
    let app = server::app(
        codec(),
        MemorySessionStore::new(),
        MemoryJobStore::new(),
        MemoryEventBus::new(),
        settings(),
    );
    let router = app.router().layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            if request.uri().path() == "/status" {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            next.run(request).await
        },
    ));
    common::serve_router(app, router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_polls_while_sse_is_refused() {
    let server = server_refusing_sse().await;
    let with_fallback = JobsClient::new(Options {
        fallback: true,
        ..options(&server, Mode::Sse)
    })
    .unwrap();
    let id = with_fallback.create_job().await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, with_fallback.wait_for_job(id))
            .await
            .unwrap(),
        Ok(JobStatus::Completed)
    );
    let auto = JobsClient::new(options(&server, Mode::Auto)).unwrap();
    let id = auto.create_job().await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, auto.wait_for_job(id))
            .await
            .unwrap(),
        Ok(JobStatus::Completed)
    );

    // Without fallback, an SSE-only client does not poll: the stream that cannot be opened
    // is the listener's error (as in the TypeScript client); moved to polling, the client
    // learns the completion.
    let strict = JobsClient::new(options(&server, Mode::Sse)).unwrap();
    let id = strict.create_job().await.unwrap();
    let mut listener = strict.listen(id);
    let status = tokio::time::timeout(WAIT, listener.next()).await.unwrap();
    assert!(
        matches!(status, Some(Err(ClientError::Sse { .. }))),
        "{status:?}"
    );
    strict.change_backend(Mode::Poll);
    let status = tokio::time::timeout(WAIT, strict.wait_for_job(id))
        .await
        .unwrap();
    assert_eq!(status, Ok(JobStatus::Completed));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_on_sled_is_survived_with_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        job_time: Some(Duration::from_millis(1500)),
        ..settings()
    };
    let open = || {
        let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
        server::app(
            codec(),
            store.clone(),
            store.clone(),
            store,
            settings.clone(),
        )
    };
    let first = common::serve_on(open(), 0).await;
    let port: u16 = first.url.rsplit(':').next().unwrap().parse().unwrap();
    let client = Arc::new(
        JobsClient::new(Options {
            fallback: true,
            ..options(&first, Mode::Sse)
        })
        .unwrap(),
    );
    let id = client.create_job().await.unwrap();
    let wait = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { tokio::time::timeout(WAIT, client.wait_for_job(id)).await })
    };
    assert_eq!(
        streams_settle_at(&first, 1).await,
        1,
        "the client's stream is open"
    );
    first.stop().await; // the stream drops; the job is not done yet
    // The server stays down for a moment: the gap the client rides out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = common::serve_on(open(), port).await;
    assert_eq!(wait.await.unwrap().unwrap(), Ok(JobStatus::Completed));
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_owner_unknown_job_and_stop_are_typed_errors() {
    let (server, _backing) = start(Kind::Memory).await;
    let alice = JobsClient::new(Options {
        owner: Some("alice".into()),
        ..options(&server, Mode::Sse)
    })
    .unwrap();
    let mallory = JobsClient::new(Options {
        owner: Some("mallory".into()),
        ..options(&server, Mode::Poll)
    })
    .unwrap();
    let id = alice.create_job().await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, mallory.wait_for_job(id))
            .await
            .unwrap(),
        Err(ClientError::JobNotFound(id))
    );
    let unknown = JobId(987_654);
    assert_eq!(
        tokio::time::timeout(WAIT, alice.wait_for_job(unknown))
            .await
            .unwrap(),
        Err(ClientError::JobNotFound(unknown))
    );
    assert_eq!(
        alice.stop(unknown),
        Err(ClientError::ListenerNotFound(unknown))
    );

    let settings = Settings {
        job_time: None,
        ..settings()
    };
    let (slow, _backing) = common::start_with(Kind::Memory, settings).await;
    let client = JobsClient::new(options(&slow, Mode::Sse)).unwrap();
    let id = client.create_job().await.unwrap();
    let mut listener = client.listen(id);
    assert_eq!(
        streams_settle_at(&slow, 1).await,
        1,
        "the listener's stream is open"
    );
    assert_eq!(client.stop(id), Ok(()));
    assert_eq!(listener.next().await, Some(Err(ClientError::Closed)));
    let mut orphan = client.listen(id);
    drop(client);
    assert_eq!(
        orphan.next().await,
        Some(Err(ClientError::Closed)),
        "dropping the client ends its listeners"
    );
    assert!(JobsClient::new(Options::new("ftp://nope", Mode::Sse)).is_err());
    server.stop().await;
    slow.stop().await;
}

fn player_token(user: i64, limit: u32) -> String {
    let data = HeartbeatData::from_json(json!({
        "user_id": user, "asset_id": 5, "heartbeat_cycle": 0.2, "cycle_upper_tolerance": 2,
        "reject_strategy": "LEAST_RECENT", "timestamp": heartbeat_core::Timestamp::now().to_string(),
        "session_limit": limit, "checking_threshold": 1, "sessions_edge": 10,
    }))
    .unwrap();
    codec().seal(&data).unwrap()
}

fn player(server_url: &str, token: String, progress: Option<Arc<AtomicU64>>) -> PlayerOptions {
    PlayerOptions {
        url: server_url.to_owned(),
        token,
        cycle: Duration::from_millis(200),
        upper_tolerance: Duration::from_secs(2),
        progress: progress.map(|position| {
            Arc::new(move || Some(position.fetch_add(1, Ordering::Relaxed) as f64)) as _
        }),
        follow_notices: false,
    }
}

async fn next_event(events: &mut heartbeat_http::client::player::PlayerEvents) -> PlayerEvent {
    tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_beats_reports_progress_and_stops() {
    let (server, _backing) = start(Kind::Memory).await;
    let position = Arc::new(AtomicU64::new(10));
    let (player_a, mut events) =
        Player::start(player(&server.url, player_token(61, 2), Some(position)));
    for expected in 1..=3 {
        match next_event(&mut events).await {
            PlayerEvent::Accepted { beat, progress } => {
                assert_eq!(beat, expected);
                assert!(progress.is_some());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(player_a.token().starts_with("v2."));
    let (status, progress) = server
        .admin(reqwest::Method::GET, "/admin/users/61/progress/5")
        .await;
    assert_eq!(status, 200);
    assert!(progress["progress"].as_f64().unwrap() >= 10.0);
    let (_, sessions) = server
        .admin(reqwest::Method::GET, "/admin/users/61/sessions")
        .await;
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        1,
        "one session across beats: none too early"
    );
    assert_eq!(player_a.stop().await, StopReason::Closed);
    let (_, sessions) = server
        .admin(reqwest::Method::GET, "/admin/users/61/sessions")
        .await;
    assert_eq!(sessions["sessions"], json!([]), "stop freed the slot");
    server.stop().await;
}

/// A player dropped without `stop` lets go of its session (its task tells the server), so
/// the next device of a one-stream plan plays at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_player_lets_go_of_its_session() {
    let (server, _backing) = start(Kind::Memory).await;
    let (dropped, mut events) = Player::start(player(&server.url, player_token(63, 1), None));
    assert!(matches!(
        next_event(&mut events).await,
        PlayerEvent::Accepted { .. }
    ));
    drop(dropped);
    // A heartbeat in flight when it was dropped is answered first.
    loop {
        match next_event(&mut events).await {
            PlayerEvent::Accepted { .. } => {}
            PlayerEvent::Stopped(reason) => {
                assert_eq!(reason, StopReason::Closed, "the task stops the session");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let (_, sessions) = server
        .admin(reqwest::Method::GET, "/admin/users/63/sessions")
        .await;
    assert_eq!(sessions["sessions"], json!([]), "the slot is free");
    server.stop().await;
}

/// On a server whose limits are report-only (SPEC §3.8), the player the limits would
/// refuse plays on and reports [`PlayerEvent::WouldRefuse`] after each such heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_over_report_only_limits_plays_on_and_hears_it() {
    let report_only = heartbeat_http::Settings {
        playback: heartbeat_core::sessions::rules::PlaybackPolicy {
            enforce_limits: false,
            ..Default::default()
        },
        ..settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, report_only).await;
    let (old, mut old_events) = Player::start(player(&server.url, player_token(64, 1), None));
    assert!(matches!(
        next_event(&mut old_events).await,
        PlayerEvent::Accepted { beat: 1, .. }
    ));
    let (new, mut new_events) = Player::start(player(&server.url, player_token(64, 1), None));
    assert!(matches!(
        next_event(&mut new_events).await,
        PlayerEvent::Accepted { .. }
    ));
    // LEAST_RECENT: the older player would be refused; it is accepted and told so.
    let mut reported = 0;
    while reported < 2 {
        match next_event(&mut old_events).await {
            PlayerEvent::Accepted { .. } => {}
            PlayerEvent::WouldRefuse { reason, limit, .. } => {
                assert_eq!((reason, limit), (RefusalReason::OverLimit, Some(1)));
                reported += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(old.stop().await, StopReason::Closed);
    new.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_player_stops_with_412_and_a_bad_token_with_406() {
    let (server, _backing) = start(Kind::Memory).await;
    let (old, mut old_events) = Player::start(player(&server.url, player_token(62, 1), None));
    assert!(matches!(
        next_event(&mut old_events).await,
        PlayerEvent::Accepted { .. }
    ));
    let (new, mut new_events) = Player::start(player(&server.url, player_token(62, 1), None));
    assert!(matches!(
        next_event(&mut new_events).await,
        PlayerEvent::Accepted { .. }
    ));
    match tokio::time::timeout(WAIT, old.finished()).await.unwrap() {
        StopReason::Refused {
            reason: RefusalReason::OverLimit,
            limit: Some(1),
            sessions,
        } => assert_eq!(sessions.len(), 1, "the newer device is listed"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(
            next_event(&mut new_events).await,
            PlayerEvent::Accepted { .. }
        ),
        "the newest keeps playing"
    );
    new.stop().await;

    let (bad, _) = Player::start(player(&server.url, "not a token".into(), None));
    assert_eq!(
        tokio::time::timeout(WAIT, bad.finished()).await.unwrap(),
        StopReason::InvalidToken
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_within_the_tolerance_then_given_up() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = PlayerOptions {
        upper_tolerance: Duration::from_millis(800),
        ..player(
            &format!("http://127.0.0.1:{closed}"),
            player_token(63, 1),
            None,
        )
    };
    let (unreachable, mut events) = Player::start(options);
    let mut retries = 0;
    loop {
        match next_event(&mut events).await {
            PlayerEvent::Retrying { attempt, .. } => {
                retries += 1;
                assert_eq!(attempt, retries);
            }
            PlayerEvent::Stopped(StopReason::Unreachable { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(retries >= 2, "retried before giving up: {retries}");
    assert!(matches!(
        unreachable.finished().await,
        StopReason::Unreachable { .. }
    ));
}

/// A TCP proxy on loopback that holds the first bytes of its first connection for `delay`
/// before passing them on: a first request that takes longer to arrive than the next
/// (a TLS handshake, mobile jitter). Everything else passes at once.
async fn delaying_proxy(target: String, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let target = target.clone();
            let hold = std::mem::take(&mut first);
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                if hold {
                    let mut head = vec![0u8; 64 * 1024];
                    let Ok(read) = client.read(&mut head).await else {
                        return;
                    };
                    tokio::time::sleep(delay).await;
                    if server.write_all(&head[..read]).await.is_err() {
                        return;
                    }
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    format!("http://{address}")
}

/// The server stores the time it received a heartbeat; the player times the next one from
/// when the answer arrived, so a first request that was slow to arrive does not make the
/// second one early (which would start a new session, and under `MOST_RECENT` with a limit
/// of one, refuse the player its own stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_request_does_not_make_the_next_one_early() {
    let (server, _backing) = start(Kind::Memory).await;
    let proxied = delaying_proxy(
        server.url.trim_start_matches("http://").to_owned(),
        Duration::from_millis(700),
    )
    .await;
    let data = HeartbeatData::from_json(json!({
        "user_id": 64, "asset_id": 5, "heartbeat_cycle": 1, "cycle_lower_tolerance": 0,
        "cycle_upper_tolerance": 1, "reject_strategy": "MOST_RECENT",
        "timestamp": heartbeat_core::Timestamp::now().to_string(),
        "session_limit": 1, "checking_threshold": 1, "sessions_edge": 10,
    }))
    .unwrap();
    let options = PlayerOptions {
        url: proxied,
        token: codec().seal(&data).unwrap(),
        cycle: Duration::from_secs(1),
        upper_tolerance: Duration::from_secs(1),
        progress: None,
        follow_notices: false,
    };
    let (player, mut events) = Player::start(options);
    for beat in 1..=3 {
        match next_event(&mut events).await {
            PlayerEvent::Accepted { beat: got, .. } => assert_eq!(got, beat),
            other => panic!("heartbeat {beat}: {other:?}"),
        }
    }
    let (_, sessions) = server
        .admin(reqwest::Method::GET, "/admin/users/64/sessions")
        .await;
    let sessions = sessions["sessions"].as_array().unwrap().clone();
    assert_eq!(
        sessions.len(),
        1,
        "one session, never restarted: {sessions:?}"
    );
    assert_eq!(sessions[0]["hit_counter"], 3);
    assert_eq!(player.stop().await, StopReason::Closed);
    server.stop().await;
}

/// Only 412 and 406 stop the player: any other answer (a proxy's 502, a 400 from a server
/// being replaced) is retried within the tolerance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_answers_are_retried_not_obeyed() {
    use axum::http::StatusCode;
    use std::sync::atomic::AtomicUsize;
    let (server, _backing) = start(Kind::Memory).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let upstream = server.url.clone();
    // A front that answers 400, then 502, then passes requests on.
    let front = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let counted = counted.clone();
        let upstream = upstream.clone();
        async move {
            match counted.fetch_add(1, Ordering::SeqCst) {
                0 => (StatusCode::BAD_REQUEST, "bad request").into_response(),
                1 => (StatusCode::BAD_GATEWAY, "bad gateway").into_response(),
                _ => {
                    let (parts, body) = request.into_parts();
                    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                    let answer = reqwest::Client::new()
                        .post(format!("{upstream}{}", parts.uri.path()))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                    (status, answer.text().await.unwrap()).into_response()
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, front).await });
    let (player, mut events) = Player::start(player(&front_url, player_token(65, 1), None));
    let mut retries = 0;
    loop {
        match next_event(&mut events).await {
            PlayerEvent::Retrying { .. } => retries += 1,
            PlayerEvent::Accepted { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(retries, 2, "the 400 and the 502 were retried");
    assert_eq!(player.stop().await, StopReason::Closed);
    server.stop().await;
}

/// Serves `router` on a fresh loopback port (a peer that misbehaves on purpose).
async fn stub(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// An SSE stream that sends only keep-alive comments, every 50 ms, forever.
fn keep_alives_only() -> axum::response::Response {
    use axum::response::sse::{Event, Sse};
    let stream = futures_util::stream::repeat_with(|| {
        Ok::<_, std::convert::Infallible>(Event::default().comment("keep-alive"))
    })
    .then(|event| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        event
    });
    Sse::new(stream).into_response()
}

fn sse_options(url: &str) -> Options {
    Options {
        keepalive: Duration::from_millis(100),
        request_timeout: Duration::from_millis(500),
        ..Options::new(url, Mode::Sse)
    }
}

/// The status check made when a listener attaches fails (a 503): it is made again until
/// it succeeds, since in SSE mode nothing else would tell a job that finished before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_status_check_is_made_again() {
    use std::sync::atomic::AtomicUsize;
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = checks.clone();
    let url = stub(
        axum::Router::new()
            .route(
                "/status",
                axum::routing::get(|| async { keep_alives_only() }),
            )
            .route(
                "/status/{id}",
                axum::routing::get(move || {
                    let counted = counted.clone();
                    async move {
                        match counted.fetch_add(1, Ordering::SeqCst) {
                            0 => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy"),
                            _ => (axum::http::StatusCode::OK, "completed"),
                        }
                    }
                }),
            ),
    )
    .await;
    let client = JobsClient::new(sse_options(&url)).unwrap();
    let status = tokio::time::timeout(WAIT, client.wait_for_job(JobId(7)))
        .await
        .unwrap();
    assert_eq!(status, Ok(JobStatus::Completed));
    assert!(checks.load(Ordering::SeqCst) >= 2);
}

/// A status check that never gets an answer is cut by the request timeout and made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_check_that_never_answers_times_out_and_is_made_again() {
    use std::sync::atomic::AtomicUsize;
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = checks.clone();
    let url = stub(
        axum::Router::new()
            .route(
                "/status",
                axum::routing::get(|| async { keep_alives_only() }),
            )
            .route(
                "/status/{id}",
                axum::routing::get(move || {
                    let counted = counted.clone();
                    async move {
                        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                            std::future::pending::<()>().await;
                        }
                        "completed"
                    }
                }),
            ),
    )
    .await;
    let client = JobsClient::new(sse_options(&url)).unwrap();
    let status = tokio::time::timeout(WAIT, client.wait_for_job(JobId(8)))
        .await
        .expect("no hang: every request has a timeout");
    assert_eq!(status, Ok(JobStatus::Completed));
}

/// A connection that stays open but sends nothing (half-open, no keep-alives) is taken as
/// broken after two keep-alive intervals and opened again; the completion comes on the new
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_reconnected() {
    use axum::response::sse::{Event, Sse};
    use std::sync::atomic::AtomicUsize;
    let streams = Arc::new(AtomicUsize::new(0));
    let opened = streams.clone();
    let url = stub(
        axum::Router::new()
            .route(
                "/status",
                axum::routing::get(move || {
                    let opened = opened.clone();
                    async move {
                        if opened.fetch_add(1, Ordering::SeqCst) == 0 {
                            // Headers, then silence: a connection that died half-open.
                            let silent = futures_util::stream::pending::<
                                Result<Event, std::convert::Infallible>,
                            >();
                            return Sse::new(silent).into_response();
                        }
                        let completed = Event::default()
                            .id("5")
                            .event("status_9")
                            .data(r#"{"id":9,"message":"completed"}"#);
                        let events =
                            futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                                completed,
                            )])
                            .chain(futures_util::stream::pending());
                        Sse::new(events).into_response()
                    }
                }),
            )
            .route("/status/{id}", axum::routing::get(|| async { "pending" })),
    )
    .await;
    let client = JobsClient::new(sse_options(&url)).unwrap();
    let status = tokio::time::timeout(WAIT, client.wait_for_job(JobId(9)))
        .await
        .unwrap();
    assert_eq!(status, Ok(JobStatus::Completed));
    assert!(
        streams.load(Ordering::SeqCst) >= 2,
        "the stream was opened again"
    );
}

/// With SSE only and no fallback, an SSE failure reaches the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fallback_sse_errors_reach_the_caller() {
    let url = stub(
        axum::Router::new()
            .route(
                "/status",
                axum::routing::get(|| async { (axum::http::StatusCode::BAD_GATEWAY, "down") }),
            )
            .route("/status/{id}", axum::routing::get(|| async { "pending" })),
    )
    .await;
    let client = JobsClient::new(sse_options(&url)).unwrap();
    let status = tokio::time::timeout(WAIT, client.wait_for_job(JobId(10)))
        .await
        .unwrap();
    assert!(matches!(status, Err(ClientError::Sse { .. })), "{status:?}");
}

/// A token of `user` on `device` with a `cycle` in seconds, limit 1.
fn device_token(user: i64, device: &str, cycle: f64, strategy: &str) -> String {
    let data = HeartbeatData::from_json(json!({
        "user_id": user, "asset_id": 5, "heartbeat_cycle": cycle, "cycle_upper_tolerance": 2,
        "reject_strategy": strategy, "timestamp": heartbeat_core::Timestamp::now().to_string(),
        "session_limit": 1, "checking_threshold": 1, "sessions_edge": 10, "device": device,
    }))
    .unwrap();
    codec().seal(&data).unwrap()
}

/// SPEC §3.7 from the player's side: a refused player is shown the device that plays,
/// takes it over, and the taken-over player (following its notices, with a 30 s cycle)
/// stops at once with the notice instead of at its next heartbeat; under LEAST_RECENT a
/// displaced player is told the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_take_over_and_follow_their_notices() {
    let (server, _backing) = start(Kind::Memory).await;
    let slow = |token: String| PlayerOptions {
        cycle: Duration::from_secs(30),
        follow_notices: true,
        ..player(&server.url, token, None)
    };
    let (tablet, mut tablet_events) =
        Player::start(slow(device_token(66, "Tablet", 30.0, "MOST_RECENT")));
    assert!(matches!(
        next_event(&mut tablet_events).await,
        PlayerEvent::Accepted { .. }
    ));
    let fast = player(
        &server.url,
        device_token(66, "Phone", 0.2, "MOST_RECENT"),
        None,
    );
    let (phone, mut phone_events) = Player::start(fast.clone());
    let stopped = loop {
        if let PlayerEvent::Stopped(reason) = next_event(&mut phone_events).await {
            break reason;
        }
    };
    let StopReason::Refused {
        reason, sessions, ..
    } = stopped
    else {
        panic!("the phone is refused: {stopped:?}");
    };
    // The takeover goes with the refused player's token: its session plays on.
    let fast = PlayerOptions {
        token: phone.token(),
        ..fast
    };
    assert_eq!(reason, RefusalReason::OverLimit);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].device.as_deref(), Some("Tablet"));
    let tablet_session = sessions[0].session_id.clone();

    let gone = Player::take_over(fast.clone(), "no-such-session").await;
    assert_eq!(gone.err(), Some(StopReason::NotActive));
    let (phone, mut phone_events) = Player::take_over(fast, &tablet_session).await.unwrap();
    match tokio::time::timeout(WAIT, tablet.finished()).await.unwrap() {
        StopReason::Ended(ended) => {
            assert_eq!(ended.session_id, tablet_session);
            assert_eq!(
                ended.reason,
                heartbeat_core::sessions::notice::NoticeReason::TakenOver
            );
            assert_eq!(ended.by.unwrap().device.as_deref(), Some("Phone"));
        }
        other => panic!("the tablet is told by its notice, not its next beat: {other:?}"),
    }
    for _ in 0..2 {
        let event = next_event(&mut phone_events).await;
        assert!(matches!(event, PlayerEvent::Accepted { .. }), "{event:?}");
    }
    phone.stop().await;

    let (old, mut old_events) = Player::start(slow(device_token(67, "Old", 30.0, "LEAST_RECENT")));
    assert!(matches!(
        next_event(&mut old_events).await,
        PlayerEvent::Accepted { .. }
    ));
    let (new, _) = Player::start(slow(device_token(67, "New", 30.0, "LEAST_RECENT")));
    match tokio::time::timeout(WAIT, old.finished()).await.unwrap() {
        StopReason::Ended(ended) => {
            assert_eq!(
                ended.reason,
                heartbeat_core::sessions::notice::NoticeReason::Displaced
            )
        }
        other => panic!("{other:?}"),
    }
    new.stop().await;
    server.stop().await;
}
