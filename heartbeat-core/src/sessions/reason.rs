//! Why a heartbeat is refused.

use crate::sessions::{EndReason, WouldRefuse};

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
    /// The token is one its playback has moved past: a spent rotated token, or a backend
    /// token presented again sooner than its playback may be restarted (SPEC §3.2 "The
    /// limit holds against replays"). The player holding the playback's latest token plays
    /// on; this one must stop.
    Replayed,
    /// The token cannot start or resume a playback any more: an authenticated token
    /// issued outside the start window (or without a `timestamp`), or the last token of a
    /// playback that ended longer ago than the start window. The backend must issue a
    /// fresh token.
    Expired,
}

impl RejectReason {
    /// Every [`code`](Self::code) a refusal can have, for metrics that show each one from
    /// the start.
    pub const CODES: [&'static str; 8] = [
        "over_limit",
        "family_limit",
        "asset_limit",
        "sessions_edge",
        "evicted",
        "taken_over",
        "replayed",
        "expired",
    ];

    /// The codes of the refusals that [`is_limit`](Self::is_limit): those a report-only
    /// policy reports instead of making (SPEC §3.8).
    pub const LIMIT_CODES: [&'static str; 3] = ["over_limit", "family_limit", "asset_limit"];

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
            RejectReason::Replayed => "replayed",
            RejectReason::Expired => "expired",
        }
    }

    /// Whether a limit on counted sessions made the refusal (`session_limit`,
    /// `family_limits`, `asset_limit`): the refusals a report-only policy reports instead
    /// of making (SPEC §3.8). `sessions_edge` bounds what the server keeps per user and
    /// is not one of them.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            RejectReason::OverLimit { .. }
                | RejectReason::FamilyLimit { .. }
                | RejectReason::AssetLimit { .. }
        )
    }

    /// How a device is told the refusal: the `reason` and `limit` of the 412 answer (or,
    /// report-only, of the 200 answer's `would_refuse`).
    pub fn told(&self) -> WouldRefuse {
        WouldRefuse {
            reason: self.code().to_owned(),
            limit: self.limit(),
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
            RejectReason::Ended { .. } | RejectReason::Replayed | RejectReason::Expired => None,
        }
    }
}
