//! The decision rules of SPEC §3.2, as pure functions of (now, token data, stored sessions).
//!
//! Nothing here reads a clock, a store or a random number generator: the caller passes
//! `now` and a fresh session id, and applies the returned [`SessionWrite`] atomically.
//!
//! - [`decide`] and [`take_over`]: a heartbeat's verdict and write (`decide.rs`);
//! - [`ranking`], [`check_limit`], [`displaced`]: who keeps playing under the limits
//!   (`limits.rs`);
//! - [`expire`], [`stop`], [`evict`], [`watched`], [`stream_opened`], [`stream_closed`],
//!   [`history_view`]: a session's life and end (`lifecycle.rs`).

mod decide;
mod lifecycle;
mod limits;
mod playback;

pub use crate::sessions::UNKNOWN_SESSION_LIFE_MILLIS;
pub use decide::{SessionError, decide, take_over};
pub use lifecycle::{
    ENDED_SESSION_MEMORY_MILLIS, Watched, evict, expire, history_view, is_current, stop,
    stream_closed, stream_opened, watched,
};
pub use limits::{check_limit, displaced, playing, ranking, standings};
pub use playback::{
    DEFAULT_SESSIONS_EDGE, DEFAULT_START_WINDOW_MILLIS, MAX_ENDED_PLAYBACKS, PlaybackPolicy,
};

use crate::sessions::{RejectReason, SessionRecord, SessionWrite};
use crate::{HeartbeatData, Id, Timestamp};

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

/// Why an accepted heartbeat started its playback's session instead of continuing it
/// (SPEC §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NewSessionCause {
    /// The first use of a backend token (no `session_id`): the playback starts.
    FromBackend,
    /// The playback's latest token resumed it after its session ended (expired or
    /// stopped), or the token's playback is not known.
    Unknown,
    /// The playback's backend token was presented again: the playback starts again.
    Restarted,
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
    /// (SPEC §3.7), see [`displaced`]. Empty under report-only limits.
    pub displaced: Vec<String>,
    /// Under report-only limits (SPEC §3.8), the refusal the limits would have made:
    /// the heartbeat is accepted all the same, and its answer says so.
    pub would_refuse: Option<RejectReason>,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::sessions::{EndReason, UserSessions};

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
            RejectReason::Replayed,
            RejectReason::Expired,
        ];
        let codes: Vec<&str> = reasons.iter().map(RejectReason::code).collect();
        assert_eq!(codes, RejectReason::CODES);
        let limits: Vec<&str> = reasons
            .iter()
            .filter(|reason| reason.is_limit())
            .map(RejectReason::code)
            .collect();
        assert_eq!(limits, RejectReason::LIMIT_CODES);
    }

    fn policy() -> PlaybackPolicy {
        PlaybackPolicy::default()
    }

    /// Tokens without limits (as Node-era backends may send) have no `session_limit` and
    /// count every session, as the Node server behaves; without `sessions_edge` the
    /// server's default edge bounds the sessions a user keeps, refusing only new ones.
    #[test]
    fn absent_limits_limit_nothing_but_the_default_edge() {
        let now: Timestamp = "2026-01-01T00:00:00.000Z".parse().unwrap();
        let backend = token(serde_json::json!({
            "user_id": 13, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": "2026-01-01T00:00:00.000Z",
        }));
        let edge = policy().default_sessions_edge as usize;
        let mut stored = UserSessions::default();
        for device in 0..edge {
            let decision = decide(
                &policy(),
                now,
                &backend,
                &stored,
                &format!("s-{device:02}"),
                None,
            );
            let write = decision.write.clone();
            accepted(decision);
            stored = write.sessions;
        }
        assert_eq!(stored.sessions.len(), edge);
        assert_eq!(
            ranking(&stored, &backend).len(),
            edge,
            "threshold 0: all counted"
        );
        let one_more = decide(&policy(), now, &backend, &stored, "s-new", None);
        assert!(matches!(
            one_more.verdict,
            Verdict::Reject(Refused {
                reason: RejectReason::SessionsEdge { edge: 20, .. },
                ..
            })
        ));
        // The sessions already playing play on.
        let mut first = backend.clone();
        first.session_id = Some("s-00".into());
        first.timestamp = Some(now);
        accepted(decide(
            &policy(),
            now.add_millis(30_000),
            &first,
            &stored,
            "",
            None,
        ));
    }

    /// A session token whose timestamp is absent or unreadable cannot be matched to the
    /// playback's latest token: it is refused as a replay (the Node server started a clone
    /// that inherited the hit counter).
    #[test]
    fn a_session_token_without_a_timestamp_is_refused_as_a_replay() {
        let start: Timestamp = "2026-01-01T00:00:00.000Z".parse().unwrap();
        let backend = token(serde_json::json!({
            "user_id": 13, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": "2026-01-01T00:00:00.000Z", "session_limit": 1, "checking_threshold": 1,
        }));
        let first = decide(
            &policy(),
            start,
            &backend,
            &UserSessions::default(),
            "s-1",
            None,
        );
        let stored = first.write.sessions.clone();
        let mut next = accepted(first).token_data;
        next.timestamp = None;
        let later = start.add_millis(30_000);
        let decision = decide(&policy(), later, &next, &stored, "", None);
        assert!(matches!(
            decision.verdict,
            Verdict::Reject(Refused {
                reason: RejectReason::Replayed,
                ..
            })
        ));
        assert!(
            decision.write.upserts.is_empty(),
            "a refusal writes nothing"
        );
    }

    /// Ended playbacks are remembered for the start window, at most
    /// [`MAX_ENDED_PLAYBACKS`] per user: the longest-ended are forgotten first.
    #[test]
    fn ended_playbacks_are_bounded_per_user() {
        let start: Timestamp = "2026-01-01T00:00:00.000Z".parse().unwrap();
        let backend = token(serde_json::json!({
            "user_id": 13, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": "2026-01-01T00:00:00.000Z", "sessions_edge": 1000,
        }));
        let mut stored = UserSessions::default();
        for playback in 0..70 {
            let decision = decide(
                &policy(),
                start,
                &backend,
                &stored,
                &format!("p-{playback:02}"),
                None,
            );
            stored = decision.write.sessions;
        }
        // All seventy expire at once; sixty-four end markers stay, six are removed.
        let later = start.add_millis(200_000);
        let (kept, write) = expire(&policy(), later, &backend, &stored);
        assert_eq!(kept.sessions.len(), MAX_ENDED_PLAYBACKS);
        assert!(kept.sessions.values().all(|record| !record.is_active()));
        assert!(!kept.sessions.contains_key("p-05") && kept.sessions.contains_key("p-06"));
        assert_eq!(write.ended.len(), 70, "every one is in the history");
        assert_eq!(write.remove.len(), 6);
        // An hour after they ended, none is left.
        let (kept, _) = expire(
            &policy(),
            later.add_millis(DEFAULT_START_WINDOW_MILLIS),
            &backend,
            &kept,
        );
        assert!(kept.sessions.is_empty());
    }
}
