//! Two server instances sharing one real Redis, as a deployment behind a load balancer
//! runs them: a single redis-server, and a Redis Cluster of three masters and three
//! replicas. And what a Redis outage looks like from outside.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Sse, codec, redis_instance, settings};
use futures_util::future::join_all;
use heartbeat_core::{Clock, ManualClock, SystemClock};
use heartbeat_http::Settings;
use heartbeat_store_redis::testkit::{RedisCluster, RedisServer};
use serde_json::{Value, json};

fn quick_token(user: i64, limit: u32) -> String {
    token_at(user, limit, heartbeat_core::Timestamp::now())
}

fn token_at(user: i64, limit: u32, at: heartbeat_core::Timestamp) -> String {
    common::seal(json!({
        "user_id": user, "asset_id": 1, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "timestamp": at.to_string(),
        "session_limit": limit, "checking_threshold": 1, "sessions_edge": 100,
    }))
}

/// Each scenario on one redis-server and on a Redis Cluster.
macro_rules! on_server_and_cluster {
    ($($scenario:ident),+ $(,)?) => {
        mod server {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let redis = super::RedisServer::start();
                    super::$scenario(&redis.url()).await;
                }
            )+
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let redis = tokio::task::spawn_blocking(super::RedisCluster::start)
                        .await
                        .unwrap();
                    super::$scenario(&redis.url()).await;
                }
            )+
        }
    };
}

on_server_and_cluster!(
    devices_spread_over_two_instances_never_exceed_the_limit,
    a_job_created_on_one_instance_completes_a_stream_on_the_other,
    a_player_gone_from_one_instance_frees_its_slot_on_the_other,
);

/// SPEC §3.8: a player follows its notices on instance A and crashes (its stream's
/// connection closes, no `stop`); its session holds the slot while the grace runs, then
/// the next device of the user (`MOST_RECENT`: it would be refused beside it) plays on
/// instance B, and the history says `gone`.
async fn a_player_gone_from_one_instance_frees_its_slot_on_the_other(redis: &str) {
    let clock = ManualClock::new(heartbeat_core::Timestamp::now());
    let a = redis_instance(redis, settings(), clock.clone()).await;
    let b = redis_instance(redis, settings(), clock.clone()).await;
    let most_recent = |at| {
        let mut data = codec().open(&token_at(91, 1, at)).unwrap();
        data.reject_strategy = Some(heartbeat_core::RejectStrategy::MostRecent);
        codec().seal(&data).unwrap()
    };
    let (status, tv) = a.heartbeat(&most_recent(clock.now())).await;
    assert_eq!(status, 200);
    let tv = tv["heartbeat_token"].as_str().unwrap().to_owned();
    let stream = Sse::open(&a, &format!("/heartbeat/events?heartbeat_token={tv}"), None).await;
    drop(stream);
    // A records the closed stream on the session (the admin view shows `gone_at`).
    let recorded = tokio::time::timeout(common::EVENT_WAIT, async {
        loop {
            let (_, sessions) = b
                .admin(reqwest::Method::GET, "/admin/users/91/sessions")
                .await;
            if let Some(at) = sessions["sessions"][0]["gone_at"].as_str() {
                return at.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let gone_at = recorded.await.expect("the closed stream is recorded");
    assert_eq!(gone_at, clock.now().add_millis(5_000).to_string());

    // Within the grace the TV holds the slot; then it is gone.
    let active = async |server: &common::TestServer| {
        let (_, sessions) = server
            .admin(reqwest::Method::GET, "/admin/users/91/sessions")
            .await;
        sessions["sessions"].as_array().unwrap().len()
    };
    clock.advance(Duration::from_secs(5));
    assert_eq!(active(&b).await, 1);
    clock.advance(Duration::from_millis(1));
    assert_eq!(active(&b).await, 0);

    // The next device plays on B, past its counted heartbeats.
    clock.advance(Duration::from_secs(1));
    let mut token = most_recent(clock.now());
    for beat in 0..3 {
        let (status, answer) = b.heartbeat(&token).await;
        assert_eq!(status, 200, "beat {beat}: {answer}");
        token = answer["heartbeat_token"].as_str().unwrap().to_owned();
        clock.advance(Duration::from_secs(30));
    }
    let (_, history) = b
        .admin(reqwest::Method::GET, "/admin/users/91/history")
        .await;
    let ends: Vec<&Value> = history["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .iter()
        .map(|entry| &entry["ended_by"])
        .collect();
    assert!(ends.contains(&&json!("gone")), "{history}");
    a.stop().await;
    b.stop().await;
}

async fn devices_spread_over_two_instances_never_exceed_the_limit(redis: &str) {
    let clock = ManualClock::new(heartbeat_core::Timestamp::now());
    let instances = [
        redis_instance(redis, settings(), clock.clone()).await,
        redis_instance(redis, settings(), clock.clone()).await,
    ];
    const DEVICES: usize = 12;
    const LIMIT: usize = 3;
    // Every device starts (backend tokens are only refused by the edge)...
    let started = join_all((0..DEVICES).map(|device| {
        let server = &instances[device % 2];
        let token = token_at(77, LIMIT as u32, clock.now());
        async move { server.heartbeat(&token).await }
    }))
    .await;
    let mut tokens: Vec<String> = started
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 200);
            body["heartbeat_token"].as_str().unwrap().to_owned()
        })
        .collect();
    // ...then, a cycle later, every device beats at once, half through each instance.
    for round in 0..3 {
        clock.advance(Duration::from_secs(30)); // one cycle
        let answers = join_all(tokens.iter().enumerate().map(|(device, token)| {
            let server = &instances[(device + round) % 2];
            async move { server.heartbeat(token).await }
        }))
        .await;
        let accepted: Vec<String> = answers
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body["heartbeat_token"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            answers
                .iter()
                .all(|(status, _)| *status == 200 || *status == 412)
        );
        assert_eq!(
            accepted.len(),
            LIMIT,
            "round {round}: exactly the limit keeps playing"
        );
        tokens = accepted;
    }
    for server in instances {
        server.stop().await;
    }
}

async fn a_job_created_on_one_instance_completes_a_stream_on_the_other(redis: &str) {
    let first = redis_instance(redis, settings(), SystemClock).await;
    let second = redis_instance(redis, settings(), SystemClock).await;
    let mut stream = Sse::open(&second, "/status?uuid=grace", None).await;
    let response = first
        .http
        .post(format!("{}/create?uuid=grace", first.url))
        .send()
        .await
        .unwrap();
    let id: u64 = response.text().await.unwrap().parse().unwrap();
    let event = stream.next().await;
    assert_eq!(event.event, format!("status_{id}"));
    assert_eq!(
        serde_json::from_str::<Value>(&event.data).unwrap(),
        json!({ "id": id, "message": "completed" })
    );
    // Both simulators ran; the job completed, and was announced, once.
    assert!(
        stream
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );
    assert_eq!(
        second.get_text(&format!("/status/{id}?uuid=grace")).await,
        (200, "completed".to_owned())
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_answers_503_or_fails_open_and_recovers() {
    let mut redis = RedisServer::start();
    let strict = redis_instance(&redis.url(), settings(), SystemClock).await;
    let open = redis_instance(
        &redis.url(),
        Settings {
            fail_open: true,
            ..settings()
        },
        SystemClock,
    )
    .await;
    let token = quick_token(88, 1);
    assert_eq!(strict.heartbeat(&token).await.0, 200);

    redis.stop();
    let response = strict
        .post_json("/heartbeat", &json!({ "heartbeat_token": token }))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("unavailable"));
    assert_eq!(strict.get_text("/readyz").await.0, 503);
    assert_eq!(
        strict.get_text("/healthz").await,
        (200, "OK".to_owned()),
        "the process is up"
    );
    let (status, body) = open.heartbeat(&token).await;
    assert_eq!(
        status, 200,
        "FAIL_OPEN answers with a rotated token: {body}"
    );
    let rotated = codec()
        .open(body["heartbeat_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(rotated.user_id, heartbeat_core::Id::Int(88));
    let (_, metrics) = strict.get_text("/metrics").await;
    assert!(
        metrics.contains("heartbeat_store_errors_total"),
        "{metrics}"
    );

    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if strict.heartbeat(&quick_token(88, 1)).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the server recovers without a restart when Redis returns"
    );
    assert_eq!(strict.get_text("/readyz").await.0, 200);
    strict.stop().await;
    open.stop().await;
}

/// Moving a fleet to another issued format one instance at a time (docs/operations.md
/// "Moving a fleet to v3 tokens"): `v3` second, once every instance runs a build that
/// reads it (phase 1, where every instance still issues `v2`); or `b1`. A player whose
/// heartbeats go round the instances of each phase plays on as one session, each answer in
/// its instance's format, started by any kind of backend token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_moving_between_issued_formats_plays_on_in_each_phase() {
    use heartbeat_core::TokenFormat::{Backend, Compact, Sealed};
    let redis = RedisServer::start();
    let clock = ManualClock::new(heartbeat_core::Timestamp::now());
    let phases = [
        (
            "v3, phase 1: every instance reads v3, none issues it",
            [Sealed, Sealed],
        ),
        ("v3, phase 2: half the fleet issues it", [Sealed, Compact]),
        ("v3, phase 2 done", [Compact, Compact]),
        ("b1, half way", [Sealed, Backend]),
    ];
    let mut user = 500;
    for (phase, formats) in phases {
        let mut instances = Vec::new();
        for format in formats {
            instances
                .push(common::redis_instance_issuing(&redis.url(), clock.clone(), format).await);
        }
        for minted in [Sealed, Backend, Compact] {
            user += 1;
            let data = codec().open(&token_at(user, 1, clock.now())).unwrap();
            let mut token = codec().issuing(minted).seal(&data).unwrap();
            let mut session = None;
            for beat in 0..6 {
                let instance = (beat + user as usize) % 2;
                let (status, body) = instances[instance].heartbeat(&token).await;
                assert_eq!(status, 200, "{phase}, user {user}, beat {beat}: {body}");
                token = body["heartbeat_token"].as_str().unwrap().to_owned();
                let prefix = format!("{}.", formats[instance].name());
                assert!(token.starts_with(&prefix), "{phase}, beat {beat}: {token}");
                let id = codec().open(&token).unwrap().session_id;
                assert!(id.is_some(), "{body}");
                assert_eq!(
                    *session.get_or_insert(id.clone()),
                    id,
                    "{phase}: one session"
                );
                clock.advance(Duration::from_secs(30));
            }
        }
    }
}
