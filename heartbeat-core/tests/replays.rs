//! The limit holds against replays (SPEC §3.2), as an attacker plays it: honest devices
//! and devices that replay any token they ever saw, over simulated time, for both reject
//! strategies, thresholds 0 to 3 and several tolerances, on the pure rules.
//!
//! Replayers collude: each replays its own tokens (every one it was answered, and its
//! backend token) and every token of another replayer that the playback has moved past
//! (spent). A token still current (or still retryable as a lost answer) is the holder's
//! alone: handing it to another device as it arrives is relaying one session, which no
//! token can tell from one device.
//!
//! - Invariant 1: once every device's first backend token is past its
//!   `checking_threshold` grace, no more than `session_limit` devices receive a 200 in
//!   each of three consecutive cycles.
//! - Invariant 2: an honest device (it sends its latest token on time, retries a lost
//!   answer a second later) is never refused as `replayed` or `expired`; under
//!   `MOST_RECENT` the honest devices that started first, within the limit, are never
//!   refused at all.
//!
//! The same scenarios run against every store in the conformance kit
//! (`testkit::replays`), and over HTTP against the release binary.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use heartbeat_core::sessions::rules::{PlaybackPolicy, decide};
use heartbeat_core::sessions::{RejectReason, Verdict};
use heartbeat_core::{HeartbeatData, RejectStrategy, Timestamp, UserSessions};
use proptest::prelude::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const CYCLE_SECS: i64 = 30;
const CYCLES: i64 = 12;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0 + seconds * 1000).unwrap()
}

/// A backend token issued at `issued` seconds.
fn backend_token(case: &Case, issued: i64) -> HeartbeatData {
    let mut token: HeartbeatData = serde_json::from_value(serde_json::json!({
        "user_id": 13, "asset_id": 14, "heartbeat_cycle": CYCLE_SECS, "cycle_lower_tolerance": 2,
        "cycle_upper_tolerance": case.upper_tolerance, "session_limit": case.limit,
        "checking_threshold": case.threshold, "sessions_edge": 50,
    }))
    .unwrap();
    token.timestamp = Some(at(issued));
    token.reject_strategy = Some(case.strategy);
    token
}

/// A token and, for a backend token, the playback it starts.
#[derive(Debug, Clone)]
struct Held {
    data: HeartbeatData,
    playback: String,
}

impl Held {
    /// Whether the token can still continue or resume its playback in `stored` (it is
    /// not spent): an unused backend token, the current token, the last one presented
    /// while its answer is the current one, or an ended playback's latest token.
    fn is_live(&self, stored: &UserSessions) -> bool {
        let Some(record) = stored.sessions.get(&self.playback) else {
            return self.data.session_id.is_none();
        };
        let key = self.data.session_id.as_ref().and(self.data.timestamp);
        let retryable = record
            .previous
            .is_some_and(|previous| previous.answered == record.timestamp && previous.token == key);
        if record.is_active() {
            retryable || key == Some(record.timestamp)
        } else {
            key == Some(record.timestamp)
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    strategy: RejectStrategy,
    threshold: u32,
    limit: u32,
    upper_tolerance: i64,
    honest: usize,
    /// Per honest heartbeat, whether its answer is lost.
    lost: Vec<bool>,
    replayers: usize,
    /// Each replayer's first use of its own backend token, seconds into the first cycle.
    replayer_starts: Vec<i64>,
    /// (seconds after the previous action, replayer, which token of the pool).
    actions: Vec<(i64, usize, usize)>,
}

prop_compose! {
    fn case()(
        strategy in prop_oneof![Just(RejectStrategy::MostRecent), Just(RejectStrategy::LeastRecent)],
        threshold in 0u32..=3,
        limit in 1u32..=2,
        upper_tolerance in prop::sample::select(vec![0i64, 1, 5, 10, 30]),
        honest in 1usize..=2,
        lost in prop::collection::vec(prop::bool::weighted(0.2), 64),
        replayers in 1usize..=3,
        replayer_starts in prop::collection::vec(5i64..CYCLE_SECS, 3),
        actions in prop::collection::vec((0i64..20, 0usize..3, 0usize..64), 0..120),
    ) -> Case {
        Case {
            strategy,
            threshold,
            limit,
            upper_tolerance,
            honest,
            lost,
            replayers,
            replayer_starts,
            actions,
        }
    }
}

/// One user's stored sessions and the rules, applied as a store would.
struct Server {
    policy: PlaybackPolicy,
    stored: UserSessions,
}

impl Server {
    fn heartbeat(&mut self, now: i64, held: &Held) -> Result<Held, RejectReason> {
        let decision = decide(
            &self.policy,
            at(now),
            &held.data,
            &self.stored,
            &held.playback,
            None,
        );
        self.stored = decision.write.sessions;
        match decision.verdict {
            Verdict::Accept(accepted) => Ok(Held {
                playback: accepted.session_id,
                data: accepted.token_data,
            }),
            Verdict::Reject(refused) => Err(refused.reason),
        }
    }
}

struct Honest {
    held: Held,
    due: i64,
    stopped: bool,
}

/// Runs the case; returns the seconds at which each device (honest ones first) got a 200.
fn run(case: &Case) -> Result<Vec<Vec<i64>>, TestCaseError> {
    let mut server = Server {
        policy: PlaybackPolicy::default(),
        stored: UserSessions::default(),
    };
    let devices = case.honest + case.replayers;
    let mut ok: Vec<Vec<i64>> = vec![Vec::new(); devices];
    // Honest devices start in the first seconds, before any replayer.
    let mut honest: Vec<Honest> = (0..case.honest)
        .map(|i| Honest {
            held: Held {
                data: backend_token(case, 0),
                playback: format!("honest-{i}"),
            },
            due: i as i64,
            stopped: false,
        })
        .collect();
    // Every replayer's backend token and every token a replayer was answered, by
    // replayer.
    let mut pool: Vec<(usize, Held)> = (0..case.replayers)
        .map(|i| {
            let held = Held {
                data: backend_token(case, 0),
                playback: format!("replayer-{i}"),
            };
            (i, held)
        })
        .collect();
    let mut actions = Vec::new();
    for (i, start) in case.replayer_starts.iter().take(case.replayers).enumerate() {
        // Its own backend token: the first of its tokens in the pool.
        actions.push((*start, i, 0));
    }
    let mut t = CYCLE_SECS;
    for (delta, who, pick) in &case.actions {
        t += delta;
        actions.push((t, who % case.replayers, *pick));
    }
    actions.sort_by_key(|(time, _, _)| *time);
    let mut actions = actions.into_iter().peekable();
    let mut lost = case.lost.iter().cycle();
    for now in 0..CYCLES * CYCLE_SECS {
        for (index, device) in honest.iter_mut().enumerate() {
            if device.stopped || device.due != now {
                continue;
            }
            match server.heartbeat(now, &device.held) {
                Ok(next) => {
                    ok[index].push(now);
                    if *lost.next().unwrap() {
                        // The answer is lost: the same token again a second later.
                        device.due = now + 1;
                    } else {
                        device.held = next;
                        device.due = now + CYCLE_SECS;
                    }
                }
                Err(reason) => {
                    prop_assert!(
                        !matches!(reason, RejectReason::Replayed | RejectReason::Expired),
                        "honest device {} refused as {:?} at {}",
                        index,
                        reason,
                        now
                    );
                    prop_assert!(
                        !(case.strategy == RejectStrategy::MostRecent
                            && index < case.limit as usize),
                        "honest device {} within the limit refused ({:?}) at {}",
                        index,
                        reason,
                        now
                    );
                    device.stopped = true;
                }
            }
        }
        while let Some((_, who, pick)) = actions.next_if(|(time, _, _)| *time == now) {
            // Its own tokens, and the others' spent ones.
            let seen: Vec<&Held> = pool
                .iter()
                .filter(|(owner, held)| *owner == who || !held.is_live(&server.stored))
                .map(|(_, held)| held)
                .collect();
            let held = seen[pick % seen.len()].clone();
            if let Ok(next) = server.heartbeat(now, &held) {
                ok[case.honest + who].push(now);
                pool.push((who, next));
            }
        }
    }
    Ok(ok)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn replays_never_beat_the_limit(case in case()) {
        let ok = run(&case)?;
        // Past every first token's grace (`threshold` heartbeats from the first cycle).
        let first = i64::from(case.threshold) + 1;
        for k in first..CYCLES - 2 {
            let in_cycle = |times: &Vec<i64>, cycle: i64| {
                times.iter().any(|t| (cycle * CYCLE_SECS..(cycle + 1) * CYCLE_SECS).contains(t))
            };
            let playing: Vec<usize> = (0..ok.len())
                .filter(|device| (k..k + 3).all(|cycle| in_cycle(&ok[*device], cycle)))
                .collect();
            prop_assert!(
                playing.len() <= case.limit as usize,
                "cycles {}..{}: devices {:?} all got a 200 in each ({:?})",
                k,
                k + 3,
                playing,
                ok.iter().enumerate().collect::<BTreeMap<_, _>>()
            );
        }
    }
}
