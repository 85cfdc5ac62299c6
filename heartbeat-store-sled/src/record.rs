//! A user's record as stored: the session set and the progress of the assets played
//! lately ([`RecentProgress`]), with the record's expiry.
//!
//! This build writes it in binary: a format byte ([`BINARY`]), then the
//! [postcard](https://docs.rs/postcard) encoding of [`Stored`] (varints, length-prefixed
//! text, times as Unix milliseconds). Every heartbeat reads and writes the record, and
//! its JSON (ISO 8601 times, field names) was about 14k instructions of a sled heartbeat.
//! Records written as JSON (layout 1, and layout 2 before this form) begin with `{` and
//! read as they are, until their user's next commit rewrites them.
//!
//! A session's fields this crate does not know ([`SessionRecord::extra`]) ride as JSON
//! text, empty when there are none.

use heartbeat_core::sessions::{AnsweredToken, SessionMap, WouldRefuse};
use heartbeat_core::store::kit::Kept;
use heartbeat_core::{EndReason, Id, IdRef, ProgressRecord, SessionRecord, StoreError, Timestamp};
use serde::{Deserialize, Serialize};

use crate::recent_progress::RecentProgress;

/// The first byte of a binary record (a JSON one begins with `{`).
const BINARY: u8 = 0xB2;

/// A user's record as the store reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    /// The sessions, by id.
    pub(crate) sessions: SessionMap,
    /// The progress of the assets played lately. Layout 1 wrote a `version` beside the
    /// sessions, which is ignored.
    #[serde(default, skip_serializing_if = "RecentProgress::is_empty")]
    pub(crate) progress: RecentProgress,
}

/// The binary record, field by field; postcard writes the fields in this order.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    expires_at: i64,
    #[serde(borrow)]
    sessions: Vec<(&'a str, Session<'a>)>,
    #[serde(borrow)]
    progress: Vec<(&'a str, Progress<'a>)>,
}

/// A [`SessionRecord`], its times as Unix milliseconds.
#[derive(Serialize, Deserialize)]
struct Session<'a> {
    timestamp: i64,
    hit_counter: u64,
    started_at: Option<i64>,
    #[serde(borrow)]
    asset_id: Option<IdRef<'a>>,
    progress: Option<f64>,
    expires_at: Option<i64>,
    ended_by: Option<EndReason>,
    ended_at: Option<i64>,
    taken_over_by: Option<&'a str>,
    device: Option<&'a str>,
    device_family: Option<&'a str>,
    previous: Option<(Option<i64>, i64, i64)>,
    restarted_at: Option<i64>,
    restarted_before: Option<i64>,
    notice_stream: Option<&'a str>,
    gone_at: Option<i64>,
    would_refuse: Option<(&'a str, Option<u32>)>,
    /// The fields this crate does not know, as JSON object text; empty when none.
    extra: &'a str,
}

/// A progress entry with its expiry.
#[derive(Serialize, Deserialize)]
struct Progress<'a> {
    expires_at: i64,
    progress: f64,
    updated_at: i64,
    session_id: &'a str,
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("{0}")]
    Binary(#[from] postcard::Error),
    #[error("a time outside the years 0000-9999")]
    Time,
    #[error("its unknown fields are not a JSON object: {0}")]
    Extra(serde_json::Error),
}

fn corrupt(error: impl Into<Unreadable>) -> StoreError {
    StoreError::corrupt("a user's record", error.into())
}

fn millis(at: Timestamp) -> i64 {
    at.unix_millis()
}

fn time(millis: i64) -> Result<Timestamp, Unreadable> {
    Timestamp::from_unix_millis(millis).map_err(|_| Unreadable::Time)
}

fn optional_time(millis: Option<i64>) -> Result<Option<Timestamp>, Unreadable> {
    millis.map(time).transpose()
}

impl<'a> Session<'a> {
    /// `extra` is the record's unknown fields as JSON text (empty when none).
    fn of(record: &'a SessionRecord, extra: &'a str) -> Self {
        // Every field named: a field added to `SessionRecord` fails to compile here.
        let SessionRecord {
            timestamp,
            hit_counter,
            started_at,
            asset_id,
            progress,
            expires_at,
            ended_by,
            ended_at,
            taken_over_by,
            device,
            device_family,
            previous,
            restarted_at,
            restarted_before,
            notice_stream,
            gone_at,
            would_refuse,
            extra: _,
        } = record;
        Session {
            timestamp: millis(*timestamp),
            hit_counter: *hit_counter,
            started_at: started_at.map(millis),
            asset_id: asset_id.as_ref().map(IdRef::from),
            progress: *progress,
            expires_at: expires_at.map(millis),
            ended_by: *ended_by,
            ended_at: ended_at.map(millis),
            taken_over_by: taken_over_by.as_deref(),
            device: device.as_deref(),
            device_family: device_family.as_deref(),
            previous: previous.map(Into::into),
            restarted_at: restarted_at.map(millis),
            restarted_before: restarted_before.map(millis),
            notice_stream: notice_stream.as_deref(),
            gone_at: gone_at.map(millis),
            would_refuse: would_refuse
                .as_ref()
                .map(|would| (would.reason.as_str(), would.limit)),
            extra,
        }
    }

    fn read(self) -> Result<SessionRecord, Unreadable> {
        Ok(SessionRecord {
            timestamp: time(self.timestamp)?,
            hit_counter: self.hit_counter,
            started_at: optional_time(self.started_at)?,
            asset_id: self.asset_id.map(Id::from),
            progress: self.progress,
            expires_at: optional_time(self.expires_at)?,
            ended_by: self.ended_by,
            ended_at: optional_time(self.ended_at)?,
            taken_over_by: self.taken_over_by.map(str::to_owned),
            device: self.device.map(str::to_owned),
            device_family: self.device_family.map(str::to_owned),
            previous: self
                .previous
                .map(AnsweredToken::try_from)
                .transpose()
                .map_err(|_| Unreadable::Time)?,
            restarted_at: optional_time(self.restarted_at)?,
            restarted_before: optional_time(self.restarted_before)?,
            notice_stream: self.notice_stream.map(str::to_owned),
            gone_at: optional_time(self.gone_at)?,
            would_refuse: self.would_refuse.map(|(reason, limit)| WouldRefuse {
                reason: reason.to_owned(),
                limit,
            }),
            extra: if self.extra.is_empty() {
                serde_json::Map::new()
            } else {
                serde_json::from_str(self.extra).map_err(Unreadable::Extra)?
            },
        })
    }
}

/// Encodes a user's record kept until `expires_at` (Unix millis).
pub(crate) fn encode(
    expires_at: i64,
    sessions: &SessionMap,
    progress: &RecentProgress,
) -> Result<Vec<u8>, StoreError> {
    let extras = sessions
        .values()
        .map(|record| {
            if record.extra.is_empty() {
                Ok(String::new())
            } else {
                serde_json::to_string(&record.extra)
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| StoreError::backend("cannot encode a session's fields", error))?;
    let stored = Stored {
        expires_at,
        sessions: sessions
            .iter()
            .zip(&extras)
            .map(|((id, record), extra)| (id.as_str(), Session::of(record, extra)))
            .collect(),
        progress: progress
            .entries()
            .map(|(asset, kept)| {
                (
                    asset,
                    Progress {
                        expires_at: kept.expires_at,
                        progress: kept.value.progress,
                        updated_at: millis(kept.value.updated_at),
                        session_id: &kept.value.session_id,
                    },
                )
            })
            .collect(),
    };
    // Sized for a few sessions and assets at once: growing it byte by byte reallocates.
    let mut bytes = Vec::with_capacity(64 + 192 * (stored.sessions.len() + stored.progress.len()));
    bytes.push(BINARY);
    postcard::to_extend(&stored, bytes)
        .map_err(|error| StoreError::backend("cannot encode a user's record", error))
}

/// Reads a user's record, binary or JSON.
pub(crate) fn decode(bytes: &[u8]) -> Result<Kept<UserRecord>, StoreError> {
    let Some(binary) = bytes.strip_prefix(&[BINARY]) else {
        return heartbeat_core::store::kit::decode("a user's record", bytes);
    };
    let stored: Stored<'_> = postcard::from_bytes(binary).map_err(corrupt)?;
    let sessions = stored
        .sessions
        .into_iter()
        .map(|(id, session)| Ok((id.to_owned(), session.read()?)))
        .collect::<Result<_, Unreadable>>()
        .map_err(corrupt)?;
    let progress = stored
        .progress
        .into_iter()
        .map(|(asset, entry)| {
            let value = ProgressRecord {
                progress: entry.progress,
                updated_at: time(entry.updated_at)?,
                session_id: entry.session_id.to_owned(),
            };
            Ok((
                asset.to_owned(),
                Kept {
                    expires_at: entry.expires_at,
                    value,
                },
            ))
        })
        .collect::<Result<_, Unreadable>>()
        .map_err(corrupt)?;
    Ok(Kept {
        expires_at: stored.expires_at,
        value: UserRecord { sessions, progress },
    })
}

/// When a stored user's record expires (Unix millis), without reading the rest; `None`
/// when it cannot be read.
pub(crate) fn expires_at(bytes: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct ExpiresAt {
        expires_at: i64,
    }
    match bytes.strip_prefix(&[BINARY]) {
        Some(binary) => postcard::take_from_bytes::<i64>(binary)
            .ok()
            .map(|(at, _)| at),
        None => serde_json::from_slice::<ExpiresAt>(bytes)
            .ok()
            .map(|kept| kept.expires_at),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(millis).unwrap()
    }

    /// A session with every field set, unknown ones included.
    fn full() -> SessionRecord {
        let mut extra = serde_json::Map::new();
        extra.insert("node_field".into(), serde_json::json!({"a": [1, "ü"]}));
        SessionRecord {
            timestamp: at(1_765_000_000_123),
            hit_counter: 42,
            started_at: Some(at(1_765_000_000_000)),
            asset_id: Some(Id::Str("movie/ü 14".into())),
            progress: Some(12.5),
            expires_at: Some(at(1_765_000_040_123)),
            ended_by: Some(EndReason::TakenOver),
            ended_at: Some(at(1_765_000_001_000)),
            taken_over_by: Some("other session".into()),
            device: Some("living room".into()),
            device_family: Some("tv".into()),
            previous: Some(AnsweredToken {
                token: None,
                answered: at(1_765_000_000_100),
                first: at(1_765_000_000_050),
            }),
            restarted_at: Some(at(-5)),
            restarted_before: Some(at(1_765_000_000_010)),
            notice_stream: Some("stream".into()),
            gone_at: Some(at(1_765_000_000_020)),
            would_refuse: Some(WouldRefuse {
                reason: "session_limit".into(),
                limit: Some(1),
            }),
            extra,
        }
    }

    fn bare() -> SessionRecord {
        SessionRecord::from_json(r#"{"timestamp":"2018-06-05T16:16:14.418Z","hit_counter":"4"}"#)
            .unwrap()
    }

    fn progress() -> RecentProgress {
        let mut progress = RecentProgress::default();
        let record = ProgressRecord {
            progress: 99.0,
            updated_at: at(1_765_000_000_000),
            session_id: "s".into(),
        };
        progress.record("14".into(), Kept::for_millis(record, 0, 1_000), 0);
        progress
    }

    #[test]
    fn a_binary_record_reads_back_whole() {
        let sessions = SessionMap::from_iter([("a".to_owned(), full()), ("b".to_owned(), bare())]);
        let bytes = encode(7_000, &sessions, &progress()).unwrap();
        assert_eq!(bytes[0], BINARY);
        let kept = decode(&bytes).unwrap();
        assert_eq!(kept.expires_at, 7_000);
        assert_eq!(kept.value.sessions, sessions);
        assert_eq!(kept.value.progress, progress());
        assert_eq!(expires_at(&bytes), Some(7_000));
        let empty = encode(-1, &SessionMap::new(), &RecentProgress::default()).unwrap();
        assert_eq!(decode(&empty).unwrap().value, UserRecord::default());
        assert_eq!(expires_at(&empty), Some(-1));
    }

    #[test]
    fn a_json_record_of_an_earlier_layout_reads_as_it_is() {
        let sessions = SessionMap::from_iter([("a".to_owned(), full())]);
        let record = UserRecord {
            sessions: sessions.clone(),
            progress: progress(),
        };
        let json = serde_json::to_vec(&Kept {
            expires_at: 9,
            value: &record,
        })
        .unwrap();
        assert_eq!(decode(&json).unwrap().value, record);
        assert_eq!(expires_at(&json), Some(9));
        // Layout 1's record: a version beside the sessions, no progress.
        let layout_1 = br#"{"expires_at":5,"value":{"sessions":{},"version":3}}"#;
        assert_eq!(decode(layout_1).unwrap().value, UserRecord::default());
    }

    #[test]
    fn damaged_records_are_refused_not_misread() {
        let sessions = SessionMap::from_iter([("a".to_owned(), full())]);
        let bytes = encode(7_000, &sessions, &progress()).unwrap();
        for cut in [1, 2, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[BINARY, 0xFF]).is_err());
        assert!(decode(b"not json").is_err());
        assert_eq!(expires_at(&[BINARY]), None);
        assert_eq!(expires_at(b"{}"), None);
    }
}
