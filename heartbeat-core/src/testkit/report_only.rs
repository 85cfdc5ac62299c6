//! Conformance checks for report-only limits (SPEC §3.8 "Watch before you enforce"): the
//! same players, enforced and report-only, get the same verdicts; report-only answers the
//! would-be refusals 200 and writes them to the refusal index marked not enforced.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use super::Fixture;
use super::sessions::{seal, service, start};
use crate::sessions::analytics::{Export, ExportItem, IndexKey, RefusalRecord, SETTLE_MILLIS};
use crate::sessions::rules::PlaybackPolicy;
use crate::{
    Clock, HeartbeatConfig, HeartbeatData, HeartbeatOutcome, Id, ManualClock, SessionStore,
};

/// One device of the scenario: its user (of four), label, family and asset.
struct Device {
    user: i64,
    name: &'static str,
    family: &'static str,
    asset: i64,
}

/// The four users' plans and devices, started one second apart in this order:
/// - user 1, `LEAST_RECENT`, one stream: the phone, newer, displaces the TV;
/// - user 2, `MOST_RECENT`, three streams but one TV and one stream per asset;
/// - user 3, two streams and two devices: nobody is refused;
/// - user 4, `MOST_RECENT`, one stream and at most two sessions kept (`sessions_edge`,
///   enforced either way): the third device never plays.
const DEVICES: [Device; 10] = [
    Device {
        user: 1,
        name: "tv",
        family: "tv",
        asset: 1,
    },
    Device {
        user: 1,
        name: "phone",
        family: "mobile",
        asset: 2,
    },
    Device {
        user: 2,
        name: "tv-a",
        family: "tv",
        asset: 1,
    },
    Device {
        user: 2,
        name: "tv-b",
        family: "tv",
        asset: 2,
    },
    Device {
        user: 2,
        name: "phone",
        family: "mobile",
        asset: 1,
    },
    Device {
        user: 3,
        name: "tv",
        family: "tv",
        asset: 1,
    },
    Device {
        user: 3,
        name: "phone",
        family: "mobile",
        asset: 2,
    },
    Device {
        user: 4,
        name: "one",
        family: "web",
        asset: 1,
    },
    Device {
        user: 4,
        name: "two",
        family: "web",
        asset: 2,
    },
    Device {
        user: 4,
        name: "three",
        family: "web",
        asset: 3,
    },
];

/// The backend token data of `device`, for user `device.user + offset`, with `enforce` as
/// given (absent when `None`).
fn device_data(device: &Device, offset: i64, enforce: Option<bool>) -> HeartbeatData {
    let (strategy, limit, edge, families, asset_limit) = match device.user {
        1 => ("LEAST_RECENT", 1, 10, json!({}), json!(null)),
        2 => ("MOST_RECENT", 3, 10, json!({"tv": 1}), json!(1)),
        3 => ("LEAST_RECENT", 2, 10, json!({}), json!(null)),
        _ => ("MOST_RECENT", 1, 2, json!({}), json!(null)),
    };
    let mut data = json!({
        "user_id": device.user + offset, "asset_id": device.asset, "heartbeat_cycle": 30,
        "cycle_lower_tolerance": 2, "cycle_upper_tolerance": 10, "reject_strategy": strategy,
        "timestamp": start().to_string(), "session_limit": limit, "checking_threshold": 1,
        "sessions_edge": edge, "device": device.name, "device_family": device.family,
        "family_limits": families, "asset_limit": asset_limit,
    });
    if let Some(enforce) = enforce {
        data["enforce"] = json!(enforce);
    }
    HeartbeatData::from_json(data).unwrap()
}

/// What one run of the scenario gave: per device (`"<user>/<name>"`), the first heartbeat
/// (0 = its first) that was refused or reported, and why; how many heartbeats were
/// answered 200 with `would_refuse`; and the refusal index's entries of the run's users.
struct Run {
    first_refusals: BTreeMap<String, (usize, &'static str)>,
    reported: usize,
    refused: usize,
    index: Vec<RefusalRecord>,
}

/// Plays the scenario on `store` with the server's `enforce_limits` and the tokens'
/// `enforce`, for users `1 + offset ..= 4 + offset`: every device starts (one second
/// apart) and then beats every cycle three times; a refused device stops, as a player
/// does.
async fn play_scenario<S: SessionStore + Clone>(
    store: S,
    offset: i64,
    server_enforces: bool,
    token_enforce: Option<bool>,
) -> Run {
    let clock = ManualClock::new(start().add_millis(offset * 1000));
    let config = HeartbeatConfig {
        playback: PlaybackPolicy {
            enforce_limits: server_enforces,
            ..PlaybackPolicy::default()
        },
        ..HeartbeatConfig::default()
    };
    let heartbeats = service(store, &clock).with_config(config);
    let mut tokens: Vec<Option<String>> = DEVICES
        .iter()
        .map(|device| {
            Some(seal(
                &heartbeats,
                &device_data(device, offset, token_enforce),
            ))
        })
        .collect();
    let mut run = Run {
        first_refusals: BTreeMap::new(),
        reported: 0,
        refused: 0,
        index: Vec::new(),
    };
    // Device i beats at i s, then 30 s, 60 s and 90 s after that, in time order.
    let mut beats: Vec<(u64, usize, usize)> = (0..DEVICES.len())
        .flat_map(|i| (0..4).map(move |beat| (i as u64 + beat as u64 * 30, i, beat)))
        .collect();
    beats.sort_unstable();
    let begun = clock.now();
    for (at, i, beat) in beats {
        let Some(token) = tokens[i].clone() else {
            continue;
        };
        clock.set(begun.add_millis(i64::try_from(at * 1000).unwrap()));
        let name = format!("{}/{}", DEVICES[i].user, DEVICES[i].name);
        match heartbeats.heartbeat(&token, None).await.unwrap() {
            HeartbeatOutcome::Accepted { token, accepted } => {
                if let Some(reason) = accepted.would_refuse {
                    run.reported += 1;
                    run.first_refusals
                        .entry(name)
                        .or_insert((beat, reason.code()));
                }
                tokens[i] = Some(token);
            }
            HeartbeatOutcome::Rejected(refused) => {
                run.refused += 1;
                run.first_refusals
                    .entry(name)
                    .or_insert((beat, refused.reason.code()));
                tokens[i] = None;
            }
            other => panic!("{other:?}"),
        }
    }
    clock.advance(Duration::from_millis(SETTLE_MILLIS as u64 + 1));
    let export = heartbeats.export(Export::Refusals, IndexKey::start(), None, 100_000);
    let users: Vec<Id> = (1..=4).map(|user| Id::Int(user + offset)).collect();
    run.index = export
        .filter_map(|item| async move {
            match item.unwrap() {
                ExportItem::Refusal(refusal) => Some(refusal),
                _ => None,
            }
        })
        .filter(|refusal| std::future::ready(users.contains(&refusal.user_id)))
        .collect()
        .await;
    run
}

/// Report-only limits (SPEC §3.8), set server-wide or by the token's `enforce`, refuse
/// nobody but the `sessions_edge`, answer each would-be refusal 200 with its reason, and
/// write it to the refusal index marked not enforced; the admin view shows it on the
/// session. The same players under enforced limits are refused exactly at the heartbeats
/// that report-only reported first, for the same reasons; a token's `enforce: true` wins
/// over a report-only server.
pub async fn report_only_limits_report_what_enforcing_refuses<F: Fixture>(fixture: &F) {
    let enforced = play_scenario(fixture.sessions().await, 0, true, None).await;
    let server_wide = play_scenario(fixture.sessions().await, 100, false, None).await;
    let by_token = play_scenario(fixture.sessions().await, 200, true, Some(false)).await;
    let token_wins = play_scenario(fixture.sessions().await, 300, false, Some(true)).await;

    let expected: BTreeMap<String, (usize, &str)> = [
        ("1/tv", (1, "over_limit")),
        ("2/tv-b", (1, "family_limit")),
        ("2/phone", (1, "asset_limit")),
        ("4/two", (1, "over_limit")),
        ("4/three", (0, "sessions_edge")),
    ]
    .into_iter()
    .map(|(device, first)| (device.to_owned(), first))
    .collect();
    assert_eq!(enforced.first_refusals, expected);
    assert_eq!(token_wins.first_refusals, expected);
    for report_only in [&server_wide, &by_token] {
        assert_eq!(report_only.first_refusals, expected);
        assert_eq!(report_only.refused, 1, "only the sessions_edge refuses");
        // The four reported devices play on: each of their later beats is reported too.
        assert_eq!(report_only.reported, 4 * 3);
    }
    assert_eq!(enforced.refused, 5);
    assert_eq!(enforced.reported, 0);

    // The refusal index: every refusal and would-be refusal, marked.
    let marked = |run: &Run| {
        let mut marked: Vec<(String, bool)> = run
            .index
            .iter()
            .map(|refusal| (refusal.reason.clone(), refusal.enforced))
            .collect();
        marked.sort();
        marked.dedup();
        marked
    };
    let all_enforced = [
        ("asset_limit", true),
        ("family_limit", true),
        ("over_limit", true),
        ("sessions_edge", true),
    ]
    .map(|(reason, enforced)| (reason.to_owned(), enforced));
    assert_eq!(marked(&enforced), all_enforced);
    assert_eq!(marked(&token_wins), all_enforced);
    let reported = [
        ("asset_limit", false),
        ("family_limit", false),
        ("over_limit", false),
        ("sessions_edge", true),
    ]
    .map(|(reason, enforced)| (reason.to_owned(), enforced));
    for report_only in [&server_wide, &by_token] {
        assert_eq!(marked(report_only), reported);
        // Each would-be refusal is there once per device and cycle: all 12, and the edge.
        assert_eq!(report_only.index.len(), 13, "{:?}", report_only.index);
    }
    assert_eq!(enforced.index.len(), 5);
}

/// Under report-only limits the session record keeps what its last heartbeat would have
/// been told, for the admin view (SPEC §3.8), and clears it once the limits would let it
/// play.
pub async fn the_admin_view_shows_what_devices_would_be_told<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let user = Id::Int(1);
    let tv = seal(&heartbeats, &device_data(&DEVICES[0], 0, Some(false)));
    let phone = seal(&heartbeats, &device_data(&DEVICES[1], 0, Some(false)));
    let HeartbeatOutcome::Accepted { token: tv, .. } =
        heartbeats.heartbeat(&tv, None).await.unwrap()
    else {
        panic!("the TV plays")
    };
    clock.advance(Duration::from_secs(1));
    let HeartbeatOutcome::Accepted { token: phone, .. } =
        heartbeats.heartbeat(&phone, None).await.unwrap()
    else {
        panic!("the phone plays")
    };
    clock.advance(Duration::from_secs(29));
    let HeartbeatOutcome::Accepted { accepted, .. } =
        heartbeats.heartbeat(&tv, None).await.unwrap()
    else {
        panic!("report-only: the TV is answered 200")
    };
    assert_eq!(
        accepted.would_refuse.map(|reason| reason.code()),
        Some("over_limit")
    );
    let told = |sessions: Vec<crate::sessions::ActiveSession>| {
        sessions
            .into_iter()
            .map(|session| {
                let told = session
                    .record
                    .would_refuse
                    .map(|told| (told.reason, told.limit));
                (session.record.device.unwrap_or_default(), told)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        told(heartbeats.active_sessions(&user).await.unwrap()),
        [
            ("tv".to_owned(), Some(("over_limit".to_owned(), Some(1)))),
            ("phone".to_owned(), None)
        ]
    );
    // The phone stops: the TV's next heartbeat would be allowed, and its mark goes.
    assert!(heartbeats.stop(&phone, None).await.unwrap());
    let tv = match heartbeats.heartbeat(&tv, None).await.unwrap() {
        HeartbeatOutcome::Accepted { token, .. } => token,
        other => panic!("{other:?}"),
    };
    clock.advance(Duration::from_secs(30));
    let HeartbeatOutcome::Accepted { accepted, .. } =
        heartbeats.heartbeat(&tv, None).await.unwrap()
    else {
        panic!("the TV plays")
    };
    assert_eq!(accepted.would_refuse, None);
    assert_eq!(
        told(heartbeats.active_sessions(&user).await.unwrap()),
        [("tv".to_owned(), None)]
    );
}
