//! The bulk export and the live feed over the indexes (SPEC §3.9).

use std::collections::BTreeSet;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{FinishedEntry, Index, IndexKey, Refusal, RefusalRecord, SETTLE_MILLIS, user_id};
use crate::sessions::{Heartbeats, PlayRecord, SessionStore};
use crate::store::StoreError;
use crate::{Clock, Id, Timestamp};

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

impl<S: SessionStore, C: Clock> Heartbeats<S, C> {
    /// The key below the first entry that is not settled yet, or below `until` if that
    /// comes first.
    pub(super) fn settled_before(&self, until: Option<Timestamp>) -> IndexKey {
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

    /// One page of an export: its items, where the next page starts, and whether
    /// nothing is left before `until` now.
    async fn export_page(
        &self,
        what: Export,
        after: &IndexKey,
        until: Option<Timestamp>,
        limit: usize,
    ) -> Result<(Vec<ExportItem>, IndexKey, bool), StoreError> {
        match what {
            Export::Sessions => {
                let page = self.finished_sessions(after, until, limit).await?;
                let items = page.sessions.into_iter().map(ExportItem::Session);
                Ok((items.collect(), page.next, page.complete))
            }
            Export::Refusals => {
                let before = self.settled_before(until);
                let keys = self
                    .store()
                    .index_range(Index::Refusals, after, &before, limit)
                    .await?;
                let complete = keys.len() < limit;
                let next = keys.last().cloned().unwrap_or_else(|| after.clone());
                let items = keys
                    .iter()
                    .filter_map(Refusal::from_key)
                    .map(|refusal| ExportItem::Refusal(refusal.record()));
                Ok((items.collect(), next, complete))
            }
        }
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
pub(super) const FEED_PAGE: usize = 500;

/// Index entries an export reads per page.
const EXPORT_PAGE: usize = 500;

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
    /// The bulk export as a stream (SPEC §3.9): finished sessions (or refusals, as `what`
    /// says) after `after` and before `until`, at most `limit`, read a page at a time
    /// (memory does not grow with the range), then one [`ExportItem::End`]. A store
    /// failure ends the stream with the error.
    pub fn export(
        &self,
        what: Export,
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
                Ok((Vec::new(), state.after.clone(), false))
            } else {
                state
                    .heartbeats
                    .export_page(what, &state.after, until, page)
                    .await
            };
            let items = match found {
                Err(error) => {
                    state.done = true;
                    vec![Err(error)]
                }
                Ok((found, next, complete)) => {
                    // Counted in index entries read, so that entries left out cannot keep
                    // an export going past its limit.
                    state.left -= page;
                    state.after = next;
                    state.done = complete || state.left == 0;
                    let mut items: Vec<_> = found.into_iter().map(Ok).collect();
                    if state.done {
                        items.push(Ok(ExportItem::End {
                            next: state.after.clone(),
                            complete,
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
    /// settle, polled every [`FEED_POLL`] (on a store whose index reads are
    /// [`Cheap`](super::IndexReads::Cheap)), each with the key to resume after. Endless; a
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
                    Ok(events) if events.is_empty() => {
                        let poll = heartbeats.store().index_reads().interval(FEED_POLL);
                        tokio::time::sleep(poll).await;
                    }
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
