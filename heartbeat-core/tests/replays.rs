//! The limit holds against replays (SPEC §3.2), as an attacker plays it: honest devices
//! and devices that replay any token they ever saw, over simulated time, for both reject
//! strategies, thresholds 0 to 3 and several tolerances, on the pure rules.
//!
//! Replayers collude: each replays its own tokens (every one it was answered, and its
//! backend token) and every token another replayer has sent, from the moment it is sent
//! (the token a playback just moved past can be retried as a lost answer). A token not
//! sent yet is its holder's alone: handing each answer to another device as it arrives is
//! relaying one session, which no token can tell from one device.
//!
//! - Invariant 1: once every device's first backend token is past its
//!   `checking_threshold` grace, no more than `session_limit` devices receive a 200 in
//!   each of three consecutive cycles.
//! - Invariant 2: an honest device (it sends its latest token on time, retries a lost
//!   answer a second later, at most twice in any three cycles) is never refused as
//!   `expired`, nor as `replayed` but for a lost answer's retry once the user's devices
//!   started again twice in three cycles; under `MOST_RECENT` the honest devices that
//!   started first, within the limit, are never refused otherwise.
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
    /// What each heartbeat came to, for a failing case's message.
    trace: Vec<String>,
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
        self.trace.push(format!(
            "{now}: {} {:?} -> {}",
            held.data.session_id.as_deref().unwrap_or(&held.playback),
            held.data.timestamp.map(|t| (t.unix_millis() - T0) / 1000),
            match &decision.verdict {
                Verdict::Accept(a) => format!("200 {:?}", a.new_session),
                Verdict::Reject(r) => format!("412 {}", r.reason.code()),
            }
        ));
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
    /// When it sent a token again after a lost answer.
    retried: Vec<i64>,
}

/// The tokens of `pool` replayer `who` tries, in turn, until one is answered 200: the
/// latest it was answered, the token another replayer sent last (a lost answer's retry,
/// as far as the server can tell), its backend token, and one more it has seen (its own,
/// and every one another has sent) chosen by `pick`.
fn tries(
    pool: &[(usize, Held, bool)],
    who: usize,
    pick: usize,
    last_sent: Option<usize>,
) -> Vec<usize> {
    let own_latest = (0..pool.len()).rfind(|i| pool[*i].0 == who).unwrap_or(who);
    let seen: Vec<usize> = (0..pool.len())
        .filter(|i| pool[*i].0 == who || pool[*i].2)
        .collect();
    let mut order = vec![own_latest];
    order.extend(last_sent.filter(|i| pool[*i].0 != who));
    order.push(who);
    order.push(seen[pick % seen.len()]);
    order
}

/// Runs the case; returns the seconds at which each device (honest ones first) got a 200.
fn run(case: &Case) -> Result<(Vec<Vec<i64>>, Vec<String>), TestCaseError> {
    let mut server = Server {
        policy: PlaybackPolicy::default(),
        stored: UserSessions::default(),
        trace: Vec::new(),
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
            retried: Vec::new(),
        })
        .collect();
    // Every replayer's backend token and every token a replayer was answered: by whom,
    // and whether it was sent yet.
    let mut pool: Vec<(usize, Held, bool)> = (0..case.replayers)
        .map(|i| {
            let held = Held {
                data: backend_token(case, 0),
                playback: format!("replayer-{i}"),
            };
            (i, held, false)
        })
        .collect();
    let mut actions = Vec::new();
    for (i, start) in case.replayer_starts.iter().take(case.replayers).enumerate() {
        // Its own backend token first.
        actions.push((*start, i, 1));
    }
    let mut t = CYCLE_SECS;
    for (delta, who, pick) in &case.actions {
        t += delta;
        actions.push((t, who % case.replayers, *pick));
    }
    actions.sort_by_key(|(time, _, _)| *time);
    let mut actions = actions.into_iter().peekable();
    let mut lost = case.lost.iter().cycle();
    // The token a replayer sent last, which the others see at once.
    let mut last_sent: Option<usize> = None;
    for now in 0..CYCLES * CYCLE_SECS {
        for (index, device) in honest.iter_mut().enumerate() {
            if device.stopped || device.due != now {
                continue;
            }
            match server.heartbeat(now, &device.held) {
                Ok(next) => {
                    ok[index].push(now);
                    // The answer is lost (the same token again a second later) while the
                    // device retried less than twice in the last three cycles.
                    let recent = device
                        .retried
                        .iter()
                        .filter(|at| now + 1 - **at < 3 * CYCLE_SECS)
                        .count();
                    if recent < 2 && *lost.next().unwrap() {
                        device.retried.push(now + 1);
                        device.due = now + 1;
                    } else {
                        device.held = next;
                        device.due = now + CYCLE_SECS;
                    }
                }
                Err(reason) => {
                    // A retry of a lost answer may be refused once the user's devices
                    // started again twice in three cycles (a device sharing the account
                    // can use them up): then the player needs a fresh backend token.
                    let retrying = device.retried.last() == Some(&now);
                    prop_assert!(
                        retrying || reason != RejectReason::Replayed,
                        "honest device {} refused as {:?} at {}",
                        index,
                        reason,
                        now
                    );
                    prop_assert!(reason != RejectReason::Expired);
                    prop_assert!(
                        !(case.strategy == RejectStrategy::MostRecent
                            && index < case.limit as usize
                            && !retrying),
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
            for chosen in tries(&pool, who, pick, last_sent) {
                pool[chosen].2 = true;
                last_sent = Some(chosen);
                let held = pool[chosen].1.clone();
                if let Ok(next) = server.heartbeat(now, &held) {
                    ok[case.honest + who].push(now);
                    server
                        .trace
                        .push(format!("    (device {})", case.honest + who));
                    pool.push((who, next, false));
                    break;
                }
            }
        }
    }
    Ok((ok, server.trace))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn replays_never_beat_the_limit(case in case()) {
        let (ok, trace) = run(&case)?;
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
                "cycles {}..{}: devices {:?} all got a 200 in each ({:?})\n{}",
                k,
                k + 3,
                playing,
                ok.iter().enumerate().collect::<BTreeMap<_, _>>(),
                trace.join("\n")
            );
        }
    }
}

/// A token is known by its timestamp: an answer sealed in the same millisecond as the token
/// it answers (a fast client on loopback, or an instance whose clock is behind the one
/// that sealed the token) must not share it, or the current token would be taken for a
/// lost answer's retry and refused `replayed` once the user's starts again ran out.
#[test]
fn the_current_token_continues_however_soon_it_comes() {
    let case = Case {
        limit: 1,
        threshold: 0,
        upper_tolerance: 10,
        strategy: RejectStrategy::LeastRecent,
        honest: 1,
        replayers: 0,
        replayer_starts: Vec::new(),
        actions: Vec::new(),
        lost: vec![false],
    };
    let mut server = Server {
        policy: PlaybackPolicy::default(),
        stored: UserSessions::default(),
        trace: Vec::new(),
    };
    let mut held = Held {
        data: backend_token(&case, 0),
        playback: "device".to_owned(),
    };
    let mut answered = Vec::new();
    for _ in 0..12 {
        // Every heartbeat at the same millisecond.
        let next = server.heartbeat(1, &held);
        let next = next.unwrap_or_else(|reason| panic!("{reason:?}: {:#?}", server.trace));
        answered.push(next.data.timestamp.unwrap());
        held = next;
    }
    assert!(
        answered.windows(2).all(|pair| pair[0] < pair[1]),
        "{answered:?}"
    );
    // A token the playback moved past (not the last one presented, which would be a
    // lost answer's retry) is still behind it.
    let mut stale = held.clone();
    stale.data.timestamp = Some(answered[answered.len() - 3]);
    assert_eq!(
        server.heartbeat(1, &stale).unwrap_err(),
        RejectReason::Replayed
    );
}
