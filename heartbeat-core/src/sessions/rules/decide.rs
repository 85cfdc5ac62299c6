//! A heartbeat's verdict and write (SPEC §3.2) and "watch here instead" (SPEC §3.7).

use super::lifecycle::{keep_millis, progress_entry};
use super::limits::check_session_limit;
use super::playback::{Presented, presented};
use super::*;
use crate::sessions::analytics::RefusalEntry;
use crate::sessions::{AnsweredToken, EndReason, PlayRecord, UserSessions};

/// The hit counter of a playback's first session: 1, or the token's `checking_threshold`
/// (counted at once) when the token was issued more than a session life ago. Such a token
/// is being presented late (it was kept, or replayed): it must not buy a stream the
/// threshold leaves uncounted (SPEC §3.2).
fn first_hit_counter(now: Timestamp, token: &HeartbeatData) -> u64 {
    let stale = token
        .timestamp
        .is_some_and(|issued| now.millis_since(issued) > token.session_life_millis());
    if stale {
        u64::from(token.threshold()).max(1)
    } else {
        1
    }
}

/// Decides one heartbeat (SPEC §3.2): expire, place the token in its playback
/// ([`PlaybackPolicy`]), check the limits, and build the accepted record and the rotated
/// token data.
///
/// `playback_id` is the id of the playback a backend token (one without `session_id`)
/// starts: [`TokenCodec::token_session_id`](crate::TokenCodec::token_session_id), the same
/// for every presentation of that token. A session token's playback is its `session_id`.
/// `progress` is what the player reported with the heartbeat.
///
/// ```
/// use heartbeat_core::sessions::rules::{decide, PlaybackPolicy, Verdict};
/// use heartbeat_core::{HeartbeatData, Timestamp, UserSessions};
///
/// let token: HeartbeatData = serde_json::from_str(r#"{"user_id":13,"asset_id":14,
///     "heartbeat_cycle":3,"cycle_upper_tolerance":1,"timestamp":"2026-01-01T00:00:00.000Z",
///     "session_limit":1,"checking_threshold":0,"sessions_edge":10}"#).unwrap();
/// let now: Timestamp = "2026-01-01T00:00:00.500Z".parse().unwrap();
///
/// let policy = PlaybackPolicy::default();
/// let decision = decide(&policy, now, &token, &UserSessions::default(), "s-1", Some(42.0));
/// let Verdict::Accept(accepted) = decision.verdict else { panic!() };
/// assert_eq!(accepted.session_id, "s-1");
/// assert_eq!(accepted.token_data.timestamp, Some(now));
/// assert_eq!(decision.write.upserts[0].1.hit_counter, 1);
/// ```
pub fn decide(
    policy: &PlaybackPolicy,
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
    playback_id: &str,
    progress: Option<f64>,
) -> Decision {
    let (mut kept, mut write) = expire(policy, now, token, stored);
    let session_id = token.session_id.as_deref().unwrap_or(playback_id);
    let placed = presented(policy, now, token, &kept, session_id).and_then(|placed| {
        let answered = answer_time(now, token, placed.stored());
        let mut record = accepted_record(now, answered, token, placed, progress);
        // Report-only limits (SPEC §3.8): the refusal they would make is reported, and
        // the heartbeat accepted as if they allowed it.
        let would_refuse = match check_placed(policy, &kept, token, session_id, placed, &record) {
            Ok(()) => None,
            Err(reason) if policy.enforces(token, &reason) => return Err(reason),
            Err(reason) => Some(reason),
        };
        record.would_refuse = would_refuse.as_ref().map(RejectReason::told);
        Ok((
            placed.cause(),
            record,
            placed_replaces(placed),
            would_refuse,
        ))
    });
    let (cause, record, replaces, would_refuse) = match placed {
        Ok(placed) => placed,
        Err(reason) => {
            // The sessions that keep playing, the refused one never among them (a start
            // that is refused may replace a session that was playing).
            let mut playing = playing(&kept, token);
            playing.retain(|session| session.session_id != session_id);
            let playing = Some(playing);
            write.keep_millis = keep_millis(now, &kept, token.session_life_millis());
            write.sessions = kept;
            write.refusal = Some(RefusalEntry::new(
                &token.user_id,
                &reason,
                now,
                session_id.to_owned(),
            ));
            return Decision {
                verdict: Verdict::Reject(Refused { reason, playing }),
                write,
            };
        }
    };
    let session_id = session_id.to_owned();
    let mut token_data = token.clone();
    token_data.session_id = Some(session_id.clone());
    token_data.timestamp = Some(record.timestamp);
    token_data.started_at = record.started_at;

    if let Some(previous) = replaces {
        // A live session started again (restarted, or too early): it ends here.
        write.ended.push(PlayRecord::ended(
            &session_id,
            &previous,
            now,
            EndReason::TakenOver,
        ));
    }
    let replaced = kept.sessions.insert(session_id.clone(), record.clone());
    // Under report-only limits nobody is told to stop: each hears at its own heartbeat.
    let displaced = if policy.enforces_limits(token) {
        displaced_by_write(&kept, replaced, token, &session_id)
    } else {
        Vec::new()
    };
    write.upserts.push((session_id.clone(), record));
    write.progress = progress_entry(token, &session_id, progress, now);
    write.keep_millis = keep_millis(now, &kept, token.session_life_millis());
    write.sessions = kept;
    write.refusal = would_refuse.map(|reason| {
        RefusalEntry::new(&token.user_id, &reason, now, session_id.clone()).enforced(false)
    });
    Decision {
        verdict: Verdict::Accept(Accepted {
            session_id,
            new_session: cause,
            token_data,
            displaced,
            would_refuse,
        }),
        write,
    }
}

/// The live session a start replaces (it goes to the history), if any.
fn placed_replaces(placed: Presented<'_>) -> Option<SessionRecord> {
    match placed {
        Presented::Starts {
            previous: Some(previous),
            ..
        } if previous.is_active() => Some(previous.clone()),
        _ => None,
    }
}

/// The limits for a heartbeat placed as `placed`, whose accepted record would be
/// `record`, in its playback `session_id`.
///
/// A heartbeat that continues its session is checked as the session stands (as the Node
/// server does). A playback's first session is checked against the edges only: its first
/// heartbeat is answered before it counts. Any other start is checked as it would stand
/// after the write: counted at once, ranked newest (SPEC §3.2).
fn check_placed(
    policy: &PlaybackPolicy,
    kept: &UserSessions,
    token: &HeartbeatData,
    session_id: &str,
    placed: Presented<'_>,
    record: &SessionRecord,
) -> Result<(), RejectReason> {
    let adds = match placed {
        Presented::Continues(_) | Presented::Retried(_) => {
            return check_session_limit(kept, token, Some(session_id), false);
        }
        Presented::Starts { previous, .. } => previous.is_none_or(|previous| !previous.is_active()),
    };
    if token.sessions_edge.is_none() && adds {
        let active = kept.sessions.values().filter(|r| r.is_active()).count() + 1;
        let edge = policy.default_sessions_edge;
        if active > edge as usize {
            return Err(RejectReason::SessionsEdge { active, edge });
        }
    }
    if placed.cause() == Some(NewSessionCause::FromBackend) {
        return check_session_limit(kept, token, None, true);
    }
    let mut after = kept.clone();
    after.sessions.insert(session_id.to_owned(), record.clone());
    check_session_limit(&after, token, Some(session_id), false)
}

/// The `timestamp` of the answer to `token` at `now`: now, or a millisecond after the
/// later of the session token it answers and the playback's stored record (`stored`, the
/// latest answer) when that is not earlier (an answer in the same millisecond, or an
/// instance whose clock is behind). A token is known by its timestamp (SPEC §3.2), so an
/// answer must never share the one of the token it answers (that token, presented again,
/// is a retry of a lost answer) nor the one of the answer it replaces (two devices
/// presenting one backend token in the same millisecond: the first one's answer is then
/// spent, not current).
fn answer_time(now: Timestamp, token: &HeartbeatData, stored: Option<&SessionRecord>) -> Timestamp {
    let presented = token.session_id.as_ref().and(token.timestamp);
    let latest = presented.max(stored.map(|record| record.timestamp));
    latest
        .filter(|&latest| latest >= now)
        .map_or(now, |latest| latest.add_millis(1))
}

/// The record an accepted heartbeat placed as `placed` writes.
///
/// A continued session counts one more heartbeat. A playback's first session starts at
/// [`first_hit_counter`]; any other start is counted at once (at least
/// `checking_threshold`, inheriting a higher counter) and ranked newest (`started_at` is
/// now), and marks when the user last started a playback again (`restarted_at`).
fn accepted_record(
    now: Timestamp,
    answered: Timestamp,
    token: &HeartbeatData,
    placed: Presented<'_>,
    progress: Option<f64>,
) -> SessionRecord {
    // A start again (and a lost answer's first retry) is marked on the playback.
    let marked = |record: Option<&SessionRecord>| (Some(now), record.and_then(|r| r.restarted_at));
    let (hit_counter, started_at, (restarted_at, restarted_before), previous, continued) =
        match placed {
            Presented::Continues(record) | Presented::Retried(record) => (
                record.hit_counter.saturating_add(1),
                record.started_at.or(token.started_at).unwrap_or(now),
                // A lost answer's first retry counts as the user's latest start again.
                if matches!(placed, Presented::Retried(_)) {
                    marked(Some(record))
                } else {
                    (record.restarted_at, record.restarted_before)
                },
                record
                    .previous
                    .filter(|previous| previous.answered == record.timestamp),
                Some(record),
            ),
            Presented::Starts {
                cause: NewSessionCause::FromBackend,
                ..
            } => (first_hit_counter(now, token), now, (None, None), None, None),
            Presented::Starts { previous, .. } => {
                let inherited = previous.map_or(1, |record| record.hit_counter.saturating_add(1));
                (
                    inherited.max(u64::from(token.threshold())),
                    now,
                    marked(previous),
                    None,
                    None,
                )
            }
        };
    // The token presented, remembered so that it may come once more within the cycle
    // of its first answer (a lost answer retried): by its timestamp, or as the backend
    // token.
    let presented_key = token.session_id.as_ref().and(token.timestamp);
    let first_answered = previous
        .filter(|previous| previous.token == presented_key)
        .map_or(answered, |previous| previous.first);
    SessionRecord {
        timestamp: answered,
        hit_counter,
        started_at: Some(started_at),
        asset_id: Some(token.asset_id.clone()),
        progress: progress.or_else(|| continued.and_then(|record| record.progress)),
        expires_at: Some(now.add_millis(token.session_life_millis())),
        ended_by: None,
        ended_at: None,
        taken_over_by: None,
        device: token.device.clone(),
        device_family: token.device_family.clone(),
        previous: Some(AnsweredToken {
            token: presented_key,
            answered,
            first: first_answered,
        }),
        restarted_at,
        restarted_before,
        // A heartbeat says the player is there: its stream's mark stays, `gone_at` goes.
        notice_stream: continued.and_then(|record| record.notice_stream.clone()),
        gone_at: None,
        would_refuse: None,
        extra: continued
            .map(|record| record.extra.clone())
            .unwrap_or_default(),
    }
}

/// The sessions the write of `session_id` displaced ([`displaced`]), `after` being the
/// state with it and `replaced` its record before. Nobody is displaced when every counted
/// session keeps playing after the write (the common case): only then is the state before
/// it rebuilt and compared.
fn displaced_by_write(
    after: &UserSessions,
    replaced: Option<SessionRecord>,
    token: &HeartbeatData,
    session_id: &str,
) -> Vec<String> {
    let all_play = if token.family_limits.is_none() && token.asset_limit.is_none() {
        // `session_limit` alone: everyone plays while the counted sessions fit in it.
        let threshold = u64::from(token.threshold());
        let counted = after
            .sessions
            .values()
            .filter(|record| record.is_active() && record.hit_counter >= threshold)
            .count();
        token
            .session_limit
            .is_none_or(|limit| counted <= limit as usize)
    } else {
        standings(after, token)
            .iter()
            .all(|(_, refusal)| refusal.is_none())
    };
    if all_play {
        return Vec::new();
    }
    let mut before = after.clone();
    match replaced {
        Some(previous) => before.sessions.insert(session_id.to_owned(), previous),
        None => before.sessions.remove(session_id),
    };
    displaced(&before, after, token, session_id)
}

/// Why a takeover or a watch (SPEC §3.7) found no session to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The named session is not an active session of the token's user (it expired, was
    /// stopped or ended, or never existed; a backend token names no session yet).
    #[error("The session is not active.")]
    NotActive,
    /// A takeover named the token's own session.
    #[error("A session cannot take itself over: name another session of the user.")]
    OwnSession,
    /// A notice stream was asked for with a token the session has moved past: only its
    /// current token (the last one a heartbeat was answered with) opens one.
    #[error(
        "The token is not the session's current one: open the stream with the token of the \
         last answered heartbeat."
    )]
    Spent,
}

/// "Watch here instead" (`POST /heartbeat/takeover`, SPEC §3.7): ends `target` as
/// `taken_over` by the token's session and decides the token's heartbeat as [`decide`]
/// does, in one write, except that the player's current token continues its session
/// however soon after its last heartbeat it comes (the user acts now, not the cycle). When the heartbeat is refused even without `target` (another limit
/// is full, or the token's own session was ended), nothing is taken over: the decision is
/// the refusal [`decide`] gives on `stored`.
pub fn take_over(
    policy: &PlaybackPolicy,
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
    target: &str,
    fresh_session_id: &str,
    progress: Option<f64>,
) -> Result<Decision, SessionError> {
    if token.session_id.as_deref() == Some(target) {
        return Err(SessionError::OwnSession);
    }
    let (active, _) = expire(policy, now, token, stored);
    let record = active
        .sessions
        .get(target)
        .filter(|record| record.is_active())
        .ok_or(SessionError::NotActive)?;
    let mut ended = record.clone();
    ended.ended_by = Some(EndReason::TakenOver);
    ended.ended_at = Some(now);
    let mut without = stored.clone();
    without.sessions.insert(target.to_owned(), ended.clone());
    let mut decision = decide(policy, now, token, &without, fresh_session_id, progress);
    let Verdict::Accept(accepted) = &decision.verdict else {
        // Removing a session never refuses another: refused without it, refused with it.
        return Ok(decide(
            policy,
            now,
            token,
            stored,
            fresh_session_id,
            progress,
        ));
    };
    ended.taken_over_by = Some(accepted.session_id.clone());
    let write = &mut decision.write;
    write
        .sessions
        .sessions
        .insert(target.to_owned(), ended.clone());
    write
        .ended
        .push(PlayRecord::ended(target, &ended, now, EndReason::TakenOver));
    write.upserts.push((target.to_owned(), ended));
    Ok(decision)
}
