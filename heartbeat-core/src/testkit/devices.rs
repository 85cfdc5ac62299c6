//! Conformance checks for SPEC §3.7 and §3.8 through the [`Heartbeats`] service: limit
//! policies, refusals that name the playing devices, takeovers and pushed notices.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use super::sessions::{accept, reject, seal, service, start};
use super::{EVENT_WAIT, Fixture};
use crate::sessions::NoticeStream;
use crate::sessions::RejectReason;
use crate::sessions::notice::{NoticeReason, SessionEnded};
use crate::sessions::rules::{PlayingSession, SessionError};
use crate::{
    EndReason, HeartbeatData, HeartbeatError, HeartbeatOutcome, Heartbeats, Id, ManualClock,
    SessionStore, TokenCodec, TokenFormat,
};

/// A backend token of user `user` on `device` (`family`) playing `asset`, under the plan
/// `{"tv": 1, "mobile": 2}`, `session_limit` `limit`, counted from the first heartbeat.
fn plan_data(
    user: i64,
    device: &str,
    family: &str,
    asset: i64,
    limit: u32,
    strategy: &str,
) -> HeartbeatData {
    HeartbeatData::from_json(json!({
        "user_id": user, "asset_id": asset, "heartbeat_cycle": 30, "cycle_lower_tolerance": 2,
        "cycle_upper_tolerance": 10, "reject_strategy": strategy,
        "timestamp": start().to_string(), "session_limit": limit, "checking_threshold": 1,
        "sessions_edge": 10, "device": device, "device_family": family,
        "family_limits": {"tv": 1, "mobile": 2}, "asset_limit": 2,
    }))
    .unwrap()
}

/// Starts a session of `data` and returns its rotated token and session id.
async fn play<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    data: &HeartbeatData,
) -> (String, String) {
    let (token, accepted) = accept(heartbeats, &seal(heartbeats, data), None).await;
    (token, accepted.session_id)
}

/// A heartbeat that must be refused, with what the refusal shows.
async fn refused<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    token: &str,
) -> (RejectReason, Vec<PlayingSession>) {
    match heartbeats.heartbeat(token, None).await.unwrap() {
        HeartbeatOutcome::Rejected(refused) => (
            refused.reason,
            refused.playing.expect("a v2 token is shown the sessions"),
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn devices(playing: &[PlayingSession]) -> Vec<&str> {
    playing
        .iter()
        .map(|session| session.device.as_deref().unwrap_or("?"))
        .collect()
}

/// `family_limits` and `asset_limit` (SPEC §3.8) refuse with their own reason and limit,
/// the refusal lists the devices that keep playing (labels and families read back from
/// the store), and the history records the device.
pub async fn family_and_asset_limits_refuse_with_their_reason<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    // MOST_RECENT: the first devices keep playing, a newcomer is refused at its next beat.
    let (_, living_room) = play(
        &heartbeats,
        &plan_data(13, "Living-room TV", "tv", 1, 4, "MOST_RECENT"),
    )
    .await;
    clock.advance(Duration::from_secs(1));
    let (bedroom, _) = play(
        &heartbeats,
        &plan_data(13, "Bedroom TV", "tv", 2, 4, "MOST_RECENT"),
    )
    .await;
    clock.advance(Duration::from_secs(1));
    let (phone, _) = play(
        &heartbeats,
        &plan_data(13, "Phone", "mobile", 1, 4, "MOST_RECENT"),
    )
    .await;
    clock.advance(Duration::from_secs(1));
    let (tablet, _) = play(
        &heartbeats,
        &plan_data(13, "Tablet", "mobile", 1, 4, "MOST_RECENT"),
    )
    .await;
    clock.advance(Duration::from_secs(28));

    let (reason, playing) = refused(&heartbeats, &bedroom).await;
    assert_eq!(reason, RejectReason::FamilyLimit { limit: 1 });
    assert_eq!(
        devices(&playing),
        ["Living-room TV", "Phone"],
        "the tablet is a third session of asset 1"
    );
    assert_eq!(playing[0].session_id, living_room);
    assert_eq!(playing[0].device_family.as_deref(), Some("tv"));
    assert_eq!(playing[0].asset_id, Some(Id::Int(1)));
    assert_eq!(playing[0].started_at, Some(start()));
    let (reason, _) = refused(&heartbeats, &tablet).await;
    assert_eq!(reason, RejectReason::AssetLimit { limit: 2 });
    accept(&heartbeats, &phone, None).await;

    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    let mut labels: Vec<_> = history
        .iter()
        .filter_map(|entry| entry.device.as_deref())
        .collect();
    labels.sort_unstable();
    assert_eq!(labels, ["Bedroom TV", "Living-room TV", "Phone", "Tablet"]);
}

/// A legacy token's refusal never lists the user's sessions (SPEC §3.7: it can be forged).
pub async fn a_legacy_refusal_lists_no_sessions<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let legacy = TokenCodec::new("testkit shared key")
        .unwrap()
        .issuing(TokenFormat::Legacy);
    let data = plan_data(13, "Phone", "mobile", 1, 1, "MOST_RECENT");
    play(&heartbeats, &data).await;
    clock.advance(Duration::from_secs(1));
    let (token, _) = accept(&heartbeats, &legacy.seal(&data).unwrap(), None).await;
    clock.advance(Duration::from_secs(30));
    let token = legacy
        .seal(&heartbeats.codec().open(&token).unwrap())
        .unwrap();
    match heartbeats.heartbeat(&token, None).await.unwrap() {
        HeartbeatOutcome::Rejected(refused) => {
            assert_eq!(refused.reason.code(), "over_limit");
            assert_eq!(refused.playing, None);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Provenance (SPEC §3.3): a session a legacy token began (a forged one: it names the
/// victim's user) is answered with `v2.` tokens that stay unauthenticated, on this client
/// and on another one: its refusals list nothing, it cannot take over nor follow notices.
/// A session a `b1.` backend token began has every power.
pub async fn a_legacy_begun_session_stays_unauthenticated<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let other_instance = service(fixture.sessions().await, &clock);
    let (_, tv_id) = play(
        &heartbeats,
        &plan_data(13, "Living-room TV", "tv", 1, 1, "MOST_RECENT"),
    )
    .await;
    clock.advance(Duration::from_secs(1));
    let codec = |format| {
        TokenCodec::new("testkit shared key")
            .unwrap()
            .issuing(format)
    };
    let backend = codec(TokenFormat::Backend)
        .seal(&plan_data(13, "Phone", "mobile", 3, 1, "MOST_RECENT"))
        .unwrap();
    let (phone, _) = accept(&heartbeats, &backend, None).await;
    clock.advance(Duration::from_secs(1));
    let forged = codec(TokenFormat::Legacy)
        .seal(&plan_data(13, "Attacker", "web", 2, 1, "MOST_RECENT"))
        .unwrap();
    let (laundered, _) = accept(&heartbeats, &forged, None).await;
    assert_eq!(TokenFormat::of(&laundered), TokenFormat::Sealed);
    assert_eq!(
        heartbeats.codec().open(&laundered).unwrap().provenance,
        crate::Provenance::Legacy
    );
    clock.advance(Duration::from_secs(29));

    for instance in [&heartbeats, &other_instance] {
        match instance.heartbeat(&laundered, None).await.unwrap() {
            HeartbeatOutcome::Rejected(refused) => {
                assert_eq!(refused.reason.code(), "over_limit");
                assert_eq!(
                    refused.playing, None,
                    "a legacy-begun session sees no devices"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(matches!(
            instance.take_over(&laundered, &tv_id, None).await,
            Err(HeartbeatError::InvalidToken(_))
        ));
        assert!(matches!(
            instance.watch(&laundered).await,
            Err(HeartbeatError::InvalidToken(_))
        ));
    }

    let (_, playing) = refused(&other_instance, &phone).await;
    assert_eq!(devices(&playing), ["Living-room TV"]);
    match other_instance
        .take_over(&phone, &tv_id, None)
        .await
        .unwrap()
    {
        HeartbeatOutcome::Accepted { token, .. } => assert_eq!(
            heartbeats.codec().open(&token).unwrap().provenance,
            crate::Provenance::Authenticated
        ),
        other => panic!("expected the takeover to admit, got {other:?}"),
    }
}

/// "Watch here instead" (SPEC §3.7): the refused device takes the playing one over; the
/// taken-over device is refused as `taken_over`; the history says who took over; a
/// session that is not active, the caller's own, and a legacy token change nothing.
pub async fn a_takeover_ends_the_other_session_and_admits<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let (tv, tv_id) = play(&heartbeats, &plan_data(13, "TV", "tv", 1, 1, "MOST_RECENT")).await;
    clock.advance(Duration::from_secs(1));
    let (phone, phone_id) = play(
        &heartbeats,
        &plan_data(13, "Phone", "mobile", 2, 1, "MOST_RECENT"),
    )
    .await;
    clock.advance(Duration::from_secs(29));
    let (_, playing) = refused(&heartbeats, &phone).await;
    assert_eq!(devices(&playing), ["TV"]);

    for (target, expected) in [
        ("no-such-session", SessionError::NotActive),
        (phone_id.as_str(), SessionError::OwnSession),
    ] {
        match heartbeats.take_over(&phone, target, None).await {
            Err(HeartbeatError::Session(error)) => assert_eq!(error, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
    let legacy = TokenCodec::new("testkit shared key")
        .unwrap()
        .issuing(TokenFormat::Legacy);
    let forged = legacy
        .seal(&heartbeats.codec().open(&phone).unwrap())
        .unwrap();
    assert!(matches!(
        heartbeats.take_over(&forged, &tv_id, None).await,
        Err(HeartbeatError::InvalidToken(_))
    ));

    let (phone, accepted) = match heartbeats
        .take_over(&phone, &tv_id, Some(12.0))
        .await
        .unwrap()
    {
        HeartbeatOutcome::Accepted { token, accepted } => (token, accepted),
        other => panic!("expected the takeover to admit, got {other:?}"),
    };
    assert_eq!(
        accepted.session_id, phone_id,
        "the phone's own session continues"
    );
    assert_eq!(
        reject(&heartbeats, &tv).await,
        RejectReason::Ended {
            by: EndReason::TakenOver
        }
    );
    // The TV's slot is the phone's now; the TV pressing play again is refused by it.
    clock.advance(Duration::from_secs(30));
    accept(&heartbeats, &phone, None).await;
    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    let taken = history
        .iter()
        .find(|entry| entry.session_id == tv_id)
        .unwrap();
    assert_eq!(taken.ended_by, Some(EndReason::TakenOver));
    assert_eq!(taken.taken_over_by.as_deref(), Some(phone_id.as_str()));
    assert_eq!(taken.ended_at, Some(start().add_millis(30_000)));
    // Taking over an ended session: nothing to end.
    assert!(matches!(
        heartbeats.take_over(&phone, &tv_id, None).await,
        Err(HeartbeatError::Session(SessionError::NotActive))
    ));
}

/// Two devices of one user race to take each other over, on separate clients (server
/// instances): exactly one wins, the other is refused as `taken_over`, and the limit holds.
pub async fn racing_takeovers_keep_the_limit<F: Fixture>(fixture: &F) {
    const USERS: i64 = 8;
    let clock = ManualClock::new(start());
    let one = Arc::new(service(fixture.sessions().await, &clock));
    let two = Arc::new(service(fixture.sessions().await, &clock));
    let mut pairs = Vec::new();
    for user in 0..USERS {
        let (a, a_id) = play(
            &one,
            &plan_data(100 + user, "A", "web", user, 1, "MOST_RECENT"),
        )
        .await;
        let (b, b_id) = play(
            &two,
            &plan_data(100 + user, "B", "web", user, 1, "MOST_RECENT"),
        )
        .await;
        pairs.push(((a, a_id), (b, b_id)));
    }
    clock.advance(Duration::from_secs(30));
    let mut races = Vec::new();
    for ((a, a_id), (b, b_id)) in pairs {
        let (one, two) = (one.clone(), two.clone());
        races.push(tokio::spawn(async move {
            let (first, second) = tokio::join!(
                one.take_over(&a, &b_id, None),
                two.take_over(&b, &a_id, None)
            );
            [first.unwrap(), second.unwrap()]
        }));
    }
    for (user, race) in races.into_iter().enumerate() {
        let outcomes = race.await.unwrap();
        let winners = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, HeartbeatOutcome::Accepted { .. }))
            .count();
        assert_eq!(winners, 1, "user {user}: {outcomes:?}");
        assert!(outcomes.iter().any(|outcome| matches!(
            outcome,
            HeartbeatOutcome::Rejected(refused) if refused.reason == RejectReason::Ended { by: EndReason::TakenOver }
        )), "user {user}: {outcomes:?}");
        let user = Id::Int(100 + user as i64);
        assert_eq!(one.active_sessions(&user).await.unwrap().len(), 1);
    }
}

/// Waits for the one notice of `stream`.
async fn notice(stream: &mut NoticeStream) -> SessionEnded {
    tokio::time::timeout(EVENT_WAIT, stream.next())
        .await
        .expect("the notice did not arrive")
        .expect("the stream ended without a notice")
}

/// Pushed notices (SPEC §3.7): a stream held on one client (server instance) is told when
/// another evicts, takes over or displaces its session, then ends; a session already
/// ended is told at once; a session that is not active, and a legacy token, are refused.
pub async fn notices_reach_the_watched_session<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let watcher = service(fixture.sessions().await, &clock);
    let actor = service(fixture.sessions().await, &clock);

    // Evicted by an administrator.
    let (tv, tv_id) = play(&actor, &plan_data(13, "TV", "tv", 1, 2, "LEAST_RECENT")).await;
    let mut stream = watcher.watch(&tv).await.unwrap();
    assert!(actor.evict(&Id::Int(13), &tv_id).await.unwrap());
    let ended = notice(&mut stream).await;
    assert_eq!(
        (ended.session_id.as_str(), ended.reason, ended.by),
        (tv_id.as_str(), NoticeReason::Evicted, None)
    );
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the notice"
    );

    // Taken over: the notice names the session that took over, and its device.
    let (tablet, tablet_id) = play(
        &actor,
        &plan_data(14, "Tablet", "mobile", 1, 1, "MOST_RECENT"),
    )
    .await;
    let mut stream = watcher.watch(&tablet).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let (phone, phone_id) = play(
        &actor,
        &plan_data(14, "Phone", "mobile", 1, 1, "MOST_RECENT"),
    )
    .await;
    clock.advance(Duration::from_secs(29));
    assert!(matches!(
        actor.take_over(&phone, &tablet_id, None).await.unwrap(),
        HeartbeatOutcome::Accepted { .. }
    ));
    let ended = notice(&mut stream).await;
    assert_eq!(ended.reason, NoticeReason::TakenOver);
    let by = ended.by.unwrap();
    assert_eq!(
        (by.session_id.as_str(), by.device.as_deref()),
        (phone_id.as_str(), Some("Phone"))
    );
    // Watching it now: told at once.
    let mut late = watcher.watch(&tablet).await.unwrap();
    assert_eq!(notice(&mut late).await.reason, NoticeReason::TakenOver);

    // Displaced under LEAST_RECENT: the newest device takes the last slot.
    let (old, old_id) = play(&actor, &plan_data(15, "Old", "web", 1, 1, "LEAST_RECENT")).await;
    let mut stream = watcher.watch(&old).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let (_, new_id) = play(&actor, &plan_data(15, "New", "web", 1, 1, "LEAST_RECENT")).await;
    let ended = notice(&mut stream).await;
    assert_eq!(
        (ended.session_id.as_str(), ended.reason),
        (old_id.as_str(), NoticeReason::Displaced)
    );
    assert_eq!(ended.by.unwrap().session_id, new_id);

    // Nothing to watch: a backend token, an unknown session, a legacy token.
    let backend = seal(&actor, &plan_data(16, "TV", "tv", 1, 1, "LEAST_RECENT"));
    assert!(matches!(
        watcher.watch(&backend).await,
        Err(HeartbeatError::Session(SessionError::NotActive))
    ));
    clock.advance(Duration::from_secs(60));
    assert!(
        matches!(
            watcher.watch(&phone).await,
            Err(HeartbeatError::Session(SessionError::NotActive))
        ),
        "expired"
    );
    let legacy = TokenCodec::new("testkit shared key")
        .unwrap()
        .issuing(TokenFormat::Legacy);
    let (fresh, _) = play(&actor, &plan_data(17, "TV", "tv", 1, 1, "LEAST_RECENT")).await;
    let forged = legacy.seal(&actor.codec().open(&fresh).unwrap()).unwrap();
    assert!(matches!(
        watcher.watch(&forged).await,
        Err(HeartbeatError::InvalidToken(_))
    ));
}
