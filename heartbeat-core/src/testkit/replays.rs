//! Conformance checks for SPEC §3.2 "The limit holds against replays": the attacks, and
//! the honest flows that must keep working, on every store and across instances.

use std::time::Duration;

use serde_json::json;

use super::Fixture;
use super::sessions::{accept, active_count, backend_data, reject, seal, service, start};
use crate::sessions::{NewSessionCause, RejectReason};
use crate::{HeartbeatOutcome, Heartbeats, Id, ManualClock, SessionStore};

/// User 13's backend token: `session_limit` 1, threshold 1, edge 10, `strategy`, issued
/// now by the clock.
fn fresh_token<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    clock: &ManualClock,
    strategy: &str,
) -> String {
    let mut data = backend_data(13, 1, 1, 10, strategy);
    data.timestamp = Some(crate::Clock::now(clock));
    seal(heartbeats, &data)
}

/// User 13's active sessions.
async fn counted<S: SessionStore>(heartbeats: &Heartbeats<S, ManualClock>) -> usize {
    active_count(heartbeats, 13).await
}

/// A second device that replays a spent rotated token of the first device (limit 1,
/// `MOST_RECENT`) is refused as `replayed`, every cycle, and stores nothing; the first
/// device plays on. (The Node server's rules started a "new" session that was never
/// refused.) The token spent last, replayed within the cycle of its answer, cannot be
/// told from a lost answer retried: it continues the session once (the device that sent
/// it first is refused at its next heartbeat), and never again.
pub async fn a_spent_token_replayed_is_refused<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let (spent, _) = accept(
        &heartbeats,
        &fresh_token(&heartbeats, &clock, "MOST_RECENT"),
        None,
    )
    .await;
    clock.advance(Duration::from_secs(30));
    let mut current = accept(&heartbeats, &spent, None).await.0;
    for cycle in 0..6 {
        clock.advance(Duration::from_secs(30));
        current = accept(&heartbeats, &current, None).await.0;
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            reject(&heartbeats, &spent).await,
            RejectReason::Replayed,
            "cycle {cycle}"
        );
        assert_eq!(counted(&heartbeats).await, 1, "cycle {cycle}");
    }
    // The token spent last, replayed a second after each heartbeat: one 200 in all.
    let mut answered = 0;
    let mut first_device_refused = false;
    for _ in 0..6 {
        clock.advance(Duration::from_secs(29));
        let just_spent = current.clone();
        match heartbeats.heartbeat(&current, None).await.unwrap() {
            HeartbeatOutcome::Accepted { token, .. } => current = token,
            _ => first_device_refused = true,
        }
        clock.advance(Duration::from_secs(1));
        if let HeartbeatOutcome::Accepted { .. } =
            heartbeats.heartbeat(&just_spent, None).await.unwrap()
        {
            answered += 1;
        }
        assert!(counted(&heartbeats).await <= 1);
    }
    assert_eq!(answered, 1);
    assert!(first_device_refused);
}

/// Two devices (`LEAST_RECENT`, limit 1), each with its own backend token, that replay
/// every token either was ever answered (their own and each other's, backend tokens
/// included) every cycle: they never both play two cycles running.
pub async fn devices_replaying_each_others_tokens_never_both_play<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let mut seen = vec![
        fresh_token(&heartbeats, &clock, "LEAST_RECENT"),
        fresh_token(&heartbeats, &clock, "LEAST_RECENT"),
    ];
    let mut both_before = false;
    for cycle in 0..10 {
        let mut playing = std::collections::BTreeSet::new();
        for token in seen.clone() {
            if let HeartbeatOutcome::Accepted { token, accepted } =
                heartbeats.heartbeat(&token, None).await.unwrap()
            {
                playing.insert(accepted.session_id);
                seen.push(token);
            }
        }
        let both = playing.len() > 1;
        assert!(
            !(both && both_before && cycle > 1),
            "cycle {cycle}: both played twice running"
        );
        both_before = both;
        assert!(counted(&heartbeats).await <= 2);
        clock.advance(Duration::from_secs(30));
    }
}

/// A backend token re-sent after its session expired, while another device plays at the
/// limit (`MOST_RECENT`): the restart is counted at once and ranked newest, so it is
/// refused; the playing device plays on.
pub async fn a_backend_token_resent_after_expiry_is_refused_at_the_limit<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let old = fresh_token(&heartbeats, &clock, "MOST_RECENT");
    accept(&heartbeats, &old, None).await;
    clock.advance(Duration::from_secs(60)); // expired
    let (mut playing, _) = accept(
        &heartbeats,
        &fresh_token(&heartbeats, &clock, "MOST_RECENT"),
        None,
    )
    .await;
    for _ in 0..3 {
        clock.advance(Duration::from_secs(30));
        playing = accept(&heartbeats, &playing, None).await.0;
        assert!(matches!(
            reject(&heartbeats, &old).await,
            RejectReason::OverLimit { .. } | RejectReason::Replayed
        ));
    }
}

/// Sixty backend tokens without `sessions_edge`: the server's default edge (20) leaves at
/// most 20 sessions, and the first device plays on.
pub async fn backend_tokens_without_an_edge_are_bounded<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let issue = |clock: &ManualClock| {
        let mut data = backend_data(13, 1, 0, 0, "MOST_RECENT");
        data.sessions_edge = None;
        data.timestamp = Some(crate::Clock::now(clock));
        seal(&heartbeats, &data)
    };
    let (mut first, _) = accept(&heartbeats, &issue(&clock), None).await;
    clock.advance(Duration::from_secs(1));
    let mut refused = 0;
    for _ in 0..59 {
        if let HeartbeatOutcome::Rejected(r) =
            heartbeats.heartbeat(&issue(&clock), None).await.unwrap()
        {
            assert_eq!(r.reason.code(), "sessions_edge");
            refused += 1;
        }
    }
    assert_eq!(refused, 40);
    assert_eq!(counted(&heartbeats).await, 20);
    clock.advance(Duration::from_secs(30));
    first = accept(&heartbeats, &first, None).await.0;
    assert!(!first.is_empty());
}

/// An honest player whose answer was lost retries the same token: it plays on, with one
/// session, and its next heartbeat with the retry's answer is accepted; the lost answer
/// is then behind the playback. A retry hands the playback to whoever sends it, so at
/// most two fall within three cycles: a third is refused (SPEC §3.2).
pub async fn a_lost_answer_retried_plays_on<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let backend = fresh_token(&heartbeats, &clock, "MOST_RECENT");
    // The first answer lost: the backend token again.
    accept(&heartbeats, &backend, None).await;
    clock.advance(Duration::from_secs(1));
    let (mut token, first) = accept(&heartbeats, &backend, None).await;
    assert_eq!(first.new_session, None, "the retry continues");
    // Three cycles on, an answer lost and its retry's answer lost too.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(30));
        token = accept(&heartbeats, &token, None).await.0;
    }
    clock.advance(Duration::from_secs(30));
    let (lost, _) = accept(&heartbeats, &token, None).await;
    clock.advance(Duration::from_secs(2));
    accept(&heartbeats, &token, None).await; // lost again
    clock.advance(Duration::from_secs(2));
    let (next, retried) = accept(&heartbeats, &token, None).await;
    assert_eq!(retried.session_id, first.session_id);
    assert_eq!(retried.new_session, None);
    assert_eq!(counted(&heartbeats).await, 1);
    assert_eq!(reject(&heartbeats, &lost).await, RejectReason::Replayed);
    // The retry's answer plays on; a third retry within three cycles is refused.
    clock.advance(Duration::from_secs(30));
    let (after, _) = accept(&heartbeats, &next, None).await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(reject(&heartbeats, &next).await, RejectReason::Replayed);
    clock.advance(Duration::from_secs(29));
    accept(&heartbeats, &after, None).await;
}

/// An authenticated backend token issued outside the start window (or without a
/// `timestamp`) is refused as `expired`.
pub async fn an_old_authenticated_token_is_refused_as_expired<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let mut data = backend_data(13, 1, 1, 10, "MOST_RECENT");
    data.timestamp = Some("2019-03-01T10:00:00.000Z".parse().unwrap());
    assert_eq!(
        reject(&heartbeats, &seal(&heartbeats, &data)).await,
        RejectReason::Expired
    );
    data.timestamp = None;
    assert_eq!(
        reject(&heartbeats, &seal(&heartbeats, &data)).await,
        RejectReason::Expired
    );
    assert_eq!(counted(&heartbeats).await, 0);
}

/// The honest flows: a pause past the tolerance resumed with the latest token (counted at
/// once), a page reload that re-sends the same backend token (plays at once, unless the
/// user's playbacks started again twice within three cycles), a stop resumed with the
/// latest token, and two instances taking turns; each keeps one session.
pub async fn honest_flows_play_on<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let one = service(fixture.sessions().await, &clock);
    let two = service(fixture.sessions().await, &clock);
    let backend = fresh_token(&one, &clock, "MOST_RECENT");
    let (mut token, first) = accept(&one, &backend, None).await;
    for turn in 0..4 {
        clock.advance(Duration::from_secs(30));
        let instance = if turn % 2 == 0 { &one } else { &two };
        token = accept(instance, &token, None).await.0;
    }
    // A pause past the tolerance, resumed with the latest token.
    clock.advance(Duration::from_secs(300));
    let (resumed, again) = accept(&two, &token, None).await;
    assert_eq!(again.new_session, Some(NewSessionCause::Unknown));
    assert_eq!(again.session_id, first.session_id);
    // A page reload that re-sends the backend token plays at once; a third start again
    // within three cycles is refused (SPEC §3.2: two per three cycles, per user).
    clock.advance(Duration::from_secs(10));
    let (reloaded, restart) = accept(&one, &backend, None).await;
    assert_eq!(restart.new_session, Some(NewSessionCause::Restarted));
    assert_eq!(reject(&one, &resumed).await, RejectReason::Replayed);
    clock.advance(Duration::from_secs(10));
    assert_eq!(reject(&two, &backend).await, RejectReason::Replayed);
    // Stopped, then resumed with the latest token.
    clock.advance(Duration::from_secs(30));
    let (latest, _) = accept(&two, &reloaded, None).await;
    assert!(one.stop(&latest, Some(12.0)).await.unwrap());
    assert_eq!(counted(&one).await, 0);
    clock.advance(Duration::from_secs(600));
    accept(&two, &latest, None).await;
    assert_eq!(counted(&one).await, 1);
    // The history has the stop.
    let history = one.history(&Id::Int(13), 20).await.unwrap();
    assert!(
        history
            .iter()
            .any(|entry| entry.ended_by == Some(crate::EndReason::Stopped))
    );
}

/// A record written by today's build (before playbacks: no `previous`, no
/// `restarted_at`) continues with its current token, and its spent one is refused.
pub async fn a_session_of_the_previous_build_continues<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 1, 1, 10, "MOST_RECENT");
    let record = crate::SessionRecord::from_json(
        &json!({"timestamp": start().to_string(), "hit_counter": 3,
                "started_at": start().to_string(), "asset_id": 14})
        .to_string(),
    )
    .unwrap();
    let stored = heartbeats.store().load(&Id::Int(13)).await.unwrap();
    let mut sessions = crate::UserSessions::clone(&stored.sessions);
    sessions.sessions.insert("old-build".into(), record.clone());
    let write = crate::sessions::SessionWrite {
        upserts: vec![("old-build".into(), record)],
        sessions,
        keep_millis: 60_000,
        ..Default::default()
    };
    let committed = heartbeats
        .store()
        .commit(
            &Id::Int(13),
            &stored.version,
            &write,
            &crate::sessions::Retention::default(),
        )
        .await
        .unwrap();
    assert_eq!(committed, crate::store::Commit::Applied);
    let mut current = data.clone();
    current.session_id = Some("old-build".into());
    let spent = {
        let mut spent = current.clone();
        spent.timestamp = Some(start().add_millis(-30_000));
        seal(&heartbeats, &spent)
    };
    clock.advance(Duration::from_secs(30));
    let (_, continued) = accept(&heartbeats, &seal(&heartbeats, &current), None).await;
    assert_eq!(continued.new_session, None);
    assert_eq!(reject(&heartbeats, &spent).await, RejectReason::Replayed);
}

/// A heartbeat whose answer cannot be given (the rotated token would be longer than any
/// token the server opens) fails with the seal error, and nothing is stored (SPEC §4).
pub async fn a_heartbeat_whose_answer_cannot_be_sealed_stores_nothing<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let mut data = backend_data(13, 1, 1, 10, "MOST_RECENT");
    // The longest padding whose backend token still seals: its answer, which adds the
    // session's id and times, cannot.
    let mut pad = 5_000;
    let token = loop {
        data.extra.insert("pad".into(), json!("x".repeat(pad + 1)));
        if heartbeats.codec().seal(&data).is_err() {
            data.extra.insert("pad".into(), json!("x".repeat(pad)));
            break seal(&heartbeats, &data);
        }
        pad += 1;
    };
    let outcome = heartbeats.heartbeat(&token, Some(5.0)).await;
    assert!(
        matches!(outcome, Err(crate::HeartbeatError::Seal(_))),
        "{outcome:?}"
    );
    assert_eq!(counted(&heartbeats).await, 0);
    assert!(
        heartbeats
            .history(&Id::Int(13), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        heartbeats
            .progress(&Id::Int(13), &Id::Int(14))
            .await
            .unwrap()
            .is_none()
    );
}

/// Two devices present one backend token in the same millisecond (the second a replay):
/// the second starts the playback again, and its answer, not the first device's, is the
/// current token. An answer's `timestamp` is strictly after the session's stored one, so
/// the first device's answer, sealed in that millisecond too, is spent: presented later it
/// is refused as `replayed` (SPEC §3.2), and the second device plays on.
pub async fn a_start_again_in_the_same_millisecond_spends_the_first_answer<F: Fixture>(
    fixture: &F,
) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let backend = fresh_token(&heartbeats, &clock, "MOST_RECENT");
    let (first, started) = accept(&heartbeats, &backend, None).await;
    let (second, again) = accept(&heartbeats, &backend, None).await;
    assert_eq!(again.session_id, started.session_id);
    clock.advance(Duration::from_secs(1));
    assert_eq!(reject(&heartbeats, &first).await, RejectReason::Replayed);
    accept(&heartbeats, &second, None).await;
    assert_eq!(counted(&heartbeats).await, 1);
}
