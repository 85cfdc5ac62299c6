//! A session's life: expiry, stop, eviction, watching, and the history view.

use std::cmp::Reverse;

use super::*;
use crate::sessions::Retention;
use crate::sessions::notice::{EndedBy, NoticeReason, SessionEnded};
use crate::sessions::{EndReason, PlayRecord, ProgressRecord, UserSessions};

/// Splits a user's sessions at `now` into the ones still kept and the write that removes
/// or ends the others, with the token's cycle and tolerance (as the Node.js server does).
///
/// - A session that expired (`timestamp + heartbeat_cycle + cycle_upper_tolerance < now`)
///   goes to the history as `expired` at that deadline, and its record stays as the
///   playback's end marker (`ended_by: expired`, not active) for the start window
///   ([`PlaybackPolicy`]), so that its latest token resumes it and no older one does.
/// - End markers of stopped or expired playbacks are removed after the start window, the
///   longest-ended first past [`MAX_ENDED_PLAYBACKS`](super::MAX_ENDED_PLAYBACKS).
/// - Records of sessions ended by someone else are kept (not active) for
///   [`ENDED_SESSION_MEMORY_MILLIS`] (at least until the same deadline), so that the
///   device is refused even when it comes back late, then removed: they are in the
///   history already.
/// - Unreadable records are removed without history.
///
/// This is the only expiry rule: every path that reads sessions goes through it.
pub fn expire(
    policy: &PlaybackPolicy,
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
) -> (UserSessions, SessionWrite) {
    let life = token.session_life_millis();
    let mut kept = UserSessions::default();
    let mut write = SessionWrite {
        remove: stored.unreadable.clone(),
        ..SessionWrite::default()
    };
    let mut markers = Vec::new();
    for (id, record) in &stored.sessions {
        let deadline = match (record.ended_by, record.ended_at) {
            (None, _) => record.ends(record.timestamp.add_millis(life)).0,
            (Some(EndReason::Expired | EndReason::Stopped | EndReason::Gone), Some(ended_at)) => {
                markers.push((ended_at, id.clone()));
                policy.forget_ended_at(ended_at)
            }
            (Some(_), ended_at) => {
                let last_token_dies = record.timestamp.add_millis(life);
                ended_at.map_or(last_token_dies, |at| {
                    last_token_dies.max(at.add_millis(ENDED_SESSION_MEMORY_MILLIS))
                })
            }
        };
        if deadline >= now {
            kept.sessions.insert(id.clone(), record.clone());
            continue;
        }
        if !record.is_active() {
            write.remove.push(id.clone());
            continue;
        }
        let (ended_at, ended_by) = expired_end(record, record.timestamp.add_millis(life), now);
        write
            .ended
            .push(PlayRecord::ended(id, record, ended_at, ended_by));
        let marker = ended_marker(policy, record, ended_at, ended_by);
        markers.push((ended_at, id.clone()));
        write.upserts.push((id.clone(), marker.clone()));
        kept.sessions.insert(id.clone(), marker);
    }
    if markers.len() > MAX_ENDED_PLAYBACKS {
        markers.sort();
        for (_, id) in markers.drain(..markers.len() - MAX_ENDED_PLAYBACKS) {
            kept.sessions.remove(&id);
            write.upserts.retain(|(upserted, _)| *upserted != id);
            write.remove.push(id);
        }
    }
    write.ended.sort_by_key(|entry| entry.ended_at);
    (kept, write)
}

/// When and how an active session that the token's deadline (`token_deadline`, passed at
/// `now`) expired ends in the history: at its own deadline, the one its finished-index
/// entry has held while it played (and at which the export may have given it out
/// already), so that no later heartbeat of another session, whose token has another
/// cycle, moves it (SPEC §3.6: nothing about the history depends on a later visit). When
/// a shorter cycle ends it before its own deadline, it ends now: an end moved into the
/// past could be behind an export's cursor. A record without its own deadline (written by
/// the Node.js server) ends at the token's.
fn expired_end(
    record: &SessionRecord,
    token_deadline: Timestamp,
    now: Timestamp,
) -> (Timestamp, EndReason) {
    let own = record.expires_at.unwrap_or(token_deadline);
    let (at, by) = record.ends(own);
    (at.min(now), by)
}

/// The record a playback whose session ended at `ended_at` (expired, stopped) keeps: not
/// active, with its latest `timestamp`, until the start window has passed.
fn ended_marker(
    policy: &PlaybackPolicy,
    record: &SessionRecord,
    ended_at: Timestamp,
    by: EndReason,
) -> SessionRecord {
    SessionRecord {
        ended_by: Some(by),
        ended_at: Some(ended_at),
        expires_at: Some(policy.forget_ended_at(ended_at)),
        previous: None,
        ..record.clone()
    }
}

/// Where a watched session stands (`GET /heartbeat/events`, SPEC §3.7).
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// It plays on.
    Playing,
    /// Someone else ended it, or it is refused under the limits: its player must stop.
    Ended(SessionEnded),
    /// It is not active (it expired, was stopped, went away, or never existed).
    NotActive,
}

/// Whether `token` is its session's current token in `stored`: the one the last accepted
/// heartbeat was answered with. Only it opens a notice stream (SPEC §3.8): a token the
/// playback has moved past could otherwise hold streams that let the session go, or use
/// up the user's stream slots.
pub fn is_current(token: &HeartbeatData, stored: &UserSessions) -> bool {
    token
        .session_id
        .as_deref()
        .and_then(|session_id| stored.sessions.get(session_id))
        .is_some_and(|record| Some(record.timestamp) == token.timestamp)
}

/// Where the token's session stands in `stored` at `now`, under the token's limits.
pub fn watched(now: Timestamp, token: &HeartbeatData, stored: &UserSessions) -> Watched {
    // Only the sessions still kept are read: how long ended ones are kept does not matter.
    let (active, _) = expire(&PlaybackPolicy::default(), now, token, stored);
    let Some(session_id) = token.session_id.as_deref() else {
        return Watched::NotActive;
    };
    let Some(record) = active.sessions.get(session_id) else {
        return Watched::NotActive;
    };
    let ended = |reason, by: Option<&str>| {
        Watched::Ended(SessionEnded {
            session_id: session_id.to_owned(),
            reason,
            by: by.map(|by| EndedBy {
                session_id: by.to_owned(),
                device: active.sessions.get(by).and_then(|r| r.device.clone()),
            }),
        })
    };
    match record.ended_by {
        // A playback's end marker: its session is gone.
        Some(EndReason::Expired | EndReason::Stopped | EndReason::Gone) => Watched::NotActive,
        Some(EndReason::TakenOver) => {
            ended(NoticeReason::TakenOver, record.taken_over_by.as_deref())
        }
        Some(_) => ended(NoticeReason::Evicted, None),
        None => match standings(&active, token)
            .into_iter()
            .find(|(id, _)| *id == session_id)
        {
            Some((_, Some(_))) => ended(NoticeReason::Displaced, None),
            _ => Watched::Playing,
        },
    }
}

/// Ends the token's session at once (`POST /heartbeat/stop`), if the token is the current
/// one of an active session; expires the others as [`decide`] would. The playback keeps
/// an end marker, so that its latest token resumes it (SPEC §3.2). Returns the write and
/// whether a session was stopped.
pub fn stop(
    policy: &PlaybackPolicy,
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
    progress: Option<f64>,
) -> (SessionWrite, bool) {
    let (mut active, mut write) = expire(policy, now, token, stored);
    let session_id = token.session_id.as_deref().unwrap_or_default();
    let is_current = active
        .sessions
        .get(session_id)
        .is_some_and(|record| record.is_active() && Some(record.timestamp) == token.timestamp);
    let stopped = if is_current {
        active
            .sessions
            .remove(session_id)
            .map(|record| (session_id.to_owned(), record))
    } else {
        None
    };
    if let Some((id, mut record)) = stopped.clone() {
        record.progress = progress.or(record.progress);
        write
            .ended
            .push(PlayRecord::ended(&id, &record, now, EndReason::Stopped));
        write.progress = progress_entry(token, &id, progress, now);
        let marker = ended_marker(policy, &record, now, EndReason::Stopped);
        write.upserts.push((id.clone(), marker.clone()));
        active.sessions.insert(id, marker);
    }
    let stopped = stopped.is_some();
    write.keep_millis = keep_millis(now, &active, token.session_life_millis());
    write.sessions = active;
    (write, stopped)
}

/// Ends one active session for an administrator: it goes to the history as `evicted`, and
/// its record stays, marked ended, until its token could no longer be presented, so that
/// the device is refused (SPEC §3.7). Returns `None` when no such session is active:
/// also when it has ended by itself (expired, or gone) and no write has said so yet, as
/// the admin list and the history already show it: that play is finished, and the export
/// may have given it out.
pub fn evict(now: Timestamp, stored: &UserSessions, session_id: &str) -> Option<SessionWrite> {
    let record = stored
        .sessions
        .get(session_id)
        .filter(|record| record.plays_at(now))?;
    let ended = SessionRecord {
        ended_by: Some(EndReason::Evicted),
        ended_at: Some(now),
        ..record.clone()
    };
    let mut kept = stored.clone();
    kept.sessions.insert(session_id.to_owned(), ended.clone());
    Some(SessionWrite {
        upserts: vec![(session_id.to_owned(), ended)],
        ended: vec![PlayRecord::ended(
            session_id,
            record,
            now,
            EndReason::Evicted,
        )],
        keep_millis: keep_millis(now, &kept, UNKNOWN_SESSION_LIFE_MILLIS),
        sessions: kept,
        ..SessionWrite::default()
    })
}

/// The notice stream `stream` of the token's session opened at `now` (SPEC §3.8): it is
/// the session's latest stream from now on (only its closing can end the session as
/// `gone`), and a pending `gone_at` is cleared (a stream that reconnects within the grace
/// changes nothing). `None` when the session is not active (at `now`, after expiry), and
/// when the token is not the session's current one: a token the playback has moved past
/// may watch, but its stream can neither let the session go nor keep it.
pub fn stream_opened(
    policy: &PlaybackPolicy,
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
    stream: &str,
) -> Option<SessionWrite> {
    mark_stream(policy, now, token, stored, |record| {
        if token.timestamp != Some(record.timestamp) {
            return false;
        }
        record.notice_stream = Some(stream.to_owned());
        record.gone_at = None;
        true
    })
}

/// The notice stream `stream` of the token's session closed at `now` (SPEC §3.8): unless
/// a heartbeat comes or another stream opens first, the session ends as `gone` at
/// `now + grace_millis`. `None` (nothing changes) when the session is not active, or when
/// `stream` is not its latest stream (another opened since: a reconnect).
pub fn stream_closed(
    policy: &PlaybackPolicy,
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
    stream: &str,
    grace_millis: i64,
) -> Option<SessionWrite> {
    mark_stream(policy, now, token, stored, |record| {
        if record.notice_stream.as_deref() != Some(stream) || record.gone_at.is_some() {
            return false;
        }
        record.gone_at = Some(now.add_millis(grace_millis));
        true
    })
}

/// The write that changes the token's active session with `mark` (which says whether it
/// changed anything), after expiry.
fn mark_stream(
    policy: &PlaybackPolicy,
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
    mark: impl FnOnce(&mut SessionRecord) -> bool,
) -> Option<SessionWrite> {
    let session_id = token.session_id.as_deref()?;
    let (mut kept, mut write) = expire(policy, now, token, stored);
    let record = kept
        .sessions
        .get_mut(session_id)
        .filter(|record| record.is_active())?;
    if !mark(record) {
        return None;
    }
    write.upserts.push((session_id.to_owned(), record.clone()));
    write.keep_millis = keep_millis(now, &kept, token.session_life_millis());
    write.sessions = kept;
    Some(write)
}

/// A user's play history as of `now` (SPEC §3.6): the finished sessions the store keeps
/// (`ended`, newest first), the sessions still in the user's set that expired without
/// anyone seeing it (as `expired` at their deadline: no later visit is needed), and the
/// active ones (no `ended_by` yet), newest first; entries older than the retention are
/// left out, and at most `limit` are returned.
pub fn history_view(
    now: Timestamp,
    ended: Vec<PlayRecord>,
    stored: &UserSessions,
    retention: &Retention,
    limit: usize,
) -> Vec<PlayRecord> {
    let (mut active, mut expired): (Vec<PlayRecord>, Vec<PlayRecord>) = stored
        .sessions
        .iter()
        .filter(|(_, record)| record.is_active())
        .map(|(id, record)| {
            let (deadline, ended_by) = record.ends(record.expiry());
            if deadline < now {
                PlayRecord::ended(id, record, deadline, ended_by)
            } else {
                PlayRecord::active(id, record)
            }
        })
        .partition(|entry| entry.ended_at.is_none());
    // Newest first: active ones by when they started, finished ones by when they ended.
    active.sort_by_key(|entry| Reverse(entry.started_at));
    expired.sort_by_key(|entry| Reverse((entry.ended_at, entry.started_at)));
    let mut finished: Vec<PlayRecord> = expired.into_iter().chain(ended).collect();
    finished.sort_by_key(|entry| Reverse(entry.ended_at));
    let oldest_kept = now.add_millis(-retention.retention_millis());
    active
        .into_iter()
        .chain(finished)
        .filter(|entry| entry.ended_at.unwrap_or(now) >= oldest_kept)
        .take(limit)
        .collect()
}

/// The progress to record for the token's asset, when the player reported one.
pub(super) fn progress_entry(
    token: &HeartbeatData,
    session_id: &str,
    progress: Option<f64>,
    now: Timestamp,
) -> Option<(Id, ProgressRecord)> {
    let progress = progress?;
    Some((
        token.asset_id.clone(),
        ProgressRecord {
            progress,
            updated_at: now,
            session_id: session_id.to_owned(),
        },
    ))
}

/// How long the record of a session ended by someone else (evicted) is kept, so that its
/// device is refused when it presents its token again: a day, or the session's life if
/// that is longer.
pub const ENDED_SESSION_MEMORY_MILLIS: i64 = 86_400_000;

/// Milliseconds from `now` until the last of `active` expires (at least one second).
/// Records without `expires_at` live `life_millis` after their last heartbeat.
pub(super) fn keep_millis(now: Timestamp, active: &UserSessions, life_millis: i64) -> i64 {
    active
        .sessions
        .values()
        .map(|record| {
            record
                .expires_at
                .unwrap_or(record.timestamp.add_millis(life_millis))
        })
        .map(|expires_at| expires_at.millis_since(now))
        .max()
        .unwrap_or(0)
        .max(1000)
}
