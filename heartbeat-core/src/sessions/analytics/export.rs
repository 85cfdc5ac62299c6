//! What the bulk export and the live feed give (SPEC §3.9); the reads themselves are
//! `Heartbeats`' (`sessions/feed.rs`).

use serde::{Deserialize, Serialize};

use super::{IndexKey, RefusalEntry, RefusalRecord};
use crate::Id;
use crate::sessions::PlayRecord;

/// A finished session as the export and the live feed give it: a SPEC §3.6 history record
/// plus `user_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedSession {
    /// The user (a number when the user's id is one).
    pub user_id: Id,
    /// The session's history record.
    #[serde(flatten)]
    pub record: PlayRecord,
}

/// One event of the live feed.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// A session finished.
    Finished(FinishedSession),
    /// A heartbeat was refused.
    Refused(RefusalEntry),
}

/// A page of the bulk export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPage {
    /// Finished sessions, in the order they finished.
    pub sessions: Vec<FinishedSession>,
    /// Where the next page starts (pass it back as `after`).
    pub next: IndexKey,
    /// True when no finished session is left before `until` now.
    pub complete: bool,
}

/// How often a feed looks for new events: a finished session reaches the feed within
/// [`SETTLE_MILLIS`](super::SETTLE_MILLIS) plus this (SPEC §3.9 asks for a second).
pub const FEED_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// What an export lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Export {
    /// Finished sessions, in the order they finished (`GET /admin/history`).
    #[default]
    Sessions,
    /// Refused heartbeats, and the refusals report-only limits would have made, in the
    /// order they were decided (`GET /admin/refusals`).
    Refusals,
}

/// One item of an export stream: the sessions (or refusals), then one
/// [`ExportItem::End`].
#[derive(Debug, Clone, PartialEq)]
pub enum ExportItem {
    /// A finished session.
    Session(FinishedSession),
    /// A refusal (of [`Export::Refusals`]).
    Refusal(RefusalRecord),
    /// The end of this export: where the next one continues.
    End {
        /// The cursor to continue from.
        next: IndexKey,
        /// True when every finished session before `until` (or before now) was given;
        /// false when `limit` ended the export first.
        complete: bool,
    },
}
