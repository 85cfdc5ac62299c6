//! The decision rules of SPEC §3.2, as pure functions of (now, token data, stored sessions).
//!
//! Nothing here reads a clock, a store or a random number generator: the caller passes
//! `now` and a fresh session id, and applies the returned [`SessionWrite`] atomically.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::analytics::IndexWrite;
use crate::notice::{EndedBy, NoticeReason, SessionEnded};
use crate::session::{EndReason, PlayRecord, ProgressRecord, SessionRecord, UserSessions};
use crate::store::Retention;
use crate::{HeartbeatData, Id, RejectStrategy, Timestamp};

/// Why a heartbeat was refused (the server answers 412).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The user would have more active sessions than `sessions_edge` allows.
    SessionsEdge {
        /// Active sessions after expiry, the one the heartbeat would start included.
        active: usize,
        /// The token's `sessions_edge`.
        edge: u32,
    },
    /// The token's session is counted and `session_limit` sessions ranked before it keep
    /// playing.
    OverLimit {
        /// Its rank among counted sessions under the reject strategy (0 = keeps playing first).
        position: usize,
        /// The token's `session_limit`.
        limit: u32,
    },
    /// The token's session is counted and as many sessions of its `device_family` as
    /// `family_limits` allows keep playing before it (SPEC §3.8).
    FamilyLimit {
        /// The family's limit.
        limit: u32,
    },
    /// The token's session is counted and `asset_limit` sessions playing the same asset keep
    /// playing before it (SPEC §3.8).
    AssetLimit {
        /// The token's `asset_limit`.
        limit: u32,
    },
    /// The token's session was ended by someone else (an administrator's eviction, or
    /// another device's takeover): the device must stop instead of starting a new session
    /// (SPEC §3.7).
    Ended {
        /// How it was ended.
        by: EndReason,
    },
}

impl RejectReason {
    /// Every [`code`](Self::code) a refusal can have, for metrics that show each one from
    /// the start.
    pub const CODES: [&'static str; 6] = [
        "over_limit",
        "family_limit",
        "asset_limit",
        "sessions_edge",
        "evicted",
        "taken_over",
    ];

    /// The `reason` a 412 answer names (SPEC §3.7): `sessions_edge`, `over_limit`,
    /// `family_limit`, `asset_limit`, or how the session was ended (`evicted`,
    /// `taken_over`).
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::SessionsEdge { .. } => "sessions_edge",
            RejectReason::OverLimit { .. } => "over_limit",
            RejectReason::FamilyLimit { .. } => "family_limit",
            RejectReason::AssetLimit { .. } => "asset_limit",
            RejectReason::Ended { by } => by.code(),
        }
    }

    /// The limit that applied; `None` for a session ended by someone else (no limit was
    /// applied).
    pub fn limit(&self) -> Option<u32> {
        match self {
            RejectReason::SessionsEdge { edge, .. } => Some(*edge),
            RejectReason::OverLimit { limit, .. }
            | RejectReason::FamilyLimit { limit }
            | RejectReason::AssetLimit { limit } => Some(*limit),
            RejectReason::Ended { .. } => None,
        }
    }
}

/// A session that keeps playing, as a refused device is shown it (SPEC §3.7): "playing on:
/// Living-room TV, Phone".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlayingSession {
    /// The session (the id [`take_over`] ends).
    pub session_id: String,
    /// What it plays, when known.
    pub asset_id: Option<Id>,
    /// Its device's label, when its token named one.
    pub device: Option<String>,
    /// Its device's family, when its token named one.
    pub device_family: Option<String>,
    /// When it started, when known.
    pub started_at: Option<Timestamp>,
    /// Its last accepted heartbeat.
    pub last_seen: Timestamp,
}

impl PlayingSession {
    fn of(session_id: &str, record: &SessionRecord) -> Self {
        PlayingSession {
            session_id: session_id.to_owned(),
            asset_id: record.asset_id.clone(),
            device: record.device.clone(),
            device_family: record.device_family.clone(),
            started_at: record.started_at,
            last_seen: record.timestamp,
        }
    }
}

/// A refused heartbeat: why, and which of the user's sessions keep playing.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Why (the 412's `reason` and `limit`).
    pub reason: RejectReason,
    /// The counted sessions the reject strategy keeps playing, in its order. `None` when
    /// the token is not authenticated (a legacy token can be forged: it is never shown
    /// the user's devices).
    pub playing: Option<Vec<PlayingSession>>,
}

/// Why an accepted heartbeat started a new session instead of continuing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NewSessionCause {
    /// The token came from the backend (no `session_id`).
    FromBackend,
    /// The token's session is not (or no longer) active.
    Unknown,
    /// The stored `timestamp` differs from the token's: a replayed or cloned token.
    Replayed,
    /// It arrived before `heartbeat_cycle - cycle_lower_tolerance` had passed.
    TooEarly,
}

/// A change to one user's stored state, applied only if the state is still the one it was
/// decided on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionWrite {
    /// The sessions to insert or replace.
    pub upserts: Vec<(String, SessionRecord)>,
    /// Session ids to delete.
    pub remove: Vec<String>,
    /// The entries to append to the play history, oldest first.
    pub ended: Vec<PlayRecord>,
    /// Progress to record for `(user, asset)`.
    pub progress: Option<(Id, ProgressRecord)>,
    /// The user's whole active set after this write (for stores that replace it whole).
    pub sessions: UserSessions,
    /// How long, in milliseconds from now, stores keep the user's sessions at least: as
    /// the rules build it, until the longest-lived session of `sessions` can stay active;
    /// once [`for_store`](Self::for_store) completed it, that plus the retention.
    pub keep_millis: i64,
    /// The analytics indexes' changes (SPEC §3.9), applied in the same atomic step.
    pub index: IndexWrite,
}

impl SessionWrite {
    /// The write as a store applies it, completed from the state it was decided on
    /// (`before`) at `now`: the finished-index moves of the sessions it ends, the
    /// indexes' retention floor, and the sessions kept past their expiry for as long as
    /// the history is, so that a session that times out is in the history without a
    /// later visit (SPEC §3.6). The one place a write is completed.
    pub fn for_store(
        mut self,
        user: &Id,
        before: &UserSessions,
        now: Timestamp,
        retention: &Retention,
    ) -> Self {
        self.index.finished = crate::analytics::finished_moves(user, before, &self);
        self.index.keep_from =
            crate::analytics::IndexKey::floor(now.add_millis(-retention.retention_millis()));
        self.keep_millis = self
            .keep_millis
            .saturating_add(retention.retention_millis());
        self
    }

    /// True when applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.remove.is_empty()
            && self.progress.is_none()
            && self.index.refusal.is_none()
    }
}

/// An accepted heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The session the heartbeat belongs to now.
    pub session_id: String,
    /// `Some` when a new session was started, with the reason.
    pub new_session: Option<NewSessionCause>,
    /// The heartbeat data of the token to answer with.
    pub token_data: HeartbeatData,
    /// Sessions that kept playing before this heartbeat and are refused after it (a newer
    /// device took the last slot under `LEAST_RECENT`): their players are told at once
    /// (SPEC §3.7), see [`displaced`].
    pub displaced: Vec<String>,
}

/// What [`decide`] concluded.
#[derive(Debug, Clone, PartialEq)]
// Returned once per heartbeat, by value: boxing the accepted side would cost an
// allocation on the hot path to save a move of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    /// Accept, answering with a rotated token.
    Accept(Accepted),
    /// Refuse: the player must stop.
    Reject(Refused),
}

/// A verdict and the write that goes with it. A rejection's write only removes expired
/// sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Accept or reject.
    pub verdict: Verdict,
    /// What to store.
    pub write: SessionWrite,
}

/// Splits a user's sessions at `now` into the ones still active and the ones that expired
/// (`timestamp + heartbeat_cycle + cycle_upper_tolerance < now`, with the token's cycle and
/// tolerance, as the Node.js server does). An expired session goes to the history as
/// `expired` at that deadline. Records of sessions ended by someone else are kept (not
/// active) for [`ENDED_SESSION_MEMORY_MILLIS`] (at least until the same deadline), so that
/// the device is refused even when it comes back late, then removed: they are in the
/// history already.
/// Unreadable records are removed without history.
///
/// This is the only expiry rule: every path that reads sessions goes through it.
pub fn expire(
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
    for (id, record) in &stored.sessions {
        let mut deadline = record.timestamp.add_millis(life);
        if let Some(ended_at) = record.ended_at.filter(|_| !record.is_active()) {
            deadline = deadline.max(ended_at.add_millis(ENDED_SESSION_MEMORY_MILLIS));
        }
        if deadline >= now {
            kept.sessions.insert(id.clone(), record.clone());
            continue;
        }
        write.remove.push(id.clone());
        if record.is_active() {
            write
                .ended
                .push(PlayRecord::ended(id, record, deadline, EndReason::Expired));
        }
    }
    write.ended.sort_by_key(|entry| entry.ended_at);
    (kept, write)
}

/// Counted sessions (active, `hit_counter >= checking_threshold`) in the order in which they keep
/// playing: by `started_at` ascending for `MOST_RECENT` (the oldest keep playing), descending
/// for `LEAST_RECENT` (the newest keep playing); ties by session id.
pub fn ranking<'a>(active: &'a UserSessions, token: &HeartbeatData) -> Vec<&'a str> {
    let threshold = u64::from(token.threshold());
    let mut counted: Vec<(&str, &SessionRecord)> = active
        .sessions
        .iter()
        .filter(|(_, record)| record.is_active() && record.hit_counter >= threshold)
        .map(|(id, record)| (id.as_str(), record))
        .collect();
    match token.strategy() {
        RejectStrategy::MostRecent => counted.sort_by_key(|(id, record)| (record.order_key(), *id)),
        RejectStrategy::LeastRecent => {
            counted.sort_by_key(|(id, record)| Reverse((record.order_key(), *id)))
        }
    }
    counted.into_iter().map(|(id, _)| id).collect()
}

/// Where each counted session stands under the token's limits (SPEC §3.2, §3.8), in
/// [`ranking`] order: `None` when it keeps playing, or the limit that refuses it.
///
/// The sessions are taken in turn, and one keeps playing when the sessions kept before it
/// leave room under every limit that applies to it: `session_limit`, its
/// `device_family`'s entry in `family_limits`, and `asset_limit` among sessions of the
/// same asset. A refused session takes no room, so among the sessions that keep playing no
/// limit is ever exceeded. With `session_limit` alone this is "refused at rank `>=
/// session_limit`", as in the Node server. When several limits are full, the reason is
/// the narrowest: `family_limit`, then `asset_limit`, then `over_limit` (ending one of
/// the user's other streams would not help a TV whose family is full).
pub fn standings<'a>(
    active: &'a UserSessions,
    token: &HeartbeatData,
) -> Vec<(&'a str, Option<RejectReason>)> {
    let mut kept = 0u32;
    let mut per_family: BTreeMap<&str, u32> = BTreeMap::new();
    let mut per_asset: BTreeMap<&Id, u32> = BTreeMap::new();
    ranking(active, token)
        .into_iter()
        .enumerate()
        .map(|(position, id)| {
            let record = &active.sessions[id];
            let family = record.device_family.as_deref().and_then(|family| {
                let limit = token.family_limits.as_ref()?.get(family)?;
                Some((family, *limit))
            });
            let asset = record.asset_id.as_ref().zip(token.asset_limit);
            let full = |used: Option<&u32>, limit: u32| used.copied().unwrap_or(0) >= limit;
            let refusal = if let Some((_, limit)) =
                family.filter(|(family, limit)| full(per_family.get(family), *limit))
            {
                Some(RejectReason::FamilyLimit { limit })
            } else if let Some((_, limit)) =
                asset.filter(|(asset, limit)| full(per_asset.get(asset), *limit))
            {
                Some(RejectReason::AssetLimit { limit })
            } else if let Some(limit) = token.session_limit.filter(|limit| kept >= *limit) {
                Some(RejectReason::OverLimit { position, limit })
            } else {
                kept += 1;
                if let Some((family, _)) = family {
                    *per_family.entry(family).or_default() += 1;
                }
                if let Some((asset, _)) = asset {
                    *per_asset.entry(asset).or_default() += 1;
                }
                None
            };
            (id, refusal)
        })
        .collect()
}

/// The counted sessions that keep playing under the token's limits, in [`ranking`] order:
/// what a refusal shows (SPEC §3.7).
pub fn playing(active: &UserSessions, token: &HeartbeatData) -> Vec<PlayingSession> {
    standings(active, token)
        .into_iter()
        .filter(|(_, refusal)| refusal.is_none())
        .map(|(id, _)| PlayingSession::of(id, &active.sessions[id]))
        .collect()
}

/// The limit check of SPEC §3.2 and §3.8, on sessions already expired; records of sessions
/// ended by someone else do not count. `starts_session` says whether the heartbeat would
/// start a new session: `sessions_edge` counts it, so at most `sessions_edge` sessions are
/// ever active.
pub fn check_limit(
    active: &UserSessions,
    token: &HeartbeatData,
    starts_session: bool,
) -> Result<(), RejectReason> {
    let count = active
        .sessions
        .values()
        .filter(|record| record.is_active())
        .count()
        + usize::from(starts_session);
    if let Some(edge) = token.sessions_edge
        && count > edge as usize
    {
        return Err(RejectReason::SessionsEdge {
            active: count,
            edge,
        });
    }
    let Some(session_id) = token.session_id.as_deref() else {
        return Ok(());
    };
    match standings(active, token)
        .into_iter()
        .find(|(id, _)| *id == session_id)
    {
        Some((_, Some(refusal))) => Err(refusal),
        _ => Ok(()),
    }
}

/// The sessions the accepted write of session `by` displaces (SPEC §3.7): those other than
/// `by` that kept playing under the token's limits in `before` and, still active in
/// `after`, are refused there. Under `LEAST_RECENT` these are the oldest devices a newer
/// one pushed out; under either strategy, a session that became counted can push out one
/// ranked after it. (`by` itself is refused at its next heartbeat if the write put it over
/// a limit, as a record of the Node server without `asset_id` can be.)
pub fn displaced(
    before: &UserSessions,
    after: &UserSessions,
    token: &HeartbeatData,
    by: &str,
) -> Vec<String> {
    let kept_before: BTreeSet<&str> = standings(before, token)
        .into_iter()
        .filter(|(_, refusal)| refusal.is_none())
        .map(|(id, _)| id)
        .collect();
    standings(after, token)
        .into_iter()
        .filter(|(id, refusal)| refusal.is_some() && *id != by && kept_before.contains(id))
        .map(|(id, _)| id.to_owned())
        .collect()
}

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
/// use heartbeat_core::decision::{decide, Verdict};
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

/// Where a watched session stands (`GET /heartbeat/events`, SPEC §3.7).
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// It plays on.
    Playing,
    /// Someone else ended it, or it is refused under the limits: its player must stop.
    Ended(SessionEnded),
    /// It is not active (it expired, was stopped, or never existed).
    Gone,
}

/// Where the token's session stands in `stored` at `now`, under the token's limits.
pub fn watched(now: Timestamp, token: &HeartbeatData, stored: &UserSessions) -> Watched {
    let (active, _) = expire(now, token, stored);
    let Some(session_id) = token.session_id.as_deref() else {
        return Watched::Gone;
    };
    let Some(record) = active.sessions.get(session_id) else {
        return Watched::Gone;
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
/// one of an active session; expires the others as [`decide`] would. Returns the write and
/// whether a session was stopped.
pub fn stop(
    now: Timestamp,
    token: &HeartbeatData,
    stored: &UserSessions,
    progress: Option<f64>,
) -> (SessionWrite, bool) {
    let (mut active, mut write) = expire(now, token, stored);
    let session_id = token.session_id.as_deref().unwrap_or_default();
    let is_current = active
        .sessions
        .get(session_id)
        .is_some_and(|record| record.is_active() && Some(record.timestamp) == token.timestamp);
    let stopped = if is_current {
        active.sessions.remove_entry(session_id)
    } else {
        None
    };
    if let Some((id, mut record)) = stopped.clone() {
        record.progress = progress.or(record.progress);
        write.remove.push(id.clone());
        write
            .ended
            .push(PlayRecord::ended(&id, &record, now, EndReason::Stopped));
        write.progress = progress_entry(token, &id, progress, now);
    }
    let stopped = stopped.is_some();
    write.keep_millis = keep_millis(now, &active, token.session_life_millis());
    write.sessions = active;
    (write, stopped)
}

/// Ends one active session for an administrator: it goes to the history as `evicted`, and
/// its record stays, marked ended, until its token could no longer be presented, so that
/// the device is refused (SPEC §3.7). Returns `None` when no such session is active.
pub fn evict(now: Timestamp, stored: &UserSessions, session_id: &str) -> Option<SessionWrite> {
    let record = stored
        .sessions
        .get(session_id)
        .filter(|record| record.is_active())?;
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
            let deadline = record.deadline();
            if deadline < now {
                PlayRecord::ended(id, record, deadline, EndReason::Expired)
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
fn progress_entry(
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

pub use crate::session::UNKNOWN_SESSION_LIFE_MILLIS;

/// Milliseconds from `now` until the last of `active` expires (at least one second).
/// Records without `expires_at` live `life_millis` after their last heartbeat.
fn keep_millis(now: Timestamp, active: &UserSessions, life_millis: i64) -> i64 {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn token(json: serde_json::Value) -> HeartbeatData {
        HeartbeatData::from_json(json).unwrap()
    }

    fn accepted(decision: Decision) -> Accepted {
        match decision.verdict {
            Verdict::Accept(accepted) => accepted,
            Verdict::Reject(reason) => panic!("refused: {reason:?}"),
        }
    }

    /// `CODES` lists every code a refusal can have, once.
    #[test]
    fn every_refusal_code_is_listed() {
        let reasons = [
            RejectReason::OverLimit {
                position: 1,
                limit: 1,
            },
            RejectReason::FamilyLimit { limit: 1 },
            RejectReason::AssetLimit { limit: 1 },
            RejectReason::SessionsEdge { active: 2, edge: 1 },
            RejectReason::Ended {
                by: EndReason::Evicted,
            },
            RejectReason::Ended {
                by: EndReason::TakenOver,
            },
        ];
        let codes: Vec<&str> = reasons.iter().map(RejectReason::code).collect();
        assert_eq!(codes, RejectReason::CODES);
    }

    /// Tokens without limits (as Node-era backends may send) have no limit, count every
    /// session and keep any number of them, as the Node server behaves.
    #[test]
    fn absent_limits_limit_nothing() {
        let now: Timestamp = "2026-01-01T00:00:00.000Z".parse().unwrap();
        let backend = token(serde_json::json!({
            "user_id": 13, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        }));
        let mut stored = UserSessions::default();
        for device in 0..50 {
            let decision = decide(now, &backend, &stored, &format!("s-{device:02}"), None);
            let write = decision.write.clone();
            accepted(decision);
            stored = write.sessions;
        }
        assert_eq!(stored.sessions.len(), 50);
        assert_eq!(
            ranking(&stored, &backend).len(),
            50,
            "threshold 0: all counted"
        );
    }

    /// A session token whose timestamp is absent or unreadable cannot be matched to the
    /// stored session: it starts a new session that inherits the hit counter, as a replayed
    /// token does (the Node server's `Date(undefined)` never equals a stored time either).
    #[test]
    fn a_session_token_without_a_timestamp_starts_an_inheriting_session() {
        let start: Timestamp = "2026-01-01T00:00:00.000Z".parse().unwrap();
        let backend = token(serde_json::json!({
            "user_id": 13, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": "garbage", "session_limit": 1, "checking_threshold": 1,
        }));
        let first = decide(start, &backend, &UserSessions::default(), "s-1", None);
        let stored = first.write.sessions.clone();
        let mut next = accepted(first).token_data;
        next.timestamp = None;
        let later = start.add_millis(30_000);
        let decision = decide(later, &next, &stored, "s-2", None);
        let (_, record) = decision.write.upserts[0].clone();
        let again = accepted(decision);
        assert_eq!(again.new_session, Some(NewSessionCause::Replayed));
        assert_eq!(again.session_id, "s-2");
        assert_eq!(record.hit_counter, 2, "the counter is inherited");
    }
}
