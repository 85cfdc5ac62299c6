//! Playbacks (SPEC §3.2 "The limit holds against replays"): how a presented token stands
//! to the playback it belongs to, and the server's settings for them.
//!
//! A playback is everything that descends from one backend token. Its session is stored
//! under the playback's id (the keyed hash of the backend token, which the first session
//! is named after; a session token names it as its `session_id`), so a playback has at
//! most one session at a time. When it ends (expired, stopped) its record stays as a
//! marker, not active, for [`PlaybackPolicy::start_window_millis`]: the marker keeps the
//! playback's latest `timestamp`, so that its latest token resumes it and every older one
//! is refused.

use super::*;
use crate::sessions::{EndReason, UserSessions};

/// The default [`PlaybackPolicy::start_window_millis`]: one hour.
pub const DEFAULT_START_WINDOW_MILLIS: i64 = 3_600_000;

/// The default [`PlaybackPolicy::default_sessions_edge`].
pub const DEFAULT_SESSIONS_EDGE: u32 = 20;

/// Ended playbacks remembered per user at most; past it the longest-ended are forgotten
/// (a forgotten playback's latest token can resume it once more, within the start
/// window).
pub const MAX_ENDED_PLAYBACKS: usize = 64;

/// The server's settings for playbacks (not the token's: a backend cannot loosen them).
///
/// ```
/// use heartbeat_core::sessions::rules::PlaybackPolicy;
///
/// let policy = PlaybackPolicy::default();
/// assert_eq!(policy.start_window_millis, 3_600_000);
/// assert_eq!(policy.legacy_start_window_millis, None);
/// assert_eq!(policy.default_sessions_edge, 20);
/// assert!(policy.enforce_limits);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackPolicy {
    /// An authenticated backend token (`v2`, `b1`) starts or restarts a playback only
    /// while `now` is within this many milliseconds of its `timestamp` (either side); a
    /// token of an authenticated session resumes an unknown playback only as long after
    /// its `timestamp`. Ended playbacks are remembered this long. `START_WINDOW_SECS`.
    pub start_window_millis: i64,
    /// The same window for legacy (CryptoJS) tokens, whose backends of the Node era may
    /// mint tokens long before use; `None` (the default): no window. `LEGACY_START_WINDOW_SECS`.
    pub legacy_start_window_millis: Option<i64>,
    /// The `sessions_edge` of tokens that have none: a heartbeat that would start a
    /// session beyond it is refused (`sessions_edge`); sessions already playing are
    /// never refused by it. `DEFAULT_SESSIONS_EDGE`.
    pub default_sessions_edge: u32,
    /// Whether the limits (`session_limit`, `family_limits`, `asset_limit`) refuse the
    /// heartbeats they would refuse, for tokens without an `enforce` field; `false`
    /// makes them report-only (SPEC §3.8): such a heartbeat is accepted and reported as
    /// [`Accepted::would_refuse`]. `sessions_edge` and the replay rules are enforced
    /// either way. `ENFORCE_LIMITS`.
    pub enforce_limits: bool,
}

impl Default for PlaybackPolicy {
    fn default() -> Self {
        Self {
            start_window_millis: DEFAULT_START_WINDOW_MILLIS,
            legacy_start_window_millis: None,
            default_sessions_edge: DEFAULT_SESSIONS_EDGE,
            enforce_limits: true,
        }
    }
}

impl PlaybackPolicy {
    /// Whether `reason`, the refusal of a heartbeat with `token`, is made: always, but
    /// for a limit's refusal when the token (or, without its `enforce` field, this
    /// policy) makes the limits report-only.
    pub fn enforces(&self, token: &HeartbeatData, reason: &RejectReason) -> bool {
        !reason.is_limit() || self.enforces_limits(token)
    }

    /// Whether `token`'s limits are enforced: its `enforce` field, or this policy's
    /// [`enforce_limits`](Self::enforce_limits).
    pub fn enforces_limits(&self, token: &HeartbeatData) -> bool {
        token.enforce.unwrap_or(self.enforce_limits)
    }

    /// The start window for `token`'s provenance, if any.
    fn window(&self, token: &HeartbeatData) -> Option<i64> {
        if token.provenance.is_authenticated() {
            Some(self.start_window_millis)
        } else {
            self.legacy_start_window_millis
        }
    }

    /// [`RejectReason::Expired`] unless `token` may start a playback at `now`: its
    /// `timestamp` within the window for its provenance (no window, no check).
    pub(super) fn check_start(
        &self,
        now: Timestamp,
        token: &HeartbeatData,
    ) -> Result<(), RejectReason> {
        let Some(window) = self.window(token) else {
            return Ok(());
        };
        match token.timestamp {
            Some(issued) if now.millis_since(issued).abs() <= window => Ok(()),
            _ => Err(RejectReason::Expired),
        }
    }

    /// How long the record of a playback that ended at `ended_at` (expired or stopped) is
    /// kept.
    pub(super) fn forget_ended_at(&self, ended_at: Timestamp) -> Timestamp {
        ended_at.add_millis(self.start_window_millis)
    }
}

/// How a presented token stands to its playback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Presented<'a> {
    /// It continues the playback's live session: the current token.
    Continues(&'a SessionRecord),
    /// It continues the playback's live session as a retry of the last accepted
    /// heartbeat's token (its answer was lost): marked as a start again.
    Retried(&'a SessionRecord),
    /// It starts the playback's session, or starts it again (`previous`: the record it
    /// replaces, live or ended).
    Starts {
        /// Why.
        cause: NewSessionCause,
        /// The record it replaces.
        previous: Option<&'a SessionRecord>,
    },
}

impl Presented<'_> {
    /// The playback's stored record that this heartbeat's answer replaces, if any.
    pub(super) fn stored(&self) -> Option<&SessionRecord> {
        match self {
            Presented::Continues(record) | Presented::Retried(record) => Some(record),
            Presented::Starts { previous, .. } => *previous,
        }
    }

    /// Why a session starts, `None` when it continues.
    pub(super) fn cause(&self) -> Option<NewSessionCause> {
        match self {
            Presented::Continues(_) | Presented::Retried(_) => None,
            Presented::Starts { cause, .. } => Some(*cause),
        }
    }
}

/// How `token`, presented at `now`, stands to its playback in `kept` (sessions already
/// expired), or why it is refused. `playback` is the playback's id: the token's
/// `session_id`, or for a backend token the id it starts (see
/// [`TokenCodec::token_session_id`](crate::TokenCodec::token_session_id)).
pub(super) fn presented<'a>(
    policy: &PlaybackPolicy,
    now: Timestamp,
    token: &HeartbeatData,
    kept: &'a UserSessions,
    playback: &str,
) -> Result<Presented<'a>, RejectReason> {
    let record = kept.sessions.get(playback);
    let is_backend = token.session_id.is_none();
    // The key the last accepted heartbeat's token is remembered by (`None`: the
    // backend token); a session token without a timestamp has none.
    let key = if is_backend {
        None
    } else {
        Some(token.timestamp.ok_or(RejectReason::Replayed)?)
    };
    match record {
        Some(record) if record.is_active() => {
            if record.previous.is_some_and(|previous| {
                previous.answered == record.timestamp
                    && previous.token == key
                    && now.millis_since(previous.first) < token.heartbeat_cycle.as_millis()
            }) {
                // The last accepted heartbeat again: its answer was lost on the way. A
                // retry hands the playback to whoever sends it, which a second device
                // holding the token just sent could do too: it draws on the user's
                // starts again.
                check_starts_again(now, token, kept)?;
                return Ok(Presented::Retried(record));
            }
            if !is_backend {
                // The current token continues, however soon it comes (the Node server
                // started a clone for a heartbeat before `heartbeat_cycle -
                // cycle_lower_tolerance`; a copy of the current token is the retry
                // above). Any other is behind the playback.
                return if key == Some(record.timestamp) {
                    Ok(Presented::Continues(record))
                } else {
                    Err(RejectReason::Replayed)
                };
            }
        }
        Some(record) => match record.ended_by {
            Some(by @ (EndReason::Evicted | EndReason::TakenOver)) => {
                return Err(RejectReason::Ended { by });
            }
            // Stopped, expired or gone: only its latest token resumes it (its backend token
            // restarts it).
            _ if !is_backend && key != Some(record.timestamp) => {
                return Err(RejectReason::Replayed);
            }
            _ => {}
        },
        None => {}
    }
    // The playback starts: a backend token's first use, its backend token presented again
    // (restarted), or its latest token after its session ended (resumed).
    let cause = match (is_backend, record) {
        (true, None) => NewSessionCause::FromBackend,
        (true, Some(_)) => NewSessionCause::Restarted,
        (false, _) => NewSessionCause::Unknown,
    };
    if is_backend || record.is_none() {
        policy.check_start(now, token)?;
    }
    if cause != NewSessionCause::FromBackend {
        check_starts_again(now, token, kept)?;
    }
    Ok(Presented::Starts {
        cause,
        previous: record,
    })
}

/// [`RejectReason::Replayed`] when two of the user's playbacks started again (restarted,
/// resumed, or handed on by a lost answer's retry) within the last three cycles: each
/// start again can give a device that does not hold a playback's latest token one 200,
/// so with at most two in any three cycles no device beyond the limit gets a 200 in each
/// of three cycles (SPEC §3.2). The user's two latest are among each record's two
/// (`restarted_at`, `restarted_before`).
fn check_starts_again(
    now: Timestamp,
    token: &HeartbeatData,
    kept: &UserSessions,
) -> Result<(), RejectReason> {
    let span = token.heartbeat_cycle.as_millis().saturating_mul(3);
    let recent = kept
        .sessions
        .values()
        .flat_map(|record| [record.restarted_at, record.restarted_before])
        .flatten()
        .filter(|at| now.millis_since(*at) < span)
        .count();
    if recent >= 2 {
        Err(RejectReason::Replayed)
    } else {
        Ok(())
    }
}
