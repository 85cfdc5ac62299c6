//! Play history for analysts (SPEC §3.9): the two ordered indexes that the bulk export
//! and the live feed read, and the pure rules that keep them.
//!
//! - The **finished index** holds one entry per session, keyed by when the session ends:
//!   its `expires_at` while it is active (the instant it ends as `expired` if no heartbeat
//!   comes), its `ended_at` once it is stopped or evicted. Every write that changes a
//!   session moves its entry in the same atomic step as the history, so the entries at or
//!   before `now` are exactly the finished sessions, in the order they finished, with no
//!   sweeper and no later visit of the user; the ones after `now` are the active sessions.
//! - The **refusal index** holds one entry per refused heartbeat.
//!
//! Entries are [`IndexKey`]s: strings that sort by time first, so that every store keeps
//! them in one ordered structure (a Redis sorted set read by lexical range, a sled key
//! range, a `BTreeSet`) and pages through them without a scan.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::decision::{RejectReason, SessionWrite};
use crate::session::{EndReason, PlayRecord, SessionRecord, UserSessions};
use crate::store::{SessionStore, StoreError};
use crate::{Clock, Heartbeats, Id, Timestamp};

/// Which analytics index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Index {
    /// Sessions by when they end (finished at or before now, active after).
    Finished,
    /// Refused heartbeats by when they were refused.
    Refusals,
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
        IndexKey(format!("{}:{payload}", Self::time_part(at)))
    }

    fn time_part(at: Timestamp) -> String {
        format!("{:015}", at.unix_millis().max(0))
    }

    /// The key below every entry at or after `at` and above every entry before it.
    pub fn floor(at: Timestamp) -> Self {
        IndexKey(format!("{}:", Self::time_part(at)))
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
        let (ends_at, ended_by) = match (record.ended_at, record.ended_by) {
            (Some(at), Some(by)) => (at, by),
            _ => (record.deadline(), EndReason::Expired),
        };
        FinishedEntry {
            ends_at,
            user: user.to_string(),
            session_id: session_id.to_owned(),
            ended_by,
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
        let payload = (&self.user, &self.session_id, self.ended_by.code());
        // A tuple of strings always serializes.
        let payload = serde_json::to_string(&payload).unwrap_or_default();
        IndexKey::with_payload(self.ends_at, &payload)
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

/// A refused heartbeat, as the live feed reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
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
}

impl Refusal {
    /// The refusal of `user`'s heartbeat at `now` for `reason`.
    pub fn new(user: &Id, reason: &RejectReason, now: Timestamp, nonce: String) -> Self {
        Refusal {
            user_id: user.to_string(),
            reason: reason.code().to_owned(),
            limit: reason.limit(),
            at: now,
            nonce,
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

/// One move in the finished index: drop `from` (the session's previous place, if it had
/// one) and add `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexMove {
    /// The previous entry.
    pub from: Option<IndexKey>,
    /// The new entry.
    pub to: IndexKey,
}

/// What a [`SessionWrite`] changes in the analytics indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexWrite {
    /// Moves in the finished index.
    pub finished: Vec<IndexMove>,
    /// A refusal to add.
    pub refusal: Option<IndexKey>,
    /// Entries of both indexes below this key are past the retention: drop them.
    pub keep_from: IndexKey,
}

/// The finished-index moves of `write` on `user`'s sessions as they were loaded
/// (`before`): every session the write inserts, replaces or ends goes to the place of
/// its new end; a session whose place does not change is not moved.
pub fn finished_moves(user: &Id, before: &UserSessions, write: &SessionWrite) -> Vec<IndexMove> {
    let previous = |session_id: &str| {
        before
            .sessions
            .get(session_id)
            .map(|record| FinishedEntry::of(user, session_id, record).key())
    };
    let mut seen = BTreeSet::new();
    let upserted = write
        .upserts
        .iter()
        .map(|(id, record)| (id.as_str(), FinishedEntry::of(user, id, record)));
    let ended = write.ended.iter().filter_map(|entry| {
        Some((
            entry.session_id.as_str(),
            FinishedEntry::of_history(user, entry)?,
        ))
    });
    upserted
        .chain(ended)
        .filter(|(id, _)| seen.insert(*id))
        .filter_map(|(id, entry)| {
            let to = entry.key();
            let from = previous(id);
            (from.as_ref() != Some(&to)).then_some(IndexMove { from, to })
        })
        .collect()
}

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
    Refused(Refusal),
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

/// Most users whose histories one page reads at once.
const HISTORIES_IN_PARALLEL: usize = 32;

/// The user id that the index names with `text` (as the user's store keys do): a number
/// when `text` is one.
pub fn user_id(text: &str) -> Id {
    match text.parse::<i64>() {
        Ok(number) if number.to_string() == text => Id::Int(number),
        _ => Id::Str(text.to_owned()),
    }
}

impl<S: SessionStore, C: Clock> Heartbeats<S, C> {
    /// The key below the first entry that is not settled yet, or below `until` if that
    /// comes first.
    fn settled_before(&self, until: Option<Timestamp>) -> IndexKey {
        let settled = self.clock().now().add_millis(-SETTLE_MILLIS);
        IndexKey::floor(until.map_or(settled, |until| until.min(settled)))
    }

    /// Finished sessions of all users (SPEC §3.9) strictly after `after` (a page's
    /// [`ExportPage::next`], or [`IndexKey::floor`] of a `since`) and before `until`, in
    /// the order they finished, at most `limit`.
    ///
    /// Only settled entries ([`SETTLE_MILLIS`]) are read, so paging on from `next` later
    /// never skips a session. A session whose history entry is gone (past the history cap
    /// or the retention) is left out.
    pub async fn finished_sessions(
        &self,
        after: &IndexKey,
        until: Option<Timestamp>,
        limit: usize,
    ) -> Result<ExportPage, StoreError> {
        let before = self.settled_before(until);
        let keys = self
            .store()
            .index_range(Index::Finished, after, &before, limit)
            .await?;
        let complete = keys.len() < limit;
        let next = keys.last().cloned().unwrap_or_else(|| after.clone());
        let sessions = self
            .resolve(&keys)
            .await?
            .into_iter()
            .map(|(_, session)| session);
        Ok(ExportPage {
            sessions: sessions.collect(),
            next,
            complete,
        })
    }

    /// The live feed's events strictly after `after`, settled, in order, at most `limit`:
    /// finished sessions and refusals. Each comes with its key, the id to resume after.
    pub async fn feed(
        &self,
        after: &IndexKey,
        limit: usize,
    ) -> Result<Vec<(IndexKey, FeedEvent)>, StoreError> {
        let before = self.settled_before(None);
        let (finished, refused) = futures_util::future::try_join(
            self.store()
                .index_range(Index::Finished, after, &before, limit),
            self.store()
                .index_range(Index::Refusals, after, &before, limit),
        )
        .await?;
        // Each list holds the first `limit` of its index: the first `limit` of both
        // together are among them. A stale entry is skipped, but the cursor passes it.
        let mut keys: Vec<(IndexKey, Index)> = finished
            .into_iter()
            .map(|key| (key, Index::Finished))
            .chain(refused.into_iter().map(|key| (key, Index::Refusals)))
            .collect();
        keys.sort();
        keys.truncate(limit);
        let finished: Vec<IndexKey> = keys
            .iter()
            .filter(|(_, index)| *index == Index::Finished)
            .map(|(key, _)| key.clone())
            .collect();
        let mut sessions = self.resolve(&finished).await?.into_iter().peekable();
        let mut events = Vec::with_capacity(keys.len());
        for (key, index) in keys {
            let event = match index {
                Index::Refusals => Refusal::from_key(&key).map(FeedEvent::Refused),
                Index::Finished => sessions
                    .next_if(|(resolved, _)| *resolved == key)
                    .map(|(_, session)| FeedEvent::Finished(session)),
            };
            events.extend(event.map(|event| (key, event)));
        }
        Ok(events)
    }

    /// Where a feed resumes (SPEC §3.9, under the §4 id guarantees): after the event a
    /// client names with `Last-Event-ID`; from the start of what is kept when it names one
    /// this server does not know or one ahead of now; from now without one.
    pub fn feed_start(&self, last_event_id: Option<&str>) -> IndexKey {
        let now = self.clock().now();
        match last_event_id.map(IndexKey::from_cursor) {
            None => self.settled_before(None),
            Some(Ok(key)) if key.time().is_none_or(|at| at <= now) => key,
            Some(_) => IndexKey::start(),
        }
    }

    /// Active sessions of all users: the finished index's entries after now.
    pub async fn active_session_count(&self) -> Result<u64, StoreError> {
        let now = IndexKey::floor(self.clock().now());
        self.store().index_count(Index::Finished, &now).await
    }

    /// The finished sessions that `keys` name, in the order of `keys`, each with its key;
    /// keys whose session no longer is in its user's history as the key says are left out.
    async fn resolve(
        &self,
        keys: &[IndexKey],
    ) -> Result<Vec<(IndexKey, FinishedSession)>, StoreError> {
        let entries: Vec<(IndexKey, FinishedEntry)> = keys
            .iter()
            .filter_map(|key| Some((key.clone(), FinishedEntry::from_key(key)?)))
            .collect();
        let users: BTreeSet<String> = entries
            .iter()
            .map(|(_, entry)| entry.user.clone())
            .collect();
        let mut histories = std::collections::HashMap::with_capacity(users.len());
        let users: Vec<String> = users.into_iter().collect();
        for chunk in users.chunks(HISTORIES_IN_PARALLEL) {
            let reads = chunk.iter().map(|user| async move {
                let id = user_id(user);
                let history = self.history(&id, usize::MAX).await?;
                Ok::<_, StoreError>((user.clone(), (id, history)))
            });
            for read in futures_util::future::join_all(reads).await {
                let (user, history) = read?;
                histories.insert(user, history);
            }
        }
        Ok(entries
            .into_iter()
            .filter_map(|(key, entry)| {
                let (id, history) = histories.get(entry.user.as_str())?;
                let record = history.iter().find(|record| {
                    record.session_id == entry.session_id
                        && record.ended_at == Some(entry.ends_at)
                        && record.ended_by == Some(entry.ended_by)
                })?;
                Some((
                    key,
                    FinishedSession {
                        user_id: id.clone(),
                        record: record.clone(),
                    },
                ))
            })
            .collect())
    }
}

/// How often a feed looks for new events: a finished session reaches the feed within
/// [`SETTLE_MILLIS`] plus this (SPEC §3.9 asks for a second).
pub const FEED_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Events a feed reads per poll.
const FEED_PAGE: usize = 500;

/// Index entries an export reads per page.
const EXPORT_PAGE: usize = 500;

/// One item of an export stream: the sessions, then one [`ExportItem::End`].
#[derive(Debug, Clone, PartialEq)]
pub enum ExportItem {
    /// A finished session.
    Session(FinishedSession),
    /// The end of this export: where the next one continues.
    End {
        /// The cursor to continue from.
        next: IndexKey,
        /// True when every finished session before `until` (or before now) was given;
        /// false when `limit` ended the export first.
        complete: bool,
    },
}

/// Where an export stands between pages.
struct ExportState<S, C> {
    heartbeats: Heartbeats<S, C>,
    after: IndexKey,
    /// Index entries still to read (the `limit`).
    left: usize,
    done: bool,
}

impl<S, C> Heartbeats<S, C>
where
    S: SessionStore + Clone,
    C: Clock + Clone,
{
    /// The bulk export as a stream (SPEC §3.9): finished sessions after `after` and before
    /// `until`, at most `limit`, read a page at a time (memory does not grow with the
    /// range), then one [`ExportItem::End`]. A store failure ends the stream with the error.
    pub fn export(
        &self,
        after: IndexKey,
        until: Option<Timestamp>,
        limit: usize,
    ) -> impl futures_core::Stream<Item = Result<ExportItem, StoreError>> + Send + 'static {
        let state = ExportState {
            heartbeats: self.clone(),
            after,
            left: limit,
            done: false,
        };
        futures_util::stream::unfold(state, move |mut state| async move {
            if state.done {
                return None;
            }
            let page = state.left.min(EXPORT_PAGE);
            let found = if page == 0 {
                Ok(ExportPage {
                    sessions: Vec::new(),
                    next: state.after.clone(),
                    complete: false,
                })
            } else {
                state
                    .heartbeats
                    .finished_sessions(&state.after, until, page)
                    .await
            };
            let items = match found {
                Err(error) => {
                    state.done = true;
                    vec![Err(error)]
                }
                Ok(found) => {
                    // Counted in index entries read, so that entries left out cannot keep
                    // an export going past its limit.
                    state.left -= page;
                    state.after = found.next;
                    state.done = found.complete || state.left == 0;
                    let mut items: Vec<_> = found
                        .sessions
                        .into_iter()
                        .map(|session| Ok(ExportItem::Session(session)))
                        .collect();
                    if state.done {
                        items.push(Ok(ExportItem::End {
                            next: state.after.clone(),
                            complete: found.complete,
                        }));
                    }
                    items
                }
            };
            Some((futures_util::stream::iter(items), state))
        })
        .flatten()
    }

    /// The live feed as a stream (SPEC §3.9): events after `after`, then new ones as they
    /// settle, polled every [`FEED_POLL`], each with the key to resume after. Endless; a
    /// store failure ends it with the error (the client resumes with `Last-Event-ID`).
    pub fn feed_stream(
        &self,
        after: IndexKey,
    ) -> impl futures_core::Stream<Item = Result<(IndexKey, FeedEvent), StoreError>> + Send + 'static
    {
        let state = (self.clone(), after, false);
        futures_util::stream::unfold(state, |(heartbeats, mut after, failed)| async move {
            if failed {
                return None;
            }
            loop {
                match heartbeats.feed(&after, FEED_PAGE).await {
                    Err(error) => {
                        let items = vec![Err(error)];
                        return Some((
                            futures_util::stream::iter(items),
                            (heartbeats, after, true),
                        ));
                    }
                    Ok(events) if events.is_empty() => tokio::time::sleep(FEED_POLL).await,
                    Ok(events) => {
                        if let Some((last, _)) = events.last() {
                            after = last.clone();
                        }
                        let items: Vec<_> = events.into_iter().map(Ok).collect();
                        return Some((
                            futures_util::stream::iter(items),
                            (heartbeats, after, false),
                        ));
                    }
                }
            }
        })
        .flatten()
    }
}

/// How often [`Heartbeats::watch_sessions`] reports.
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`Heartbeats::watch_sessions`] saw since its last report, store-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// How the sessions that finished since the last report ended.
    pub ended: Vec<EndReason>,
    /// Active sessions of all users now.
    pub active: u64,
}

impl<S: SessionStore, C: Clock> Heartbeats<S, C> {
    /// Reports, every [`WATCH_INTERVAL`] until the future is dropped, how the sessions of
    /// all users that finished since the last report ended and how many are active: the
    /// figures behind the server's store-wide session metrics. Every instance sharing a
    /// store sees the same sessions. A failed round goes to `on_error` and the next one
    /// catches up.
    pub async fn watch_sessions(
        &self,
        mut report: impl FnMut(SessionCounts) + Send,
        mut on_error: impl FnMut(StoreError) + Send,
    ) {
        let mut after = self.settled_before(None);
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let round = async {
                let before = self.settled_before(None);
                let mut ended = Vec::new();
                loop {
                    let keys = self
                        .store()
                        .index_range(Index::Finished, &after, &before, FEED_PAGE)
                        .await?;
                    let full = keys.len() == FEED_PAGE;
                    ended.extend(
                        keys.iter()
                            .filter_map(FinishedEntry::from_key)
                            .map(|e| e.ended_by),
                    );
                    if let Some(last) = keys.last() {
                        after = last.clone();
                    }
                    if !full {
                        break;
                    }
                }
                let active = self.active_session_count().await?;
                Ok::<_, StoreError>(SessionCounts { ended, active })
            };
            match round.await {
                Ok(counts) => report(counts),
                Err(error) => on_error(error),
            }
        }
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
    fn keys_sort_by_time_and_read_back() {
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

    #[test]
    fn refusals_read_back() {
        let reason = RejectReason::OverLimit {
            position: 2,
            limit: 2,
        };
        let refusal = Refusal::new(&Id::Int(7), &reason, at("2026-01-01T00:00:00Z"), "n".into());
        assert_eq!(Refusal::from_key(&refusal.key()), Some(refusal.clone()));
        assert_eq!(
            (refusal.reason.as_str(), refusal.limit),
            ("over_limit", Some(2))
        );
    }
}
