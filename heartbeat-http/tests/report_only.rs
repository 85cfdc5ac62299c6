//! Report-only limits over real HTTP (SPEC §3.8 "Watch before you enforce"), on every
//! store: would-be refusals are answered 200 with `would_refuse`, counted in the metrics,
//! exported by `GET /admin/refusals` marked `"enforced": false` and shown by the admin
//! API; the query docs/analytics.md gives counts them per day; the same players on an
//! enforcing server are refused at exactly those heartbeats.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{ADMIN_KEY, Kind, TestServer, settings, start_on_clock};
use heartbeat_core::sessions::rules::PlaybackPolicy;
use heartbeat_core::{Clock, ManualClock, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};

/// The users of the scenario: (user, devices, `session_limit`). Under `LEAST_RECENT` the
/// oldest devices beyond the limit would be refused.
const USERS: [(i64, usize, u32); 3] = [(1, 2, 1), (2, 3, 2), (3, 1, 1)];

fn backend_token(user: i64, device: usize, limit: u32, issued: Timestamp) -> String {
    common::seal(json!({
        "user_id": user, "asset_id": device, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "reject_strategy": "LEAST_RECENT", "timestamp": issued.to_string(),
        "session_limit": limit, "checking_threshold": 1, "sessions_edge": 10,
        "device": format!("device {device}"),
    }))
}

/// Every device of [`USERS`] (user ids `+ offset`) starts, one second apart, then beats
/// twice a cycle apart; a refused device stops. Returns per device (`"<user>/<device>"`)
/// its first heartbeat (0 = the first) refused (412) or answered with `would_refuse`, and
/// the reason, and every `would_refuse` seen.
async fn play(
    server: &TestServer,
    clock: &ManualClock,
    offset: i64,
) -> (BTreeMap<String, (usize, String)>, Vec<Value>) {
    let mut devices: Vec<(String, Option<String>)> = Vec::new();
    for (user, count, limit) in USERS {
        for device in 0..count {
            let token = backend_token(user + offset, device, limit, clock.now());
            devices.push((format!("{user}/{device}"), Some(token)));
        }
    }
    let mut first = BTreeMap::new();
    let mut reported = Vec::new();
    let count = u64::try_from(devices.len()).unwrap();
    for beat in 0..3 {
        for (name, token) in &mut devices {
            clock.advance(Duration::from_secs(1));
            let Some(sent) = token.clone() else { continue };
            let (status, answer) = server.heartbeat(&sent).await;
            match status {
                200 => {
                    if let Some(would) = answer.get("would_refuse") {
                        let reason = would["reason"].as_str().unwrap().to_owned();
                        first.entry(name.clone()).or_insert((beat, reason));
                        reported.push(would.clone());
                    }
                    *token = Some(answer["heartbeat_token"].as_str().unwrap().to_owned());
                }
                412 => {
                    let reason = answer["reason"].as_str().unwrap().to_owned();
                    first.entry(name.clone()).or_insert((beat, reason));
                    *token = None;
                }
                other => panic!("{other}: {answer}"),
            }
        }
        clock.advance(Duration::from_secs(30 - count));
    }
    (first, reported)
}

const WOULD_REFUSE: &str = "heartbeat_would_refuse_total{reason=\"over_limit\"}";
const REFUSED: &str = "heartbeat_refusals_total{reason=\"over_limit\"}";

/// The value of the metric line `name` in `/metrics`.
async fn metric(server: &TestServer, name: &str) -> f64 {
    let (status, text) = server.get_text("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

/// The query of docs/analytics.md "Measure sharing before you enforce" (the `jq` block).
fn documented_query() -> String {
    let doc = include_str!("../../docs/analytics.md");
    let section = doc
        .split("## Measure sharing before you enforce")
        .nth(1)
        .unwrap();
    let block = section
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .find(|block| block.starts_with("jq "))
        .expect("the section gives a jq query");
    block.to_owned()
}

async fn report_only_answers_counts_and_exports(kind: Kind) {
    let clock = ManualClock::new(Timestamp::now());
    let report_only = heartbeat_http::Settings {
        playback: PlaybackPolicy {
            enforce_limits: false,
            ..PlaybackPolicy::default()
        },
        ..settings()
    };
    let (server, _backing) = start_on_clock(kind, report_only, clock.clone()).await;
    let since = clock.now().add_millis(-1);
    let (first, reported) = play(&server, &clock, 0).await;

    // Would be refused: user 1's older device and user 2's oldest, from their second
    // heartbeat on (once counted); nobody is refused.
    let expected: BTreeMap<String, (usize, String)> = [("1/0", 1), ("2/0", 1)]
        .into_iter()
        .map(|(device, beat)| (device.to_owned(), (beat, "over_limit".to_owned())))
        .collect();
    assert_eq!(first, expected);
    assert_eq!(reported.len(), 4);
    assert!(reported.contains(&json!({"reason": "over_limit", "limit": 1})));
    assert!(reported.contains(&json!({"reason": "over_limit", "limit": 2})));
    assert_eq!(metric(&server, WOULD_REFUSE).await, 4.0);
    assert_eq!(metric(&server, REFUSED).await, 0.0);
    assert_eq!(
        metric(
            &server,
            "heartbeat_heartbeat_decisions_total{outcome=\"rejected\"}"
        )
        .await,
        0.0
    );

    // The admin API shows what each device would have been told.
    let (status, sessions) = server.admin(Method::GET, "/admin/users/1/sessions").await;
    assert_eq!(status, 200, "{sessions}");
    let told: Vec<(Value, Value)> = sessions["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("{sessions}"))
        .iter()
        .map(|session| (session["device"].clone(), session["would_refuse"].clone()))
        .collect();
    assert_eq!(
        told,
        [
            (
                json!("device 0"),
                json!({"reason": "over_limit", "limit": 1})
            ),
            (json!("device 1"), Value::Null)
        ]
    );

    // The export, and the documented query over it: two users a day.
    clock.advance(Duration::from_secs(1));
    let response = server
        .http
        .get(format!("{}/admin/refusals?since={since}", server.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let export = response.text().await.unwrap();
    let lines: Vec<Value> = export
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let (end, refusals) = lines.split_last().unwrap();
    assert_eq!(end["complete"], json!(true), "{export}");
    assert_eq!(refusals.len(), 4, "once per device and cycle: {export}");
    for refusal in refusals {
        assert_eq!(refusal["enforced"], json!(false), "{refusal}");
        assert_eq!(refusal["reason"], json!("over_limit"));
        assert!(refusal["session_id"].is_string() && refusal["at"].is_string());
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("refusals.ndjson"), &export).unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(documented_query())
        .current_dir(dir.path())
        .output()
        .expect("jq is installed (scripts/test installs it)");
    assert!(output.status.success(), "{output:?}");
    let day = &clock.now().to_string()[..10];
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{day} 2\n")
    );

    // The same players on an enforcing server: refused at exactly those heartbeats.
    let (enforcing, _backing) = start_on_clock(kind, settings(), clock.clone()).await;
    let (refused, reported) = play(&enforcing, &clock, 100).await;
    assert_eq!(refused, expected);
    assert!(reported.is_empty());
    assert_eq!(metric(&enforcing, REFUSED).await, 2.0);
    assert_eq!(metric(&enforcing, WOULD_REFUSE).await, 0.0);
}

for_each_store!(report_only_answers_counts_and_exports);
