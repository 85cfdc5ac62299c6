//! The analytics reads through [`Heartbeats`] (SPEC §3.9): export pages, the live feed and
//! the store-wide counts behind the gauges. The index's keys and the records they give are
//! pure code in [`analytics`](super::analytics); this file reads them from the store.

use std::collections::BTreeSet;

use futures_util::StreamExt;

use crate::sessions::analytics::{
    Export, ExportItem, ExportPage, FEED_POLL, FeedEvent, FinishedEntry, FinishedSession, Index,
    IndexKey, RefusalEntry, SETTLE_MILLIS, SessionCounts, WATCH_INTERVAL, user_id,
};
use crate::sessions::{Heartbeats, SessionStore};
use crate::store::StoreError;
use crate::{Clock, Timestamp};

/// Most users whose histories one page reads at once.
const HISTORIES_IN_PARALLEL: usize = 32;

/// Events a feed reads per poll.
pub(super) const FEED_PAGE: usize = 500;

/// Index entries an export reads per page.
const EXPORT_PAGE: usize = 500;

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
                    .filter_map(RefusalEntry::from_key)
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
                Index::Refusals => RefusalEntry::from_key(&key).map(FeedEvent::Refused),
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
    /// [`Cheap`](crate::sessions::analytics::IndexReads::Cheap)), each with the key to resume after. Endless; a
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
        let mut tick = tokio::time::interval(self.store().index_reads().interval(WATCH_INTERVAL));
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
