//! The analytics indexes' entries: pure key code, no store.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::sessions::{EndReason, PlayRecord, RejectReason, SessionRecord};
use crate::time::write_padded_digits;
use crate::{Id, Timestamp, json};

/// Which analytics index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Index {
    /// Sessions by when they end (finished at or before now, active after).
    Finished,
    /// Refused heartbeats by when they were refused.
    Refusals,
}

/// What a read of an analytics index costs a store
/// ([`AnalyticsStore::index_reads`](crate::sessions::AnalyticsStore::index_reads)), which
/// sets how often the store-wide readers poll it.
///
/// ```
/// use std::time::Duration;
/// use heartbeat_core::sessions::analytics::IndexReads;
///
/// let every = Duration::from_secs(1);
/// assert_eq!(IndexReads::Cheap.interval(every), every);
/// assert_eq!(IndexReads::Spread.interval(every), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IndexReads {
    /// A read touches one ordered set (memory, sled, one Redis server).
    #[default]
    Cheap,
    /// A read touches an ordered set per shard (a Redis Cluster keeps a part per hash
    /// slot): the store-wide readers poll ten times less often.
    Spread,
}

impl IndexReads {
    /// How long a store-wide reader waits between two polls that it would space `cheap`
    /// apart on a cheap store.
    pub fn interval(self, cheap: std::time::Duration) -> std::time::Duration {
        match self {
            IndexReads::Cheap => cheap,
            IndexReads::Spread => cheap * 10,
        }
    }
}

/// How long after its time an entry is settled: writes decided by another instance may
/// still land up to this far in the past (the time between reading the clock and the
/// commit, plus clock differences between instances). The export and the feed read only
/// settled entries, so that a cursor never skips one.
pub const SETTLE_MILLIS: i64 = 500;

/// An entry of an analytics index: `<15-digit unix millis>:<JSON>`. Keys sort by time,
/// then by their JSON (a `[` for sessions, a `{` for refusals).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexKey(String);

impl IndexKey {
    /// Width of the time part: unix milliseconds up to the year 33658.
    const TIME_DIGITS: usize = 15;

    fn with_payload(at: Timestamp, payload: &str) -> Self {
        let mut key = String::with_capacity(Self::TIME_DIGITS + 1 + payload.len());
        Self::push_time(&mut key, at);
        key.push(':');
        key.push_str(payload);
        IndexKey(key)
    }

    /// The same entry at `at`: this key's payload after another time.
    fn at(&self, at: Timestamp) -> Self {
        let rest = self.0.get(Self::TIME_DIGITS..).unwrap_or_default();
        let mut key = String::with_capacity(Self::TIME_DIGITS + rest.len());
        Self::push_time(&mut key, at);
        key.push_str(rest);
        IndexKey(key)
    }

    /// Appends the time part: unix milliseconds, zero-padded to [`Self::TIME_DIGITS`]
    /// (every [`Timestamp`] fits: the year 9999 ends at 253402300799999).
    fn push_time(key: &mut String, at: Timestamp) {
        key.push_str(std::str::from_utf8(&Self::time_digits(at)).unwrap_or_default());
    }

    /// The time part's digits.
    fn time_digits(at: Timestamp) -> [u8; Self::TIME_DIGITS] {
        let mut digits = [b'0'; Self::TIME_DIGITS];
        write_padded_digits(&mut digits, u64::try_from(at.unix_millis()).unwrap_or(0));
        digits
    }

    /// The key below every entry at or after `at` and above every entry before it.
    pub fn floor(at: Timestamp) -> Self {
        Self::with_payload(at, "")
    }

    /// True when the key is below [`floor(at)`](Self::floor): its entry is before `at`.
    /// Compared without building the floor key.
    pub fn is_before(&self, at: Timestamp) -> bool {
        let mut floor = [b':'; Self::TIME_DIGITS + 1];
        floor[..Self::TIME_DIGITS].copy_from_slice(&Self::time_digits(at));
        self.0.as_bytes() < &floor[..]
    }

    /// The key below every entry (the start of an index).
    pub fn start() -> Self {
        IndexKey::default()
    }

    /// Reads a stored key; `None` when it is not one.
    pub fn from_stored(stored: impl Into<String>) -> Option<Self> {
        let stored = stored.into();
        let (time, _) = stored.split_at_checked(Self::TIME_DIGITS)?;
        (time.bytes().all(|b| b.is_ascii_digit()) && stored[Self::TIME_DIGITS..].starts_with(':'))
            .then_some(IndexKey(stored))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The entry's time; `None` for [`IndexKey::start`].
    pub fn time(&self) -> Option<Timestamp> {
        let millis: i64 = self.0.get(..Self::TIME_DIGITS)?.parse().ok()?;
        Timestamp::from_unix_millis(millis).ok()
    }

    fn payload(&self) -> &str {
        self.0.get(Self::TIME_DIGITS + 1..).unwrap_or_default()
    }

    /// The opaque cursor a client continues from (base64url of the key).
    pub fn cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0)
    }

    /// Reads a cursor made by [`cursor`](Self::cursor).
    pub fn from_cursor(cursor: &str) -> Result<Self, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .map_err(|_| InvalidCursor)?;
        let key = String::from_utf8(bytes).map_err(|_| InvalidCursor)?;
        if key.is_empty() {
            return Ok(IndexKey::start());
        }
        Self::from_stored(key).ok_or(InvalidCursor)
    }
}

impl fmt::Display for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cursor that this server did not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this server returned: continue from the `cursor` of the last page")]
pub struct InvalidCursor;

/// A session's place in the finished index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedEntry {
    /// When it ends (or, while active, will end as `expired`).
    pub ends_at: Timestamp,
    /// Its user, as the user's keys name it.
    pub user: String,
    /// The session.
    pub session_id: String,
    /// How it ends: `expired` while it is active.
    pub ended_by: EndReason,
}

impl FinishedEntry {
    /// The entry of session `id` of `user` as `record` stands.
    pub fn of(user: &Id, session_id: &str, record: &SessionRecord) -> Self {
        let (ends_at, ended_by) = Self::end_of(record);
        FinishedEntry {
            ends_at,
            user: user.to_string(),
            session_id: session_id.to_owned(),
            ended_by,
        }
    }

    /// The key of [`of`](Self::of)'s entry, written without building the entry (every
    /// heartbeat moves its session's entry: this is on its path).
    pub fn key_of(user: &Id, session_id: &str, record: &SessionRecord) -> IndexKey {
        Self::key_ending(user, session_id, Self::end_of(record))
    }

    /// The key of session `session_id` of `user` ending at `ends_at` as `ended_by`
    /// ([`end_of`](Self::end_of) of its record).
    pub(crate) fn key_ending(
        user: &Id,
        session_id: &str,
        (ends_at, ended_by): (Timestamp, EndReason),
    ) -> IndexKey {
        user.with_text(|user| finished_key(ends_at, user, session_id, ended_by))
    }

    /// [`key_of`](Self::key_of), made from `near`: the key of an entry of the same user's
    /// same session that ends as `near_by`. When `record` ends the same way, the two keys
    /// differ in their time only, and the key is `near`'s with the time replaced (a
    /// heartbeat moves its session's entry: its two keys are on its path).
    pub fn key_near(
        user: &Id,
        session_id: &str,
        record: &SessionRecord,
        (near, near_by): (&IndexKey, EndReason),
    ) -> IndexKey {
        match Self::end_of(record) {
            (ends_at, ended_by) if ended_by == near_by => near.at(ends_at),
            end => Self::key_ending(user, session_id, end),
        }
    }

    /// When and how a session ends: as it ended, or (while active) as it will expire.
    pub(crate) fn end_of(record: &SessionRecord) -> (Timestamp, EndReason) {
        match (record.ended_at, record.ended_by) {
            (Some(at), Some(by)) => (at, by),
            _ => record.ends(record.expiry()),
        }
    }

    /// The entry of a history record; `None` while the session is active.
    pub fn of_history(user: &Id, entry: &PlayRecord) -> Option<Self> {
        Some(FinishedEntry {
            ends_at: entry.ended_at?,
            user: user.to_string(),
            session_id: entry.session_id.clone(),
            ended_by: entry.ended_by?,
        })
    }

    /// Its key.
    pub fn key(&self) -> IndexKey {
        finished_key(self.ends_at, &self.user, &self.session_id, self.ended_by)
    }

    /// Reads a key of the finished index.
    pub fn from_key(key: &IndexKey) -> Option<Self> {
        let (user, session_id, ended_by): (String, String, EndReason) =
            serde_json::from_str(key.payload()).ok()?;
        Some(FinishedEntry {
            ends_at: key.time()?,
            user,
            session_id,
            ended_by,
        })
    }
}

/// A finished-index key: the time, then `[user, session_id, ended_by]` as JSON, as
/// [`FinishedEntry::from_key`] reads it back; one buffer, one allocation.
fn finished_key(ends_at: Timestamp, user: &str, session_id: &str, ended_by: EndReason) -> IndexKey {
    let mut key = Vec::with_capacity(IndexKey::TIME_DIGITS + user.len() + session_id.len() + 28);
    key.extend_from_slice(&IndexKey::time_digits(ends_at));
    key.extend_from_slice(b":[");
    json::write_str(&mut key, user);
    key.push(b',');
    json::write_str(&mut key, session_id);
    key.push(b',');
    json::write_str(&mut key, ended_by.code());
    key.push(b']');
    // Digits and JSON written from `str`s are UTF-8.
    IndexKey(String::from_utf8(key).unwrap_or_default())
}

/// A refused heartbeat as its refusal index entry holds it (the export and the feed give
/// it as a [`RefusalRecord`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusalEntry {
    /// The user.
    pub user_id: String,
    /// Why (SPEC §3.7 `reason`).
    pub reason: String,
    /// The limit that applied, if one did.
    pub limit: Option<u32>,
    /// When.
    pub at: Timestamp,
    /// The refused session (or the session its token would have started): tells
    /// refusals of one user in the same millisecond apart.
    pub nonce: String,
    /// `false` for a refusal a report-only limit would have made: the heartbeat was
    /// accepted (SPEC §3.8). Absent from the stored entry when `true`.
    #[serde(default = "enforced", skip_serializing_if = "is_enforced")]
    pub enforced: bool,
}

fn enforced() -> bool {
    true
}

fn is_enforced(enforced: &bool) -> bool {
    *enforced
}

impl RefusalEntry {
    /// The refusal of `user`'s heartbeat at `now` for `reason`.
    pub fn new(user: &Id, reason: &RejectReason, now: Timestamp, nonce: String) -> Self {
        RefusalEntry {
            user_id: user.to_string(),
            reason: reason.code().to_owned(),
            limit: reason.limit(),
            at: now,
            nonce,
            enforced: true,
        }
    }

    /// The same refusal, made (`true`) or only reported (`false`, SPEC §3.8).
    pub fn enforced(self, enforced: bool) -> Self {
        RefusalEntry { enforced, ..self }
    }

    /// The refusal as the export and the live feed give it.
    pub fn record(self) -> RefusalRecord {
        RefusalRecord {
            user_id: user_id(&self.user_id),
            session_id: self.nonce,
            reason: self.reason,
            limit: self.limit,
            at: self.at,
            enforced: self.enforced,
        }
    }

    /// Its key.
    pub fn key(&self) -> IndexKey {
        // A struct of strings and numbers always serializes.
        IndexKey::with_payload(self.at, &serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads a key of the refusal index.
    pub fn from_key(key: &IndexKey) -> Option<Self> {
        serde_json::from_str(key.payload()).ok()
    }
}

/// A refused heartbeat as the export (`GET /admin/refusals`) and the live feed
/// (`event: refusal`) give it (SPEC §3.9).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusalRecord {
    /// The user (a number when the user's id is one).
    pub user_id: Id,
    /// The refused session, or the session a refused backend token would have started.
    pub session_id: String,
    /// Why (SPEC §3.7 `reason`).
    pub reason: String,
    /// The limit that applied, if one did.
    pub limit: Option<u32>,
    /// When.
    pub at: Timestamp,
    /// `false` when a report-only limit would have made the refusal and the heartbeat
    /// was accepted (SPEC §3.8).
    pub enforced: bool,
}

/// One move in the finished index: drop `from` (the session's previous place, if it had
/// one) and add `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexMove {
    /// The previous entry.
    pub from: Option<IndexKey>,
    /// The new entry.
    pub to: IndexKey,
}

/// What a [`SessionWrite`](crate::sessions::SessionWrite) changes in the analytics indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexWrite {
    /// Moves in the finished index.
    pub finished: Vec<IndexMove>,
    /// A refusal to add.
    pub refusal: Option<IndexKey>,
    /// Entries of both indexes before this time are past the retention: drop them
    /// (below [`IndexKey::floor`] of it). `None`: drop nothing.
    pub keep_from: Option<Timestamp>,
}

/// The user id that the index names with `text` (as the user's store keys do): a number
/// when `text` is one.
pub fn user_id(text: &str) -> Id {
    match text.parse::<i64>() {
        Ok(number) if number.to_string() == text => Id::Int(number),
        _ => Id::Str(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_key_is_before_a_time_as_it_is_below_its_floor() {
        let times = [
            at("1970-01-01T00:00:00.000Z"),
            at("2026-01-01T00:00:00.999Z"),
            at("2026-01-01T00:00:01.000Z"),
            at("2026-01-01T00:00:01.001Z"),
            at("9999-12-31T23:59:59.999Z"),
        ];
        let mut keys = vec![IndexKey::start()];
        for time in times {
            let entry = FinishedEntry {
                ends_at: time,
                user: "13".into(),
                session_id: "s".into(),
                ended_by: EndReason::Expired,
            };
            keys.extend([IndexKey::floor(time), entry.key()]);
            keys.extend(IndexKey::from_stored(format!("{}!", IndexKey::floor(time))));
        }
        for key in &keys {
            for time in times {
                assert_eq!(
                    key.is_before(time),
                    *key < IndexKey::floor(time),
                    "{key} before {time}"
                );
            }
        }
    }

    #[test]
    fn a_key_made_from_a_near_one_is_the_key_itself() {
        let record = |json: &str| SessionRecord::from_json(json).unwrap();
        let records = [
            record(
                r#"{"timestamp":"2026-01-01T00:00:01.000Z","hit_counter":1,"expires_at":"2026-01-01T00:00:41.000Z"}"#,
            ),
            record(
                r#"{"timestamp":"2026-01-01T00:00:31.000Z","hit_counter":2,"expires_at":"2026-01-01T00:01:11.000Z"}"#,
            ),
            record(
                r#"{"timestamp":"2026-01-01T00:00:31.000Z","hit_counter":2,"ended_by":"stopped","ended_at":"2026-01-01T00:00:35.000Z"}"#,
            ),
            record(
                r#"{"timestamp":"2026-01-01T00:00:31.000Z","hit_counter":2,"ended_by":"evicted","ended_at":"2026-01-01T00:00:36.000Z"}"#,
            ),
            record(r#"{"timestamp":"2018-06-05T16:16:14.418Z","hit_counter":4}"#),
        ];
        for user in [Id::Int(13), Id::from("al\"ice")] {
            for near in &records {
                let near = (
                    FinishedEntry::key_of(&user, "s\"1", near),
                    FinishedEntry::end_of(near).1,
                );
                for record in &records {
                    assert_eq!(
                        FinishedEntry::key_near(&user, "s\"1", record, (&near.0, near.1)),
                        FinishedEntry::key_of(&user, "s\"1", record),
                        "{record:?} near {near:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn keys_sort_by_time_and_read_back() {
        for (time, key) in [
            ("1970-01-01T00:00:00.000Z", "000000000000000:"),
            ("2026-01-01T00:00:01.000Z", "001767225601000:"),
            ("9999-12-31T23:59:59.999Z", "253402300799999:"),
        ] {
            assert_eq!(IndexKey::floor(at(time)).as_str(), key);
        }
        let entry = FinishedEntry {
            ends_at: at("2026-01-01T00:00:01Z"),
            user: "alice".into(),
            session_id: "s\"1".into(),
            ended_by: EndReason::Stopped,
        };
        let later = FinishedEntry {
            ends_at: at("2026-01-01T00:00:02Z"),
            user: "aaa".into(),
            ..entry.clone()
        };
        assert!(entry.key() < later.key());
        // Stored keys of earlier builds (serde_json's tuple) are found again.
        for user in ["alice", "b\\o\tb é", "13"] {
            let entry = FinishedEntry {
                user: user.into(),
                ..entry.clone()
            };
            let serde = serde_json::to_string(&(user, "s\"1", "stopped")).unwrap();
            assert_eq!(entry.key().as_str(), format!("001767225601000:{serde}"));
        }
        assert!(IndexKey::floor(entry.ends_at) < entry.key());
        assert!(entry.key() < IndexKey::floor(later.ends_at));
        assert_eq!(FinishedEntry::from_key(&entry.key()), Some(entry.clone()));
        let cursor = entry.key().cursor();
        assert_eq!(IndexKey::from_cursor(&cursor).unwrap(), entry.key());
        assert_eq!(IndexKey::from_cursor("").unwrap(), IndexKey::start());
        assert_eq!(IndexKey::from_cursor("not a cursor!"), Err(InvalidCursor));
        assert_eq!(
            IndexKey::from_cursor(&URL_SAFE_NO_PAD.encode("12:x")),
            Err(InvalidCursor)
        );
    }

    /// The key written straight from a record is the key of the record's entry.
    #[test]
    fn a_records_key_is_its_entrys_key() {
        let active =
            SessionRecord::from_json(r#"{"timestamp":"2026-01-01T00:00:00.000Z","hit_counter":4}"#)
                .unwrap();
        let ended = SessionRecord::from_json(
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","hit_counter":4,
                "ended_at":"2026-01-01T00:00:09.000Z","ended_by":"stopped"}"#,
        )
        .unwrap();
        for user in [Id::Int(-13), Id::from("b\\o\tb é")] {
            for record in [&active, &ended] {
                let entry = FinishedEntry::of(&user, "s\"1", record);
                assert_eq!(FinishedEntry::key_of(&user, "s\"1", record), entry.key());
                assert_eq!(FinishedEntry::from_key(&entry.key()), Some(entry));
            }
        }
    }

    #[test]
    fn refusals_read_back() {
        let reason = RejectReason::OverLimit {
            position: 2,
            limit: 2,
        };
        let refusal =
            RefusalEntry::new(&Id::Int(7), &reason, at("2026-01-01T00:00:00Z"), "n".into());
        assert_eq!(
            RefusalEntry::from_key(&refusal.key()),
            Some(refusal.clone())
        );
        assert!(
            !refusal.key().as_str().contains("enforced"),
            "as earlier builds wrote it"
        );
        let reported = refusal.clone().enforced(false);
        assert!(reported.key().as_str().ends_with(r#","enforced":false}"#));
        assert_eq!(RefusalEntry::from_key(&reported.key()), Some(reported));
        assert_eq!(
            (refusal.reason.as_str(), refusal.limit),
            ("over_limit", Some(2))
        );
    }
}
