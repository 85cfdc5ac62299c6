//! Conformance checks for [`SessionStore`] through the [`Heartbeats`] service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use super::Fixture;
use crate::sessions::analytics::{FeedEvent, FinishedSession, IndexKey};
use crate::sessions::{Accepted, NewSessionCause, RejectReason, Retention, SessionWrite};
use crate::store::Commit;
use crate::{
    Clock, EndReason, HeartbeatConfig, HeartbeatData, HeartbeatOutcome, Heartbeats, Id,
    ManualClock, SessionRecord, SessionStore, Timestamp, TokenCodec,
};

/// The instant every check starts at.
pub fn start() -> Timestamp {
    "2026-01-01T00:00:00.000Z".parse().unwrap()
}

/// A heartbeat service over `store` on `clock`, with the test key.
pub fn service<S: SessionStore>(store: S, clock: &ManualClock) -> Heartbeats<S, ManualClock> {
    Heartbeats::new(TokenCodec::new("testkit shared key").unwrap(), store).with_clock(clock.clone())
}

/// Backend-issued heartbeat data: cycle 30 s, upper tolerance 10 s, lower 2 s.
pub fn backend_data(
    user: i64,
    limit: u32,
    threshold: u32,
    edge: u32,
    strategy: &str,
) -> HeartbeatData {
    HeartbeatData::from_json(json!({
        "user_id": user, "asset_id": 14, "heartbeat_cycle": 30, "cycle_lower_tolerance": 2,
        "cycle_upper_tolerance": 10, "reject_strategy": strategy, "timestamp": start().to_string(),
        "session_limit": limit, "checking_threshold": threshold, "sessions_edge": edge,
    }))
    .unwrap()
}

/// Seals `data` with the service's codec.
pub fn seal<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    data: &HeartbeatData,
) -> String {
    heartbeats.codec().seal(data).unwrap()
}

/// Sends a heartbeat that must be accepted.
pub async fn accept<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    token: &str,
    progress: Option<f64>,
) -> (String, Accepted) {
    match heartbeats.heartbeat(token, progress).await.unwrap() {
        HeartbeatOutcome::Accepted { token, accepted } => (token, accepted),
        other => panic!("expected accepted, got {other:?}"),
    }
}

/// How many active sessions `user` has.
pub(super) async fn active_count<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    user: i64,
) -> usize {
    heartbeats
        .active_sessions(&Id::Int(user))
        .await
        .unwrap()
        .len()
}

/// Sends a heartbeat that must be refused.
pub async fn reject<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    token: &str,
) -> RejectReason {
    match heartbeats.heartbeat(token, None).await.unwrap() {
        HeartbeatOutcome::Rejected(refused) => refused.reason,
        other => panic!("expected rejected, got {other:?}"),
    }
}

/// Starts a counted session (threshold 1) for `user` and returns its current token.
async fn counted_session<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    data: &HeartbeatData,
) -> (String, String) {
    let (token, accepted) = accept(heartbeats, &seal(heartbeats, data), None).await;
    (token, accepted.session_id)
}

/// Sends user 13's backend token (threshold 3, edge 10) with `limit`; must be accepted.
async fn accept_backend_token<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    limit: u32,
) -> (String, Accepted) {
    let token = seal(heartbeats, &backend_data(13, limit, 3, 10, "LEAST_RECENT"));
    accept(heartbeats, &token, None).await
}

/// The stored hit counter of one of user 13's active sessions.
async fn hit_counter_of<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    session_id: &str,
) -> u64 {
    let sessions = heartbeats.active_sessions(&Id::Int(13)).await.unwrap();
    sessions
        .iter()
        .find(|s| s.session_id == session_id)
        .unwrap()
        .record
        .hit_counter
}

fn record(at: Timestamp, hits: u64) -> SessionRecord {
    SessionRecord {
        timestamp: at,
        hit_counter: hits,
        started_at: Some(at),
        asset_id: None,
        progress: None,
        expires_at: Some(at.add_millis(40_000)),
        ended_by: None,
        ended_at: None,
        taken_over_by: None,
        device: None,
        device_family: None,
        previous: None,
        restarted_at: None,
        restarted_before: None,
        would_refuse: None,
        notice_stream: None,
        gone_at: None,
        extra: Default::default(),
    }
}

/// Commits `write` at `version` with the default retention.
async fn commit<S: SessionStore>(
    store: &S,
    user: &Id,
    version: &S::Version,
    write: &SessionWrite,
) -> Commit {
    store
        .commit(user, version, write, &Retention::default())
        .await
        .unwrap()
}

fn upsert(sessions: &crate::UserSessions, id: &str, record: SessionRecord) -> SessionWrite {
    let mut sessions = sessions.clone();
    sessions.sessions.insert(id.to_owned(), record.clone());
    SessionWrite {
        upserts: vec![(id.to_owned(), record)],
        sessions,
        keep_millis: 60_000,
        ..SessionWrite::default()
    }
}

/// `load` + `commit`: a write applies at the loaded version only; a stale version conflicts
/// and writes nothing; what was loaded does not change under a later commit.
pub async fn compare_and_set_contract<F: Fixture>(fixture: &F) {
    let store = fixture.sessions().await;
    let user = Id::from("cas-user");
    let empty = store.load(&user).await.unwrap();
    assert!(empty.sessions.is_empty());

    let first = upsert(&empty.sessions, "a", record(start(), 1));
    assert_eq!(
        commit(&store, &user, &empty.version, &first).await,
        Commit::Applied
    );
    let loaded = store.load(&user).await.unwrap();
    assert_eq!(loaded.sessions.sessions.get("a"), Some(&record(start(), 1)));

    // The empty version is stale now.
    let rival = upsert(&empty.sessions, "b", record(start(), 1));
    assert_eq!(
        commit(&store, &user, &empty.version, &rival).await,
        Commit::Conflict
    );
    let after = store.load(&user).await.unwrap();
    assert_eq!(after.sessions.sessions.keys().collect::<Vec<_>>(), ["a"]);

    let second = SessionWrite {
        remove: vec!["a".into()],
        keep_millis: 1000,
        ..SessionWrite::default()
    };
    assert_eq!(
        commit(&store, &user, &after.version, &second).await,
        Commit::Applied
    );
    assert_eq!(
        commit(&store, &user, &after.version, &second).await,
        Commit::Conflict
    );
    // What was loaded stays as it was loaded, whatever is committed since (a store
    // that shares its copy with loads must not change it under them).
    assert_eq!(after.sessions.sessions.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(loaded.sessions.sessions.get("a"), Some(&record(start(), 1)));
    assert!(
        store
            .load(&user)
            .await
            .unwrap()
            .sessions
            .sessions
            .is_empty()
    );
}

/// Fields of a stored record this crate does not know come back unchanged.
pub async fn unknown_record_fields_survive<F: Fixture>(fixture: &F) {
    let store = fixture.sessions().await;
    let user = Id::Int(7);
    let mut with_extra = record(start(), 3);
    with_extra
        .extra
        .insert("player".into(), json!({"kind": "tv"}));
    let loaded = store.load(&user).await.unwrap();
    let write = upsert(&loaded.sessions, "s", with_extra.clone());
    assert_eq!(
        commit(&store, &user, &loaded.version, &write).await,
        Commit::Applied
    );
    assert_eq!(
        store.load(&user).await.unwrap().sessions.sessions[&"s".to_owned()],
        with_extra
    );
}

/// A backend token starts a session with one hit and `started_at = now`.
pub async fn first_heartbeat_starts_a_session<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    clock.advance(Duration::from_millis(250));
    let (token, accepted) = accept_backend_token(&heartbeats, 1).await;
    assert_eq!(accepted.new_session, Some(NewSessionCause::FromBackend));
    assert_eq!(accepted.token_data.timestamp, Some(clock.now()));
    assert_eq!(accepted.token_data.started_at, Some(clock.now()));
    let opened = heartbeats.codec().open(&token).unwrap();
    assert_eq!(
        opened.session_id.as_deref(),
        Some(accepted.session_id.as_str())
    );
    let sessions = heartbeats.active_sessions(&Id::Int(13)).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].session_id, accepted.session_id);
    assert_eq!(sessions[0].record.hit_counter, 1);
}

/// The rotated token, sent a cycle later, continues the same session.
pub async fn rotated_token_continues_the_session<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let (mut token, first) = accept_backend_token(&heartbeats, 1).await;
    for hits in 2..=4 {
        clock.advance(Duration::from_secs(29));
        let (next, accepted) = accept(&heartbeats, &token, None).await;
        assert_eq!(accepted.new_session, None);
        assert_eq!(accepted.session_id, first.session_id);
        assert_eq!(accepted.token_data.started_at, first.token_data.started_at);
        let sessions = heartbeats.active_sessions(&Id::Int(13)).await.unwrap();
        assert_eq!(sessions[0].record.hit_counter, hits);
        token = next;
    }
}

/// A heartbeat before `cycle - lower tolerance` continues its session: a playback has
/// one session (the Node server started a clone), and an early heartbeat changes nothing
/// else.
pub async fn early_heartbeat_continues_its_session<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let (token, first) = accept_backend_token(&heartbeats, 5).await;
    clock.advance(Duration::from_secs(27)); // 30 - 2 = 28 s is the earliest
    let (_, early) = accept(&heartbeats, &token, None).await;
    assert_eq!(early.new_session, None);
    assert_eq!(
        early.session_id, first.session_id,
        "one session per playback"
    );
    assert_eq!(active_count(&heartbeats, 13).await, 1);
    assert_eq!(hit_counter_of(&heartbeats, &early.session_id).await, 2);
}

/// A token presented twice within the cycle (its answer lost, or a clone): both continue
/// the one session, and the answer of the first is no longer current (refused as
/// replayed); the counter is not reset.
pub async fn a_token_presented_twice_continues_one_session<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let (token, first) = accept_backend_token(&heartbeats, 5).await;
    clock.advance(Duration::from_secs(30));
    let (lost, original) = accept(&heartbeats, &token, None).await;
    assert_eq!(original.new_session, None);
    clock.advance(Duration::from_secs(1));
    let (current, again) = accept(&heartbeats, &token, None).await;
    assert_eq!(again.new_session, None);
    assert_eq!(again.session_id, first.session_id);
    assert_eq!(active_count(&heartbeats, 13).await, 1);
    assert_eq!(hit_counter_of(&heartbeats, &again.session_id).await, 3);
    clock.advance(Duration::from_secs(29));
    assert_eq!(reject(&heartbeats, &lost).await, RejectReason::Replayed);
    accept(&heartbeats, &current, None).await;
}

/// A session silent for longer than cycle + upper tolerance is removed at the user's next
/// heartbeat and appears in the history as expired; it no longer counts.
pub async fn expired_sessions_leave_for_the_history<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 1, 1, 10, "MOST_RECENT");
    let (_, old) = counted_session(&heartbeats, &data).await;
    clock.advance(Duration::from_secs(40)); // exactly cycle + tolerance: still active
    assert_eq!(active_count(&heartbeats, 13).await, 1);
    clock.advance(Duration::from_millis(1));
    let (token, new) = counted_session(&heartbeats, &data).await;
    let sessions = heartbeats.active_sessions(&Id::Int(13)).await.unwrap();
    assert_eq!(
        sessions
            .iter()
            .map(|s| s.session_id.as_str())
            .collect::<Vec<_>>(),
        [new.as_str()]
    );
    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    let seen: Vec<(&str, Option<EndReason>)> = history
        .iter()
        .map(|entry| (entry.session_id.as_str(), entry.ended_by))
        .collect();
    assert_eq!(
        seen,
        [
            (new.as_str(), None),
            (old.as_str(), Some(EndReason::Expired))
        ]
    );
    assert_eq!(history[1].last_heartbeat, start());
    // It ended at its deadline, not when it was seen to have ended.
    assert_eq!(history[1].ended_at, Some(start().add_millis(40_000)));
    // The expired session no longer takes the only slot.
    clock.advance(Duration::from_secs(30));
    accept(&heartbeats, &token, None).await;
}

async fn two_counted_devices<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    clock: &ManualClock,
    strategy: &str,
) -> ((String, String), (String, String)) {
    let data = backend_data(13, 1, 1, 10, strategy);
    let older = counted_session(heartbeats, &data).await;
    clock.advance(Duration::from_secs(5));
    let newer = counted_session(heartbeats, &data).await;
    clock.advance(Duration::from_secs(28));
    (older, newer)
}

/// `LEAST_RECENT` (the default): the newest device keeps playing, the oldest is refused.
pub async fn least_recent_refuses_the_oldest_device<F: Fixture>(fixture: &F) {
    one_of_two_devices_is_refused(fixture, "LEAST_RECENT").await;
}

/// `MOST_RECENT`: the oldest device keeps playing, the newest is refused.
pub async fn most_recent_refuses_the_newest_device<F: Fixture>(fixture: &F) {
    one_of_two_devices_is_refused(fixture, "MOST_RECENT").await;
}

async fn one_of_two_devices_is_refused<F: Fixture>(fixture: &F, strategy: &str) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let ((older, _), (newer, _)) = two_counted_devices(&heartbeats, &clock, strategy).await;
    let (refused, kept) = if strategy == "MOST_RECENT" {
        (newer, older)
    } else {
        (older, newer)
    };
    let over_limit = RejectReason::OverLimit {
        position: 1,
        limit: 1,
    };
    assert_eq!(reject(&heartbeats, &refused).await, over_limit);
    accept(&heartbeats, &kept, None).await;
}

/// More active sessions than `sessions_edge`: every heartbeat of the user is refused.
pub async fn sessions_edge_refuses_every_session<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 10, 3, 2, "LEAST_RECENT");
    for _ in 0..2 {
        accept(&heartbeats, &seal(&heartbeats, &data), None).await;
    }
    // At most `sessions_edge` sessions: the check counts the one a heartbeat would start.
    let reason = reject(&heartbeats, &seal(&heartbeats, &data)).await;
    assert_eq!(reason, RejectReason::SessionsEdge { active: 3, edge: 2 });
    assert_eq!(active_count(&heartbeats, 13).await, 2);
}

/// A backend token presented again is the same playback (SPEC §3.2): re-sending it every
/// cycle restarts that playback, counted at once, while the user's playbacks started
/// again less than twice in the last three cycles, and is refused as `replayed`
/// otherwise. Four devices, each re-sending its own backend token (`session_limit` 1,
/// threshold 3), keep at most four sessions and one each; after the first round, at most
/// two 200s fall in any three rounds, and no uncounted stream plays again. The same token
/// sent by many devices at once through several clients is one session.
pub async fn a_backend_token_presented_again_continues_its_session<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 1, 3, 100, "LEAST_RECENT");
    let tokens: Vec<String> = (0..4).map(|_| seal(&heartbeats, &data)).collect();
    let mut ids = vec![String::new(); tokens.len()];
    let mut answered = Vec::new();
    for round in 1..=8 {
        let mut in_round = 0;
        for (device, token) in tokens.iter().enumerate() {
            match heartbeats.heartbeat(token, None).await.unwrap() {
                HeartbeatOutcome::Accepted { accepted: a, .. } => {
                    if round == 1 {
                        ids[device] = a.session_id.clone();
                    } else {
                        in_round += 1;
                        assert_eq!(a.session_id, ids[device], "round {round}: another session");
                        assert_eq!(a.new_session, Some(NewSessionCause::Restarted));
                        let hits = hit_counter_of(&heartbeats, &a.session_id).await;
                        assert!(hits >= 3, "round {round}: an uncounted stream");
                    }
                }
                HeartbeatOutcome::Rejected(refused) => {
                    // Too soon after two starts again, or ranked after a device restarted
                    // at the same instant.
                    assert!(
                        matches!(
                            refused.reason,
                            RejectReason::Replayed | RejectReason::OverLimit { .. }
                        ),
                        "round {round}: {:?}",
                        refused.reason
                    );
                }
                other => panic!("expected accepted or rejected, got {other:?}"),
            }
        }
        if round > 1 {
            answered.push(in_round);
        }
        let active = heartbeats.active_sessions(&Id::Int(13)).await.unwrap();
        assert!(
            active.len() <= 4,
            "round {round}: {} sessions",
            active.len()
        );
        clock.advance(Duration::from_secs(30));
    }
    for three in answered.windows(3) {
        assert!(three.iter().sum::<usize>() <= 2, "{answered:?}");
    }
    assert!(answered.iter().sum::<usize>() > 0, "{answered:?}");

    // One token, many devices at once, three clients: one session, every beat counted.
    let mut services = Vec::new();
    for _ in 0..3 {
        services.push(Arc::new(service(fixture.sessions().await, &clock)));
    }
    // (The first use, then two retries of a lost answer: a third within three cycles is
    // refused as replayed.)
    let token = seal(&services[0], &backend_data(14, 1, 0, 100, "MOST_RECENT"));
    let admitted = heartbeat_all(&services, vec![token; 12]).await;
    assert_eq!(admitted.len(), 3);
    let sessions = services[0].active_sessions(&Id::Int(14)).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].record.hit_counter, 3);
}

/// A refused token sent again and again within a cycle (a replay, a retry loop) is
/// stored as one refusal; the next cycle's is another; many refused sessions of one user
/// are stored a bounded number of times per cycle (SPEC §4).
pub async fn a_refused_token_is_recorded_once_per_cycle<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 10, 1, 1, "LEAST_RECENT");
    accept(&heartbeats, &seal(&heartbeats, &data), None).await;
    let refused = seal(&heartbeats, &data);
    for _ in 0..50 {
        reject(&heartbeats, &refused).await;
        clock.advance(Duration::from_millis(100));
    }
    let refusals = |feed: Vec<(IndexKey, FeedEvent)>| {
        feed.into_iter()
            .filter(|(_, event)| matches!(event, FeedEvent::Refused(_)))
            .count()
    };
    clock.advance(Duration::from_millis(
        crate::sessions::analytics::SETTLE_MILLIS as u64 + 1,
    ));
    let feed = heartbeats.feed(&IndexKey::start(), 1000).await.unwrap();
    assert_eq!(refusals(feed), 1, "one refusal per session per cycle");
    clock.advance(Duration::from_secs(25));
    reject(&heartbeats, &refused).await;
    clock.advance(Duration::from_millis(
        crate::sessions::analytics::SETTLE_MILLIS as u64 + 1,
    ));
    let feed = heartbeats.feed(&IndexKey::start(), 1000).await.unwrap();
    assert_eq!(refusals(feed), 2, "the next cycle's refusal is another");
    // Thirty refused sessions of one user in one cycle: eight stored (SPEC §4).
    let other = backend_data(14, 10, 1, 1, "LEAST_RECENT");
    accept(&heartbeats, &seal(&heartbeats, &other), None).await;
    for _ in 0..30 {
        reject(&heartbeats, &seal(&heartbeats, &other)).await;
    }
    clock.advance(Duration::from_millis(
        crate::sessions::analytics::SETTLE_MILLIS as u64 + 1,
    ));
    let feed = heartbeats.feed(&IndexKey::start(), 1000).await.unwrap();
    assert_eq!(refusals(feed), 2 + 8, "bounded per user");
}

/// One expiry rule (SPEC §3.6): a record of the Node.js server (no `expires_at`) is active
/// in the admin list and the history alike for an hour after its last heartbeat, and
/// expired in both afterwards.
pub async fn a_node_record_expires_alike_everywhere<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let store = fixture.sessions().await;
    let heartbeats = service(store.clone(), &clock);
    let user = Id::Int(13);
    let node_record = SessionRecord {
        expires_at: None,
        ..record(start(), 3)
    };
    let empty = store.load(&user).await.unwrap();
    let mut write = upsert(&empty.sessions, "node-session", node_record);
    write.keep_millis = 86_400_000;
    assert_eq!(
        commit(&store, &user, &empty.version, &write).await,
        Commit::Applied
    );
    for (after_minutes, active) in [(30, true), (61, false), (120, false)] {
        clock.set(start().add_millis(after_minutes * 60_000));
        let listed = heartbeats.active_sessions(&user).await.unwrap();
        let history = heartbeats.history(&user, 10).await.unwrap();
        assert_eq!(
            listed.len(),
            usize::from(active),
            "{after_minutes} min: the list"
        );
        assert_eq!(history.len(), 1);
        assert_eq!(
            history[0].ended_by.is_none(),
            active,
            "{after_minutes} min: the history"
        );
    }
}

/// A refused heartbeat changes nothing stored.
pub async fn rejected_heartbeat_writes_nothing<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let store = fixture.sessions().await;
    let heartbeats = service(store.clone(), &clock);
    let ((older, _), _) = two_counted_devices(&heartbeats, &clock, "LEAST_RECENT").await;
    let before = store.load(&Id::Int(13)).await.unwrap().sessions;
    reject(&heartbeats, &older).await;
    assert!(heartbeats.heartbeat(&older, Some(99.0)).await.is_ok());
    assert_eq!(store.load(&Id::Int(13)).await.unwrap().sessions, before);
    assert_eq!(
        heartbeats
            .progress(&Id::Int(13), &Id::Int(14))
            .await
            .unwrap(),
        None
    );
}

/// Progress is recorded per (user, asset) and is the last reported value.
pub async fn progress_is_recorded_per_asset<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let (token, accepted) = accept(
        &heartbeats,
        &seal(&heartbeats, &backend_data(13, 1, 3, 10, "LEAST_RECENT")),
        Some(12.5),
    )
    .await;
    clock.advance(Duration::from_secs(30));
    accept(&heartbeats, &token, Some(42.0)).await;
    let progress = heartbeats
        .progress(&Id::Int(13), &Id::Int(14))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(progress.progress, 42.0);
    assert_eq!(progress.session_id, accepted.session_id);
    assert_eq!(progress.updated_at, clock.now());
    assert_eq!(
        heartbeats
            .progress(&Id::Int(13), &Id::Int(15))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        heartbeats
            .progress(&Id::Int(12), &Id::Int(14))
            .await
            .unwrap(),
        None
    );
    assert!(heartbeats.heartbeat(&token, Some(-1.0)).await.is_err());
    assert!(heartbeats.heartbeat(&token, Some(f64::NAN)).await.is_err());
}

/// The progress of every asset a user played reads as its last report, however many
/// assets came after it (stores may keep the latest ones together and move older ones
/// out, as sled does).
pub async fn progress_of_many_assets_is_each_the_last_report<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let play = |asset: &Id| {
        let data = HeartbeatData::from_json(json!({
            "user_id": 13, "asset_id": asset.to_json(), "heartbeat_cycle": 30,
            "cycle_upper_tolerance": 10, "timestamp": start().to_string(), "session_limit": 50,
            "sessions_edge": 60,
        }));
        seal(&heartbeats, &data.unwrap())
    };
    let assets: Vec<Id> = (0..12)
        .map(|n| {
            if n % 2 == 0 {
                Id::Int(n)
            } else {
                Id::Str(format!("episode {n}"))
            }
        })
        .collect();
    let mut first_token = None;
    for (n, asset) in assets.iter().enumerate() {
        clock.advance(Duration::from_secs(1));
        let (token, _) = accept(&heartbeats, &play(asset), Some(n as f64 * 10.0)).await;
        first_token.get_or_insert(token);
    }
    // The first asset's session reports again, after eleven other assets.
    clock.advance(Duration::from_secs(20));
    accept(&heartbeats, &first_token.unwrap(), Some(7.0)).await;
    for (n, asset) in assets.iter().enumerate() {
        let expected = if n == 0 { 7.0 } else { n as f64 * 10.0 };
        let progress = heartbeats.progress(&Id::Int(13), asset).await.unwrap();
        assert_eq!(
            progress.map(|p| p.progress),
            Some(expected),
            "asset {asset}"
        );
    }
}

/// A user id is its text, as in the Node server's keys: `13` and `"13"` are one user, and
/// so are asset `14` and `"14"`.
pub async fn numeric_and_text_ids_are_one_user<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 1, 3, 10, "LEAST_RECENT");
    accept(&heartbeats, &seal(&heartbeats, &data), Some(3.0)).await;
    let text = Id::Str("13".to_owned());
    assert_eq!(heartbeats.active_sessions(&text).await.unwrap().len(), 1);
    let progress = heartbeats
        .progress(&text, &Id::Str("14".to_owned()))
        .await
        .unwrap();
    assert_eq!(progress.map(|p| p.progress), Some(3.0));
}

/// Stop frees the slot at once and records a stopped history entry; a stale token stops
/// nothing.
pub async fn stop_frees_the_slot_at_once<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 1, 1, 10, "MOST_RECENT");
    let (first_token, first) = counted_session(&heartbeats, &data).await;
    clock.advance(Duration::from_secs(31));
    let (current, _) = accept(&heartbeats, &first_token, None).await;
    assert!(
        !heartbeats.stop(&first_token, None).await.unwrap(),
        "a stale token stops nothing"
    );
    clock.advance(Duration::from_secs(3));
    let (second, _) = counted_session(&heartbeats, &data).await;
    clock.advance(Duration::from_secs(28));
    reject(&heartbeats, &second).await;

    assert!(heartbeats.stop(&current, Some(600.0)).await.unwrap());
    accept(&heartbeats, &second, None).await;
    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    let stopped = history
        .iter()
        .find(|entry| entry.session_id == first)
        .unwrap();
    assert_eq!(stopped.ended_by, Some(EndReason::Stopped));
    assert_eq!(stopped.ended_at, Some(clock.now()));
    assert_eq!(stopped.progress, Some(600.0));
    assert_eq!(
        heartbeats
            .progress(&Id::Int(13), &Id::Int(14))
            .await
            .unwrap()
            .unwrap()
            .progress,
        600.0
    );
}

/// Eviction removes one session into the history.
pub async fn evict_removes_one_session<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 5, 1, 10, "LEAST_RECENT");
    let (_, keep) = counted_session(&heartbeats, &data).await;
    let (_, evict) = counted_session(&heartbeats, &data).await;
    assert!(heartbeats.evict(&Id::Int(13), &evict).await.unwrap());
    assert!(!heartbeats.evict(&Id::Int(13), &evict).await.unwrap());
    assert!(!heartbeats.evict(&Id::Int(99), "nobody").await.unwrap());
    let sessions = heartbeats.active_sessions(&Id::Int(13)).await.unwrap();
    assert_eq!(
        sessions
            .iter()
            .map(|s| s.session_id.as_str())
            .collect::<Vec<_>>(),
        [keep.as_str()]
    );
    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    let seen: Vec<(&str, Option<EndReason>)> = history
        .iter()
        .map(|entry| (entry.session_id.as_str(), entry.ended_by))
        .collect();
    assert_eq!(
        seen,
        [
            (keep.as_str(), None),
            (evict.as_str(), Some(EndReason::Evicted))
        ]
    );
}

/// A session that has ended by itself (past its deadline, with no write since) is not
/// evicted: the admin list, the history and the export already have it as `expired`, and
/// an eviction would rewrite a finished play that the export may have given out (SPEC
/// §3.6, §3.7, §3.9).
pub async fn a_session_that_ended_by_itself_is_not_evicted<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let (_, session) = counted_session(&heartbeats, &cycled_data(13, 1, 1)).await;
    // It ends at t+2 s; at t+3 s the export has it.
    clock.advance(Duration::from_secs(3));
    let ended = start().add_millis(2_000);
    assert_eq!(
        exported(&heartbeats, IndexKey::start(), &session).await,
        [ended]
    );
    assert!(!heartbeats.evict(&Id::Int(13), &session).await.unwrap());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        exported(&heartbeats, IndexKey::start(), &session).await,
        [ended]
    );
    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].ended_at, history[0].ended_by),
        (Some(ended), Some(EndReason::Expired))
    );
}

/// A user's only session times out and the user never comes back: the history shows it
/// as `expired`, ended at its deadline, without any later write (SPEC §3.6).
pub async fn a_session_that_times_out_is_in_the_history_without_a_return<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 1, 1, 10, "MOST_RECENT");
    let (token, id) = counted_session(&heartbeats, &data).await;
    clock.advance(Duration::from_secs(30));
    let (_, again) = accept(&heartbeats, &token, Some(95.0)).await;
    assert_eq!(again.session_id, id);
    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    assert_eq!(
        (history.len(), history[0].ended_by, history[0].hit_counter),
        (1, None, 2),
        "an active session is in the history, not ended yet"
    );
    // The player crashes: no heartbeat, no stop, the user never returns.
    clock.advance(Duration::from_secs(3600));
    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    assert_eq!(history.len(), 1);
    let entry = &history[0];
    assert_eq!(entry.session_id, id);
    assert_eq!(entry.ended_by, Some(EndReason::Expired));
    let last = start().add_millis(30_000);
    assert_eq!(entry.last_heartbeat, last);
    assert_eq!(entry.ended_at, Some(last.add_millis(40_000)));
    assert_eq!((entry.hit_counter, entry.progress), (2, Some(95.0)));
    assert!(
        heartbeats
            .active_sessions(&Id::Int(13))
            .await
            .unwrap()
            .is_empty()
    );
}

/// An evicted session's next heartbeat is refused as evicted instead of starting a new
/// session; a fresh backend token (the user pressed play again) plays (SPEC §3.7).
pub async fn an_evicted_device_is_refused_and_a_fresh_token_plays<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let data = backend_data(13, 1, 1, 10, "LEAST_RECENT");
    let (token, id) = counted_session(&heartbeats, &data).await;
    clock.advance(Duration::from_secs(10));
    assert!(heartbeats.evict(&Id::Int(13), &id).await.unwrap());
    // On time, late, and much later (a device that was offline): refused every time.
    for wait in [30, 60, 3600] {
        clock.advance(Duration::from_secs(wait));
        assert_eq!(
            reject(&heartbeats, &token).await,
            RejectReason::Ended {
                by: EndReason::Evicted
            }
        );
    }
    assert!(
        heartbeats
            .active_sessions(&Id::Int(13))
            .await
            .unwrap()
            .is_empty()
    );
    let mut fresh_data = data.clone();
    fresh_data.timestamp = Some(clock.now());
    let (_, fresh) = counted_session(&heartbeats, &fresh_data).await;
    assert_ne!(fresh.as_str(), id);
    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    let evicted: Vec<_> = history
        .iter()
        .filter(|entry| entry.ended_by == Some(EndReason::Evicted))
        .collect();
    assert_eq!(evicted.len(), 1, "{history:?}");
    assert_eq!(evicted[0].ended_at, Some(start().add_millis(10_000)));
    // A day later the record is forgotten (it is in the history already); the token is
    // older than the start window by then, and cannot resume anything.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(reject(&heartbeats, &token).await, RejectReason::Expired);
}

/// History and progress older than the retention are gone, by the service's clock.
pub async fn history_and_progress_are_kept_as_long_as_the_retention<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let config = HeartbeatConfig {
        retention: Retention {
            retention_secs: 86_400,
            ..Retention::default()
        },
        ..HeartbeatConfig::default()
    };
    let heartbeats = service(fixture.sessions().await, &clock).with_config(config);
    let data = backend_data(13, 2, 1, 10, "LEAST_RECENT");
    let (stopped, _) = counted_session(&heartbeats, &data).await;
    let (_silent, _) = counted_session(&heartbeats, &data).await;
    assert!(heartbeats.stop(&stopped, Some(12.0)).await.unwrap());
    clock.advance(Duration::from_secs(3600));
    assert_eq!(heartbeats.history(&Id::Int(13), 10).await.unwrap().len(), 2);
    assert!(
        heartbeats
            .progress(&Id::Int(13), &Id::Int(14))
            .await
            .unwrap()
            .is_some()
    );
    clock.advance(Duration::from_secs(86_400));
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

/// History keeps the newest `history_cap` entries, newest first.
pub async fn history_is_capped_newest_first<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let config = HeartbeatConfig {
        retention: Retention {
            history_cap: 3,
            ..Retention::default()
        },
        ..HeartbeatConfig::default()
    };
    let heartbeats = service(fixture.sessions().await, &clock).with_config(config);
    let data = backend_data(13, 5, 1, 10, "LEAST_RECENT");
    let mut stopped = Vec::new();
    for _ in 0..5 {
        let (token, id) = counted_session(&heartbeats, &data).await;
        clock.advance(Duration::from_secs(1));
        assert!(heartbeats.stop(&token, None).await.unwrap());
        stopped.push(id);
    }
    let history = heartbeats.history(&Id::Int(13), 100).await.unwrap();
    let ids: Vec<&str> = history.iter().map(|h| h.session_id.as_str()).collect();
    let newest: Vec<&str> = stopped.iter().rev().take(3).map(String::as_str).collect();
    assert_eq!(ids, newest);
    assert_eq!(heartbeats.history(&Id::Int(13), 1).await.unwrap().len(), 1);
}

/// Many devices of one user heartbeat at once through several independent clients; the
/// store must serialize them. Backend tokens: exactly `sessions_edge` are admitted (user
/// 13), and none is lost (user 14). A cycle later, exactly `session_limit` of the counted
/// sessions keep playing, and every accepted heartbeat is counted once.
pub async fn concurrent_devices_never_exceed_the_limit<F: Fixture>(fixture: &F) {
    const DEVICES: usize = 24;
    const EDGE: u32 = 5;
    const LIMIT: u32 = 2;
    let clock = ManualClock::new(start());
    let mut services = Vec::new();
    for _ in 0..3 {
        services.push(Arc::new(service(fixture.sessions().await, &clock)));
    }

    let edge_data = backend_data(13, LIMIT, 0, EDGE, "MOST_RECENT");
    let edge_tokens = (0..DEVICES)
        .map(|_| seal(&services[0], &edge_data))
        .collect();
    let admitted = heartbeat_all(&services, edge_tokens).await;
    assert_eq!(
        admitted.len(),
        EDGE as usize,
        "sessions_edge devices admitted"
    );
    assert_eq!(
        services[0]
            .active_sessions(&Id::Int(13))
            .await
            .unwrap()
            .len(),
        EDGE as usize
    );

    let limit_data = backend_data(14, LIMIT, 0, 100, "MOST_RECENT");
    let limit_tokens = (0..DEVICES)
        .map(|_| seal(&services[0], &limit_data))
        .collect();
    let admitted = heartbeat_all(&services, limit_tokens).await;
    assert_eq!(admitted.len(), DEVICES);
    assert_eq!(
        services[1]
            .active_sessions(&Id::Int(14))
            .await
            .unwrap()
            .len(),
        DEVICES,
        "no session lost"
    );

    clock.advance(Duration::from_secs(30));
    let kept = heartbeat_all(&services, admitted).await;
    assert_eq!(
        kept.len(),
        LIMIT as usize,
        "counted sessions beyond the limit were accepted"
    );
    let sessions = services[2].active_sessions(&Id::Int(14)).await.unwrap();
    let hits: u64 = sessions.iter().map(|s| s.record.hit_counter).sum();
    assert_eq!(
        hits,
        (DEVICES + LIMIT as usize) as u64,
        "no heartbeat lost or counted twice"
    );
}

/// Sends every token at once, spread over `services`; returns the rotated tokens of the
/// accepted ones.
async fn heartbeat_all<S: SessionStore>(
    services: &[Arc<Heartbeats<S, ManualClock>>],
    tokens: Vec<String>,
) -> Vec<String> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (device, token) in tokens.into_iter().enumerate() {
        let heartbeats = services[device % services.len()].clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            match heartbeats.heartbeat(&token, None).await.unwrap() {
                HeartbeatOutcome::Accepted { token, .. } => {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    Some(token)
                }
                HeartbeatOutcome::Rejected(_) => None,
                other => panic!("expected accepted or rejected, got {other:?}"),
            }
        }));
    }
    let mut rotated = Vec::new();
    for task in tasks {
        rotated.extend(task.await.unwrap());
    }
    assert_eq!(rotated.len(), accepted.load(Ordering::SeqCst));
    rotated
}

/// Reads the whole export after `after` and before `until`, `page` sessions at a time,
/// following each page's cursor.
pub async fn export_all<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    after: IndexKey,
    until: Option<Timestamp>,
    page: usize,
) -> Vec<FinishedSession> {
    let mut after = after;
    let mut sessions = Vec::new();
    for _ in 0..100 {
        let found = heartbeats
            .finished_sessions(&after, until, page)
            .await
            .unwrap();
        sessions.extend(found.sessions);
        if found.complete {
            return sessions;
        }
        // Through the opaque cursor, as a client would.
        after = IndexKey::from_cursor(&found.next.cursor()).unwrap();
    }
    panic!("the export did not end within 100 pages");
}

/// Data of `user` (limit 10, counted from the first heartbeat) whose token has its own
/// cycle and upper tolerance, in seconds.
fn cycled_data(user: i64, cycle: u32, tolerance: u32) -> HeartbeatData {
    HeartbeatData::from_json(json!({
        "user_id": user, "asset_id": 14, "heartbeat_cycle": cycle,
        "cycle_upper_tolerance": tolerance, "timestamp": start().to_string(),
        "session_limit": 10, "checking_threshold": 1, "sessions_edge": 10,
    }))
    .unwrap()
}

/// The sessions the export holds for `session_id`.
async fn exported<S: SessionStore>(
    heartbeats: &Heartbeats<S, ManualClock>,
    after: IndexKey,
    session_id: &str,
) -> Vec<Timestamp> {
    export_all(heartbeats, after, None, 10)
        .await
        .into_iter()
        .filter(|session| session.record.session_id == session_id)
        .filter_map(|session| session.record.ended_at)
        .collect()
}

/// A session's end, once the export gave it out, stays where it was, when a heartbeat of
/// another of the user's sessions, whose token has another cycle, expires it by that
/// token's cycle (the Node.js server's rule, SPEC §3.2): a longer cycle does not move it on
/// (the export would give it out twice), and a shorter one does not move it back behind a
/// cursor (the export would skip it) (SPEC §3.6, §3.9).
pub async fn an_exported_end_stays_where_it_was<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    // t+0: `short` plays on a 1 s cycle (its own deadline t+2 s); t+0.5 s: `long` of the
    // same user on a 3 s cycle.
    let (_, short) = counted_session(&heartbeats, &cycled_data(13, 1, 1)).await;
    clock.advance(Duration::from_millis(500));
    let (long_token, _) = counted_session(&heartbeats, &cycled_data(13, 3, 1)).await;
    // t+3 s: the export gives out `short`, expired at t+2 s.
    clock.advance(Duration::from_millis(2_500));
    let deadline = start().add_millis(2_000);
    assert_eq!(
        exported(&heartbeats, IndexKey::start(), &short).await,
        [deadline]
    );
    // t+3.5 s and t+6.5 s: `long` heartbeats. By its cycle `short` played until t+4 s, so
    // the second one expires it: still at its own deadline, once.
    clock.advance(Duration::from_millis(500));
    let (long_token, _) = accept(&heartbeats, &long_token, None).await;
    clock.advance(Duration::from_secs(3));
    accept(&heartbeats, &long_token, None).await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        exported(&heartbeats, IndexKey::start(), &short).await,
        [deadline]
    );
    let history = heartbeats.history(&Id::Int(13), 10).await.unwrap();
    let ended = history
        .iter()
        .find(|entry| entry.session_id == short)
        .unwrap();
    assert_eq!(ended.ended_at, Some(deadline), "the history says the same");

    // User 14: `slow` plays on a 30 s cycle; the export is read to its end at t+12.5 s.
    let (_, slow) = counted_session(&heartbeats, &cycled_data(14, 30, 10)).await;
    clock.advance(Duration::from_secs(5));
    let read = heartbeats
        .finished_sessions(&IndexKey::start(), None, 100)
        .await
        .unwrap();
    assert!(read.complete);
    // t+13.5 s: a token on a 1 s cycle expires `slow` (its deadline by that cycle, t+9.5 s,
    // is behind the cursor): it ends now, and the export continued from the cursor has it.
    clock.advance(Duration::from_secs(1));
    counted_session(&heartbeats, &cycled_data(14, 1, 1)).await;
    let now = clock.now();
    clock.advance(Duration::from_secs(1));
    assert_eq!(exported(&heartbeats, read.next, &slow).await, [now]);
}

/// Two users' sessions, ended four ways (stopped, evicted, expired with the user never
/// returning, expired and noticed when the user came back), come out of the export once
/// each, in the order they ended, with `since` / `until` / cursor paging; active sessions
/// do not; the active count and the refusal feed see the rest (SPEC §3.9).
pub async fn finished_sessions_are_exported_once_in_order<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    let (alice, bob) = (Id::Int(13), Id::Str("bob".into()));
    let data = |user: &Id| {
        let mut data = backend_data(13, 1, 1, 10, "MOST_RECENT");
        data.user_id = user.clone();
        data
    };
    // t+0: alice plays s1 and bob plays s2; t+5 s: alice stops s1.
    let (alice_token, s1) = counted_session(&heartbeats, &data(&alice)).await;
    let (bob_token, s2) = counted_session(&heartbeats, &data(&bob)).await;
    clock.advance(Duration::from_secs(5));
    assert!(heartbeats.stop(&alice_token, Some(5.0)).await.unwrap());
    // t+10 s: an administrator evicts s2; bob's device is refused.
    clock.advance(Duration::from_secs(5));
    assert!(heartbeats.evict(&bob, &s2).await.unwrap());
    reject(&heartbeats, &bob_token).await;
    // t+20 s: alice plays s3 and crashes (expires at t+60 s, alice never returns); bob
    // plays s4, which also crashes (expires at t+60 s).
    clock.advance(Duration::from_secs(10));
    let (_, s3) = counted_session(&heartbeats, &data(&alice)).await;
    let (_, s4) = counted_session(&heartbeats, &data(&bob)).await;
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 2);
    // t+120 s: bob comes back (s4's expiry is noticed and written) and plays s5, active.
    clock.advance(Duration::from_secs(100));
    let (_, s5) = counted_session(&heartbeats, &data(&bob)).await;
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 1);
    clock.advance(Duration::from_secs(1));

    let all = export_all(&heartbeats, IndexKey::start(), None, 2).await;
    let seen: Vec<(&str, String, Option<EndReason>)> = all
        .iter()
        .map(|s| {
            (
                s.record.session_id.as_str(),
                s.user_id.to_string(),
                s.record.ended_by,
            )
        })
        .collect();
    let mut expired = vec![
        (s3.as_str(), "13".to_owned(), Some(EndReason::Expired)),
        (s4.as_str(), "bob".to_owned(), Some(EndReason::Expired)),
    ];
    expired.sort_by_key(|(id, user, _)| (id.to_string(), user.clone()));
    let mut tail = seen[2..].to_vec();
    tail.sort_by_key(|(id, user, _)| (id.to_string(), user.clone()));
    assert_eq!(
        seen[..2],
        [
            (s1.as_str(), "13".to_owned(), Some(EndReason::Stopped)),
            (s2.as_str(), "bob".to_owned(), Some(EndReason::Evicted)),
        ],
        "in the order they ended: {seen:?}"
    );
    assert_eq!(tail, expired, "each once: {seen:?}");
    assert!(!seen.iter().any(|(id, _, _)| *id == s5), "s5 is active");
    assert_eq!(all[0].user_id, alice, "numeric user ids stay numbers");
    assert_eq!(all[0].record.progress, Some(5.0));
    assert_eq!(all[2].record.ended_at, Some(start().add_millis(60_000)));
    let ended: Vec<Timestamp> = all.iter().filter_map(|s| s.record.ended_at).collect();
    assert!(ended.is_sorted(), "{ended:?}");

    // `since` (inclusive) and `until` (exclusive), and the same paged one at a time.
    let middle = export_all(
        &heartbeats,
        IndexKey::floor(start().add_millis(10_000)),
        Some(start().add_millis(60_000)),
        1,
    )
    .await;
    assert_eq!(middle.len(), 1);
    assert_eq!(middle[0].record.session_id, s2);
    assert_eq!(
        export_all(&heartbeats, IndexKey::start(), None, 1).await,
        all
    );

    // The feed: the same sessions and bob's refusal, in order, resumable after any event.
    let feed = heartbeats.feed(&IndexKey::start(), 100).await.unwrap();
    let kinds: Vec<String> = feed
        .iter()
        .map(|(_, event)| match event {
            FeedEvent::Finished(session) => session.record.session_id.clone(),
            FeedEvent::Refused(refusal) => {
                format!("refused {} {}", refusal.user_id, refusal.reason)
            }
        })
        .collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert_eq!(
        kinds[..3],
        [s1.clone(), s2.clone(), "refused bob evicted".to_owned()]
    );
    let resumed = heartbeats.feed(&feed[2].0, 100).await.unwrap();
    assert_eq!(resumed, feed[3..]);
    assert_eq!(
        heartbeats.feed_start(Some(&feed[2].0.cursor())),
        feed[2].0,
        "Last-Event-ID resumes after that event"
    );
    assert_eq!(
        heartbeats.feed_start(Some("not an id")),
        IndexKey::start(),
        "an unknown id gets everything kept"
    );
}

/// A session that expires, is resumed with its latest token, and expires again is two
/// plays: the history has both, and the export gives out both, each once, at the end the
/// history gives it, whether the export was read between them or only at the end (SPEC
/// §3.6, §3.9).
pub async fn a_resumed_session_is_exported_once_per_play<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let heartbeats = service(fixture.sessions().await, &clock);
    // t+0 and t+0.5 s: `s` plays on a 1 s cycle (tolerance 1 s, so it ends at t+2.5 s).
    let (token, s) = counted_session(&heartbeats, &cycled_data(13, 1, 1)).await;
    clock.advance(Duration::from_millis(500));
    let (token, _) = accept(&heartbeats, &token, None).await;
    // t+4 s: the export read to its end has the first play.
    clock.advance(Duration::from_millis(3_500));
    let first = exported(&heartbeats, IndexKey::start(), &s).await;
    assert_eq!(first, [start().add_millis(2_500)]);
    let read = heartbeats
        .finished_sessions(&IndexKey::start(), None, 100)
        .await
        .unwrap();
    // The latest token resumes it (t+4 s, ends at t+6 s), and it expires again.
    let (_, resumed) = accept(&heartbeats, &token, None).await;
    assert_eq!(resumed.session_id, s);
    clock.advance(Duration::from_secs(10));
    let history: Vec<Option<Timestamp>> = heartbeats
        .history(&Id::Int(13), 10)
        .await
        .unwrap()
        .iter()
        .filter(|entry| entry.session_id == s)
        .map(|entry| entry.ended_at)
        .collect();
    let second = start().add_millis(6_000);
    assert_eq!(history, [Some(second), Some(first[0])]);
    assert_eq!(
        exported(&heartbeats, IndexKey::start(), &s).await,
        [first[0], second],
        "read at the end, the export has both plays"
    );
    assert_eq!(
        exported(&heartbeats, read.next, &s).await,
        [second],
        "continued from the cursor, it has the second"
    );

    // User 14's page reload re-sends its backend token: the play so far ends (taken
    // over by its own restart) and the next one, under the same id, is stopped later.
    let backend = seal(&heartbeats, &cycled_data(14, 30, 10));
    let (token, accepted) = accept(&heartbeats, &backend, None).await;
    clock.advance(Duration::from_secs(10));
    accept(&heartbeats, &token, None).await;
    clock.advance(Duration::from_secs(5));
    let restarted_at = clock.now();
    let (token, restarted) = accept(&heartbeats, &backend, None).await;
    assert_eq!(restarted.new_session, Some(NewSessionCause::Restarted));
    assert_eq!(restarted.session_id, accepted.session_id);
    clock.advance(Duration::from_secs(5));
    let stopped_at = clock.now();
    assert!(heartbeats.stop(&token, None).await.unwrap());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        exported(&heartbeats, IndexKey::start(), &accepted.session_id).await,
        [restarted_at, stopped_at]
    );
}
