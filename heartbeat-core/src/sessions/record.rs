//! What the store keeps per user: active sessions, progress and play history.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Id, Timestamp};

/// How long a session whose record has no `expires_at` (one written by the Node.js server)
/// is assumed to live after its last heartbeat when no token says otherwise: one hour.
pub const UNKNOWN_SESSION_LIFE_MILLIS: i64 = 3_600_000;

/// One active session as stored: `{timestamp, hit_counter, started_at}` exactly as the
/// Node.js server writes it, plus the optional fields this crate adds.
///
/// Records written by the Node.js server (only the three fields, `started_at` sometimes
/// missing, `hit_counter` sometimes a string) read back; fields this crate does not know
/// are kept.
///
/// ```
/// use heartbeat_core::SessionRecord;
///
/// let node = r#"{"timestamp":"2018-06-05T16:16:14.418Z","hit_counter":4,"started_at":"2018-06-05T16:16:02.410Z"}"#;
/// let record = SessionRecord::from_json(node).unwrap();
/// assert_eq!(record.hit_counter, 4);
/// assert_eq!(serde_json::to_string(&record).unwrap(), node);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// When the last accepted heartbeat arrived; also the `timestamp` of the token the
    /// player holds now.
    pub timestamp: Timestamp,
    /// Accepted heartbeats of this session (inherited by a clone).
    #[serde(deserialize_with = "lenient::count")]
    pub hit_counter: u64,
    /// When the session started. Missing in some records of the Node.js server; such a
    /// session orders as if it started at its `timestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// What the session plays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<Id>,
    /// The last progress reported, in the player's unit (usually seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// When the session expires without another heartbeat (`timestamp + heartbeat_cycle +
    /// cycle_upper_tolerance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Set when someone else ended the session (an administrator's eviction): the record
    /// stays until its token could no longer be presented, so that the device is refused
    /// (SPEC §3.7) instead of starting a new session. Such a record is not active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<EndReason>,
    /// When it was ended, with `ended_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// The session that took this one over (`ended_by: taken_over`, SPEC §3.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_by: Option<String>,
    /// The token's `device` label, shown to the user's other devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The token's `device_family`, for family limits (SPEC §3.8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    /// The token the last accepted heartbeat presented, and the answer it got: when that
    /// answer was lost, the same token presented again is a retry that continues the
    /// session (SPEC §3.2 "The limit holds against replays").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<AnsweredToken>,
    /// When the playback last started again: restarted by its backend token presented
    /// again, resumed by its latest token, or handed on by a lost answer's retry. A user's
    /// playbacks start again at most twice in three cycles (SPEC §3.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Timestamp>,
    /// The playback's start again before `restarted_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_before: Option<Timestamp>,
    /// The notice stream (`GET /heartbeat/events`) that opened last for the session, by
    /// the id the server gave it: only that stream's closing may end the session as
    /// `gone` (SPEC §3.8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_stream: Option<String>,
    /// When the session ends as `gone`: its notice stream closed, and no heartbeat came
    /// and no stream opened since (SPEC §3.8). A heartbeat or a new stream clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_at: Option<Timestamp>,
    /// What its last heartbeat would have been told under limits that are report-only
    /// (SPEC §3.8): it was accepted, and would have been refused were they enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_refuse: Option<WouldRefuse>,
    /// Fields written by someone else, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionRecord {
    /// Reads a stored record.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The record as stored.
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and JSON values always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// True while the session plays: not ended by someone else.
    pub fn is_active(&self) -> bool {
        self.ended_by.is_none()
    }

    /// True while the session plays at `now`: [`is_active`](Self::is_active) and not past
    /// its [`deadline`](Self::deadline). What the admin list shows and an administrator
    /// may evict; the rest has ended, whether or not a write has said so yet.
    pub fn plays_at(&self, now: Timestamp) -> bool {
        self.is_active() && self.deadline() >= now
    }

    /// When the session ends without another heartbeat: [`ends`](Self::ends) with its
    /// [`expiry`](Self::expiry). The one rule the admin list, the history and the export
    /// share.
    pub fn deadline(&self) -> Timestamp {
        self.ends(self.expiry()).0
    }

    /// When the session expires without another heartbeat: its `expires_at`, or for a
    /// record of the Node.js server (which has none) [`UNKNOWN_SESSION_LIFE_MILLIS`] after
    /// its last heartbeat.
    pub fn expiry(&self) -> Timestamp {
        self.expires_at
            .unwrap_or(self.timestamp.add_millis(UNKNOWN_SESSION_LIFE_MILLIS))
    }

    /// When and how an active session that expires at `expiry` ends if nothing else
    /// happens: as [`EndReason::Gone`] at its `gone_at` when that comes first (its notice
    /// stream closed and no heartbeat came since, SPEC §3.8), else as
    /// [`EndReason::Expired`] at `expiry`.
    pub fn ends(&self, expiry: Timestamp) -> (Timestamp, EndReason) {
        match self.gone_at {
            Some(gone_at) if gone_at < expiry => (gone_at, EndReason::Gone),
            _ => (expiry, EndReason::Expired),
        }
    }

    /// The instant the session is ordered by: `started_at`, or `timestamp` when missing.
    pub fn order_key(&self) -> Timestamp {
        self.started_at.unwrap_or(self.timestamp)
    }
}

/// The token a session's last accepted heartbeat presented, and the `timestamp` of the
/// token it was answered with.
///
/// The answer is the session's current token while `answered` equals the record's
/// `timestamp`; until then and within a cycle of `first`, the presented token may come
/// again (its answer was lost on the way) and continue the session (SPEC §3.2). Stored
/// compactly, as it is read and written at every heartbeat: `[token, answered, first]` in
/// unix milliseconds (`token` is `null` for the playback's backend token).
///
/// ```
/// use heartbeat_core::sessions::AnsweredToken;
///
/// let at = |millis| heartbeat_core::Timestamp::from_unix_millis(millis).unwrap();
/// let answered = AnsweredToken { token: None, answered: at(1_000), first: at(1_000) };
/// assert_eq!(serde_json::to_string(&answered).unwrap(), "[null,1000,1000]");
/// assert_eq!(serde_json::from_str::<AnsweredToken>("[null,1000,1000]").unwrap(), answered);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "(Option<i64>, i64, i64)", into = "(Option<i64>, i64, i64)")]
pub struct AnsweredToken {
    /// The presented token's `timestamp`; `None` for the playback's backend token.
    pub token: Option<Timestamp>,
    /// The `timestamp` of the token it was answered with.
    pub answered: Timestamp,
    /// When it was first answered (a retry answers it again).
    pub first: Timestamp,
}

impl From<AnsweredToken> for (Option<i64>, i64, i64) {
    fn from(answered: AnsweredToken) -> Self {
        (
            answered.token.map(Timestamp::unix_millis),
            answered.answered.unix_millis(),
            answered.first.unix_millis(),
        )
    }
}

impl TryFrom<(Option<i64>, i64, i64)> for AnsweredToken {
    type Error = crate::TimestampError;

    fn try_from((token, answered, first): (Option<i64>, i64, i64)) -> Result<Self, Self::Error> {
        Ok(AnsweredToken {
            token: token.map(Timestamp::from_unix_millis).transpose()?,
            answered: Timestamp::from_unix_millis(answered)?,
            first: Timestamp::from_unix_millis(first)?,
        })
    }
}

/// A user's sessions by id: a map sorted by id, held in one vector (a user has a few
/// sessions; a copy of them is one allocation the size of the records, where a
/// `BTreeMap` node holds room for eleven).
pub type SessionMap = litemap::LiteMap<String, SessionRecord>;

/// A user's active sessions by session id, as loaded from a store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserSessions {
    /// Sessions by id.
    pub sessions: SessionMap,
    /// Ids whose stored record could not be read. They count as expired and are removed
    /// by the next write.
    pub unreadable: Vec<String>,
}

impl UserSessions {
    /// Reads `(session id, stored JSON)` pairs, setting aside records that cannot be read.
    pub fn from_stored<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut user = UserSessions::default();
        for (id, json) in entries {
            match SessionRecord::from_json(json) {
                Ok(record) => {
                    user.sessions.insert(id.to_owned(), record);
                }
                Err(_) => user.unreadable.push(id.to_owned()),
            }
        }
        user
    }

    /// True when there is nothing stored for the user.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.unreadable.is_empty()
    }
}

/// Why a session left the active set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// No heartbeat within `heartbeat_cycle + cycle_upper_tolerance`.
    Expired,
    /// The player said it stopped (`POST /heartbeat/stop`).
    Stopped,
    /// An administrator evicted it.
    Evicted,
    /// Another device of the user took its place (`POST /heartbeat/takeover`).
    TakenOver,
    /// Its player went away: its notice stream closed and no heartbeat came within the
    /// grace (SPEC §3.8, `GONE_GRACE_SECS`).
    Gone,
}

impl EndReason {
    /// Every reason, for metrics that show each one from the start.
    pub const ALL: [EndReason; 5] = [
        EndReason::Expired,
        EndReason::Stopped,
        EndReason::Evicted,
        EndReason::TakenOver,
        EndReason::Gone,
    ];

    /// The name on the wire: `expired`, `stopped`, `evicted`, `taken_over`, `gone`.
    pub fn code(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Stopped => "stopped",
            EndReason::Evicted => "evicted",
            EndReason::TakenOver => "taken_over",
            EndReason::Gone => "gone",
        }
    }
}

/// One session in a user's play history (SPEC §3.6): a finished one, or one still active
/// (no `ended_at` / `ended_by` yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayRecord {
    /// The session.
    pub session_id: String,
    /// What was played, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<Id>,
    /// The device's label, when the token named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The device's family, when the token named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    /// When it started, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// Its last accepted heartbeat.
    pub last_heartbeat: Timestamp,
    /// When it ended: for `expired`, its deadline (`last_heartbeat + heartbeat_cycle +
    /// cycle_upper_tolerance`). `None` while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// How it ended; `None` while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<EndReason>,
    /// For `taken_over`: the session that took its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_by: Option<String>,
    /// Accepted heartbeats.
    pub hit_counter: u64,
    /// The last progress reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

impl PlayRecord {
    /// The history entry for a session that ends at `at` for `reason`.
    pub fn ended(
        session_id: &str,
        record: &SessionRecord,
        at: Timestamp,
        reason: EndReason,
    ) -> Self {
        PlayRecord {
            ended_at: Some(at),
            ended_by: Some(reason),
            taken_over_by: record.taken_over_by.clone(),
            ..Self::active(session_id, record)
        }
    }

    /// The history entry of a session that is still active.
    pub fn active(session_id: &str, record: &SessionRecord) -> Self {
        PlayRecord {
            session_id: session_id.to_owned(),
            asset_id: record.asset_id.clone(),
            device: record.device.clone(),
            device_family: record.device_family.clone(),
            started_at: record.started_at,
            last_heartbeat: record.timestamp,
            ended_at: None,
            ended_by: None,
            taken_over_by: None,
            hit_counter: record.hit_counter,
            progress: record.progress,
        }
    }
}

/// Where a user stopped in an asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressRecord {
    /// The position, in the player's unit (usually seconds).
    pub progress: f64,
    /// When it was reported.
    pub updated_at: Timestamp,
    /// The session that reported it.
    pub session_id: String,
}

mod lenient {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{Error, MapAccess, SeqAccess, Visitor};

    /// A whole number, also as a numeric string (the Node.js server reads it with `+`);
    /// `null` is 0. Read straight from the deserializer: through a `serde_json::Value`
    /// it cost 2.2k instructions per record read (docs/performance.md).
    pub(super) fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(Count)
    }

    struct Count;

    fn invalid<E: Error>() -> E {
        E::custom("hit_counter must be a whole number")
    }

    impl<'de> Visitor<'de> for Count {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("hit_counter as a whole number")
        }

        fn visit_u64<E: Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }

        fn visit_i64<E: Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| invalid())
        }

        fn visit_f64<E: Error>(self, _: f64) -> Result<u64, E> {
            Err(invalid())
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<u64, E> {
            text.trim().parse().map_err(|_| invalid())
        }

        fn visit_unit<E: Error>(self) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_none<E: Error>(self) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_bool<E: Error>(self, _: bool) -> Result<u64, E> {
            Err(invalid())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
            Err(invalid())
        }

        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
            Err(invalid())
        }
    }
}

/// How long and how much a store keeps besides active sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Play history entries kept per user (newest first).
    pub history_cap: usize,
    /// How long progress and history are kept after their last write, in seconds.
    pub retention_secs: u64,
}

impl Retention {
    /// How long progress and history are kept after their last write, in milliseconds.
    pub fn retention_millis(&self) -> i64 {
        i64::try_from(self.retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

impl Default for Retention {
    /// 100 history entries per user, kept 30 days.
    fn default() -> Self {
        Self {
            history_cap: 100,
            retention_secs: 30 * 86_400,
        }
    }
}

/// A refusal as a device is told it: the `reason` and `limit` of a 412 answer. Under a
/// report-only policy (SPEC §3.8) it is the 200 answer's `would_refuse`, and the session
/// record keeps the last one its heartbeats were told (the admin API shows it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WouldRefuse {
    /// The refusal's code ([`RejectReason::code`](crate::sessions::RejectReason::code)).
    pub reason: String,
    /// The limit that applied ([`RejectReason::limit`](crate::sessions::RejectReason::limit)).
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::SessionRecord;

    fn with_count(count: &str) -> Result<u64, String> {
        let json = format!(r#"{{"timestamp":"2018-06-05T16:16:14.418Z","hit_counter":{count}}}"#);
        SessionRecord::from_json(&json)
            .map(|record| record.hit_counter)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn hit_counter_reads_as_the_node_server_writes_it() {
        assert_eq!(with_count("4"), Ok(4));
        assert_eq!(with_count(r#""4""#), Ok(4));
        assert_eq!(with_count(r#"" 17 ""#), Ok(17));
        assert_eq!(with_count("null"), Ok(0));
        assert_eq!(with_count("18446744073709551615"), Ok(u64::MAX));
        for refused in [
            "-1",
            "4.5",
            "1e3",
            r#""x""#,
            r#""-2""#,
            "true",
            "[4]",
            r#"{"n":4}"#,
        ] {
            let error = with_count(refused).unwrap_err();
            assert!(
                error.contains("hit_counter must be a whole number"),
                "{refused}: {error}"
            );
        }
    }
}
