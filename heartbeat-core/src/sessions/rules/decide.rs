//! A heartbeat's verdict and write (SPEC §3.2) and "watch here instead" (SPEC §3.7).

use super::lifecycle::{keep_millis, progress_entry};
use super::*;
use crate::sessions::{EndReason, PlayRecord, UserSessions};

/// True when the heartbeat of `token` continues its session as it stands in `stored`
/// (active, the token current, on time): then it starts none, and the id a new session
/// would get is not needed. A cheap check before [`decide`], which applies the full rules.
pub fn continues_session(now: Timestamp, token: &HeartbeatData, stored: &UserSessions) -> bool {
    // Not expired by [`expire`]'s rule, which `decide` applies first.
    let on_time = token
        .session_id
        .as_deref()
        .and_then(|id| stored.sessions.get(id))
        .is_some_and(|record| record.timestamp.add_millis(token.session_life_millis()) >= now);
    on_time && session_cause(now, token, stored, Timing::Checked).is_none()
}

/// Whether [`decide`] checks that a heartbeat is not too early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// A heartbeat before `heartbeat_cycle - cycle_lower_tolerance` starts a new session.
    Checked,
    /// The player acts now, not on its cycle (a takeover): its current token continues
    /// its session whenever it comes.
    Unchecked,
}

fn session_cause(
    now: Timestamp,
    token: &HeartbeatData,
    active: &UserSessions,
    timing: Timing,
) -> Option<NewSessionCause> {
    let Some(session_id) = token.session_id.as_deref() else {
        return Some(NewSessionCause::FromBackend);
    };
    let Some(stored) = active
        .sessions
        .get(session_id)
        .filter(|record| record.is_active())
    else {
        return Some(NewSessionCause::Unknown);
    };
    if Some(stored.timestamp) != token.timestamp {
        return Some(NewSessionCause::Replayed);
    }
    let earliest = token.heartbeat_cycle.as_millis() - token.cycle_lower_tolerance.as_millis();
    if timing == Timing::Checked && now.millis_since(stored.timestamp) < earliest {
        return Some(NewSessionCause::TooEarly);
    }
    None
}

/// A token presented again that starts a new session each time it comes (a backend
/// token, or a token whose session is gone or was cloned), when the session it started
/// (named `token_session_id`, see
/// [`TokenCodec::token_session_id`](crate::TokenCodec::token_session_id)) is still stored:
/// the token's data as the current token of that session, so that the heartbeat continues
/// it, or is refused as it (SPEC §3.2). `None` otherwise.
fn resumed_playback(
    now: Timestamp,
    token: &HeartbeatData,
    kept: &UserSessions,
    token_session_id: &str,
    timing: Timing,
) -> Option<HeartbeatData> {
    let own = token.session_id.as_deref();
    if own == Some(token_session_id)
        || own
            .and_then(|id| kept.sessions.get(id))
            .is_some_and(|record| !record.is_active())
    {
        // Its own session, or one someone else ended: refused as such below.
        return None;
    }
    let record = kept.sessions.get(token_session_id)?;
    session_cause(now, token, kept, timing)?;
    let mut resumed = token.clone();
    resumed.session_id = Some(token_session_id.to_owned());
    resumed.timestamp = Some(record.timestamp);
    resumed.started_at = record.started_at;
    Some(resumed)
}

/// The hit counter of a session that starts with no session to inherit from: 1, or the
/// token's `checking_threshold` (counted at once) when the token was issued more than a
/// session life ago. Such a token is being presented again (its session expired while it
/// was refused, or it is an old token replayed): re-sending it must not buy a stream the
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

/// Decides one heartbeat (SPEC §3.2): expire, check the limit, identify the session, and
/// build the accepted record and the rotated token data.
///
/// `fresh_session_id` is the id a new session gets: the id the token names
/// ([`TokenCodec::token_session_id`](crate::TokenCodec::token_session_id)). When a session
/// of that id is stored already, the token is being presented again and continues it (or
/// is refused as it) instead of starting another. `progress` is what the player reported with the heartbeat.
///
/// ```
/// use heartbeat_core::sessions::rules::{decide, Verdict};
/// use heartbeat_core::{HeartbeatData, Timestamp, UserSessions};
///
/// let token: HeartbeatData = serde_json::from_str(r#"{"user_id":13,"asset_id":14,
///     "heartbeat_cycle":3,"cycle_upper_tolerance":1,"timestamp":"2026-01-01T00:00:00.000Z",
///     "session_limit":1,"checking_threshold":0,"sessions_edge":10}"#).unwrap();
/// let now: Timestamp = "2026-01-01T00:00:00.500Z".parse().unwrap();
///
/// let decision = decide(now, &token, &UserSessions::default(), "s-1", Some(42.0));
/// let Verdict::Accept(accepted) = decision.verdict else { panic!() };
/// assert_eq!(accepted.session_id, "s-1");
/// assert_eq!(accepted.token_data.timestamp, Some(now));
/// assert_eq!(decision.write.upserts[0].1.hit_counter, 1);
/// ```
pub fn decide(
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
    fresh_session_id: &str,
    progress: Option<f64>,
) -> Decision {
    decide_timed(
        now,
        token,
        stored,
        fresh_session_id,
        progress,
        Timing::Checked,
    )
}

fn decide_timed(
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
    fresh_session_id: &str,
    progress: Option<f64>,
    timing: Timing,
) -> Decision {
    let (mut kept, mut write) = expire(now, token, stored);
    let resumed;
    let (token, timing) = match resumed_playback(now, token, &kept, fresh_session_id, timing) {
        Some(playback) => {
            resumed = playback;
            (&resumed, Timing::Unchecked)
        }
        None => (token, timing),
    };
    let cause = session_cause(now, token, &kept, timing);
    if let Err(reason) = refusal(&kept, token, cause) {
        let playing = Some(playing(&kept, token));
        write.keep_millis = keep_millis(now, &kept, token.session_life_millis());
        write.sessions = kept;
        return Decision {
            verdict: Verdict::Reject(Refused { reason, playing }),
            write,
        };
    }

    let (session_id, record) =
        accepted_record(now, token, &kept, cause, fresh_session_id, progress);
    let mut token_data = token.clone();
    token_data.session_id = Some(session_id.clone());
    token_data.timestamp = Some(now);
    token_data.started_at = record.started_at;

    let replaced = kept.sessions.insert(session_id.clone(), record.clone());
    let displaced = displaced_by_write(&kept, replaced, token, &session_id);
    write.upserts.push((session_id.clone(), record));
    write.progress = progress_entry(token, &session_id, progress, now);
    write.keep_millis = keep_millis(now, &kept, token.session_life_millis());
    write.sessions = kept;
    Decision {
        verdict: Verdict::Accept(Accepted {
            session_id,
            new_session: cause,
            token_data,
            displaced,
        }),
        write,
    }
}

/// Why the heartbeat is refused, if it is: its session was ended by someone else, or a
/// limit applies ([`check_limit`]; `cause` says whether it would start a session).
fn refusal(
    kept: &UserSessions,
    token: &HeartbeatData,
    cause: Option<NewSessionCause>,
) -> Result<(), RejectReason> {
    let ended = token
        .session_id
        .as_deref()
        .and_then(|id| kept.sessions.get(id))
        .and_then(|record| record.ended_by);
    match ended {
        Some(by) => Err(RejectReason::Ended { by }),
        None => check_limit(kept, token, cause.is_some()),
    }
}

/// The session an accepted heartbeat belongs to and its new record: the token's session
/// continued (`cause` is `None`), or a new one named `fresh_session_id` that inherits the
/// hit counter of the session it was cloned from (or starts at [`first_hit_counter`]).
fn accepted_record(
    now: Timestamp,
    token: &HeartbeatData,
    kept: &UserSessions,
    cause: Option<NewSessionCause>,
    fresh_session_id: &str,
    progress: Option<f64>,
) -> (String, SessionRecord) {
    // Not an ended record: a token of an ended session was refused before.
    let previous = token
        .session_id
        .as_deref()
        .and_then(|id| kept.sessions.get(id));
    let hit_counter = previous.map_or_else(
        || first_hit_counter(now, token),
        |record| record.hit_counter.saturating_add(1),
    );
    let (session_id, started_at) = match (cause, previous) {
        (None, Some(previous)) => {
            let started_at = previous.started_at.or(token.started_at).unwrap_or(now);
            (token.session_id.clone().unwrap_or_default(), started_at)
        }
        _ => (fresh_session_id.to_owned(), now),
    };
    let continued = previous.filter(|_| cause.is_none());
    let record = SessionRecord {
        timestamp: now,
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
        extra: continued
            .map(|record| record.extra.clone())
            .unwrap_or_default(),
    };
    (session_id, record)
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
}

/// "Watch here instead" (`POST /heartbeat/takeover`, SPEC §3.7): ends `target` as
/// `taken_over` by the token's session and decides the token's heartbeat as [`decide`]
/// does, in one write, except that the player's current token continues its session
/// however soon after its last heartbeat it comes (the user acts now, not the cycle). When the heartbeat is refused even without `target` (another limit
/// is full, or the token's own session was ended), nothing is taken over: the decision is
/// the refusal [`decide`] gives on `stored`.
pub fn take_over(
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
    let (active, _) = expire(now, token, stored);
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
    let mut decision = decide_timed(
        now,
        token,
        &without,
        fresh_session_id,
        progress,
        Timing::Unchecked,
    );
    let Verdict::Accept(accepted) = &decision.verdict else {
        // Removing a session never refuses another: refused without it, refused with it.
        return Ok(decide(now, token, stored, fresh_session_id, progress));
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
